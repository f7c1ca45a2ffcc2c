"""The Self-drafting tab in a real browser (headless Chromium, tiny target): one Kangaroo Step at η = 0 plots the
drafter's confidence at each draft step; the η sweep plots τ and tokens/s against η.

Saves ``test-artifacts/e2e/self_draft.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import PROMPT, choose, expect, markdown, open_tab, screenshot, set_slider, wait_idle, wait_plot


def test_self_draft_tab_step_plots_the_confidence(app_page):
    page = app_page
    open_tab(page, "Self-drafting", "#self-draft-prompt textarea", "self-draft-target")
    choose(page, "self-draft-drafter", "kangaroo")
    page.locator("#self-draft-chat input[type=checkbox]").uncheck()
    set_slider(page, "self-draft-eta", 0)  # the tiny random model is never confident: η = 0 lets it draft
    page.locator("#self-draft-prompt textarea").fill(PROMPT)
    page.locator("button#self-draft-step").click()

    plot = "#self-draft-confidence .js-plotly-plot"
    metas = wait_plot(page, plot, "eta")
    status = markdown(page, "self-draft-status")
    assert status.startswith("1 round"), status
    assert "accepted" in metas or "rejected" in metas, metas
    points = page.locator(f"{plot} .scatterlayer .point").count()
    assert points >= 1, points
    expect(page.locator("#self-draft-strip .tok").first).to_be_visible()
    expect(page.locator("#self-draft-summary")).to_contain_text("drafting stopped")

    set_slider(page, "self-draft-max-new-tokens", 6)  # the sweep: five η and plain decoding, 6 tokens each
    page.locator("button#self-draft-sweep").click()
    wait_plot(page, "#self-draft-sweep-plot .js-plotly-plot", "plain")
    assert "η sweep over 6 new tokens" in markdown(page, "self-draft-status")
    screenshot(page, "self_draft")


def test_sorted_drafter_shows_the_exit_of_each_token(app_page):
    """S2D: θ₁ = 0 drafts every token from the first exit; the exit × token chart is a heatmap with the markers on
    the first row."""
    page = app_page
    open_tab(page, "Self-drafting", "#self-draft-prompt textarea", "self-draft-target")
    choose(page, "self-draft-drafter", "sorted")
    page.locator("#self-draft-chat input[type=checkbox]").uncheck()
    set_slider(page, "self-draft-theta1", 0)
    page.locator("#self-draft-prompt textarea").fill(PROMPT)
    page.locator("button#self-draft-reset").click()
    wait_idle(page)
    page.locator("button#self-draft-step").click()
    wait_plot(page, "#self-draft-confidence .js-plotly-plot", "confidence")
    status = markdown(page, "self-draft-status")
    assert "Last round: drafted from layer 1" in status, status
    expect(page.locator("#self-draft-summary")).to_contain_text("exits used")
    screenshot(page, "self_draft_sorted")
