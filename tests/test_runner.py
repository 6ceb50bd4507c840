"""The run use case with fake services and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from fakes import (
    AS_OF,
    FakeGateway,
    FakePrices,
    FakeSignals,
    make_request,
    run,
    services_for,
    signals_of,
)
from sqlalchemy import select

from orchestrator_cli import outcomes, store
from orchestrator_cli.clock import trading_date
from orchestrator_cli.errors import DatabaseError, PriceSourceError, ServiceError
from orchestrator_cli.gateway import GatewayMode, Safety
from orchestrator_cli.mode import mode_of
from orchestrator_cli.models import OrchestrationRun, SignalOrderMapping
from orchestrator_cli.risk import Limits
from orchestrator_cli.runner import execute_run
from orchestrator_cli.schemas import (
    GatewayConfig,
    OrderRequest,
)


def by_symbol(result):
    return {m.symbol: m for m in result.mappings}


def test_seed_example_buys_133_and_records_everything(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.333"), ("MSFT", "0"), ("TSLA", "-0.5"))),
        gateway,
        FakePrices({"AAPL": "150", "TSLA": "250"}),
    )
    assert result.status == "completed"
    rows = by_symbol(result)
    assert (rows["AAPL"].order_side, rows["AAPL"].order_qty) == ("buy", 133)
    assert (rows["TSLA"].order_side, rows["TSLA"].order_qty, rows["TSLA"].target_qty) == (
        "sell",
        80,
        -80,
    )
    assert rows["MSFT"].skip_reason == "zero_weight"
    assert rows["MSFT"].client_order_id is None
    assert sorted(o.symbol for o in gateway.sent) == ["AAPL", "TSLA"]
    assert {o.client_order_id for o in gateway.sent} == {
        rows["AAPL"].client_order_id,
        rows["TSLA"].client_order_id,
    }
    assert (result.num_signals, result.num_orders_submitted, result.num_orders_accepted) == (
        3,
        2,
        2,
    )
    assert result.error_message is None
    assert result.as_of_date == AS_OF


def test_existing_position_orders_only_the_difference(session_factory):
    gateway = FakeGateway(positions={"AAPL": Decimal("100")})
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.333"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    assert (gateway.sent[0].side, gateway.sent[0].qty) == ("buy", 33)
    assert by_symbol(result)["AAPL"].current_qty == 100


def test_held_symbol_with_zero_weight_is_closed_without_needing_a_price(session_factory):
    gateway = FakeGateway(positions={"MSFT": Decimal("-40")})
    prices = FakePrices({})
    result = run(session_factory, FakeSignals(signals_of(("MSFT", "0"))), gateway, prices)
    assert (gateway.sent[0].side, gateway.sent[0].qty) == ("buy", 40)
    assert prices.asked == ["MSFT"]  # asked for the limits' sake, not needed to close
    assert result.status == "completed"


def test_plan_is_committed_before_the_first_order_is_sent(session_factory):
    seen: list[tuple[str, list[str | None]]] = []

    def inspect(order: OrderRequest) -> None:
        if seen:
            return
        with session_factory() as session:
            run_row = session.scalars(select(OrchestrationRun)).one()
            ids = session.scalars(
                select(SignalOrderMapping.client_order_id).order_by(SignalOrderMapping.symbol)
            ).all()
            seen.append((run_row.status, list(ids)))

    gateway = FakeGateway(on_submit=inspect)
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
    )
    status, ids = seen[0]
    assert status == "running"
    assert sorted(ids) == sorted(m.client_order_id for m in result.mappings)
    assert None not in ids


def test_signal_failure_fails_the_run_and_sends_nothing(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(ServiceError("Signal Service returned a bad payload: x")),
        gateway,
        FakePrices({}),
    )
    assert result.status == "failed"
    assert "bad payload" in (result.error_message or "")
    assert gateway.sent == []
    assert result.mappings == []


def test_one_missing_price_makes_the_run_partial(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    assert result.status == "partial"
    msft = by_symbol(result)["MSFT"]
    assert msft.skip_reason == "price_unavailable"
    assert msft.detail == "not in fake book"
    assert [o.symbol for o in gateway.sent] == ["AAPL"]
    assert "without a usable price" in (result.error_message or "")


@pytest.mark.parametrize(
    "prices", [{}, PriceSourceError("market data down")], ids=["none-priced", "source-down"]
)
def test_no_usable_price_at_all_fails_and_sends_nothing(session_factory, prices):
    gateway = FakeGateway(positions={"TSLA": Decimal("5")})
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"), ("TSLA", "0"))),
        gateway,
        FakePrices(prices),
    )
    assert result.status == "failed"
    assert gateway.sent == []
    tsla = by_symbol(result)["TSLA"]
    assert tsla.order_status == "not_sent"
    assert "no usable price" in (result.error_message or "")


def test_kill_switch_stops_the_remaining_orders(session_factory):
    gateway = FakeGateway(answers={"MSFT": "kill_switch"})
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.25"), ("MSFT", "0.25"), ("GOOGL", "0.25"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400", "GOOGL": "170"}),
    )
    rows = by_symbol(result)
    assert [o.symbol for o in gateway.sent] == ["AAPL", "MSFT"]
    assert rows["MSFT"].order_status == "blocked_kill_switch"
    assert rows["GOOGL"].order_status == "blocked"
    assert "Kill-switch" in (rows["GOOGL"].detail or "")
    assert result.status == "partial"
    assert (result.num_orders_accepted, result.num_orders_blocked) == (1, 2)
    assert result.num_orders_submitted == 2


@pytest.mark.parametrize(
    ("answers", "status", "accepted", "rejected"),
    [
        ({"AAPL": "http_422", "MSFT": "rejected"}, "failed", 0, 2),
        ({"AAPL": "failed", "MSFT": "canceled"}, "failed", 0, 2),
        ({"AAPL": "dry_run", "MSFT": "filled"}, "completed", 2, 0),
        ({"AAPL": "accepted", "MSFT": "unknown"}, "completed", 2, 0),  # settled: it was filled
        ({"AAPL": "accepted", "MSFT": "lost"}, "completed", 2, 0),  # settled: resent, same id
        ({"AAPL": "pending_new", "MSFT": "rejected"}, "partial", 1, 1),
    ],
)
def test_status_and_counts_follow_the_outcomes(
    session_factory, answers, status, accepted, rejected
):
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"))),
        FakeGateway(answers=answers),
        FakePrices({"AAPL": "150", "MSFT": "400"}),
    )
    assert result.status == status
    assert (result.num_orders_accepted, result.num_orders_rejected) == (accepted, rejected)


def test_unknown_outcome_is_not_counted_as_rejected(session_factory):
    gateway = FakeGateway(answers={"AAPL": "unreachable"})
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    assert result.status == "failed"
    assert (result.num_orders_rejected, result.num_orders_unknown) == (0, 1)
    assert "unknown outcome" in (result.error_message or "")
    assert f"orch runs resume {result.run_id}" in (result.error_message or "")
    assert gateway.lookups == [result.mappings[0].client_order_id]  # settling was tried


def test_an_unknown_order_that_arrived_is_settled_not_resent(session_factory):
    gateway = FakeGateway(answers={"AAPL": "unknown"})
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    assert len(gateway.sent) == 1
    assert result.mappings[0].order_status == "filled"
    assert result.status == "completed"


def test_an_unknown_order_that_never_arrived_is_sent_again_with_the_same_id(session_factory):
    gateway = FakeGateway(answers={"AAPL": "lost"})
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    (order,) = gateway.sent
    assert order.client_order_id == result.mappings[0].client_order_id
    assert result.status == "completed"


def test_dry_run_records_the_plan_and_sends_nothing(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
        dry_run=True,
    )
    assert gateway.sent == []
    assert result.status == "completed"
    assert result.dry_run is True
    assert by_symbol(result)["AAPL"].order_status == "planned"
    assert result.num_orders_submitted == 0


def test_once_the_days_run_completed_another_does_nothing(session_factory):
    gateway = FakeGateway(answers={"AAPL": "filled", "MSFT": "filled"})
    services = services_for(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "-0.2"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
    )
    first = execute_run(make_request(["AAPL", "MSFT"]), services)
    second = execute_run(make_request(["AAPL", "MSFT"]), services)
    assert (first.action, second.action) == ("ran", "already_completed")
    assert second.result.run_id == first.result.run_id
    assert "already completed" in (second.note or "")
    assert len(gateway.sent) == 2


def test_forced_run_orders_anew_but_counts_open_orders_as_in_flight(session_factory):
    # AAPL's first order is filled (gone from the book of open orders: the fake's positions
    # do not move, so the forced run orders it again, under a new id); MSFT's is still open
    # at the gateway, so the forced run must not order it twice.
    gateway = FakeGateway(answers={"AAPL": "filled", "MSFT": "accepted"})
    services = services_for(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.1"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
    )
    first = execute_run(make_request(["AAPL", "MSFT"]), services)
    forced = execute_run(make_request(["AAPL", "MSFT"], force=True), services)
    assert forced.action == "ran"
    assert forced.result.run_id != first.result.run_id
    rows = by_symbol(forced.result)
    assert rows["MSFT"].skip_reason == "already_at_target"
    assert rows["MSFT"].current_qty == 25  # held 0 + 25 open at the gateway
    assert rows["AAPL"].order_qty == 133
    first_ids = {m.client_order_id for m in first.result.mappings}
    assert rows["AAPL"].client_order_id not in first_ids
    assert [o.symbol for o in gateway.sent] == ["AAPL", "MSFT", "AAPL"]


def test_concurrent_submission_records_every_outcome(session_factory):
    symbols = [f"S{i}" for i in range(20)]
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(*[(s, "0.05") for s in symbols])),
        gateway,
        FakePrices(dict.fromkeys(symbols, "10")),
        order_concurrency=8,
    )
    assert len(gateway.sent) == 20
    assert len({o.client_order_id for o in gateway.sent}) == 20
    assert result.num_orders_accepted == 20
    assert all(m.order_status == "accepted" for m in result.mappings)


def test_database_failure_after_sending_stops_and_keeps_the_plan(session_factory, monkeypatch):
    gateway = FakeGateway()
    real = outcomes.record_outcomes

    def failing(session, answered):
        from sqlalchemy.exc import OperationalError

        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    monkeypatch.setattr(outcomes, "record_outcomes", failing)
    with pytest.raises(DatabaseError, match="stopped sending"):
        run(
            session_factory,
            FakeSignals(signals_of(("AAPL", "0.3"), ("MSFT", "0.3"), ("GOOGL", "0.3"))),
            gateway,
            FakePrices({"AAPL": "150", "MSFT": "400", "GOOGL": "170"}),
        )
    monkeypatch.setattr(outcomes, "record_outcomes", real)
    assert gateway.sent, "the first order went out before the database failed"
    with session_factory() as session:
        ids = set(session.scalars(select(SignalOrderMapping.client_order_id)).all())
        status = session.scalars(select(OrchestrationRun.status)).one()
    assert {o.client_order_id for o in gateway.sent} <= ids
    assert status == "running"  # never marked finished: `orch runs show` shows it unfinished


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2024, 1, 2, 3, 0, tzinfo=UTC), date(2024, 1, 1)),
        (datetime(2024, 7, 1, 14, 30, tzinfo=UTC), date(2024, 7, 1)),
        (datetime(2024, 7, 2, 3, 59, tzinfo=UTC), date(2024, 7, 1)),
        (datetime(2024, 7, 2, 4, 0, tzinfo=UTC), date(2024, 7, 2)),
    ],
)
def test_trading_date_is_new_york_date(when, expected):
    assert trading_date(when) == expected


def counts(**values: int) -> store.OutcomeCounts:
    base = dict.fromkeys(
        (
            "orders_planned",
            "planned",
            "accepted",
            "rejected",
            "blocked",
            "unknown",
            "not_sent",
            "submitted",
            "price_unavailable",
            "signals",
        ),
        0,
    )
    base.update(values)
    return store.OutcomeCounts(**base)


@pytest.mark.parametrize(
    ("values", "dry_run", "expected"),
    [
        ({}, False, "completed"),
        ({"accepted": 2}, False, "completed"),
        ({"accepted": 1, "rejected": 1}, False, "partial"),
        ({"rejected": 2}, False, "failed"),
        ({"price_unavailable": 1}, False, "failed"),
        ({"accepted": 1, "price_unavailable": 1}, False, "partial"),
        ({"accepted": 1, "planned": 1}, False, "partial"),
        ({"planned": 2}, True, "completed"),
        ({"planned": 1, "price_unavailable": 1}, True, "partial"),
    ],
)
def test_decide_status(values, dry_run, expected):
    assert mode_of(dry_run).status(counts(**values)) == expected


def test_reducing_orders_are_answered_before_any_order_adding_exposure(session_factory):
    gateway = FakeGateway(
        positions={"AAPL": Decimal("200"), "MSFT": Decimal("-50"), "TSLA": Decimal("10")}
    )
    gateway.latency = 0.02
    result = run(
        session_factory,
        FakeSignals(
            signals_of(("AAPL", "0.333"), ("MSFT", "0"), ("GOOGL", "0.5"), ("TSLA", "-0.5"))
        ),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400", "GOOGL": "170", "TSLA": "250"}),
        order_concurrency=8,
    )
    assert result.status == "completed"
    rows = [(m.symbol, m.leg, m.order_side, m.order_qty) for m in result.mappings]
    assert ("TSLA", 0, "sell", 10) in rows
    assert ("TSLA", 1, "sell", 80) in rows
    reducing = {
        m.client_order_id
        for m in result.mappings
        if (m.symbol, m.leg) in {("AAPL", 0), ("MSFT", 0), ("TSLA", 0)}
    }
    adding = {m.client_order_id for m in result.mappings if m.client_order_id} - reducing
    assert len(reducing) == 3
    assert len(adding) == 2
    last_reducing_end = max(
        i for i, (what, coid) in enumerate(gateway.events) if what == "end" and coid in reducing
    )
    first_adding_start = min(
        i for i, (what, coid) in enumerate(gateway.events) if what == "start" and coid in adding
    )
    assert last_reducing_end < first_adding_start


def test_flip_is_two_orders_with_their_own_ids(session_factory):
    gateway = FakeGateway(positions={"TSLA": Decimal("10")})
    result = run(
        session_factory,
        FakeSignals(signals_of(("TSLA", "-0.5"))),
        gateway,
        FakePrices({"TSLA": "250"}),
    )
    assert [(o.side, o.qty) for o in gateway.sent] == [("sell", 10), ("sell", 80)]
    assert len({o.client_order_id for o in gateway.sent}) == 2
    assert [m.leg for m in result.mappings] == [0, 1]
    assert result.num_orders_accepted == 2


@pytest.mark.parametrize(
    ("config", "allow_live", "dry_run", "status", "mode"),
    [
        (GatewayConfig(dry_run=False, alpaca_paper=False), False, False, "failed", "live"),
        (GatewayConfig(dry_run=False, alpaca_paper=False), True, False, "completed", "live"),
        (GatewayConfig(dry_run=False, alpaca_paper=False), False, True, "completed", "live"),
        (GatewayConfig(dry_run=False, alpaca_paper=True), False, False, "completed", "paper"),
        (GatewayConfig(dry_run=True, alpaca_paper=False), False, False, "completed", "dry_run"),
    ],
    ids=["live-refused", "live-opted-in", "live-dry-run", "paper", "gateway-dry-run"],
)
def test_live_account_guard(session_factory, config, allow_live, dry_run, status, mode):
    gateway = FakeGateway()
    gateway.config = config
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
        allow_live_trading=allow_live,
        dry_run=dry_run,
    )
    assert (result.status, result.gateway_mode) == (status, mode)
    if status == "failed":
        assert gateway.sent == []
        assert result.mappings == []
        assert "ALLOW_LIVE_TRADING" in (result.error_message or "")


@pytest.mark.parametrize(
    ("kill_switch", "health", "refused", "words"),
    [
        ("ENGAGED", "healthy", True, "kill switch is engaged"),
        ("unknown", "healthy", True, "state unknown"),
        ("ACTIVE", "unhealthy", True, "unhealthy"),
        ("ACTIVE", "degraded", False, None),
    ],
)
def test_kill_switch_and_health_preflight(session_factory, kill_switch, health, refused, words):
    gateway = FakeGateway()
    gateway.kill_switch = kill_switch
    gateway.health = health
    signals = FakeSignals(signals_of(("AAPL", "0.5")))
    result = run(session_factory, signals, gateway, FakePrices({"AAPL": "150"}))
    if refused:
        assert result.status == "failed"
        assert words in (result.error_message or "")
        assert gateway.sent == []
        assert signals.calls == []  # refused before signals were even fetched
    else:
        assert result.status == "completed"


class TogetherGateway(FakeGateway):
    """Its preflight reads and its positions each wait at `barrier` for a partner read: reads
    made one after another break the barrier (its deadline) and fail the run."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def trading_mode(self) -> GatewayMode:
        self.barrier.wait()
        return super().trading_mode()

    def safety(self, strategy_id: str) -> Safety:
        self.barrier.wait()
        return super().safety(strategy_id)


