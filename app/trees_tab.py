"""The Draft trees tab: grow a tree of drafts each round, verify every node in one target forward, and see which path
was accepted, the tree attention mask, acceptance against the optimum α*, and a chain with the same node budget.

Step runs one tree round; Run streams rounds to the end (Stop halts it after the current round); Reset starts over.
Settings other than the prompt, chat template and target apply from the next round on. The optional chain comparison
is a second, real session (same drafter, γ = the tree's node count) stepped once per tree round and run to the same
token budget when the tree finishes.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import gradio as gr

from app import common, limits, options, widgets
from core import checks
from core.errors import DraftScopeError
from core.runtime.layers import DEEP_EXIT, exit_layer_at
from core.runtime.models import load_model
from core.specdec import MAX_GAMMA, Session, SessionConfig
from core.specdec.drafters import DRAFTERS, TreeDrafting
from core.specdec.trace import Trace
from core.specdec.trees.grow import CHILDREN_MODES, MAX_BRANCH
from visualizers.tree_graph import (
    alpha_star_figure,
    tree_figure,
    tree_mask_figure,
    tree_summary_html,
    tree_text_html,
    tree_vs_chain_figure,
)

TREE_DRAFTERS = [name for name, cls in DRAFTERS.items() if issubclass(cls, TreeDrafting)]
# the settings: the tree drafters' options (app.options) come right after the drafter
HEAD_SETTINGS = ("prompt", "chat", "target", "drafter")
TREE_SETTINGS = ("shape", "tree_branch", "max_depth", "children", "verifier", "temperature", "seed", "max_new_tokens",
                 "compare")
# ℓ = 0 means four fifths of the depth here (tree_config), not early exit's own default
EXIT_LAYER_LABEL = "ℓ: early-exit layer (0 = auto: 4/5 of the depth, 24 of SmolLM2's 30)"
TREE_VERIFIERS = ("greedy", "match", "rrs", "rsd", "typical")


# ------------------------------------------------------------------------------------------------ configuration
def tree_config(settings: dict, allow_local: bool = False) -> SessionConfig:
    """Engine settings for the tree session; an exit layer of 0 resolves to four fifths of the target's depth."""
    exit_layer = checks.whole("exit layer", settings.get("exit_layer") or 0, 0, 1024)
    if settings["drafter"] == "early-exit" and not exit_layer:
        n_layers = load_model((settings.get("target") or "").strip(), allow_local=allow_local).n_layers
        exit_layer = exit_layer_at(n_layers, DEEP_EXIT)  # four fifths of the depth (24 of SmolLM2's 30 layers)
    base = common.build_config({**settings, "gamma": settings["max_depth"], "exit_layer": exit_layer})
    shape = checks.text("the tree shape", settings.get("shape"), checks.SHORT_TEXT)
    config = dataclasses.replace(base, tree=shape.strip().replace(" ", ""),
                                 tree_branch=checks.whole("tree branch", settings["tree_branch"], 1, 64),
                                 children=settings["children"])
    if not config.tree:
        raise DraftScopeError("the tree shape is empty: use children per depth like 4,2,1 or budget:16")
    config.validate()
    limits.check_tree(config)
    return config


def chain_config(config: SessionConfig) -> SessionConfig:
    """A chain with the tree's node budget: γ = its node count (at most 64), the chain form of its verifier."""
    gamma = min(MAX_GAMMA, config.tree_spec.max_nodes)
    verifier = config.verifier if config.verifier in ("greedy", "match", "typical") else "sampling"  # rrs, rsd
    return dataclasses.replace(config, tree="", gamma=gamma, verifier=verifier, children="auto")


# ------------------------------------------------------------------------------------------------ rendering
def render(session: Session | Trace | None, round_index: int | None = None, figures: bool = True) -> tuple:
    """(text, graph, mask, α*, tree vs chain, summary, round slider) for a session or a loaded trace (its chain is
    the trace's "chain" companion); the graph, mask and summary show ``round_index`` (default: the latest round).
    ``figures=False`` updates the text only."""
    if session is not None and not figures:
        return (tree_text_html(session.records, session.prompt_text), *[gr.skip()] * 6)
    if session is None:
        return (tree_text_html([]), tree_figure(None), tree_mask_figure(None), alpha_star_figure([]),
                tree_vs_chain_figure({}, None), tree_summary_html(None, {}),
                gr.update(value=0, maximum=1, interactive=False))
    records = session.records
    n = len(records)
    index = n - 1 if round_index is None or not 0 <= round_index < n else round_index
    record = records[index] if n else None
    summary = session.stats.summary()
    chain = _chain_of(session)
    return (tree_text_html(records, session.prompt_text), tree_figure(record), tree_mask_figure(record),
            alpha_star_figure(records), _compare_figure(session, chain), tree_summary_html(record, summary),
            gr.update(value=max(index, 0), maximum=max(n - 1, 1), interactive=n > 1))


