"""The Train your draft tab's handlers and figures, called directly (the browser tests drive the page)."""

from __future__ import annotations

import plotly.graph_objects as go

from app import train_draft_tab as tab
from core.specdec.cost_model import CostModel, measure
from core.specdec.drafters import build_drafter
from tests.helpers import app_error
from visualizers.train_draft import cost_model_figure, cost_model_html, loss_table_html


def test_static_view_loads_for_a_target_with_and_without_results():
    curves, _, table, coverage, note, _ = tab.show_results("tiny-llama", 0)
    assert isinstance(curves, go.Figure) and isinstance(coverage, go.Figure)
    assert "No trained drafter" in note and "No trained drafter results" in table
    # tiny-llama borrows SmolLM2's tokenizer: the shipped counts draw its coverage curve
    assert coverage.data and max(coverage.data[0].y) > 0.99
    _, _, _, coverage, _, _ = tab.show_results("tiny-llama", 2048)
    assert any("k = 2,048" in (t.name or "") for t in coverage.data)


def test_cost_model_is_measured_for_a_trimmed_drafter():
    fig, html, status = tab.measure_cost("tiny-llama", "early-exit", "—", 1024)
    assert status == "" and "break-even τ" in html and len(fig.data) == 2


def test_cost_model_refuses_a_drafter_without_a_head():
    assert "with a head" in app_error(tab.measure_cost, "tiny-llama", "ngram", "—", 0)


def test_break_even_arithmetic(tiny_llama):
    cost = CostModel("t", "d", 200, draft_ms=2.0, verify_ms=[10.0, 11.0, 12.0, 13.0, 14.0])
    assert cost.round_ms(3) == 3 * 2.0 + 13.0
    assert cost.break_even_tau(3) == (3 * 2.0 + 13.0) / 10.0
    assert cost.speedup(2.85, 3) == 2.85 / 1.9
    assert [r["gamma"] for r in cost.table()] == [1, 2, 3, 4]
    assert CostModel.from_dict(cost.to_dict()) == cost
    html = cost_model_html(cost.to_dict(), {3: 2.85})
    assert "1.50× (pays)" in html
    measured = measure(tiny_llama, build_drafter("early-exit", tiny_llama, {"exit_layer": 2}), context=32, repeats=1,
                       max_k=3)
    assert measured.draft_ms > 0 and len(measured.verify_ms) == 3 and all(v > 0 for v in measured.verify_ms)
    assert cost_model_figure(measured.to_dict()).data


def test_loss_table_lists_every_loss():
    results = {"tvdpp": {"after": {"top1_agreement": 0.7, "tau_g4": 2.5}, "drafter_ms": 4.0, "mbsu_g4": 2.0},
               "seqkd": {"after": {"top1_agreement": 0.6}}}
    html = loss_table_html(results, {"tvdpp": {"tokens_per_second": 40.0, "speedup": 1.4}})
    assert "TVD++ (Direct Alignment)" in html and "seqKD (FastDraft)" in html and "1.40×" in html


def test_main_tab_cost_model_readout(tiny_llama):
    """The main tab's readout measures a fresh copy of the session's drafter and shows τ* beside the session's τ."""
    from app import common, generate_tab
    from core.specdec import Session, SessionConfig

    config = SessionConfig(target="tiny-llama", drafter="early-exit", gamma=3, max_new_tokens=6,
                           drafter_options={"exit_layer": 2, "vocab_trim": 1024})
    session = Session.from_config(config, prompt_ids=tiny_llama.encode("the cat sat on the mat"))
    for _ in session.run():
        pass
    sid = common.new_sid()
    common.put_session(sid, session)
    before = list(session.drafter.kv.ids)
    html, status = generate_tab.Handlers().cost({"sid": sid})
    assert status == "" and "break-even τ" in html and "early-exit" in html
    assert session.drafter.kv.ids == before  # the session's drafter was not touched
    assert "press Step or Run first" in app_error(generate_tab.Handlers().cost, {"sid": "nope"})