def test_the_gateway_mode_and_its_safety_are_read_together(session_factory):
    gateway = TogetherGateway(threading.Barrier(2, timeout=10))
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    assert (result.status, result.gateway_mode) == ("completed", "paper")


def test_a_safety_read_that_fails_still_leaves_the_mode_recorded(session_factory):
    gateway = FakeGateway()
    gateway.kill_switch = "unknown"
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150"}),
    )
    assert (result.status, result.gateway_mode) == ("failed", "paper")
    assert "state unknown" in (result.error_message or "")


def test_positions_are_read_while_the_signals_are_fetched(session_factory):
    barrier = threading.Barrier(2, timeout=10)

    class Signals(FakeSignals):
        def fetch_signals(self, *args, **kwargs):
            barrier.wait()
            return super().fetch_signals(*args, **kwargs)

    class Gateway(FakeGateway):
        def get_positions(self):
            barrier.wait()
            return super().get_positions()

    gateway = Gateway(positions={"AAPL": Decimal(10)})
    result = run(
        session_factory, Signals(signals_of(("AAPL", "0.5"))), gateway, FakePrices({"AAPL": "150"})
    )
    assert result.status == "completed"
    assert [m.current_qty for m in result.mappings] == [Decimal(10)]


def test_failed_signals_are_the_error_even_when_positions_fail_too(session_factory):
    class Gateway(FakeGateway):
        def get_positions(self):
            raise ServiceError("positions: gateway unavailable")

    signals = FakeSignals(ServiceError("signals: model not loaded"))
    result = run(session_factory, signals, Gateway(), FakePrices({"AAPL": "150"}))
    assert result.status == "failed"
    assert result.error_message == "signals: model not loaded"