def _compare_figure(session: Session | Trace, chain: Session | Trace | None):
    chain_label = f"chain γ={chain.config.gamma}" if chain is not None else "chain"
    return tree_vs_chain_figure(session.stats.summary(), chain.stats.summary() if chain is not None else None,
                                tree_label=_tree_label(session), chain_label=chain_label)


def _tree_label(session: Session | Trace) -> str:
    """"tree 4,2,1 (11 nodes)"; a trace whose settings this build cannot parse shows its shape as written."""
    try:
        spec = session.config.tree_spec
    except DraftScopeError:
        if not isinstance(session, Trace):
            raise
        return f"tree {session.config.tree}"
    return f"tree {spec.label} ({spec.max_nodes} nodes)"


def _status(session: Session, note: str = "") -> str:
    rounds, tokens = len(session.records), len(session.generated_ids)
    head = f"{rounds} round{'s' * (rounds != 1)}, {tokens} token{'s' * (tokens != 1)}"
    head = f"Finished ({session.finish_reason}) after {head}." if session.done else f"{head} so far."
    chain = _chain_of(session)
    if chain is not None:
        tau = chain.stats.tau
        n = len(chain.records)
        head += (f" Chain (γ={chain.config.gamma}): {n} round{'s' * (n != 1)}, {len(chain.generated_ids)} tokens, "
                 f"τ {tau:.2f}." if tau is not None else f" Chain (γ={chain.config.gamma}): not started.")
    return f"{head} {note}".strip()


# ------------------------------------------------------------------------------------------------ the chain
# The chain compared with each session: a second session that lives as long as its session.
_CHAINS = common.CompanionRuns(chain_config)
CHAIN = "chain"  # the chain's label among a trace's companions


def _chain_of(session: Session | Trace) -> Session | Trace | None:
    if isinstance(session, Trace):
        return session.companions.get(CHAIN)
    return _CHAINS.get(session)


# ------------------------------------------------------------------------------------------------ handlers
class Handlers(common.SessionHandlers):
    """Event handlers. ``allow_local`` lets model fields name Hugging Face ids or local directories."""

    ready_message = "Ready: Step for one tree round, Run to go to the end."
    docs: ClassVar[dict[str, str]] = {  # the step / run / reset endpoints' descriptions
        "step": "One tree round (and one round of the chain when the comparison is on).",
        "run": common.SessionHandlers.docs["run"],
        "reset": "Start over with the current settings (and seed): nothing generated yet, the chain started over "
        "too."
    }

    @property
    def setting_names(self) -> tuple[str, ...]:
        return (*HEAD_SETTINGS, *options.option_names(TREE_DRAFTERS, self.allow_local), *TREE_SETTINGS)

    def config(self, settings: dict) -> SessionConfig:
        return tree_config(settings, self.allow_local)

    def prepared(self, session: Session, settings: dict) -> None:
        _CHAINS.sync(session, settings["compare"], self.allow_local)  # the chain comparison follows the settings

    def render(self, session, figures: bool = True) -> tuple:
        return render(session, figures=figures)

    def status(self, session, note: str = "") -> str:
        return _status(session, note)

    def advanced(self, session) -> None:
        _CHAINS.advance(session)  # one chain round per tree round (and catching up once the tree is finished)

    trace_kinds = ("tree",)
    trace_elsewhere = "a chain tab (Speculative decoding, Self-drafting, Across tokenizers)"

    def companions(self, session) -> dict:
        chain = _chain_of(session)
        return {CHAIN: chain} if chain is not None else {}

    def trace_missing(self, trace: Trace) -> str:
        return "" if CHAIN in trace.companions else "The chain comparison is not in this trace (it was off)."

    def show_round(self, state, round_index):
        """Show another round's tree, mask and summary."""
        session = common.get_session((state or {}).get("sid"))
        if session is None or not session.records:
            return tree_figure(None), tree_mask_figure(None), tree_summary_html(None, {})
        index = min(max(int(round_index or 0), 0), len(session.records) - 1)
        record = session.records[index]
        return tree_figure(record), tree_mask_figure(record), tree_summary_html(record, session.stats.summary())


