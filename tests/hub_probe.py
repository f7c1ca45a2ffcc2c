"""Run as ``python -m tests.hub_probe`` in a process whose environment is a Hugging Face Space's (``SPACE_ID``, an
offline Hub cache standing in for ``preload_from_hub``): each check's outcome as one JSON object on the last line.
``tests/test_hub_cache.py`` builds the cache and reads the verdicts; nothing is mocked in here."""

from __future__ import annotations

import json
import traceback

import torch


def _check(results: dict, name: str, run) -> None:
    try:
        results[name] = run()
    except Exception as exc:  # the verdict says what broke; the test shows it
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}


def _pair() -> dict:
    from core.runtime.models import load_model
    from core.specdec import Session, SessionConfig

    target = load_model("smollm2-1.7b", device="cpu")
    ids = target.tokenizer("the cat sat on the mat and the cat sat on the")["input_ids"]
    with torch.inference_mode():
        want = target.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                     pad_token_id=target.tokenizer.eos_token_id)[0, len(ids):].tolist()
    config = SessionConfig(target="smollm2-1.7b", drafter="model", gamma=3, max_new_tokens=12)
    session = Session.from_config(config, prompt_ids=ids)
    rounds = sum(record is not None for record in session.run())
    draft = session.drafter.drafter  # the draft LoadedModel
    return {"source": target.source, "layers": target.n_layers, "draft": draft.name, "draft_source": draft.source,
            "identical": session.generated_ids == want, "rounds": rounds}


def _tiny() -> dict:
    from core.runtime.models import load_model

    tiny = load_model("tiny-llama", device="cpu")
    return {"vocab": len(tiny.tokenizer), "name": type(tiny.tokenizer).__name__}


def _gated() -> dict:
    from core.errors import DraftScopeError
    from core.runtime.models import load_model

    try:
        load_model("llama3.2-1b", device="cpu")
    except DraftScopeError as exc:
        return {"message": str(exc)}
    return {"message": None}


def _var() -> dict:
    from core.var.code import code_generate
    from core.var.official_load import load_official

    bundle = load_official(4, 2, source="hub", device="cpu")
    run = code_generate(bundle.large, bundle.small, bundle.vq, 207, 0, 8, n=1, top_k=20, top_p=0.9, canvases=False)
    return {"name": bundle.name, "source": bundle.meta["source"], "images": list(run.images.shape)}


def _app() -> dict:
    from app import limits
    from app.main import build_demo
    from core.runtime import models
    from core.var.bundle import bundle_choices

    demo = build_demo()
    return {"public": limits.public(), "source": models._model_source(), "default_target": models.default_target(),
            "hub_presets": "smollm2-1.7b" in models.preset_names(), "var_choices": bundle_choices(),
            "events": len(demo.fns)}


def main() -> None:
    results: dict = {}
    for name, run in (("pair", _pair), ("tiny", _tiny), ("gated", _gated), ("var", _var), ("app", _app)):
        _check(results, name, run)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
