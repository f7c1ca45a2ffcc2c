"""The benchmark matrix (core.specdec.matrix), rejection statistics (core.specdec.rejection), the target entropy in
the records, ``bench --matrix`` and the Benchmark tab's handlers, on tiny-llama (no real model, no timing asserts)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.cli import main
from core.errors import DraftScopeError
from core.prompts import Prompt, load_prompts
from core.specdec import SessionConfig, generate, matrix as mx
from core.specdec.bench import first_per_category
from core.specdec.drafters import DRAFTERS
from core.specdec.records import Alternative, DraftedToken, EmittedToken, StepRecord, TreeNode, TreeStepRecord
from core.specdec.rejection import events, rejection_stats, summarize, token_class
from tests.helpers import app_error

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = ["none", "ngram", "early-exit-3-g4"]
NEW_TOKENS = 10


def _prompts() -> list[Prompt]:
    return [p for p in first_per_category(load_prompts(), 2) if p.category in ("chat", "math")]


@pytest.fixture(scope="module")
def counted(tmp_path_factory, tiny_llama):
    """One real run (and its cache folder), with a count of the sessions our runner built."""
    import core.specdec.bench as bench

    calls = {"ours": 0}
    real = bench._ours

    def counting(*args, **kwargs):
        run = real(*args, **kwargs)

        def wrapped(ids, n):
            calls["ours"] += 1
            return run(ids, n)
        return wrapped

    folder = tmp_path_factory.mktemp("matrix-cache")
    mp = pytest.MonkeyPatch()
    mp.setattr(mx, "_ours", counting)
    try:
        result = mx.run_matrix("tiny-llama", mx.matrix_configs("tiny-llama", CONFIGS), _prompts(), NEW_TOKENS,
                               cache_dir=folder)
        first_calls = calls["ours"]
        again = mx.run_matrix("tiny-llama", mx.matrix_configs("tiny-llama", CONFIGS), _prompts(), NEW_TOKENS,
                              cache_dir=folder)
        second_calls = calls["ours"] - first_calls
    finally:
        mp.undo()
    return {"result": result, "again": again, "first_calls": first_calls, "second_calls": second_calls,
            "folder": folder}


# ------------------------------------------------------------------------------------------------ configurations
def test_every_drafter_is_planned_or_skipped_with_a_reason(tiny_llama):
    configs = mx.matrix_configs(tiny_llama)
    drafters = {c.drafter for c in configs.values()} | {name.split("-")[0] for name in configs.skipped}
    for name in DRAFTERS:
        assert name in drafters or any(k == name or k.startswith(f"{name}-") for k in configs.skipped), name
    assert {"none", "ngram", "early-exit"} <= set(configs)
    assert "kangaroo" in configs  # an adapter ships for tiny-llama
    assert "FastDraft drafter not shipped for 'tiny-llama'" in configs.skipped["fastdraft"]
    assert all(reason for reason in configs.skipped.values())


def test_subset_by_name_and_drafter(tiny_llama):
    assert list(mx.matrix_configs(tiny_llama, ["early-exit", "ngram-g2"])) == ["ngram-g2", "early-exit"]
    picked = mx.matrix_configs(tiny_llama, ["ngram-g2", "early-exit*"])
    assert list(picked) == ["ngram-g2", "early-exit", "early-exit-3-g4", "early-exit-3-tree-3.1.1.1",
                            "early-exit-3-g4-vt8k"]
    with pytest.raises(DraftScopeError, match="no configuration that can run on 'tiny-llama' matches 'falcon\\*'"):
        mx.matrix_configs(tiny_llama, ["falcon*"])
    with pytest.raises(DraftScopeError, match="unknown matrix configuration 'nope'; choose from none, ngram"):
        mx.matrix_configs(tiny_llama, ["nope"])
    with pytest.raises(DraftScopeError, match="'fastdraft-g2' cannot run on 'tiny-llama': FastDraft drafter not"):
        mx.matrix_configs(tiny_llama, ["fastdraft-g2"])
    with pytest.raises(DraftScopeError, match="'medusa' cannot run on 'tiny-llama': medusa heads not shipped for"):
        mx.matrix_configs(tiny_llama, ["medusa"])


# ------------------------------------------------------------------------------------------------ a real tiny run
def test_blocks_have_the_raw_counts_and_add_up(counted):
    result = counted["result"]
    assert result["schema"] == mx.SCHEMA and result["version"] == mx.VERSION
    assert [r["config"] for r in result["rows"]] == CONFIGS
    assert result["categories"] == ["chat", "math"] and result["prompts"] == ["chat-1", "chat-2", "math-1", "math-2"]
    assert {"cpu_count", "torch_threads", "device", "platform"} <= set(result["machine"])
    for row in result["rows"]:
        blocks = [row["overall"], *row["by_category"].values()]
        for b in blocks:
            assert set(mx.RAW_KEYS) | {"draft_s", "verify_s"} <= set(b)
            assert sum(b["accepted_at"]) == b["accepted"]
            assert b["tokens"] == b["generated"] and b["rounds"] == b["target_calls"]
            assert b["identical"] is True  # greedy: lossless
            cond = [a / r if r else None for a, r in zip(b["accepted_at"], b["reached"])]
            assert b["acceptance_conditional"] == [None if c is None else round(c, 4) for c in cond]
            assert b["acceptance_unconditional"] == [round(a / b["draft_rounds"], 4) for a in b["accepted_at"]]
            assert b["speedup"] == pytest.approx(b["tokens_per_second"] / b["hf_tokens_per_second"], rel=1e-3)
        overall, cats = row["overall"], list(row["by_category"].values())
        for key in ("rounds", "drafted", "accepted", "target_calls", "generated", "tokens", "draft_rounds"):
            assert overall[key] == sum(b[key] for b in cats), key
        for key in ("reached", "accepted_at"):
            summed: list[int] = []
            for b in cats:
                summed = mx._add_lists(summed, b[key])
            assert overall[key] == summed, key
    none = result["rows"][0]["overall"]
    assert none["drafted"] == 0 and none["tau"] == 1.0 and none["reached"] == []
    ee = result["rows"][2]
    assert ee["overall"]["drafted"] > 0 and ee["gamma"] == 4 and ee["options"] == {"exit_layer": 3}
    assert ee["rejections"]["totals"]["verified"] == sum(ee["overall"]["reached"])  # a chain: one compare per reach


def test_cache_hit_skips_every_session(counted):
    result, again = counted["result"], counted["again"]
    assert counted["first_calls"] == len(CONFIGS) * (1 + 4)  # warm-up + four prompts
    assert counted["second_calls"] == 0
    assert all(r["cached"] for r in again["rows"]) and not any(r["cached"] for r in result["rows"])
    assert [r["overall"] for r in again["rows"]] == [r["overall"] for r in result["rows"]]
    assert len(list(counted["folder"].glob("*.json"))) == len(CONFIGS)


def test_one_new_config_runs_alone(counted, monkeypatch):
    import core.specdec.bench as bench

    ran = []
    real = bench._ours

    def spy(target, drafter, options=None, **settings):
        ran.append(drafter)
        return real(target, drafter, options, **settings)

    monkeypatch.setattr(mx, "_ours", spy)
    out = mx.run_matrix("tiny-llama", mx.matrix_configs("tiny-llama", ["ngram", "ngram-g2"]), _prompts(),
                        NEW_TOKENS, cache_dir=counted["folder"])
    assert ran == ["ngram"] and [r["cached"] for r in out["rows"]] == [True, False]  # ngram-g2 is the new one
    assert out["rows"][1]["overall"]["hf_seconds"] > 0  # HF greedy measured again in this run


def test_save_and_load_matrix(counted, tmp_path):
    path = mx.save_matrix(counted["result"], tmp_path / "m.json")
    assert mx.load_matrix(path) == json.loads(json.dumps(counted["result"]))
    with pytest.raises(DraftScopeError, match="matrix file not found"):
        mx.load_matrix(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DraftScopeError, match="is not JSON"):
        mx.load_matrix(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(DraftScopeError, match="not a DraftScope matrix"):
        mx.load_matrix(tmp_path / "other.json")
    (tmp_path / "old.json").write_text(json.dumps({**counted["result"], "version": 99}))
    with pytest.raises(DraftScopeError, match="matrix version 99; this DraftScope reads version 1"):
        mx.load_matrix(tmp_path / "old.json")
    (tmp_path / "rows.json").write_text(json.dumps({"schema": mx.SCHEMA, "version": 1, "target": "t"}))
    with pytest.raises(DraftScopeError, match="lacks categories, prompts, rows"):
        mx.load_matrix(tmp_path / "rows.json")
    assert mx.shipped_matrix("no-such-target") is None
    table = mx.format_matrix(counted["result"])
    assert "| config | chat | math | mean |" in table and "| early-exit-3-g4 |" in table


# ------------------------------------------------------------------------------------------------ rejection statistics
@pytest.mark.parametrize("text, token_id, expected", [
    ("<|im_start|>", None, "special"), ("<end_of_turn>", None, "special"), ("hello", 7, "special"),
    ("\n\n", None, "whitespace/newline"), (" ", None, "whitespace/newline"), (" 42", None, "digits"),
    ("3.5", None, "digits"), (".", None, "punctuation"), (" (", None, "punctuation"), ("{", None, "code symbols"),
    (" ==", None, "code symbols"), (" the", None, "word start"), ("\u0120the", None, "word start"),
    ("\u2581the", None, "word start"), ("ing", None, "word continuation"), ("\ufffd", None, "other")])
def test_token_classes(text, token_id, expected):
    assert token_class(text, token_id, special_ids=[7] if token_id else None) == expected


def _drafted(i, text, decision, p, q, entropy, top):
    return DraftedToken(position=10 + i, id=100 + i, text=text, decision=decision, q=q, p=p, p_entropy=entropy,
                        p_topk=[Alternative(1, top, 0.9)] if decision != "unverified" else [])


def _chain_record(step=3):
    drafted = [_drafted(0, " the", "accepted", 0.8, 0.95, 0.1, " the"),
               _drafted(1, ",", "rejected", 0.05, 0.4, 2.5, " and"),
               _drafted(2, " 42", "unverified", None, 0.3, None, "")]
    emitted = EmittedToken(position=11, id=1, text=" and", kind="resampled", p=0.9, rank_p=1)
    return StepRecord(step=step, drafter="x", verifier="greedy", start_position=10, drafted=drafted, emitted=emitted,
                      accepted=1, committed_ids=[100, 1], committed_text=" the and", draft_ms=1, verify_ms=1,
                      prefill_ms=0, total_ms=2, target_cache_len=12, drafter_cache_len=None, finished=False)


def _tree_record():
    def node(i, parent, depth, text, decision, tried):
        return TreeNode(index=i, parent=parent, depth=depth, id=200 + i, text=text, q=None, path_q=None, p=0.3,
                        decision=decision, tried=tried, p_entropy=0.7)

    nodes = [node(0, -1, 0, " a", "rejected", True), node(1, -1, 0, " b", "accepted", True),
             node(2, 1, 1, "{", "rejected", True), node(3, 1, 1, " c", "skipped", False),
             node(4, 0, 1, " d", "unreached", False)]
    emitted = EmittedToken(position=21, id=5, text=" e", kind="resampled", p=0.6, rank_p=1)
    return TreeStepRecord(step=0, drafter="x", verifier="greedy", shape="2,2", children_mode="topk",
                          start_position=20, nodes=nodes, groups=[], path=[1], emitted=emitted, accepted=1,
                          committed_ids=[201, 5], committed_text=" b e", draft_ms=1, verify_ms=1, prefill_ms=0,
                          total_ms=2, target_cache_len=22, drafter_cache_len=None, finished=False)


def test_rejection_stats_on_hand_built_records():
    stats = rejection_stats([("p1", "chat", [_chain_record()]), ("p2", "code", [_tree_record()])])
    assert stats["totals"] == {"verified": 5, "accepted": 2, "rejected": 3, "acceptance": 0.4}
    assert [(b["position"], b["verified"], b["rejected"]) for b in stats["by_position"]] == [(0, 3, 1), (1, 2, 2)]
    entropy = {b["bin"]: (b["verified"], b["rejected"]) for b in stats["by_entropy"]}
    assert entropy == {"0–0.25": (1, 0), "0.5–1": (3, 2), "2–3": (1, 1)}
    confidence = {b["bin"]: b["verified"] for b in stats["by_confidence"]}
    assert confidence == {"0.3–0.5": 1, "0.9–1": 1, "no q (model-free)": 3}
    classes = {b["bin"]: (b["verified"], b["rejected"]) for b in stats["by_token_class"]}
    assert classes == {"punctuation": (1, 1), "code symbols": (1, 1), "word start": (3, 1)}
    assert {b["bin"]: b["rejected"] for b in stats["by_category"]} == {"chat": 1, "code": 2}
    top = {r["text"]: r for r in stats["top_rejected"]}
    assert set(top) == {",", " a", "{"}
    assert top[","]["examples"] == [{"prompt_id": "p1", "round": 3, "position": 1, "token_position": 11,
                                     "drafted": ",", "preferred": " and"}]
    assert top[" a"]["examples"][0]["preferred"] == " b"  # the accepted sibling
    assert top["{"]["examples"][0]["preferred"] == " e"  # the target's token after the path
    assert top[","]["rejection_rate"] == 1.0


def test_most_rejected_tokens_keep_three_examples():
    records = [_chain_record(step) for step in range(5)]
    stats = summarize(events("p", "chat", records))
    first = stats["top_rejected"][0]
    assert first["text"] == "," and first["rejected"] == 5 and len(first["examples"]) == 3
    assert [e["round"] for e in first["examples"]] == [0, 1, 2]


def test_rejection_stats_of_a_real_run_add_up(counted):
    row = counted["result"]["rows"][2]
    r, o = row["rejections"], row["overall"]
    assert r["totals"]["accepted"] == o["accepted"]
    assert sum(b["verified"] for b in r["by_token_class"]) == r["totals"]["verified"]
    assert sum(b["verified"] for b in r["by_entropy"]) == r["totals"]["verified"]
    assert [b["verified"] for b in r["by_position"]] == o["reached"]


# ------------------------------------------------------------------------------------------------ target entropy
def test_p_entropy_matches_the_target_distribution(tiny_llama):
    ids = tiny_llama.encode("Count to five.")
    session = generate(SessionConfig(target="tiny-llama", drafter="early-exit", gamma=3, max_new_tokens=6,
                                     drafter_options={"exit_layer": 3}), prompt_ids=ids)
    record = session.records[0]
    with torch.inference_mode():
        logits = tiny_llama.model(torch.tensor([ids])).logits[0, -1].float()
    expected = float(torch.special.entr(torch.softmax(logits, -1)).sum())
    first = record.drafted[0]
    assert first.p_entropy == pytest.approx(expected, abs=1e-3)
    for r in session.records:
        for d in r.drafted:
            assert (d.p_entropy is None) == (d.decision == "unverified")
            if d.p_entropy is not None:
                assert 0 <= d.p_entropy <= math.log(tiny_llama.vocab_size) + 1e-6
    assert type(record).from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_p_entropy_on_tree_nodes(tiny_llama):
    ids = tiny_llama.encode("Count to five.")
    session = generate(SessionConfig(target="tiny-llama", drafter="early-exit", gamma=3, max_new_tokens=6,
                                     tree="2,1", drafter_options={"exit_layer": 3}), prompt_ids=ids)
    nodes = session.records[0].nodes
    assert all(n.p_entropy is not None and 0 <= n.p_entropy <= math.log(tiny_llama.vocab_size) + 1e-6
               for n in nodes)
    roots = [n.p_entropy for n in nodes if n.parent == -1]
    assert max(roots) - min(roots) < 1e-9  # siblings share their parent's distribution


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_matrix_table_and_out(counted, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mx, "default_cache_dir", lambda: counted["folder"])  # the run above: loaded, not run
    out = tmp_path / "sub" / "matrix.json"
    code = main(["bench", "--matrix", "--target", "tiny-llama", "--configs", ",".join(CONFIGS), "--per-category",
                 "1", "--prompts", str(_subset_file(tmp_path)), "--max-new-tokens", str(NEW_TOKENS), "--out",
                 str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "| config | chat | math | mean |" in printed and "| ngram |" in printed
    assert [r["config"] for r in mx.load_matrix(out)["rows"]] == CONFIGS


def _subset_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "category": p.category, "prompt": p.prompt}) + "\n"
                            for p in _prompts()))
    return path


@pytest.mark.parametrize("argv, message", [
    (["--configs", "nope"], "error: unknown matrix configuration 'nope'"),
    (["--configs", ","], "error: --configs names no configuration"),
    (["--max-new-tokens", "0"], "error: argument --max-new-tokens: must be in 1..4096"),
    (["--per-category", "0"], "error: argument --per-category: must be in 1.."),
])
def test_cli_matrix_bad_input_exits_2(argv, message, capsys):
    assert main(["bench", "--matrix", "--target", "tiny-llama", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


# ------------------------------------------------------------------------------------------------ visualizers and tab
def test_visualizers_and_tab_handlers(counted, monkeypatch):
    from app import bench_tab
    from visualizers.matrix import heatmap_figure, position_figure, rejection_figure, top_rejected_html

    result = counted["result"]
    fig = heatmap_figure(result)
    assert list(fig.data[0].x) == ["chat", "math", "overall", "mean of categories"]
    assert list(fig.data[0].y) == CONFIGS
    broken = json.loads(json.dumps(result))
    broken["rows"][1]["by_category"]["math"]["identical"] = False
    assert "✗" in heatmap_figure(broken).data[0].text[1][1]
    assert len(position_figure(result, ["early-exit-3-g4"]).data) == 2  # both conventions
    assert len(rejection_figure(result["rows"][2]["rejections"]).data) == 8
    html = top_rejected_html(result["rows"][2]["rejections"])
    assert "prompt chat-1, round" in html or "prompt math-1, round" in html

    monkeypatch.setattr(mx, "default_cache_dir", lambda: counted["folder"])
    handlers = bench_tab.Handlers()
    empty = handlers.show("tiny-llama")  # nothing ships for tiny-llama
    assert empty[0] is None and "No matrix ships for 'tiny-llama'" in empty[1]
    shipped = mx.save_matrix(result, counted["folder"].parent / "matrix-tiny-llama.json")
    monkeypatch.setattr(mx, "shipped_path", lambda target: shipped)
    view = handlers.show("tiny-llama")
    assert view[0]["rows"] == json.loads(json.dumps(result["rows"])) and view[1].startswith("Shipped matrix")
    monkeypatch.setattr(mx, "shipped_path", lambda target: counted["folder"] / "none.json")
    monkeypatch.setattr(bench_tab, "first_per_category", lambda prompts, n: _prompts())
    out = handlers.run("tiny-llama", CONFIGS, 1, NEW_TOKENS, progress=lambda *a, **k: None)
    assert [r["config"] for r in out[0]["rows"]] == CONFIGS and "3 loaded from the cache" in out[1]
    assert handlers.rejections(out[0], "ngram")[1]
    assert "choose at least one configuration" in app_error(handlers.run, "tiny-llama", [], 1, NEW_TOKENS,
                                                            progress=lambda *a, **k: None)


# ------------------------------------------------------------------------------------------------ held-out halves
def test_select_prompts_rebuilds_the_blocks(counted):
    result = counted["result"]
    every = mx.select_prompts(result, result["prompts"])
    assert [r["overall"] for r in every["rows"]] == [r["overall"] for r in result["rows"]]
    half = mx.select_prompts(result, ["chat-1", "math-2"])
    assert half["prompts"] == ["chat-1", "math-2"] and half["categories"] == ["chat", "math"]
    for row, full in zip(half["rows"], result["rows"], strict=True):
        kept = [r for r in full["per_prompt"] if r["id"] in ("chat-1", "math-2")]
        assert row["overall"]["generated"] == sum(r["generated"] for r in kept)
        assert row["overall"]["accepted"] == sum(r["accepted"] for r in kept)
        assert row["overall"]["hf_seconds"] == pytest.approx(sum(r["hf_seconds"] for r in kept), abs=1e-3)
    with pytest.raises(DraftScopeError, match="not in this matrix"):
        mx.select_prompts(result, ["chat-9"])


def test_holdout_halves_and_the_recommend_cli(counted, tmp_path, capsys):
    from core.specdec.recommend import holdout_halves

    result = counted["result"]
    report = holdout_halves(result)
    assert report["halves"] == [["chat-1", "math-1"], ["chat-2", "math-2"]]
    assert report["n"] == len(report["rows"]) == sum(f["n"] for f in report["folds"]) > 0
    assert report["within"] == sum(r["within"] for r in report["rows"])
    for r in report["rows"]:  # each prediction is scored against the other half's measurement
        assert r["within"] == (abs(r["predicted"] - r["measured"]) <= 0.15 * r["measured"] + 1e-9)
    path = mx.save_matrix(result, tmp_path / "m.json")
    assert main(["bench", "--recommend", "--target", "tiny-llama", "--matrix-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. ") and "predicted" in out and "   - " in out  # ranked, with reasons
    assert main(["bench", "--recommend", "--holdout", "--target", "tiny-llama", "--matrix-file", str(path)]) == 0
    assert f"of {report['n']} predictions within ±15%" in capsys.readouterr().out
    one = mx.save_matrix(mx.select_prompts(result, ["chat-1", "math-1"]), tmp_path / "one.json")
    for argv, message in ((["--matrix-file", str(one), "--holdout"], "error: a held-out check needs at least two"),
                          ([], "error: no benchmark matrix ships for 'tiny-llama'"),
                          (["--matrix-file", str(path), "--top", "0"], "error: argument --top: must be in 1..")):
        assert main(["bench", "--recommend", "--target", "tiny-llama", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), err


def test_recommender_accordion_learns_from_your_runs(counted, tiny_llama, monkeypatch):
    from app import bench_tab

    shipped = mx.save_matrix(counted["result"], counted["folder"].parent / "matrix-for-recommender.json")
    monkeypatch.setattr(mx, "shipped_path", lambda target: shipped)
    monkeypatch.setattr(bench_tab, "_RECOMMENDERS", {})
    fig, card, status = bench_tab.recommend("tiny-llama", bench_tab.ALL, 0.0, 3)
    assert "predicted" in status and fig.data and "<" in card
    assert "no runs of yours yet" in app_error(bench_tab.recommend, "tiny-llama", bench_tab.YOUR_RUNS, 0.0, 3)
    session = generate(SessionConfig(target="tiny-llama", drafter="ngram", max_new_tokens=12),
                       prompt_ids=tiny_llama.encode("1 2 3 1 2 3 1 2 3"))
    bench_tab.observe_session(session)
    assert bench_tab.YOUR_RUNS in bench_tab._categories("tiny-llama")
    fig, card, status = bench_tab.recommend("tiny-llama", bench_tab.YOUR_RUNS, 0.0, 2)
    assert status.startswith(f"For {bench_tab.YOUR_RUNS}") and fig.data
    plot, summary = bench_tab.holdout(counted["result"])
    assert "predictions within ±15 %" in summary and plot.data
    assert "no matrix shown" in app_error(bench_tab.holdout, None)
    monkeypatch.setattr(bench_tab, "_RECOMMENDERS", {})
    monkeypatch.setattr(mx, "shipped_path", lambda target: counted["folder"] / "none.json")
    assert "no benchmark matrix for 'tiny-llama'" in app_error(bench_tab.recommend, "tiny-llama", bench_tab.ALL, 0.0, 3)


# ------------------------------------------------------------------------------------------------ examples → step view
def _step_view(counted):
    """The Benchmark tab's open-example call with the step tab's handlers and option names, as app.main wires it."""
    from app import bench_tab, generate_tab

    step = generate_tab.Handlers()
    names = [n for n in step.setting_names if n not in generate_tab.RUN_SETTINGS]
    return bench_tab, step, names


def test_example_session_replays_the_matrix_round(counted):
    """A deterministic drafter replayed on an example's prompt drafts and loses the same token at the same round."""
    result = counted["result"]
    row = next(r for r in result["rows"] if r["config"] == "early-exit-3-g4")
    example = row["rejections"]["top_rejected"][0]["examples"][0]
    session = mx.example_session(result, "early-exit-3-g4", example["prompt_id"], example["round"])
    assert len(session.records) == example["round"] + 1 or session.done
    drafted = session.records[example["round"]].drafted[example["position"]]
    assert drafted.text == example["drafted"] and drafted.decision == "rejected"
    with pytest.raises(DraftScopeError, match="no configuration"):
        mx.example_session(result, "nope", example["prompt_id"], 0)
    with pytest.raises(DraftScopeError, match="not one of this matrix's prompts"):
        mx.example_session(result, "ngram", "qa-9", 0)


