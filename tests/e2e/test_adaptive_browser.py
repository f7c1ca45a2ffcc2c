"""The Adaptive & parallel tab in a real browser (headless Chromium, tiny target): ADED from an empty store that learns
the prompt runs with adaptation on and off, and the round's search and the session curves are drawn; then one run of
the n-gram drafter under the heuristic γ schedule.

Saves ``test-artifacts/e2e/adaptive.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import PROMPT, choose, expect, markdown, open_tab, screenshot, set_slider, wait_plot


def test_adaptive_tab_runs_aded_and_the_gamma_schedule(app_page):
    page = app_page
    open_tab(page, "Adaptive & parallel", "#adaptive-aded-run", "adaptive-target")
    page.locator("#adaptive-chat input[type=checkbox]").uncheck()
    page.locator("#adaptive-prompt textarea").fill(PROMPT)
    set_slider(page, "adaptive-max-new", 12)
    choose(page, "adaptive-aded-store", "empty")
    page.locator("#adaptive-aded-learn-prompt input[type=checkbox]").check()
    page.locator("button#adaptive-aded-run").click()

    metas = wait_plot(page, "#adaptive-aded-curve .js-plotly-plot", "rolling")
    assert metas.count("boosted_keys") == 2, metas  # adapt on and adapt off
    assert "visits" in wait_plot(page, "#adaptive-aded-graph .js-plotly-plot", "visits")
    status = markdown(page, "adaptive-aded-status")
    assert "adapt on" in status and "mean search" in status, status

    page.locator("button#adaptive-len-run").click()
    wait_plot(page, "#adaptive-len-plot .js-plotly-plot", "gamma")
    expect(page.locator("#adaptive-len-status")).to_contain_text("schedule heuristic")
    screenshot(page, "adaptive")
