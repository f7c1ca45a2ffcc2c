"""The KV importance tab in a real browser (headless Chromium, tiny target and draft model): Run on a short pass-key
prompt fills the prompt heatmap, the layer × KV-head grid, the head map and the outputs table (a row per method);
moving the layer slider re-renders the head map from the stored report; DraftAttention plots its three maps.

Saves ``test-artifacts/e2e/kv.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import (
    TINY_TARGET,
    TRACE_METAS,
    choose,
    expect,
    markdown,
    open_tab,
    screenshot,
    set_slider,
    wait_idle,
    wait_plot,
)

METHODS = ("snapkv", "streamingllm", "speckv", "specpc")  # the tab's default methods
_TITLE = "sel => document.querySelector(sel)?.layout?.title?.text || ''"


def test_kv_tab_runs_the_methods_and_shows_what_they_kept(app_page):
    page = app_page
    open_tab(page, "KV importance", "button#kv-run", "kv-target")
    choose(page, "kv-drafter", TINY_TARGET)
    choose(page, "kv-task", "passkey")
    set_slider(page, "kv-length", 256)
    set_slider(page, "kv-budget", 32)
    set_slider(page, "kv-max-new-tokens", 6)
    page.locator("button#kv-run").click()

    grid = "#kv-grid .js-plotly-plot"
    wait_plot(page, grid, "grid", timeout=120_000)
    status = markdown(page, "kv-status")
    assert status.startswith("Done in") and "budget 32" in status, status
    assert page.locator("#kv-heatmap .kvt").count() > 200
    assert page.locator("#kv-heatmap .kvt.ev").count() > 0  # 32 of ~250 tokens kept: some evicted everywhere
    rows = page.locator("#kv-outputs tr.kv-run")
    assert rows.count() == len(METHODS)
    assert [rows.nth(k).get_attribute("data-method") for k in range(rows.count())] == list(METHODS)
    expect(page.locator("#kv-outputs tr.kv-full")).to_have_count(1)
    assert "scores" in page.evaluate(TRACE_METAS, "#kv-head-map .js-plotly-plot")
    assert "scatter" in page.evaluate(TRACE_METAS, "#kv-correlation .js-plotly-plot")

    set_slider(page, "kv-layer", 2)  # re-rendered from the stored report, no new run
    page.wait_for_function(f"sel => ({_TITLE})(sel).includes('layer 2')", arg="#kv-head-map .js-plotly-plot",
                           timeout=20_000)
    wait_idle(page)
    assert markdown(page, "kv-status") == status

    set_slider(page, "kv-da-layer", 1)  # DraftAttention on the same prompt: full map, draft map, selected blocks
    page.locator("button#kv-da-run").click()
    wait_plot(page, "#kv-da-plot .js-plotly-plot", "selected")
    da_status = markdown(page, "kv-da-status")
    assert da_status.startswith("DraftAttention on tiny-llama") and "layer 1, head 0" in da_status, da_status
    screenshot(page, "kv")


def test_cancel_stops_a_running_kv_run(app_page):
    """A long KV run, then Cancel under the tab: the line beside it says it is cancelling, the run ends without
    results (the status stays as it was), the page is idle again and the next run goes to the end."""
    page = app_page
    open_tab(page, "KV importance", "button#kv-run")
    choose(page, "kv-target", "smollm2-135m")  # SmolLM2 at ~2k tokens: a minute of work (the tiny model: 1 s)
    choose(page, "kv-drafter", TINY_TARGET)
    choose(page, "kv-task", "passkey")
    set_slider(page, "kv-length", 1984)
    set_slider(page, "kv-max-new-tokens", 6)
    page.locator("button#kv-run").click()
    page.wait_for_timeout(2000)
    page.locator("button#kv-cancel").click()
    before = markdown(page, "kv-status")
    page.wait_for_function("() => (document.querySelector('#kv-cancel-note')?.innerText || '').includes('Cancelling')",
                           timeout=10_000)
    wait_idle(page, 60_000)
    assert markdown(page, "kv-status") == before
    screenshot(page, "kv_cancelled")
    choose(page, "kv-target", TINY_TARGET)
    set_slider(page, "kv-length", 256)
    page.locator("button#kv-run").click()
    wait_plot(page, "#kv-grid .js-plotly-plot", "grid", timeout=120_000)
    assert markdown(page, "kv-status").startswith("Done in")
