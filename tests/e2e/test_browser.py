"""The Generate tab in a real browser: headless Chromium (Playwright) against the app on a local port, tiny target.

Every scenario saves a full-page screenshot to ``test-artifacts/e2e/<scenario>.png`` (or ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.gradio_ui import (
    PROMPT,
    TOKEN,
    TOKEN_KINDS,
    choose,
    expect,
    rounds,
    screenshot,
    set_slider,
    status_text,
    step,
    target_calls,
    wait_idle,
    wait_rounds,
)

OTHER_PROMPT = "one two three four five, one two three four five, one two three"
CONTRACT_TIMEOUT_MS = 10_000  # for elements of the final interface: fail fast when they are missing


def _require(page, selector: str) -> None:
    """Fail fast, in one line, when an element of the final interface is not on the page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(selector).first.wait_for(state="attached", timeout=CONTRACT_TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"{selector} is not on the page (the Generate tab lacks this part of its interface)", pytrace=False)


def _wait_rounds_settle(page, quiet_s: float, timeout_s: float) -> int:
    """The round count once it has not changed for ``quiet_s`` seconds (fails after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    last, since = rounds(page), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rounds(page)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    pytest.fail(f"the round count never settled after Stop (still changing at {last} after {timeout_s} s)")


def _fill_prompt(page, text: str) -> None:
    page.locator("#prompt textarea").fill(text)


def _token_kinds(page) -> list[list[str]]:
    return page.locator(TOKEN).evaluate_all("spans => spans.map(s => [...s.classList])")


def _token_texts(page) -> list[str]:
    return page.locator(TOKEN).evaluate_all("spans => spans.map(s => s.textContent)")


def _prompt_shown(page) -> str:
    return page.locator("#token-strip .prompt").inner_text()


# ------------------------------------------------------------------------------------------------ 1. Step × 3
def test_step_three_rounds(app_page):
    page = app_page
    expect(page.locator("#drafter input[role='combobox']")).to_have_value("ngram")
    expect(page.locator("#verifier input[role='combobox']")).to_have_value("greedy")
    _fill_prompt(page, PROMPT)
    assert rounds(page) == 0 and target_calls(page) in (None, 0)

    stats_seen = []
    for n in (1, 2, 3):
        step(page, n)
        assert rounds(page) == n
        assert target_calls(page) == n, page.locator("#stats").inner_text()
        stats_seen.append(page.locator("#stats").inner_text())
        assert not status_text(page).startswith("Error"), status_text(page)
    assert len(set(stats_seen)) == 3, "the statistics did not change between steps"

    kinds = _token_kinds(page)
    assert kinds, "no tokens in the strip"
    for classes in kinds:
        assert "tok" in classes and len(set(classes) & set(TOKEN_KINDS)) == 1, classes
    # Every round commits at least one token (the target's own), each one resampled or bonus.
    assert sum(bool({"resampled", "bonus"} & set(c)) for c in kinds) >= 3
    assert PROMPT in _prompt_shown(page)
    screenshot(page, "step_three_rounds")


# ------------------------------------------------------------------------------------------------ 2. Run, then Stop
def test_run_then_stop(new_page):
    # The real default target without the chat template: a plain continuation that runs to the 512-token budget
    # (~15 s here), so Stop surely lands mid-run (the tiny model finishes 512 tokens in about a second).
    page = new_page("smollm2-135m")
    _require(page, "button#stop")
    page.locator("#chat input[type=checkbox]").uncheck()
    _fill_prompt(page, PROMPT)
    if page.locator("#max-new-tokens").count():
        set_slider(page, "max-new-tokens", 512)
    set_slider(page, "gamma", 1)  # at most 2 tokens a round: hundreds of rounds, so Stop lands mid-run

    page.locator("button#run").click()
    wait_rounds(page, 1, at_least=True)
    # While Run streams, the browser's main thread is busy re-rendering the strip and both plots every round, so
    # Playwright's default click (which waits for the button to be "stable" over animation frames) can stall for
    # tens of seconds; force=True still sends real mouse events, it only skips those waits.
    clicked = time.monotonic()
    page.locator("button#stop").click(force=True, timeout=60_000)
    click_s = time.monotonic() - clicked
    wait_idle(page, 30_000)
    settled = _wait_rounds_settle(page, quiet_s=1.0, timeout_s=20)  # updates already on the wire land
    time.sleep(2)
    after = rounds(page)
    assert settled == after, f"rounds still growing after Stop: {settled} → {after}"
    assert page.locator("#token-strip .finish").count() == 0, "the run reached its end before Stop took effect"
    assert 1 <= after < 256, f"{after} rounds (Stop click took {click_s:.1f} s)"
    assert not status_text(page).startswith(("Running", "Error")), status_text(page)
    screenshot(page, "run_then_stop")

    # The page still works: Reset empties the strip and Step then adds one round.
    page.locator("button#reset").click()
    wait_rounds(page, 0)
    assert not status_text(page).startswith("Error"), status_text(page)
    step(page, 1)
    assert not status_text(page).startswith("Error"), status_text(page)
    screenshot(page, "run_then_stop_after_reset_and_step")


# ------------------------------------------------------------------------------------------------ 3. empty prompt
def test_empty_prompt_shows_an_error_and_page_recovers(app_page):
    page = app_page
    _fill_prompt(page, "")
    page.locator("button#step").click()
    error = page.locator("#status [data-testid='markdown']").filter(has_text=re.compile(r"^\s*Error")).or_(
        page.locator(".toast-body.error, .toast-body.warning"))
    expect(error.first).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert rounds(page) == 0
    screenshot(page, "empty_prompt_error")

    _fill_prompt(page, PROMPT)
    step(page, 1)
    assert not status_text(page).startswith("Error"), status_text(page)
    assert page.locator(TOKEN).count() >= 1
    screenshot(page, "empty_prompt_recovered")


# ------------------------------------------------------------------------------------------------ 4. two pages
def test_two_pages_have_independent_sessions(new_page):
    page_a, page_b = new_page(), new_page()
    _fill_prompt(page_a, PROMPT)
    _fill_prompt(page_b, OTHER_PROMPT)

    step(page_a, 1)
    first_round_a = _token_texts(page_a)
    step(page_b, 1)
    step(page_a, 2)
    step(page_a, 3)

    assert rounds(page_a) == 3 and rounds(page_b) == 1
    assert target_calls(page_a) == 3 and target_calls(page_b) == 1
    shown_a, shown_b = _prompt_shown(page_a), _prompt_shown(page_b)
    assert PROMPT in shown_a and OTHER_PROMPT not in shown_a
    assert OTHER_PROMPT in shown_b and PROMPT not in shown_b
    # A's strip only grew: B's step in between did not touch A's tokens.
    assert _token_texts(page_a)[:len(first_round_a)] == first_round_a
    screenshot(page_a, "two_pages_a")
    screenshot(page_b, "two_pages_b")


# ------------------------------------------------------------------------------------------------ 5. lossless
def test_lossless_check_after_greedy_steps(app_page):
    page = app_page
    _require(page, "button#lossless-check")
    _require(page, "#lossless-result")
    choose(page, "verifier", "greedy")
    _fill_prompt(page, PROMPT)
    for n in (1, 2, 3):
        step(page, n)
    page.locator("button#lossless-check").click()
    result = page.locator("#lossless-result")
    expect(result).to_contain_text(re.compile("identical", re.I), timeout=60_000)
    wait_idle(page)
    text = result.inner_text()
    assert not re.search(r"not identical|\bdiffer", text, re.I), text
    screenshot(page, "lossless_check")


# ------------------------------------------------------------------------------------------------ plots
_TRACES = "el => el.data ? el.data.length : el.querySelectorAll('g.trace').length"  # plotly's graph div keeps .data


def test_plots_render_after_a_step(app_page):
    page = app_page
    for elem_id in ("round-inspector", "stats-chart"):
        _require(page, f"#{elem_id}")
    _fill_prompt(page, PROMPT)
    step(page, 1)
    for elem_id in ("round-inspector", "stats-chart"):
        figure = page.locator(f"#{elem_id} .js-plotly-plot")
        expect(figure).to_be_visible(timeout=30_000)
        page.wait_for_function(f"sel => ({_TRACES})(document.querySelector(sel)) > 0",
                               arg=f"#{elem_id} .js-plotly-plot", timeout=30_000)
    screenshot(page, "plots_after_step")


# ------------------------------------------------------------------------------------------------ drafter options
def test_drafter_options_follow_the_drafter(app_page):
    """Only the chosen drafter's options are shown (generated from its Options); they reach that drafter."""
    page = app_page
    expect(page.locator("#ngram-size")).to_be_visible()
    expect(page.locator("#min-ngram-size")).to_be_visible()
    for hidden in ("exit-layer", "eta", "draft-model"):
        expect(page.locator(f"#{hidden}")).to_be_hidden()
    choose(page, "drafter", "early-exit")
    expect(page.locator("#exit-layer")).to_be_visible()
    for hidden in ("ngram-size", "eta", "draft-model"):
        expect(page.locator(f"#{hidden}")).to_be_hidden()
    set_slider(page, "exit-layer", 2)
    _fill_prompt(page, PROMPT)
    step(page, 1)
    assert status_text(page).startswith("1 round"), status_text(page)
    choose(page, "drafter", "kangaroo")
    expect(page.locator("#eta")).to_be_visible()
    expect(page.locator("#exit-layer")).to_be_hidden()
    screenshot(page, "drafter_options")
