"""A tiny run of the side-by-side benchmark (the full-size run is the CLI, not a test)."""

from core.bench import format_table, run_bench


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
