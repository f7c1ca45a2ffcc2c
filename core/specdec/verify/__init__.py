"""Verifier registry: one file per rule; adding one is a new file plus one line here."""

from core import registry
from core.errors import DraftScopeError
from core.options import resolve
from core.specdec.verify.base import TreeVerdict, TreeVerifier, Verdict, Verifier

VERIFIERS: dict[str, type[Verifier]] = registry.load(__name__, (
    "greedy:GreedyVerifier",
    "sampling:SamplingVerifier",
    "rrs:RRSVerifier",
    "rsd:RSDVerifier",
))


def verifier_class(name: str) -> type[Verifier]:
    if name not in VERIFIERS:
        raise DraftScopeError(f"unknown verifier '{name}'; choose one of {', '.join(VERIFIERS)}")
    return VERIFIERS[name]


def build_verifier(name: str, options=None) -> Verifier:
    cls = verifier_class(name)
    return cls(resolve(cls.Options, options, f"the '{name}' verifier"))


__all__ = ["VERIFIERS", "TreeVerdict", "TreeVerifier", "Verdict", "Verifier", "build_verifier", "verifier_class"]
