"""KV presses: every method at a budget ≥ the prompt reproduces the full-cache output; scorers and selection against
brute-force references; captured attention against eager attention; cross-tokenizer offsets; tasks, reports, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from core.attention.capture import capture_attention
from core.cli import main as cli_main
from core.errors import DraftScopeError
from core.kv import PRESSES
from core.kv.base import PressContext, group_max, max_pool, prefill, select_kv, select_tokens, stacked
from core.kv.offsets import char_spans, transfer_scores
from core.kv.run import decode, kv_report, parse_budget
from core.kv.speckv import SpecKVPress
from core.kv.tasks import make_task
from core.runtime.cache import keep_per_head


@pytest.fixture(scope="module")
def report_keep_all(tiny_llama):
    return kv_report(tiny_llama, tiny_llama, task="passkey", length=160, methods=list(PRESSES), budgets=[4096],
                     max_new_tokens=10)


@pytest.mark.parametrize("method", list(PRESSES))
def test_budget_above_the_prompt_reproduces_the_full_cache(report_keep_all, method):
    run = next(r for r in report_keep_all.runs if r.method == method)
    assert run.output_ids == report_keep_all.full.output_ids
    assert run.agreement == 1.0 and run.recall == pytest.approx(1.0)
    assert run.kv_bytes == report_keep_all.full.kv_bytes


def test_small_budgets_evict_and_are_measured(tiny_llama):
    report = kv_report(tiny_llama, tiny_llama, task="passkey", length=200, methods=list(PRESSES), budgets=[40],
                       max_new_tokens=8)
    n = len(report.prompt_ids)
    for run in report.runs:
        assert run.budget == 40 and run.kv_bytes == report.full.kv_bytes * 40 // n
        assert 0 <= run.recall <= 1 and 0 <= run.agreement <= 1 and len(run.layer_correlation) == report.n_layers
        assert sum(k > 0 for k in run.kept) <= n and max(run.kept) <= report.n_layers * report.n_kv_heads
        if run.level == "kv":
            assert all(len(h) == 40 for layer in run.head_kept for h in layer)
            assert all(k > 0 for k in run.kept[-20:])  # the observation window (half the budget here) stays
        else:
            assert sum(k > 0 for k in run.kept) == 40
    assert next(r for r in report.runs if r.method == "speckv").draft_ms > 0


def test_captured_attention_equals_eager(tiny_llama):
    ids = tiny_llama.encode("the cat sat on the mat and the dog sat on the rug, " * 3)
    x = torch.tensor([ids])
    with torch.inference_mode():
        reference = tiny_llama.model(x).logits
        with capture_attention(tiny_llama.model, window=5, column_sums=True) as captured:
            logits = tiny_llama.model(x).logits
        tiny_llama.model.set_attn_implementation("eager")
        try:
            eager = tiny_llama.model(x, output_attentions=True).attentions
        finally:
            tiny_llama.model.set_attn_implementation("sdpa")
    assert tiny_llama.model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    for layer, att in enumerate(eager):
        torch.testing.assert_close(captured.window_probs[layer], att[0, :, -5:].float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(captured.column_sums[layer], att[0].float().sum(1), atol=1e-4, rtol=0)


def test_scorers_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(2, 4, 12, generator=gen)
    grouped = group_max(scores, 2)  # 4 query heads, 2 KV heads: heads (0, 1) and (2, 3)
    for layer in range(2):
        for h in range(2):
            assert torch.equal(grouped[layer, h], torch.maximum(scores[layer, 2 * h], scores[layer, 2 * h + 1]))
    pooled = max_pool(scores, 3)
    for j in range(12):
        assert torch.equal(pooled[..., j], scores[..., max(0, j - 1): j + 2].amax(-1))
    keep = select_kv(grouped, budget=5, window=2)
    for layer in range(2):
        for h in range(2):
            row = grouped[layer, h]
            best = sorted(range(10), key=lambda j: -float(row[j]))[:3]
            assert keep[layer, h].tolist() == sorted(best) + [10, 11]
    assert select_tokens(grouped[0, 0], 5, 2) == keep[0, 0].tolist()
    assert select_kv(grouped, budget=50, window=2).shape[-1] == 12
    assert select_tokens(grouped[0, 0], 1, 4) == [11]  # the window is cut to the budget


def test_keep_per_head_gathers_per_head(tiny_llama):
    ids = tiny_llama.encode("one two three four five six seven eight nine ten")
    cache, _, _ = prefill(tiny_llama, ids)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    n_heads = before[0][0].shape[1]
    keep = torch.stack([torch.stack([torch.tensor([0, h + 1, len(ids) - 1]) for h in range(n_heads)])
                        for _ in cache.layers])
    keep_per_head(cache, keep)
    for (keys, values), layer, keep_Hk in zip(before, cache.layers, keep):
        for h in range(n_heads):
            assert torch.equal(layer.keys[0, h], keys[0, h, keep_Hk[h]])
            assert torch.equal(layer.values[0, h], values[0, h, keep_Hk[h]])


def test_speckv_drops_the_lookahead_from_the_cache(tiny_llama):
    ids = tiny_llama.encode("a b c d e f g h i j k l m n o p")
    ctx = PressContext(target=tiny_llama, prompt_ids=ids, prompt_text="", budget=8, max_new_tokens=5,
                       drafter=tiny_llama)
    pre = SpecKVPress().prefill(ctx)
    assert pre.cache.get_seq_length() == len(ids) and pre.scores_LHn.shape[-1] == len(ids)
    assert ctx.info["lookahead_tokens"] > 0
    cache, logits, _ = prefill(tiny_llama, ids)
    torch.testing.assert_close(pre.first_logits, logits[-1], atol=1e-4, rtol=0)  # the first token is the same
    assert decode(tiny_llama, pre.cache, pre.first_logits, len(ids), 6) == decode(tiny_llama, cache, logits[-1],
                                                                                   len(ids), 6)


MIXED = "Héllo, wörld!  Ça va? 3.14 — naïve café, 東京 and emoji 🙂 end.\nNew line: tabs\there."


def test_cross_tokenizer_offsets_round_trip(tiny_llama, tiny_gemma):
    """Per character, the index of its word; a token's value is the max over its characters. Moving values from
    SmolLM2's tokens to Gemma's (and back) gives each token exactly the max over its own characters."""
    words = [0] * len(MIXED)
    w = 0
    for i, ch in enumerate(MIXED):
        w += ch.isspace()
        words[i] = w

    def truth(spans):
        return torch.tensor([float(max(words[s:max(e, s + 1)])) for s, e in spans])

    smol, gemma = char_spans(tiny_llama.tokenizer, MIXED), char_spans(tiny_gemma.tokenizer, MIXED)
    assert len(smol) != len(gemma)  # really two tokenizations
    to_gemma = transfer_scores(smol, truth(smol), gemma)
    back = transfer_scores(gemma, to_gemma, smol)
    # a destination token gets the max of the source tokens overlapping it: never below its own truth, and equal
    # where the source tokens overlapping it do not spill over a word boundary
    assert torch.all(to_gemma >= truth(gemma)) and torch.all(back >= truth(smol))
    assert (to_gemma == truth(gemma)).float().mean() > 0.8 and (back == truth(smol)).float().mean() > 0.8


def test_tasks():
    from core.runtime.models import load_model

    tok = load_model("tiny-llama").tokenizer
    task = make_task("passkey", tok, length=512, seed=3)
    n = len(tok(task.prompt)["input_ids"])
    assert 450 <= n <= 520 and task.answer in task.prompt and task.correct(f"is {task.answer}.")
    multi = make_task("multikey", tok, length=400, seed=1)
    assert multi.prompt.count(". The pass key for") + multi.prompt.count("them. The pass key for") >= 3
    assert multi.prompt.count("The pass key for") == 5 and multi.answer in multi.prompt  # 4 keys + the question
    doc = make_task("doc-qa", tok, seed=2)
    assert doc.answer in doc.prompt.split("Question:")[0]
    assert make_task("summarization", tok).answer is None
    with pytest.raises(DraftScopeError, match="length"):
        make_task("passkey", tok, length=10)
    with pytest.raises(DraftScopeError, match="unknown task"):
        make_task("nope", tok)


def test_report_errors(tiny_llama, tiny_gemma):
    assert parse_budget("0.25", 400) == 100 and parse_budget(64, 400) == 64
    for bad in ("0", "-3", "1.5", "x"):
        with pytest.raises(DraftScopeError, match="budget"):
            parse_budget(bad, 400)
    with pytest.raises(DraftScopeError, match="unknown method"):
        kv_report(tiny_llama, tiny_llama, methods=["nope"])
    with pytest.raises(DraftScopeError, match="empty"):
        kv_report(tiny_llama, tiny_llama, prompt="   ", methods=["snapkv"])
    with pytest.raises(DraftScopeError, match="sliding-window"):
        kv_report(tiny_gemma, None, methods=["snapkv"], length=100)
    with pytest.raises(DraftScopeError, match="draft model"):
        kv_report(tiny_llama, None, methods=["speckv"], length=100)


def test_specpc_guides_a_target_with_another_tokenizer(tiny_gemma, tiny_llama):
    """Token-level compression works on Gemma (sliding windows) and across tokenizers (offsets)."""
    report = kv_report(tiny_gemma, tiny_llama, task="passkey", length=200, methods=["specpc"], budgets=[64],
                       max_new_tokens=4)
    run = report.runs[0]
    assert sum(k > 0 for k in run.kept) == 64 and run.kept[0] > 0  # BOS (a sink) is kept
    assert len(run.output_ids) == len(report.full.output_ids)


def test_cli_kv_json(capsys):
    code = cli_main(["kv", "--target", "tiny-llama", "--length", "160", "--budget", "32,64", "--max-new-tokens", "4",
                     "--methods", "snapkv,streamingllm,speckv,specpc", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["method"] == "full" and len(rows) == 1 + 4 * 2
    for row in rows:
        required = {"method", "budget", "accuracy", "agreement", "recall", "prefill_ms", "decode_ms", "kv_bytes"}
        assert required <= set(row)
    assert cli_main(["kv", "--target", "tiny-llama", "--methods", "nope"]) == 2
    assert "error: unknown method" in capsys.readouterr().err
    assert cli_main(["kv", "--target", "tiny-llama", "--budget", "0"]) == 2


def test_stacked_orders_layers():
    assert stacked({1: torch.ones(2), 0: torch.zeros(2)})[0].sum() == 0


def test_sorted_exit_guide_is_the_s2d_drafter(smollm2):
    """The S2D guide for speckv / specpc is the drafter's deepest exit as a causal LM: its logits are the exit's."""
    from core.kv.run import guide_model
    from core.runtime.layers import embed, run_layers
    from core.specdec.drafters.sorted import SortedDrafter

    guide = guide_model(smollm2, "sorted", None)
    assert guide.n_layers == 10 and guide.tokenizer is smollm2.tokenizer
    ids = smollm2.encode("The lighthouse keeper wrote the weather in a green notebook")
    exits = SortedDrafter(smollm2).exits
    with torch.inference_mode():
        logits = guide.model(torch.tensor([ids])).logits[0, -1].float()
        x = run_layers(smollm2.model, embed(smollm2.model, ids), 0, 10, None, 0, layers=exits.layers)
        expected = smollm2.model.lm_head(exits.norms[-1](x))[0, -1].float()
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_capture_reaches_copied_layers(smollm2):
    """A guide built from copied layers (S2D's exits) is captured too, and every config is restored."""
    from core.kv.run import guide_model

    guide = guide_model(smollm2, "sorted", None)
    ids = smollm2.encode("one two three four five six seven eight")
    _, _, captured = prefill(guide, ids, window=3)
    assert sorted(captured.window_probs) == list(range(10))
    assert {m.config._attn_implementation for m in guide.model.modules() if hasattr(m, "config")} == {"sdpa"}


def test_captured_attention_respects_sliding_windows(tiny_gemma):
    """Gemma 3's sliding-window layers (window 8 in the tiny model) attend to the last 8 keys only: so does the
    capture (against eager attention weights, prompt longer than the window)."""
    ids = tiny_gemma.encode("one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    x = torch.tensor([ids])
    with torch.inference_mode():
        with capture_attention(tiny_gemma.model, window=4) as captured:
            tiny_gemma.model(x)
        tiny_gemma.model.set_attn_implementation("eager")
        try:
            eager = tiny_gemma.model(x, output_attentions=True).attentions
        finally:
            tiny_gemma.model.set_attn_implementation("sdpa")
    assert len(ids) > 12
    for layer, att in enumerate(eager):
        torch.testing.assert_close(captured.window_probs[layer], att[0, :, -4:].float(), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ press options
@pytest.mark.parametrize("method", list(PRESSES))
def test_every_press_is_its_own_options_dataclass(method):
    """kvpress style: the press's fields are its options, each with a default and a help comment; kv presses keep a
    recent window."""
    from core.options import option_fields

    cls = PRESSES[method]
    assert cls.Options is cls and cls.name == method and cls.level in ("kv", "tokens")
    fields = option_fields(cls.Options)
    for f in fields:
        assert f.help and f.help != f.name, (method, f.name)
        assert f.kind in (int, float, bool, str) and f.default is not None, (method, f.name)
    assert cls.level == "tokens" or "window" in {f.name for f in fields}
    cls()  # the defaults are valid


def test_press_options_are_checked_and_window_kernel_reach_every_kv_press():
    from core.kv import build_press
    from core.kv.run import build_presses

    assert build_press("snapkv") == PRESSES["snapkv"](window=32, kernel=7)  # the defaults as before
    specpc = build_press("specpc")
    assert (specpc.window, specpc.kernel, build_press("streamingllm").sinks) == (64, 32, 4)
    with pytest.raises(DraftScopeError, match="unknown option 'widow' for the 'snapkv' method"):
        build_press("snapkv", {"widow": 3})
    with pytest.raises(DraftScopeError, match=r"kernel must be in 1\.\.129"):
        build_press("speckv", {"kernel": 0})
    with pytest.raises(DraftScopeError, match=r"window must be in 1\.\.512"):
        build_presses(["tova"], window=0)
    presses = build_presses(list(PRESSES), {"speckv": {"window": 8}}, window=16, kernel=3)
    assert [p.window for p in presses.values()] == [16, 16, 16, 16, 8, 64]  # specpc keeps its own window
    assert (presses["snapkv"].kernel, presses["speckv"].kernel, presses["specpc"].kernel) == (3, 3, 32)
    with pytest.raises(DraftScopeError, match="unknown method 'nope'"):
        build_presses(["snapkv"], {"nope": {}})
    with pytest.raises(DraftScopeError, match="unknown option 'sinks' for the 'tova' method"):
        build_presses(["snapkv"], {"tova": {"sinks": 2}})  # checked even when not chosen


def test_report_takes_press_options(tiny_llama):
    with pytest.raises(DraftScopeError, match="unknown option 'kernel' for the 'streamingllm' method"):
        kv_report(tiny_llama, tiny_llama, methods=["streamingllm"], press_options={"streamingllm": {"kernel": 3}})
    report = kv_report(tiny_llama, None, task="passkey", length=160, methods=["streamingllm"], budgets=[24],
                       max_new_tokens=2, press_options={"streamingllm": {"sinks": 0, "window": 4}})
    n = len(report.prompt_ids)
    assert [k > 0 for k in report.runs[0].kept] == [False] * (n - 24) + [True] * 24  # no sinks: the 24 most recent
    assert report.settings["press_options"] == {"streamingllm": {"window": 4, "sinks": 0}}


def test_a_scorer_press_is_a_score_method(tiny_llama):
    """The ScorerPress base prefills, captures what the press asks for and wraps its scores."""
    from dataclasses import dataclass

    from core.kv.base import ScorerPress

    @dataclass
    class LastQueries(ScorerPress):
        name = "last-queries"
        queries = 3

        def score(self, ctx, captured):
            n = len(ctx.prompt_ids)
            return group_max(stacked(captured.window_probs)[..., :n].sum(2), ctx.target.config.num_key_value_heads)

    ids = tiny_llama.encode("a b c d e f g h i j k l m n o p")
    ctx = PressContext(target=tiny_llama, prompt_ids=ids, prompt_text="", budget=8, max_new_tokens=5)
    pre = LastQueries().prefill(ctx)
    _, logits, captured = prefill(tiny_llama, ids, window=3)
    assert pre.cache.get_seq_length() == len(ids) and LastQueries.Options is LastQueries
    torch.testing.assert_close(pre.first_logits, logits[-1])
    kv_heads = tiny_llama.config.num_key_value_heads
    torch.testing.assert_close(pre.scores_LHn, group_max(stacked(captured.window_probs).sum(2), kv_heads))


def test_cli_kv_press_flags(capsys):
    def run(*argv):
        code = cli_main(["kv", "--target", "tiny-llama", *argv])
        return code, capsys.readouterr()

    code, out = run("--methods", "snapkv", "--specpc-window", "8")
    assert code == 2 and out.err.startswith("error: --specpc-window is not an option of 'snapkv'")
    assert out.err.count("\n") == 1
    code, out = run("--methods", "snapkv", "--kernel", "0")
    assert code == 2 and out.err == "error: kernel must be in 1..129, got 0\n"
    code, out = run("--methods", "snapkv", "--sinks", "x")
    assert code == 2 and out.err.startswith("error: argument --sinks: invalid int value")
    code, out = run("--length", "160", "--budget", "32", "--max-new-tokens", "2", "--methods", "snapkv,specpc",
                    "--window", "8", "--kernel", "3", "--specpc-window", "16", "--json")
    assert code == 0, out.err
    assert [row["method"] for row in json.loads(out.out)] == ["full", "snapkv", "specpc"]
