"""The Draft trees tab in a real browser (headless Chromium, tiny target): one Step draws the tree.

Saves ``test-artifacts/e2e/trees.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import PROMPT, TRACE_NAMES, expect, markdown, open_tab, screenshot, wait_plot


def test_trees_tab_step_draws_the_tree(app_page):
    page = app_page
    open_tab(page, "Draft trees", "#trees-prompt textarea", "trees-target")
    page.locator("#trees-chat input[type=checkbox]").uncheck()
    page.locator("#trees-prompt textarea").fill(PROMPT)
    page.locator("button#trees-step").click()

    graph = "#trees-graph .js-plotly-plot"
    names = wait_plot(page, graph, "root", TRACE_NAMES)
    status = markdown(page, "trees-status")
    assert status.startswith("1 round"), status
    assert "accepted" in names or "rejected" in names, names
    boxes = page.locator(f"{graph} .annotation").count()
    assert boxes >= 3, boxes  # the root, at least one drafted node and the target's token
    for elem_id in ("trees-mask", "trees-alpha", "trees-compare"):
        expect(page.locator(f"#{elem_id} .js-plotly-plot")).to_be_visible(timeout=30_000)
    expect(page.locator("#trees-text .tok").first).to_be_visible()
    expect(page.locator("#trees-summary")).to_contain_text("τ so far")
    screenshot(page, "trees")
