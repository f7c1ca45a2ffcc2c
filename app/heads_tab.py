"""The "Draft heads" tab: Medusa and Hydra heads read the target's own last hidden state, so drafting costs a small
MLP per head and a trimmed LM head — no model call. The tab shows how fast each head's accuracy decays with depth
(Hydra's point: its heads see the branch, so deeper heads stay better), runs the heads on a prompt and shows, per
round, which head proposed each node and what it read, and where the time goes.

The heads also sit in the drafter lists of the main and trees tabs (step by step there).
"""

from __future__ import annotations

import json

import gradio as gr

from app import common, limits, widgets
from core import checks
from core.errors import DraftScopeError
from core.runtime.models import load_model
from core.specdec import Session, SessionConfig
from core.specdec.drafters import build_drafter
from core.specdec.drafters.falcon import shipped_meta as falcon_meta
from core.specdec.drafters.heads import shipped_meta, suggested_paths
from core.specdec.trace import Trace, trace_of
from core.specdec.verify import build_verifier
from visualizers.heads import head_accuracy_figure, head_round_html, time_split_figure
from visualizers.tree_graph import tree_figure

VERIFIERS = ("greedy", "match", "typical")
CHOICES = {"medusa": ("medusa", {}), "hydra": ("hydra", {}), "hydra++": ("hydra", {"plus": True}),
           "falcon": ("falcon", {})}  # the tab's choice → (drafter, options)
FALCON_GAMMA = 4  # Falcon's chain: two forwards of two tokens
DEFAULT_NODES = 8
MAX_RUN_TOKENS = 256


def accuracy_results(target: str) -> dict[str, dict]:
    """Held-out accuracies of the heads (and of Falcon's two block positions) shipped for ``target``."""
    target = (target or "").strip()
    results = {arch: meta.get("val") or {} for arch, meta in shipped_meta(target).items()}
    falcon = falcon_meta(target).get("val") or {}
    if falcon:
        results["falcon"] = {"top1": [falcon["top1_pos1"], falcon["top1_pos2"]], "chain_tau": falcon.get("tau_g2")}
    return results


def default_tree(target: str, arch: str, nodes: int = DEFAULT_NODES) -> str:
    """The static tree Medusa's recipe picks from the shipped heads' held-out accuracies ("" without them)."""
    val = accuracy_results(target).get(arch) or {}
    if not val.get("rank_acc"):  # Falcon: no per-rank accuracies; its tree is written by hand (e.g. 3,2)
        return ""
    return json.dumps([list(p) for p in suggested_paths(val["rank_acc"], nodes)], separators=(",", ":"))


def show_accuracy(target: str) -> tuple:
    results = accuracy_results(target)
    note = ("Held-out accuracy of the shipped heads (teacher-forced: each head reads the target's own earlier tokens). "
            "Chain τ: the greedy chain the heads draft with their own picks, replayed on held-out target answers."
            if results else "No trained heads ship for this target: `python -m core.train.heads --arch medusa`.")
    return head_accuracy_figure(results), note


def suggest(target: str, arch: str, nodes) -> str:
    tree = default_tree(target, arch, int(nodes or DEFAULT_NODES))
    return tree or gr.skip()


def run_heads(target: str, arch: str, tree: str, verifier: str, temperature, prompt: str, chat: bool,
              max_new_tokens, state=None, progress=gr.Progress()) -> tuple:
    """Run the heads on the prompt to the end; the records go to the round viewer (and, as a trace, to the records
    JSON: the last output)."""
    try:
        prompt = common.check_prompt(prompt)
        if arch not in CHOICES:
            raise DraftScopeError(f"pick a drafter: {', '.join(CHOICES)}")
        n = int(max_new_tokens)
        if not 1 <= n <= MAX_RUN_TOKENS:
            raise DraftScopeError(f"max new tokens must be in 1..{MAX_RUN_TOKENS} here")
        progress(0.05, desc="loading")
        model = load_model((target or "").strip())
        name, options = CHOICES[arch]
        drafter = build_drafter(name, model, options)
        config = SessionConfig(target=model.name, drafter=name, verifier=verifier, drafter_options=options,
                               gamma=getattr(drafter, "n_heads", FALCON_GAMMA), temperature=float(temperature),
                               max_new_tokens=n, tree=checks.text("the tree", tree, checks.SHORT_TEXT).strip())
        limits.check_tree(config)
        session = Session(model, drafter, build_verifier(verifier), model.encode(prompt, chat=bool(chat)), config)
        for record in progress.tqdm(session.run(), total=None, desc="rounds"):
            del record
        return _show(session.records, session, arch, state)
    except Exception as exc:  # every failure becomes one line on the page
        raise common.failure(exc) from None


def _show(records: list, session: Session, arch: str, state) -> tuple:
    s = session.stats.summary()
    note = (f"{len(records)} rounds, {len(session.generated_ids)} tokens, τ {s.get('tau') or 0:.2f}, "
            f"{s.get('tokens_per_second') or 0:.1f} tokens/s, drafter cost c = {session.drafter.cost:.4f} "
            f"of a target step ({arch}, {session.verifier.name}"
            f"{', NOT lossless' if not session.verifier.lossless else ''}).")
    before = [_last_token_text(session, r) for r in records]
    return (*_views(records, before, arch, state), note, trace_of(session, {"arch": arch, "before": before}))


def _views(records: list, before: list[str], arch: str, state=None) -> tuple:
    """(state, table, graph, time split, round slider) at the first round; the records are kept in the session store
    (in place of ``state``'s)."""
    first = records[0] if records else None
    kept = common.hold({"records": records, "before": before, "arch": arch}, "the heads run", state)
    return (kept, head_round_html(first, before[0] if before else "", arch),
            tree_figure(first) if _is_tree(first) else tree_figure(None), time_split_figure(records),
            gr.update(value=0, maximum=max(len(records) - 1, 1), interactive=len(records) > 1))


