"""The VAR tab in a real browser (headless Chromium, tiny random VAR checkpoints via ``$DRAFTSCOPE_VAR_ASSETS``):
Generate fills the canvas grid (a cell per run and scale) and the metrics table; moving the N slider re-runs only
CoDe; Step ▶ makes scale 0 with the large drafter.

Saves ``test-artifacts/e2e/var.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

import os

import pytest

from core.var.bundle import ENV_DIR
from tests.e2e.gradio_ui import markdown, open_tab, screenshot, set_slider, wait_idle
from tests.helpers import write_tiny_checkpoints

K = 6  # the tiny tokenizer's scales: 1, 2, 3, 4, 6, 8
# plotly's graph div keeps the figure: count its image traces
_IMAGES = "sel => (document.querySelector(sel)?.data || []).filter(t => t.type === 'image').length"
_TEXT = "([sel, want]) => (document.querySelector(sel)?.innerText || '').includes(want)"


@pytest.fixture(scope="module", autouse=True)
def tiny_var_assets(tmp_path_factory):
    """The app's handlers load the VAR bundle from this directory (read when a handler runs)."""
    previous = os.environ.get(ENV_DIR)
    os.environ[ENV_DIR] = str(write_tiny_checkpoints(tmp_path_factory.mktemp("var-e2e")))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_DIR, None)
        else:
            os.environ[ENV_DIR] = previous


def test_var_tab_generates_moves_the_split_and_steps(app_page):
    page = app_page
    open_tab(page, "VAR", "button#var-generate", exact=True)
    page.locator("button#var-generate").click()

    canvas = "#var-canvas .js-plotly-plot"
    page.wait_for_function(f"sel => ({_IMAGES})(sel) === {3 * K}", arg=canvas, timeout=60_000)
    page.wait_for_function(_TEXT, arg=["#var-metrics", "CoDe N=4"], timeout=20_000)
    wait_idle(page)
    status = markdown(page, "var-status")
    assert status.startswith("Done in") and "CoDe N=4" in status, status
    metrics = page.locator("#var-metrics").inner_text()
    assert "large-only" in metrics and "small-only" in metrics
    assert page.evaluate(_IMAGES, "#var-images .js-plotly-plot") == 3 * 4  # three runs × the default batch of 4

    set_slider(page, "var-split", 2)  # only CoDe re-runs, at N = 2
    page.wait_for_function(_TEXT, arg=["#var-metrics", "CoDe N=2"], timeout=30_000)
    wait_idle(page)
    assert "N = 2: re-ran CoDe only" in markdown(page, "var-status")
    assert page.evaluate(_IMAGES, canvas) == 3 * K

    page.locator("button#var-step").click()
    page.wait_for_function(_TEXT, arg=["#var-step-status", "Scale 0 of"], timeout=30_000)
    wait_idle(page)
    assert "large drafter" in markdown(page, "var-step-status")
    assert page.evaluate(_IMAGES, "#var-step-plot .js-plotly-plot") == 1
    screenshot(page, "var")
