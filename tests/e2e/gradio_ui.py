"""Helpers for driving the DraftScope Gradio page with Playwright (shared by the e2e fixtures and tests).

Screenshots go to ``test-artifacts/e2e/`` under the repository root (or ``$DRAFTSCOPE_ARTIFACTS``).

Gradio 6 DOM facts these helpers rely on (checked with gradio 6.31):
- ``elem_id`` becomes the ``id`` of the component's wrapper ``<div class="block">``, except for ``gr.Button``, where it
  is the ``<button>`` itself. Inside the wrapper: Textbox → ``<textarea>``; Dropdown → ``<input role="combobox">``
  whose ``aria-controls`` names the ``<ul role="listbox">`` of ``<li role="option" aria-label="TEXT">`` shown on
  click; Slider → ``<input type="number">`` plus ``<input type="range">``; HTML → ``div.html-container`` holding the
  markup; Markdown → ``[data-testid="markdown"]``; Plot (plotly) → ``.js-plotly-plot`` (an empty Plot shows
  ``[aria-label="Empty value"]`` instead).
- Every output block holds a ``[data-testid="status-tracker"]`` whose class list contains ``hide`` when idle (and
  ``pending``/``translucent``/``generating`` while an event runs); its progress text is part of the block's
  ``inner_text``, so read a Markdown's own text from ``[data-testid="markdown"]``.
- ``gr.Error``/``gr.Warning`` show as ``.toast-body.error`` / ``.toast-body.warning``.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DRAFTSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TINY_TARGET = "tiny-llama"
ROUND_TIMEOUT_MS = 60_000  # one round, including the first model load
VIEWPORT = {"width": 1280, "height": 1000}

# A round marker in the token strip. The strip's legend also holds a ``.round-sep`` (the key "n"); only real round
# markers carry a title ("round k: drafted …").
ROUND_SEP = "#token-strip .round-sep[title]"
TOKEN = "#token-strip .tok"
TOKEN_KINDS = ("accepted", "rejected", "resampled", "bonus")
PROMPT = "the cat sat on the mat. the cat sat on the"  # the tabs' test prompt (plain text: chat off)
# plotly's graph div keeps the figure: what each of its traces shows (``meta``), and their names
TRACE_METAS = "sel => (document.querySelector(sel)?.data || []).map(t => t.meta)"
TRACE_NAMES = "sel => (document.querySelector(sel)?.data || []).map(t => t.name)"


def expect(actual, *args, **kwargs):
    """Playwright's ``expect``, imported when first used: the test modules import without playwright, and the
    ``browser`` fixture skips their tests when it or Chromium is missing."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(actual, *args, **kwargs)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("DRAFTSCOPE_ARTIFACTS") or REPO / "test-artifacts" / "e2e")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ page helpers
def choose(page, elem_id: str, option_text: str, timeout: float = 10_000) -> None:
    """Pick ``option_text`` in the Gradio dropdown ``#elem_id`` by clicking it open and clicking the option."""
    box = page.locator(f"#{elem_id} input[role='combobox']")
    if box.input_value() == option_text:
        return
    box.click()
    listbox = box.get_attribute("aria-controls")  # the id of the <ul role="listbox"> this dropdown opens
    options = page.locator(f"#{listbox} [role='option']" if listbox else "[role='listbox'] [role='option']")
    options.first.wait_for(state="visible", timeout=timeout)
    # Each option is <li role="option" aria-label="TEXT"><span>✓</span> TEXT</li> (the tick hidden unless selected).
    option = options.and_(page.locator(f"[aria-label={_css_string(option_text)}]"))
    if option.count() == 0:
        option = options.filter(has_text=re.compile(rf"^\W*{re.escape(option_text)}\s*$"))
    option.first.click(timeout=timeout)
    page.wait_for_function("([sel, want]) => document.querySelector(sel)?.value === want",
                           arg=[f"#{elem_id} input[role='combobox']", option_text], timeout=timeout)
    wait_idle(page)


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_slider(page, elem_id: str, value: float) -> None:
    """Type ``value`` into the number box of the Gradio slider ``#elem_id`` (the range input follows)."""
    box = page.locator(f"#{elem_id} input[type='number']")
    box.fill(str(value))
    box.press("Enter")
    box.blur()
    page.wait_for_function("([sel, want]) => Number(document.querySelector(sel)?.value) === want",
                           arg=[f"#{elem_id} input[type='range']", float(value)], timeout=5_000)


def wait_idle(page, timeout: float = ROUND_TIMEOUT_MS) -> None:
    """Wait until no Gradio status tracker on the page shows a running event (a tracker left showing "Error" by an
    event that raised gr.Error is idle: it stays until the next event of those outputs)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"status-tracker\"]')]"
        ".every(t => t.classList.contains('hide') || t.innerText.trim() === 'Error')", timeout=timeout)


def markdown(page, elem_id: str) -> str:
    """The text of the Markdown ``#elem_id`` (without its status tracker's progress text), stripped."""
    return page.locator(f"#{elem_id} [data-testid='markdown']").inner_text().strip()


def wait_plot(page, plot: str, want: str, script: str = TRACE_METAS, timeout: float = ROUND_TIMEOUT_MS) -> list:
    """Wait until the plotly figure ``plot`` (a selector) has a trace ``want`` (``script``: TRACE_METAS or
    TRACE_NAMES) and the page is idle; returns what ``script`` lists for every trace."""
    page.wait_for_function(f"sel => ({script})(sel).includes('{want}')", arg=plot, timeout=timeout)
    wait_idle(page, timeout)
    return page.evaluate(script, plot)


def rounds(page) -> int:
    return page.locator(ROUND_SEP).count()


def wait_rounds(page, n: int, timeout: float = ROUND_TIMEOUT_MS, at_least: bool = False) -> None:
    """Wait until the token strip shows exactly ``n`` rounds (or ``n`` or more) and the event has finished."""
    op = ">=" if at_least else "==="
    page.wait_for_function(f"([sel, n]) => document.querySelectorAll(sel).length {op} n", arg=[ROUND_SEP, n],
                           timeout=timeout)
    if not at_least:
        wait_idle(page, timeout)


def status_text(page) -> str:
    """The status line's own text (without the progress text of its status tracker)."""
    md = page.locator("#status [data-testid='markdown']")
    return (md.inner_text() if md.count() else page.locator("#status").inner_text()).strip()


def target_calls(page) -> int | None:
    """The "target calls" number shown in ``#stats`` (None while it shows a dash)."""
    text = page.locator("#stats").inner_text()
    match = re.search(r"target calls[^\d\n]*(\d+)", text) or re.search(r"(\d+)\s*target calls", text)
    return int(match.group(1)) if match else None


def step(page, expect_rounds: int) -> None:
    page.locator("button#step").click()
    wait_rounds(page, expect_rounds)


def open_tab(page, name: str, ready: str, target_id: str | None = None, exact: bool = False) -> None:
    """Click the tab ``name``, wait until ``ready`` (a selector) is visible and, with ``target_id``, pick the tiny
    target in that dropdown (a no-op when the app's default target is already the tiny one)."""
    page.get_by_role("tab", name=name, exact=exact).click()
    page.locator(ready).wait_for(state="visible", timeout=10_000)
    if target_id:
        choose(page, target_id, TINY_TARGET)


def open_app(page, url: str, target: str = TINY_TARGET) -> None:
    page.goto(url)
    page.locator("#prompt textarea").wait_for(state="visible", timeout=30_000)
    wait_idle(page, 30_000)
    choose(page, "target", target)  # no-op when $DRAFTSCOPE_DEFAULT_TARGET already made it the default