def test_a_run_level_limit_refuses_the_plan_and_says_which(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
        limits=Limits(max_gross_exposure=Decimal("0.3")),
    )
    assert result.status == "failed"
    assert gateway.sent == []
    assert "MAX_GROSS_EXPOSURE" in (result.error_message or "")
    assert {m.order_status for m in result.mappings} == {"not_sent"}
    assert result.limits is not None
    assert result.limits["max_gross_exposure"] == "0.3"


def test_per_order_limit_skips_and_the_rest_go_ahead(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.1"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
        limits=Limits(max_order_notional=Decimal("15000")),
    )
    assert [o.symbol for o in gateway.sent] == ["MSFT"]
    aapl = by_symbol(result)["AAPL"]
    assert aapl.skip_reason == "max_order_notional"
    assert "MAX_ORDER_NOTIONAL" in (aapl.detail or "")
    assert result.status == "completed"  # a deliberate policy skip is not a failure


def test_orders_after_the_run_deadline_are_not_sent(session_factory):
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
        deadline=time.monotonic() - 1,
    )
    assert gateway.sent == []
    assert {m.order_status for m in result.mappings} == {"not_sent"}
    assert "RUN_DEADLINE_SECONDS" in (result.mappings[0].detail or "")
    assert result.status == "failed"
