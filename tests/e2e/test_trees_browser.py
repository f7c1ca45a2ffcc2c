"""The Draft trees tab in a real browser (headless Chromium, tiny target): one Step draws the tree.

Saves ``test-artifacts/e2e/trees.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.gradio_ui import CHROMIUM, TINY_TARGET, choose, screenshot, wait_idle

if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                "set $DRAFTSCOPE_CHROMIUM for another path). Never run `playwright install`.", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright Python package")

from playwright.sync_api import expect  # noqa: E402

PROMPT = "the cat sat on the mat. the cat sat on the"
# plotly's graph div keeps the figure: the names of its traces, and its annotations (one box per tree node)
_TRACE_NAMES = "sel => (document.querySelector(sel)?.data || []).map(t => t.name)"


def test_trees_tab_step_draws_the_tree(app_page):
    page = app_page
    page.get_by_role("tab", name="Draft trees").click()
    page.locator("#trees-prompt textarea").wait_for(state="visible", timeout=10_000)
    choose(page, "trees-target", TINY_TARGET)  # no-op when the app's default target is already the tiny one
    page.locator("#trees-chat input[type=checkbox]").uncheck()
    page.locator("#trees-prompt textarea").fill(PROMPT)
    page.locator("button#trees-step").click()

    graph = "#trees-graph .js-plotly-plot"
    page.wait_for_function(f"sel => ({_TRACE_NAMES})(sel).includes('root')", arg=graph, timeout=60_000)
    wait_idle(page)
    status = page.locator("#trees-status [data-testid='markdown']").inner_text().strip()
    assert status.startswith("1 round"), status
    names = page.evaluate(_TRACE_NAMES, graph)
    assert "accepted" in names or "rejected" in names, names
    boxes = page.locator(f"{graph} .annotation").count()
    assert boxes >= 3, boxes  # the root, at least one drafted node and the target's token
    for elem_id in ("trees-mask", "trees-alpha", "trees-compare"):
        expect(page.locator(f"#{elem_id} .js-plotly-plot")).to_be_visible(timeout=30_000)
    expect(page.locator("#trees-text .tok").first).to_be_visible()
    expect(page.locator("#trees-summary")).to_contain_text("τ so far")
    screenshot(page, "trees")
