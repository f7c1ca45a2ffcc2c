"""The Train your draft tab in a real browser (headless Chromium, tiny target): the coverage curve of the shipped
token counts, and a measured cost model for a VocabTrim'd early exit.

Saves ``test-artifacts/e2e/train_draft.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import TRACE_NAMES, choose, expect, open_tab, screenshot, set_slider, wait_plot


def test_train_draft_tab_measures_the_cost_model(app_page):
    page = app_page
    open_tab(page, "Train your draft", "#train-measure", "train-target")
    wait_plot(page, "#train-coverage .js-plotly-plot", "coverage", TRACE_NAMES)
    choose(page, "train-drafter", "early-exit")
    set_slider(page, "train-vocab-trim", 2048)
    wait_plot(page, "#train-coverage .js-plotly-plot", "k = 2,048", TRACE_NAMES)
    page.locator("button#train-measure").click()
    wait_plot(page, "#train-cost-plot .js-plotly-plot", "verify γ + 1 tokens", TRACE_NAMES)
    expect(page.locator("#train-cost-table")).to_contain_text("break-even τ")
    screenshot(page, "train_draft")
