"""The Generate tab: pick a target, a drafter and a verifier, then step through speculative decoding round by round.

Per-user state is a plain dict in a ``gr.State`` (the settings, the prompt and a session id). The live ``Session``
objects hold tensors, so they stay in a module-level dict keyed by that id and are never copied.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from typing import Iterator

import gradio as gr

from core.drafters import DRAFTERS
from core.engine import MAX_GAMMA, Session, SessionConfig
from core.errors import DraftScopeError
from core.models import preset_names
from core.prompts import load_prompts
from core.verify import VERIFIERS
from visualizers.token_strip import stats_html, token_strip_html

log = logging.getLogger(__name__)

MAX_SESSIONS = 32  # live sessions kept per process (least recently used dropped first)

_SESSIONS: OrderedDict[str, Session] = OrderedDict()
_SESSIONS_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------------------ session store
def _get_session(state: dict | None) -> Session | None:
    sid = (state or {}).get("sid")
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(sid) if sid else None
        if session is not None:
            _SESSIONS.move_to_end(sid)
        return session


def _put_session(sid: str, session: Session) -> None:
    with _SESSIONS_LOCK:
        _SESSIONS[sid] = session
        _SESSIONS.move_to_end(sid)
        while len(_SESSIONS) > MAX_SESSIONS:
            _SESSIONS.popitem(last=False)


def _forget(state: dict | None) -> None:
    """``gr.State`` delete callback: drop the user's session when Gradio discards their state."""
    sid = (state or {}).get("sid")
    if sid:
        with _SESSIONS_LOCK:
            _SESSIONS.pop(sid, None)


# ------------------------------------------------------------------------------------------------ examples
def load_examples() -> list[dict]:
    """The shipped example prompts as dicts (id, category, prompt)."""
    return [vars(p) for p in load_prompts()]


# ------------------------------------------------------------------------------------------------ handlers
def _settings(prompt, target, drafter, verifier, draft_model, gamma, temperature, max_new_tokens, seed,
              chat) -> dict:
    """The UI values as a plain dict (what decides whether the live session can be reused)."""
    return {"prompt": prompt or "", "chat": bool(chat), "target": (target or "").strip(), "drafter": drafter,
            "verifier": verifier, "draft_model": (draft_model or "").strip() or None, "gamma": int(gamma),
            "temperature": float(temperature), "max_new_tokens": int(max_new_tokens), "seed": int(seed or 0)}


def _render(session: Session | None) -> tuple[str, str]:
    if session is None:
        return token_strip_html([]), stats_html({})
    prompt_text = session.target.decode(session.prompt_ids)
    return token_strip_html(session.records, prompt_text), stats_html(session.stats.summary())


def _status(session: Session) -> str:
    rounds, generated = _plural(len(session.records), "round"), _plural(len(session.generated_ids), "token")
    if session.done:
        return f"Finished ({session.finish_reason}) after {rounds}, {generated}."
    return f"{rounds} so far, {generated}."


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _error(exc: Exception) -> str:
    """One line for the status bar; the traceback goes to the server log only."""
    if isinstance(exc, DraftScopeError):
        message = str(exc)
    else:
        log.exception("unexpected error in the Generate tab")
        message = f"{type(exc).__name__}: {exc}"
    line = (message.strip().splitlines() or [type(exc).__name__])[0]
    return f"**Error:** {line[:300]}"