def load_trace(file) -> tuple:
    """Show a saved run of the heads with no model: the same outputs as Run heads. A trace without the tab's extras
    (e.g. from ``generate --trace``) shows its rounds without the token each round started after."""
    try:
        trace: Trace = common.read_trace(file)
        drafters = {name for name, _ in CHOICES.values()}
        if trace.config.drafter not in drafters:
            raise DraftScopeError(f"this trace is of the '{trace.config.drafter}' drafter; this tab shows "
                                  f"{', '.join(CHOICES)}: load it in the Speculative decoding or Draft trees tab")
        arch = trace.extra.get("arch")
        if arch not in CHOICES:
            plus = trace.config.drafter == "hydra" and trace.config.drafter_options.get("plus")
            arch = "hydra++" if plus else trace.config.drafter
        before = trace.extra.get("before")
        missing = ""
        if not (isinstance(before, list) and len(before) == len(trace.records)
                and all(isinstance(b, str) for b in before)):
            before = [""] * len(trace.records)
            missing = "The token before each round is not in this trace."
        return (*_views(trace.records, before, arch), common.loaded_status(trace, missing), trace.as_dict())
    except Exception as exc:
        raise common.failure(exc) from None


def _last_token_text(session: Session, record) -> str:
    return session.target.token_text(session.tokens[record.start_position - 1])


def _is_tree(record) -> bool:
    return record is not None and hasattr(record, "nodes")


def show_round(state, index) -> tuple:
    """The round at ``index`` of the last run."""
    kept = common.held(state, required=False)
    if not kept or not kept["records"]:
        return head_round_html(None), tree_figure(None)
    records, before, arch = kept["records"], kept["before"], kept["arch"]
    i = max(0, min(int(index or 0), len(records) - 1))
    record = records[i]
    return (head_round_html(record, before[i], arch),
            tree_figure(record) if _is_tree(record) else tree_figure(None))


def build(allow_local_models: bool = False) -> dict:
    gr.Markdown("**Draft heads** read the target's own last hidden state h<sub>t</sub>: head k proposes the token "
                "k + 2 ahead (the target's own head gives the next one), through a trimmed copy of the target's LM "
                "head. **Medusa**'s heads read h<sub>t</sub> only; **Hydra**'s also read the tokens drafted before "
                "them on the branch. A static tree (Medusa's format: paths of top-k indices) is verified in one "
                "target forward. `match` is lossless with these deterministic top-k children at any temperature; "
                "`typical` is Medusa's typical acceptance — faster, **not lossless**.")
    with gr.Row():
        target = widgets.target_picker("heads-", allow_local_models)
        arch = gr.Dropdown(list(CHOICES), value="hydra", label="Drafter", elem_id="heads-arch")
        verifier = gr.Dropdown(list(VERIFIERS), value="greedy", label="Verifier", elem_id="heads-verifier")
        temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature", elem_id="heads-temperature")
    accuracy = gr.Plot(head_accuracy_figure({}), show_label=False, elem_id="heads-accuracy")
    note = gr.Markdown(elem_id="heads-note")
    prompt, chat = widgets.prompt_row("heads-")
    with gr.Row():
        tree = gr.Textbox(value=default_tree(common.default_target(), "hydra"), label="Tree (empty: a chain of K)",
                          max_length=checks.SHORT_TEXT,
                          info="paths of top-k indices, e.g. [[0],[1],[0,0]], or children per depth like 2,1",
                          elem_id="heads-tree", scale=3)
        nodes = gr.Slider(1, 16, value=DEFAULT_NODES, step=1, label="Suggested tree size", elem_id="heads-nodes")
        suggest_button = gr.Button("Suggest tree", elem_id="heads-suggest")
        max_new = gr.Slider(8, MAX_RUN_TOKENS, value=64, step=8, label="Max new tokens", elem_id="heads-max-new")
    with gr.Row():
        run = gr.Button("Run heads", variant="primary", elem_id="heads-run")
        status = gr.Markdown(elem_id="heads-status")
    trace = widgets.trace_row("heads-")
    state = gr.State({}, time_to_live=common.state_ttl(), delete_callback=common.forget)
    round_slider = gr.Slider(0, 1, value=0, step=1, label="Round", interactive=False, elem_id="heads-round")
    with gr.Row():
        graph = gr.Plot(tree_figure(None), show_label=False, elem_id="heads-graph")
        table = gr.HTML(head_round_html(None), elem_id="heads-table")
    split = gr.Plot(time_split_figure([]), show_label=False, elem_id="heads-time")

    gr.on(None, show_accuracy, [target], [accuracy, note], api_visibility="private")
    suggest_button.click(suggest, [target, arch, nodes], tree, api_name="heads_suggest_tree")
    outputs = [state, table, graph, split, round_slider, status, trace.records]
    run.click(run_heads, [target, arch, tree, verifier, temperature, prompt, chat, max_new, state], outputs,
              api_name="heads_run", **limits.long_work())
    trace.wire_records(load_trace, outputs, status, "heads-")
    round_slider.change(show_round, [state, round_slider], [table, graph], api_visibility="private")
    return {"target": target, "arch": arch, "verifier": verifier, "temperature": temperature, "tree": tree,
            "nodes": nodes, "prompt": prompt, "chat": chat, "max_new": max_new, "run": run, "status": status,
            "state": state, "round": round_slider, "graph": graph, "table": table, "split": split,
            "accuracy": accuracy, "note": note}
