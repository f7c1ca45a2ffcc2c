"""The Benchmark and Production metrics tabs in a real browser (headless Chromium). Benchmark: the shipped SmolLM2
matrix shows when its target is picked; a rejected-token example of the n-gram drafter opens in the Speculative
decoding tab's step view (the tab switches, the replayed rounds and the example's round are shown, and Step goes on
from there). Production metrics: the Example button writes our n-gram counts as vLLM's /metrics and charts them.

Saves ``test-artifacts/e2e/bench_example.png`` and ``metrics_example.png`` (or under ``$DRAFTSCOPE_ARTIFACTS``).
"""

from __future__ import annotations

from tests.e2e.gradio_ui import (
    choose,
    markdown,
    open_tab,
    rounds,
    screenshot,
    status_text,
    step,
    wait_idle,
    wait_plot,
)

SHIPPED = "smollm2-135m"  # the target whose matrix ships (assets/bench/)


def test_a_rejection_example_opens_in_the_step_view(app_page):
    page = app_page
    open_tab(page, "Benchmark", "button#bench-run")
    choose(page, "bench-target", SHIPPED)
    page.wait_for_function("() => document.querySelector('#bench-status')?.innerText.includes('Shipped matrix')",
                           timeout=30_000)
    choose(page, "bench-rejections", "ngram")
    box = page.locator("#bench-example input[role='combobox']")
    page.wait_for_function("sel => (document.querySelector(sel)?.value || '').includes('round')",
                           arg="#bench-example input[role='combobox']", timeout=10_000)
    label = box.input_value()
    page.locator("button#bench-open-example").click()
    page.wait_for_function("() => document.querySelector('#status')?.innerText.includes('Opened from the Benchmark')",
                           timeout=120_000)
    wait_idle(page, 120_000)
    assert page.get_by_role("tab", name="Speculative decoding").get_attribute("aria-selected") == "true"
    status = status_text(page)
    assert "ngram on prompt" in status and "The replay drafted the same rejected token" in status, status
    round_index = int(label.split("round ")[1].split(",")[0])
    shown = rounds(page)
    assert shown >= round_index + 1
    assert page.locator("#inspect-round input[type='number']").input_value() == str(round_index)
    assert page.locator("#drafter input[role='combobox']").input_value() == "ngram"
    assert page.locator("#target input[role='combobox']").input_value() == SHIPPED
    assert markdown(page, "bench-example-status").startswith("Opened in the step view")
    screenshot(page, "bench_example")
    step(page, shown + 1)  # the replayed session goes on with the same settings
    assert "Changed" not in status_text(page), status_text(page)


def test_production_metrics_example(app_page):
    page = app_page
    open_tab(page, "Production metrics", "button#metrics-example")
    page.locator("button#metrics-example").click()
    page.wait_for_function("() => (document.querySelector('#metrics-dump textarea')?.value || '')"
                           ".includes('vllm:spec_decode_num_drafts')", timeout=20_000)
    wait_plot(page, "#metrics-figure .js-plotly-plot", "vllm", script="sel => (document.querySelector(sel)?.data "
              "|| []).map(t => String(t.name || '').toLowerCase()).join(' ')", timeout=30_000)
    assert markdown(page, "metrics-status"), "no status after the example"
    assert page.locator("#metrics-table table").count() >= 1
    screenshot(page, "metrics_example")