def test_open_in_step_view_fills_the_step_tab_and_step_goes_on(counted):
    from app.generate_tab import RUN_SETTINGS

    bench_tab, step, names = _step_view(counted)
    result = counted["result"]
    row = next(r for r in result["rows"] if r["config"] == "early-exit-3-g4")
    choices = bench_tab.example_choices(row["rejections"])
    assert choices and all(label.count("→") == 1 and "round" in label for label, _ in choices)
    key = choices[0][1]
    prompt_id, round_index, _ = key.split("|")
    out = bench_tab.open_in_step_view(result, "early-exit-3-g4", key, {}, False, step, names,
                                      lambda *a, **k: None)
    assert len(out) == 8 + len(RUN_SETTINGS) + len(names) + 2
    state, strip, _, _, inspector, slider, status, records = out[:8]
    settings = dict(zip(RUN_SETTINGS, out[8:8 + len(RUN_SETTINGS)], strict=True))
    option_updates = dict(zip(names, out[8 + len(RUN_SETTINGS):-2], strict=True))
    assert "The replay drafted the same rejected token" in status and f"prompt {prompt_id}" in status
    assert slider["value"] == int(round_index) and records["records"]
    assert "token" in strip and inspector is not None
    assert out[-2].selected == "generate" and out[-1].startswith("Opened in the step view")
    assert (settings["drafter"]["value"], settings["verifier"]["value"], settings["gamma"]["value"]) == \
        ("early-exit", "greedy", 4)
    assert option_updates["exit_layer"]["value"] == 3
    # Step in the step tab goes on with the same session and drafter: the controls now hold the replayed settings
    values = {k: u["value"] for k, u in settings.items()}
    values.update({n: u.get("value") for n, u in option_updates.items()})  # gr.skip(): another drafter's
    session = bench_tab.common.get_session(state["sid"])
    before, drafter = len(session.records), session.drafter
    after = step._step(state, values, lambda *a, **k: None)
    assert after[0]["sid"] == state["sid"] and session.drafter is drafter and "Changed" not in after[-2]
    assert len(session.records) == before + 1 or (session.done and "Already finished" in after[-2])


@pytest.mark.parametrize("config, example, message", [
    ("early-exit-3-g4", "", "choose an example"),
    ("early-exit-3-g4", "garbage", "not an example"),
    ("nope", "chat-1|0|0", "no configuration 'nope'"),
])
def test_open_in_step_view_refuses_bad_input(counted, config, example, message):
    bench_tab, step, names = _step_view(counted)
    with pytest.raises(DraftScopeError, match=message):
        bench_tab.open_in_step_view(counted["result"], config, example, {}, False, step, names,
                                    lambda *a, **k: None)
    with pytest.raises(DraftScopeError, match="no matrix is shown"):
        bench_tab.open_in_step_view(None, config, "chat-1|0|0", {}, False, step, names, lambda *a, **k: None)


def test_the_app_wires_the_link():
    from app.main import build_demo

    demo = build_demo()
    assert "bench_open_example" in {fn.api_name for fn in demo.fns.values()}
    ids = {c["props"].get("elem_id") for c in demo.config["components"]}
    assert {"bench-example", "bench-open-example", "bench-example-status"} <= ids