# ------------------------------------------------------------------------------------------------ layout
def build(allow_local_models: bool = False) -> dict:
    """Create the tab's components in the current Blocks context and wire them; return the components."""
    handlers = Handlers(allow_local=allow_local_models)
    gr.Markdown("Each round the drafter grows a **tree** of candidates (children per depth, e.g. `4,2,1`, or an "
                "EAGLE-2 style `budget:N`); the target scores every node in **one** forward with a tree attention "
                "mask and keeps the longest accepted path, then adds a token of its own. With rrs / rsd at a "
                "temperature above 0, each sibling group's acceptance is set beside the optimum α*.")
    state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    prompt, chat = widgets.prompt_row("trees-")
    with gr.Row():
        target = widgets.target_picker("trees-", allow_local_models)
        drafter = gr.Dropdown(TREE_DRAFTERS, value="early-exit", label="Drafter", info="drafters with probabilities",
                              elem_id="trees-drafter")
        drafter_options = options.build(TREE_DRAFTERS, drafter.value, drafter, prefix="trees-",
                                        allow_local=allow_local_models, labels={"exit_layer": EXIT_LAYER_LABEL})
    with gr.Row():
        shape = gr.Textbox(value="4,2,1", label="Tree shape", info="children per depth (4,2,1) or budget:N",
                           max_length=checks.SHORT_TEXT,
                           elem_id="trees-shape")
        tree_branch = gr.Slider(1, MAX_BRANCH, value=4, step=1, label="Branch (budget trees)",
                                elem_id="trees-branch")
        max_depth = gr.Slider(1, 16, value=5, step=1, label="Max depth (budget trees)", elem_id="trees-max-depth")
        children = gr.Dropdown(["auto", *CHILDREN_MODES], value="auto", label="Children",
                               info="auto: top-k for greedy, i.i.d. for rrs, without replacement for rsd",
                               elem_id="trees-children")
    with gr.Row():
        verifier = gr.Dropdown(list(TREE_VERIFIERS), value="rsd", label="Verifier", elem_id="trees-verifier")
        temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0 = greedy)",
                                elem_id="trees-temperature")
        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="trees-seed")
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", elem_id="trees-max-new-tokens")
        compare = gr.Checkbox(value=True, label="Compare with a chain of the same node budget (runs it too)",
                              elem_id="trees-chain")
    with gr.Row():
        buttons = widgets.session_buttons("trees-")
    status = gr.Markdown("Step runs one tree round; Run streams rounds to the end.", elem_id="trees-status")
    trace = widgets.trace_row("trees-")
    text = gr.HTML(tree_text_html([]), elem_id="trees-text")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            summary = gr.HTML(tree_summary_html(None, {}), elem_id="trees-summary")
        with gr.Column(scale=2):
            compare_plot = gr.Plot(tree_vs_chain_figure({}, None), show_label=False, elem_id="trees-compare")
    round_slider = gr.Slider(0, 1, value=0, step=1, label="Round to show", interactive=False, elem_id="trees-round")
    graph = gr.Plot(tree_figure(None), show_label=False, elem_id="trees-graph")
    with gr.Row():
        with gr.Column(scale=1):
            mask = gr.Plot(tree_mask_figure(None), show_label=False, elem_id="trees-mask")
        with gr.Column(scale=1):
            alpha = gr.Plot(alpha_star_figure([]), show_label=False, elem_id="trees-alpha")

    controls = {"prompt": prompt, "chat": chat, "target": target, "drafter": drafter, "shape": shape,
                "tree_branch": tree_branch, "max_depth": max_depth, "children": children, "verifier": verifier,
                "temperature": temperature, "seed": seed, "max_new_tokens": max_new_tokens, "compare": compare,
                **drafter_options.components}
    outputs = [state, text, graph, mask, alpha, compare_plot, summary, round_slider, status, trace.records]
    buttons.wire(handlers, state, [controls[name] for name in handlers.setting_names], outputs, "trees-")
    trace.wire(handlers, state, outputs, status, "trees-")
    round_slider.release(handlers.show_round, [state, round_slider], [graph, mask, summary],
                         api_name="trees_show_round")
    return {"state": state, "prompt": prompt, "target": target, "shape": shape, "verifier": verifier,
            "status": status, "graph": graph}
