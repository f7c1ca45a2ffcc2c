"""The load test's small version (issue 21): a few concurrent gradio_client visitors on the tiny model for a few
seconds; every call answers without an error, no visitor is stuck, and a Step right after the crowd still answers.
The full run (16 visitors, SmolLM2) is ``python -m tests.load``; the README gives its figures."""

from __future__ import annotations

import pytest

from tests.load import load, main


def test_a_small_crowd_gets_no_errors():
    report = load(visitors=3, seconds=8, target="tiny-llama", new_tokens=6)
    assert report["errors"] == 0, report["error_examples"]
    assert report["stuck_visitors"] == 0 and report["step_after_ok"], report
    assert report["calls"] >= 6 and {"/step"} <= set(report["per_endpoint"]), report
    assert report["peak_rss_mb"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--url", "http://example.org:7860"], "only runs against this machine"),
    (["--visitors", "0"], "visitors must be in 1..64"),
    (["--seconds", "0"], "seconds must be in 1..3600"),
])
def test_refuses_other_hosts_and_bad_sizes(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
