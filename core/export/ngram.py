"""The n-gram (prompt lookup) drafter → vLLM's ``"method": "ngram"``: no weights, only the speculative config.

Our defaults (suffixes of 3 down to 2 tokens, γ 5: the benchmark matrix's ``ngram`` row) map to
``prompt_lookup_max`` = 3, ``prompt_lookup_min`` = 2, ``num_speculative_tokens`` = 5. vLLM's proposer
(``vllm/v1/spec_decode/ngram_proposer.py``) also takes the longest matching suffix within those bounds, but where it
occurs several times it continues from the *earliest* occurrence; ours continues from the latest.
"""

from __future__ import annotations

from pathlib import Path

from core.runtime.models import LoadedModel
from core.specdec.drafters.ngram import NgramDrafter

NEEDS_TARGET = False  # settings only: the target is not loaded
METHOD = "ngram"
DEFAULT_GAMMA = 5  # the benchmark matrix's ngram row


def speculative_fields() -> dict:
    options = NgramDrafter.Options()
    return {"prompt_lookup_max": options.ngram_size, "prompt_lookup_min": options.min_ngram_size}


def write(stage: Path, target: LoadedModel | None, gamma: int | None, checkpoint: str | None) -> dict:
    fields = speculative_fields()
    differences = [
        "Where the longest matching suffix occurs more than once, vLLM continues from its earliest occurrence, "
        "DraftScope from its latest: drafts can differ on repetitive text.",
        "vLLM drafts as many tokens as follow the match, up to num_speculative_tokens; so does DraftScope.",
    ]
    return {"gamma": DEFAULT_GAMMA if gamma is None else gamma, "source": "the ngram drafter's defaults (no file)",
            "source_kind": "n-gram settings", "differences": differences, "speculative": fields,
            "details": {"ngram_size": fields["prompt_lookup_max"], "min_ngram_size": fields["prompt_lookup_min"]}}
