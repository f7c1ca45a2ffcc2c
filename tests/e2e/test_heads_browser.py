"""The Draft heads tab in a real browser (headless Chromium): SmolLM2's shipped Hydra heads run on a prompt, the
table shows which head proposed each node and what it read, and the time split is drawn.

Saves ``test-artifacts/e2e/heads.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

import re

from tests.e2e.gradio_ui import choose, expect, open_tab, screenshot, wait_plot


def test_heads_tab_runs_hydra_on_smollm2(app_page):
    page = app_page
    open_tab(page, "Draft heads", "#heads-run")
    choose(page, "heads-target", "smollm2-135m")
    wait_plot(page, "#heads-accuracy .js-plotly-plot", "hydra")
    page.locator("#heads-prompt textarea").fill("Give me three tips for staying focused while studying at home.")
    page.locator("button#heads-suggest").click()
    expect(page.locator("#heads-tree textarea")).to_have_value(re.compile(r"^\[\[0\]"), timeout=30_000)
    page.locator("button#heads-run").click()
    expect(page.locator("#heads-table")).to_contain_text("decision", timeout=120_000)
    expect(page.locator("#heads-status")).to_contain_text("tokens/s", timeout=120_000)
    wait_plot(page, "#heads-time .js-plotly-plot", "heads")
    screenshot(page, "heads")
