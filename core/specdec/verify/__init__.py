"""Verifier registry: one file per rule; adding one is a new file plus one line here."""

from core import registry
from core.specdec.verify.base import TreeVerdict, TreeVerifier, Verdict, Verifier

VERIFIERS: registry.Registry = registry.load(__name__, (
    "greedy:GreedyVerifier",
    "sampling:SamplingVerifier",
    "rrs:RRSVerifier",
    "rsd:RSDVerifier",
    "match:MatchVerifier",
    "typical:TypicalVerifier",
), "verifier")

verifier_class = VERIFIERS.lookup


def build_verifier(name: str, options=None) -> Verifier:
    return verifier_class(name)(VERIFIERS.options(name, options))


__all__ = ["VERIFIERS", "TreeVerdict", "TreeVerifier", "Verdict", "Verifier", "build_verifier", "verifier_class"]