class Handlers:
    """Event handlers; ``allow_local`` lets model names be local directories (the --allow-local-models flag)."""

    def __init__(self, allow_local: bool = False):
        self.allow_local = allow_local

    def _new_session(self, state: dict | None, settings: dict, progress) -> tuple[dict, Session]:
        progress(0, desc="Loading models…")
        config = SessionConfig(
            target=settings["target"], drafter=settings["drafter"], verifier=settings["verifier"],
            gamma=settings["gamma"], temperature=settings["temperature"], seed=settings["seed"],
            max_new_tokens=settings["max_new_tokens"], draft_model=settings["draft_model"])
        session = Session.from_config(config, prompt=settings["prompt"], chat=settings["chat"],
                                      allow_local=self.allow_local)
        sid = (state or {}).get("sid") or uuid.uuid4().hex
        _put_session(sid, session)
        return {**settings, "sid": sid}, session

    def _failed(self, state: dict | None, exc: Exception) -> tuple:
        return (state, *_render(_get_session(state)), _error(exc))

    def step(self, state, prompt, target, drafter, verifier, draft_model, gamma, temperature, max_new_tokens, seed,
             chat, progress=gr.Progress()):
        """One draft → verify round (a new session first if there is none or a setting changed)."""
        try:
            settings = _settings(prompt, target, drafter, verifier, draft_model, gamma, temperature,
                                 max_new_tokens, seed, chat)
            session = _get_session(state)
            if session is None or {k: v for k, v in (state or {}).items() if k != "sid"} != settings:
                state, session = self._new_session(state, settings, progress)
            if session.done:
                return (state, *_render(session),
                        f"Already finished ({session.finish_reason}). Press Reset or Generate to start over.")
            session.step()
            hint = "" if session.done else " Press Step for the next round."
            return (state, *_render(session), _status(session) + hint)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one status line
            return self._failed(state, exc)

    def run(self, state, prompt, target, drafter, verifier, draft_model, gamma, temperature, max_new_tokens, seed,
            chat, progress=gr.Progress()) -> Iterator[tuple]:
        """Start over and generate to the end, yielding the page after every round."""
        try:
            settings = _settings(prompt, target, drafter, verifier, draft_model, gamma, temperature,
                                 max_new_tokens, seed, chat)
            state, session = self._new_session(state, settings, progress)
            yield (state, *_render(session), "Generating…")
            for _ in session.run():
                if _get_session(state) is not session:  # Reset, Step with new settings or another Generate
                    return
                yield (state, *_render(session), f"Generating… {_status(session)}")
            yield (state, *_render(session), _status(session))
        except Exception as exc:  # noqa: BLE001
            yield self._failed(state, exc)

    def reset(self, state, prompt, target, drafter, verifier, draft_model, gamma, temperature, max_new_tokens, seed,
              chat, progress=gr.Progress()):
        """Rebuild the session from the current settings, with nothing generated yet."""
        try:
            settings = _settings(prompt, target, drafter, verifier, draft_model, gamma, temperature,
                                 max_new_tokens, seed, chat)
            state, session = self._new_session(state, settings, progress)
            return (state, *_render(session), "Ready: press Step for one round or Generate to run to the end.")
        except Exception as exc:  # noqa: BLE001
            return self._failed(state, exc)


def _example_prompt(example_id: str | None, examples: list[dict]):
    """The text of the chosen example (nothing changes when none matches)."""
    for example in examples:
        if example["id"] == example_id:
            return example["prompt"]
    return gr.skip()


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict[str, gr.components.Component]:
    """Create the tab's components inside the current Blocks context, wire the events, return the components."""
    examples = load_examples()
    presets = preset_names()
    handlers = Handlers(allow_local=allow_local_models)
    model_info = "a preset" + (", a Hugging Face id or a local directory" if allow_local_models else "")

    state = gr.State({}, delete_callback=_forget)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=3, elem_id="prompt",
                            placeholder="Type a prompt or pick an example")
        with gr.Column(scale=1):
            example = gr.Dropdown([(f"{e['category']} · {e['id']}", e["id"]) for e in examples], value=None,
                                  label="Example prompts (Spec-Bench style)", elem_id="examples")
            chat = gr.Checkbox(value=True, label="Chat template", elem_id="chat")
    with gr.Row():
        target = gr.Dropdown(presets, value="smollm2-135m", label="Target model", info=model_info,
                             allow_custom_value=allow_local_models, elem_id="target")
        drafter = gr.Dropdown(list(DRAFTERS), value="ngram", label="Drafter", elem_id="drafter")
        verifier = gr.Dropdown(list(VERIFIERS), value="greedy", label="Verifier", elem_id="verifier")
        draft_model = gr.Dropdown(presets, value="tiny-llama", label="Draft model", info="used by the 'model' drafter",
                                  allow_custom_value=allow_local_models, elem_id="draft-model")
    with gr.Row():
        gamma = gr.Slider(1, min(16, MAX_GAMMA), value=5, step=1, label="γ (draft length)", elem_id="gamma")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)", elem_id="temperature")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="max-new-tokens")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
    with gr.Row():
        step = gr.Button("Step", elem_id="step")
        run = gr.Button("Generate", variant="primary", elem_id="run")
        reset = gr.Button("Reset", elem_id="reset")
    status = gr.Markdown("Press Step for one round or Generate to run to the end.", elem_id="status")
    strip = gr.HTML(token_strip_html([]), elem_id="token-strip")
    stats = gr.HTML(stats_html({}), elem_id="stats")

    inputs = [state, prompt, target, drafter, verifier, draft_model, gamma, temperature, max_new_tokens, seed, chat]
    outputs = [state, strip, stats, status]
    step.click(handlers.step, inputs, outputs, api_name="step")
    run.click(handlers.run, inputs, outputs, api_name="run")
    reset.click(handlers.reset, inputs, outputs, api_name="reset")
    example.input(lambda example_id: _example_prompt(example_id, examples), example, prompt,
                  api_name="example_prompt", queue=False)

    return {"state": state, "prompt": prompt, "example": example, "chat": chat, "target": target,
            "drafter": drafter, "verifier": verifier, "draft_model": draft_model, "gamma": gamma,
            "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed, "step": step, "run": run,
            "reset": reset, "status": status, "token_strip": strip, "stats": stats}
