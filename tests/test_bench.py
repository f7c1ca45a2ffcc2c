"""A tiny run of the side-by-side benchmark (the full-size run is the CLI, not a test)."""

from core.specdec.bench import format_table, run_bench


def test_tiny_bench_rows():
    rows = run_bench(target="tiny-llama", limit=2, max_new_tokens=8,
                     methods=["hf-prompt-lookup", "ours-none", "ours-ngram", "ours-ngram-norecord"])
    names = [r["method"] for r in rows]
    assert names == ["hf-greedy", "hf-prompt-lookup", "ours-none", "ours-ngram", "ours-ngram-norecord"]
    for r in rows:
        assert r["identical_to_target"], r
        assert r["tokens_per_second"] > 0 and r["tokens"] > 0
    assert rows[0]["speedup"] == 1.0
    assert next(r for r in rows if r["method"] == "ours-none")["tau"] == 1.0
    assert "record overhead" in format_table(rows)


def test_tiny_bench_trees_vs_chains():
    rows = run_bench(target="tiny-llama", limit=2, max_new_tokens=8, tree_exit_layer=3,
                     methods=["ours-ee3-chain-g12", "ours-ee3-tree-3.1.1.1", "ours-ee3-tree-budget12"])
    assert [r["method"] for r in rows][1:] == ["ours-ee3-chain-g12", "ours-ee3-tree-3.1.1.1",
                                               "ours-ee3-tree-budget12"]
    assert all(r["identical_to_target"] and r["tau"] >= 1.0 for r in rows[1:])
    assert "ours-ee3-tree-3.1.1.1 / ours-ee3-chain-g12 (12 nodes each)" in format_table(rows)


def test_forward_cost_sizes():
    from core.specdec.bench import forward_cost

    cost = forward_cost("tiny-llama", prefix_len=16, sizes=(1, 4), repeats=2)
    assert set(cost) == {1, 4} and all(ms > 0 for ms in cost.values())


def test_easyspec_report_tiny():
    from core.specdec.bench import easyspec_report

    report = easyspec_report("tiny-llama", exit_layer=3, group_size=2, per_category=1, max_new_tokens=4)
    assert [r["drafter"] for r in report["rows"]] == ["exact early exit", "easyspec, calibrated",
                                                      "easyspec, no calibration"]
    assert all(r["tau"] >= 1.0 for r in report["rows"])
    assert report["modelled_latency"][1]["speedup"] == 1.0 and report["modelled_latency"][2]["speedup"] >= 1.0
