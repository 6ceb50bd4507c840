"""A run meeting the gateway's halts, waits and strategy, with fake services and a real
database: a halt stops the requests waiting for their turn, the first order goes alone, and a
gateway filing under another strategy is refused or noted."""

from __future__ import annotations

import threading

import pytest
from fakes import (
    FakeGateway,
    FakePrices,
    FakeSignals,
    make_request,
    not_sent,
    run,
    services_for,
    signals_of,
)

from orchestrator_cli.runner import execute_run
from orchestrator_cli.schemas import GatewayConfig, OrderRequest, SubmitOutcome


def by_symbol(result):
    return {m.symbol: m for m in result.mappings}


class WaitingGateway(FakeGateway):
    """GOOGL's request waits at the gateway's gate until the run stops waiting."""

    def __init__(self) -> None:
        super().__init__(answers={"MSFT": "kill_switch"})
        self.stopped = threading.Event()

    def submit_order(self, order: OrderRequest, permit: object = None) -> SubmitOutcome:
        if order.symbol != "GOOGL":
            return super().submit_order(order)
        assert self.stopped.wait(10), "the halt did not stop the waiting request"
        return not_sent(order, "not sent: orch stopped sending while it waited")


def test_a_halt_stops_requests_waiting_for_their_turn_and_records_them_blocked(
    session_factory,
):
    gateway = WaitingGateway()
    signals = FakeSignals(signals_of(("AAPL", "0.2"), ("MSFT", "0.2"), ("GOOGL", "0.2")))
    prices = FakePrices({"AAPL": "100", "MSFT": "100", "GOOGL": "100"})
    services = services_for(session_factory, signals, gateway, prices)
    services.stop_waiting = gateway.stopped.set
    request = make_request(["AAPL", "MSFT", "GOOGL"], order_concurrency=3)
    rows = by_symbol(execute_run(request, services).result)
    assert rows["AAPL"].order_status == "accepted"
    assert rows["MSFT"].order_status == "blocked_kill_switch"
    assert rows["GOOGL"].order_status == "blocked"
    assert "Kill-switch" in (rows["GOOGL"].detail or "")


def test_the_first_order_goes_alone_so_a_halted_gateway_meets_only_one(session_factory):
    symbols = ["AAPL", "MSFT", "GOOGL", "AMZN", "TSLA"]
    gateway = FakeGateway(answers=dict.fromkeys(symbols, "kill_switch"))
    gateway.latency = 0.01  # the others would be in flight by now if they went out together
    result = run(
        session_factory,
        FakeSignals(signals_of(*[(s, "0.1") for s in symbols])),
        gateway,
        FakePrices(dict.fromkeys(symbols, "100")),
        order_concurrency=8,
    )
    assert len(gateway.sent) == 1
    statuses = sorted(m.order_status or "" for m in result.mappings)
    assert statuses == ["blocked"] * 4 + ["blocked_kill_switch"]
    assert result.status == "failed"
    assert (result.num_orders_submitted, result.num_orders_blocked) == (1, 5)


@pytest.mark.parametrize("field", ["strategy_id", "strategy"])
def test_a_gateway_filing_under_another_strategy_refuses_before_anything(session_factory, field):
    gateway = FakeGateway()
    gateway.config = GatewayConfig(dry_run=False, alpaca_paper=True, **{field: "momentum"})
    signals = FakeSignals(signals_of(("AAPL", "0.5")))
    result = run(session_factory, signals, gateway, FakePrices({"AAPL": "150"}))
    assert result.status == "failed"
    assert "strategy 'momentum'" in (result.error_message or "")
    assert "'alpha_baseline'" in (result.error_message or "")
    assert signals.calls == []
    assert gateway.sent == []


def test_an_order_filed_under_another_strategy_is_settled_and_the_mismatch_noted(
    session_factory, caplog
):
    gateway = FakeGateway(answers={"AAPL": "unknown"})  # settled by its detail, then
    gateway.filed_under = "momentum"
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    row = by_symbol(result)["AAPL"]
    assert row.order_status == "filled"  # the order is the run's own: its status is taken
    assert result.status == "completed"
    note = "the gateway filed this order under strategy 'momentum', not 'alpha_baseline'"
    assert row.note == note
    assert note in caplog.text
