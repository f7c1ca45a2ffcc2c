"""The lossless check: decode the same prompt with the target alone and compare with a speculative run."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from core.errors import DraftScopeError
from core.specdec import Session
from core.specdec.drafters.none import NoDrafter
from core.specdec.verify import build_verifier


@dataclass
class LosslessReport:
    mode: str  # "greedy": token identity is the claim; "sampling": identity is not expected (see message)
    identical: bool
    compared: int  # tokens compared (the speculative run's length)
    first_divergence: int | None  # index in the generated tokens, None if identical
    speculative_token: str | None
    target_token: str | None
    target_ids: list[int]
    target_seconds: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_lossless(session: Session) -> LosslessReport:
    """Decode ``session``'s prompt with its target alone, under the same settings, as many tokens as it generated."""
    generated = session.generated_ids
    if not generated:
        raise DraftScopeError("nothing generated yet: press Step or Run first")
    greedy = all(r.settings.get("temperature", 0.0) == 0.0 or r.verifier == "greedy" for r in session.records) \
        if session.records else (session.config.temperature == 0.0 or session.config.verifier == "greedy")
    config = replace(session.config, drafter="none", drafter_options={}, max_new_tokens=len(generated), record=False)
    reference = Session(session.target, NoDrafter(session.target), build_verifier(config.verifier),
                        session.prompt_ids, config)
    t = time.perf_counter()
    for _ in reference.run():
        pass
    seconds = time.perf_counter() - t
    target_ids = reference.generated_ids
    n = min(len(generated), len(target_ids))
    first = next((i for i in range(n) if generated[i] != target_ids[i]), None)
    if first is None and len(generated) != len(target_ids):
        first = n
    identical = first is None
    tok = session.target.token_text
    spec_tok = tok(generated[first]) if first is not None and first < len(generated) else None
    target_tok = tok(target_ids[first]) if first is not None and first < len(target_ids) else None
    if identical:
        message = f"identical: all {len(generated)} tokens match target-only decoding"
    else:
        message = f"first divergence at generated token {first}: speculative {spec_tok!r} vs target-only {target_tok!r}"
    if not greedy:
        message += (" (sampling: the drafts consume random draws, so token identity is not expected; the sampling "
                    "rule keeps the target's distribution, which the test suite checks statistically)")
    return LosslessReport("greedy" if greedy else "sampling", identical, len(generated), first, spec_tok, target_tok,
                          target_ids, seconds, message)
