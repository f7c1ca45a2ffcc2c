"""Verifier registry: one file per rule; adding one is a new file plus one line here."""

from core.errors import DraftScopeError
from core.verify.base import TreeVerdict, Verdict, Verifier
from core.verify.greedy import GreedyVerifier
from core.verify.rrs import RRSVerifier
from core.verify.rsd import RSDVerifier
from core.verify.sampling import SamplingVerifier

VERIFIERS: dict[str, type] = {
    "greedy": GreedyVerifier,
    "sampling": SamplingVerifier,
    "rrs": RRSVerifier,
    "rsd": RSDVerifier,
}


def build_verifier(name: str) -> Verifier:
    if name not in VERIFIERS:
        raise DraftScopeError(f"unknown verifier '{name}'; choose one of {', '.join(VERIFIERS)}")
    return VERIFIERS[name]()


__all__ = ["VERIFIERS", "TreeVerdict", "Verdict", "Verifier", "build_verifier"]
