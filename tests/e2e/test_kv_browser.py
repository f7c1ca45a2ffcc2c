"""The KV importance tab in a real browser (headless Chromium, tiny target and draft model): Run on a short pass-key
prompt fills the prompt heatmap, the layer × KV-head grid, the head map and the outputs table (a row per method);
moving the layer slider re-renders the head map from the stored report; DraftAttention plots its three maps.

Saves ``test-artifacts/e2e/kv.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.gradio_ui import CHROMIUM, TINY_TARGET, choose, screenshot, set_slider, wait_idle

if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                "set $DRAFTSCOPE_CHROMIUM for another path). Never run `playwright install`.", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright Python package")

from playwright.sync_api import expect  # noqa: E402

METHODS = ("snapkv", "streamingllm", "speckv", "specpc")  # the tab's default methods
# plotly's graph div keeps the figure: the ``meta`` of its traces names what each one shows
_TRACE_METAS = "sel => (document.querySelector(sel)?.data || []).map(t => t.meta)"
_TITLE = "sel => document.querySelector(sel)?.layout?.title?.text || ''"


def test_kv_tab_runs_the_methods_and_shows_what_they_kept(app_page):
    page = app_page
    page.get_by_role("tab", name="KV importance").click()
    page.locator("button#kv-run").wait_for(state="visible", timeout=10_000)
    choose(page, "kv-target", TINY_TARGET)  # no-ops when the app's default target is already the tiny one
    choose(page, "kv-drafter", TINY_TARGET)
    choose(page, "kv-task", "passkey")
    set_slider(page, "kv-length", 256)
    set_slider(page, "kv-budget", 32)
    set_slider(page, "kv-max-new-tokens", 6)
    page.locator("button#kv-run").click()

    grid = "#kv-grid .js-plotly-plot"
    page.wait_for_function(f"sel => ({_TRACE_METAS})(sel).includes('grid')", arg=grid, timeout=120_000)
    wait_idle(page, 120_000)
    status = page.locator("#kv-status [data-testid='markdown']").inner_text().strip()
    assert status.startswith("Done in") and "budget 32" in status, status
    assert page.locator("#kv-heatmap .kvt").count() > 200
    assert page.locator("#kv-heatmap .kvt.ev").count() > 0  # 32 of ~250 tokens kept: some evicted everywhere
    rows = page.locator("#kv-outputs tr.kv-run")
    assert rows.count() == len(METHODS)
    assert [rows.nth(k).get_attribute("data-method") for k in range(rows.count())] == list(METHODS)
    expect(page.locator("#kv-outputs tr.kv-full")).to_have_count(1)
    assert "scores" in page.evaluate(_TRACE_METAS, "#kv-head-map .js-plotly-plot")
    assert "scatter" in page.evaluate(_TRACE_METAS, "#kv-correlation .js-plotly-plot")

    set_slider(page, "kv-layer", 2)  # re-rendered from the stored report, no new run
    page.wait_for_function(f"sel => ({_TITLE})(sel).includes('layer 2')", arg="#kv-head-map .js-plotly-plot",
                           timeout=20_000)
    wait_idle(page)
    assert page.locator("#kv-status [data-testid='markdown']").inner_text().strip() == status

    set_slider(page, "kv-da-layer", 1)  # DraftAttention on the same prompt: full map, draft map, selected blocks
    page.locator("button#kv-da-run").click()
    page.wait_for_function(f"sel => ({_TRACE_METAS})(sel).includes('selected')", arg="#kv-da-plot .js-plotly-plot",
                           timeout=60_000)
    wait_idle(page)
    da_status = page.locator("#kv-da-status [data-testid='markdown']").inner_text().strip()
    assert da_status.startswith("DraftAttention on tiny-llama") and "layer 1, head 0" in da_status, da_status
    screenshot(page, "kv")
