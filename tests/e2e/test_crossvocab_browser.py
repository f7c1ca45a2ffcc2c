"""The Across tokenizers tab in a real browser (headless Chromium, tiny models): OmniDraft with the tiny Gemma target
and the tiny llama (SmolLM2's tokenizer) as draft model. One Step draws the round's alignment (drafter row, merge
brackets, target row); Run goes to the end and plots acceptance with learning on and off, and the n-gram cache.

Saves ``test-artifacts/e2e/crossvocab.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import PROMPT, choose, expect, markdown, open_tab, screenshot, set_slider, wait_idle, wait_plot


def test_crossvocab_tab_steps_and_compares_learning(app_page):
    page = app_page
    open_tab(page, "Across tokenizers", "#crossvocab-prompt textarea")
    choose(page, "crossvocab-target", "tiny-gemma")
    choose(page, "crossvocab-draft-model", "tiny-llama")
    page.locator("#crossvocab-chat input[type=checkbox]").uncheck()
    page.locator("#crossvocab-prompt textarea").fill(PROMPT)
    set_slider(page, "crossvocab-max-new-tokens", 6)
    page.locator("button#crossvocab-step").click()

    alignment = page.locator("#crossvocab-alignment")
    expect(alignment.locator(".cv-target").first).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert alignment.locator(".cv-draft").count() >= alignment.locator(".cv-target").count() >= 1
    assert alignment.locator(".cv-bracket").count() == alignment.locator(".cv-target").count()
    expect(alignment).to_contain_text("round 0")
    status = markdown(page, "crossvocab-status")
    assert status.startswith("1 round") and "Learning off, 1 round" in status, status

    page.locator("button#crossvocab-run").click()
    wait_plot(page, "#crossvocab-acceptance .js-plotly-plot", "running")
    page.wait_for_function("() => document.querySelector('#crossvocab-status [data-testid=markdown]')"
                           "?.innerText.startsWith('Finished')", timeout=60_000)
    metas = page.evaluate("sel => (document.querySelector(sel)?.data || []).map(t => t.meta)",
                          "#crossvocab-acceptance .js-plotly-plot")
    assert metas.count("acceptance") == 2 and metas.count("running") == 2, metas  # learning on and off
    assert "cache_size" in wait_plot(page, "#crossvocab-cache-plot .js-plotly-plot", "cache_size")
    screenshot(page, "crossvocab")
