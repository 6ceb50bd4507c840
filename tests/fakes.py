"""Fakes of the run's services, shared by the runner and resume tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from orchestrator_cli.errors import ServiceError
from orchestrator_cli.gateway import GatewayMode, Safety, assess_safety, gateway_mode
from orchestrator_cli.request import Execution, RunRequest, RunSpec
from orchestrator_cli.risk import Limits
from orchestrator_cli.runner import execute_run
from orchestrator_cli.schemas import (
    GatewayConfig,
    GatewayHealth,
    KillSwitchStatus,
    OrderDetail,
    OrderRequest,
    OutcomeKind,
    PriceBook,
    PriceQuote,
    Signal,
    SignalMetadata,
    SignalResponse,
    SubmitOutcome,
    classify_status,
)
from orchestrator_cli.services import RunServices

NOW = datetime(2024, 12, 31, 14, 31, tzinfo=UTC)
AS_OF = date(2024, 12, 31)


class FakeClock:
    """A monotonic clock that only its own `sleep` moves: every wait is recorded, none is real."""

    def __init__(self, sleeps: list[float] | None = None, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps = [] if sleeps is None else sleeps

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def signals_of(*rows: tuple[str, str]) -> SignalResponse:
    signals = [
        Signal(
            symbol=symbol,
            predicted_return=Decimal("0.01"),
            rank=rank,
            target_weight=Decimal(weight),
        )
        for rank, (symbol, weight) in enumerate(rows, start=1)
    ]
    metadata = SignalMetadata(
        as_of_date=AS_OF,
        model_version="test",
        strategy="alpha_baseline",
        num_signals=len(signals),
        generated_at=NOW,
    )
    return SignalResponse(signals=signals, metadata=metadata)


class FakeSignals:
    def __init__(self, response: SignalResponse | Exception) -> None:
        self.response = response
        self.calls: list[tuple[list[str], date | None]] = []
        self.strategy_ids: list[str | None] = []

    def fetch_signals(
        self,
        symbols: Sequence[str],
        *,
        as_of_date: date | None,
        top_n: int | None = None,
        bottom_n: int | None = None,
        strategy_id: str | None = None,
    ) -> SignalResponse:
        self.calls.append((list(symbols), as_of_date))
        self.strategy_ids.append(strategy_id)
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def not_sent(order: OrderRequest, message: str) -> SubmitOutcome:
    """The outcome of an order that never left (its turn at the gateway never came)."""
    return SubmitOutcome(
        client_order_id=order.client_order_id,
        kind=OutcomeKind.NOT_SENT,
        order_status="not_sent",
        message=message,
        sent=False,
    )


class FakeGateway:
    """Answers each order by symbol from `answers` (a gateway status or an outcome kind)."""

    def __init__(
        self,
        positions: dict[str, Decimal] | None = None,
        answers: dict[str, str] | None = None,
        on_submit: object = None,
    ) -> None:
        self.positions = positions or {}
        self.answers = answers or {}
        self.sent: list[OrderRequest] = []
        self.on_submit = on_submit
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []  # ("start" | "end", client_order_id)
        self.lookups: list[str] = []
        self.attempts: dict[str, int] = {}
        self.latency = 0.0

    config = GatewayConfig(dry_run=False, alpaca_paper=True)
    kill_switch = "ACTIVE"
    health = "healthy"
    filed_under: str | None = None  # the strategy its order details report

    def get_positions(self) -> dict[str, Decimal]:
        return dict(self.positions)

    def trading_mode(self) -> GatewayMode:
        return gateway_mode(self.config)

    def safety(self, strategy_id: str) -> Safety:
        if self.kill_switch == "unknown":
            raise ServiceError("kill-switch state unknown (HTTP 503)")
        return assess_safety(
            KillSwitchStatus(state=self.kill_switch),
            GatewayHealth(status=self.health),
            strategy_id=strategy_id,
            gateway_strategy=self.config.filing_strategy,
        )

    def get_order(self, client_order_id: str) -> OrderDetail | None:
        with self.lock:
            self.lookups.append(client_order_id)
            sent = [o for o in self.sent if o.client_order_id == client_order_id]
        if not sent:
            return None
        order = sent[0]
        answer = self.answers.get(order.symbol, "accepted")
        if answer == "unreachable":
            raise ServiceError("gateway unavailable")
        status = "filled" if answer in ("unknown", "lost") else answer
        return OrderDetail(
            client_order_id=client_order_id,
            status=status,
            symbol=order.symbol,
            side=order.side,
            qty=Decimal(order.qty),
            filled_qty=Decimal(order.qty) if status == "filled" else Decimal(0),
            strategy_id=self.filed_under,
        )

    def submit_order(
        self, order: OrderRequest, permit: Callable[[], str | None] | None = None
    ) -> SubmitOutcome:
        if permit is not None and permit() is not None:  # asked once its turn came, as HTTP is
            return not_sent(order, "not sent: orch stopped sending while it waited for its turn")
        with self.lock:
            self.events.append(("start", order.client_order_id))
        try:
            return self._answer(order)
        finally:
            with self.lock:
                self.events.append(("end", order.client_order_id))

    def _answer(self, order: OrderRequest) -> SubmitOutcome:
        if callable(self.on_submit):
            self.on_submit(order)
        with self.lock:
            self.sent.append(order)
        time.sleep(self.latency)  # simulated network time, so a wrong order would interleave
        answer = self.answers.get(order.symbol, "accepted")
        if answer == "lost":  # the request never arrived the first time
            with self.lock:
                self.attempts[order.client_order_id] = attempt = (
                    self.attempts.get(order.client_order_id, 0) + 1
                )
                if attempt == 1:
                    self.sent.remove(order)
            answer = "unknown" if attempt == 1 else "accepted"
        if answer == "kill_switch":
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.BLOCKED,
                order_status="blocked_kill_switch",
                message="Kill-switch engaged - new orders blocked",
                http_status=503,
                stops_run=True,
            )
        if answer in ("unknown", "unreachable"):
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.UNKNOWN,
                order_status="unknown",
                message="timed out",
            )
        if answer == "http_422":
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.REJECTED,
                order_status="rejected",
                message="Position limit exceeded",
                http_status=422,
            )
        return SubmitOutcome(
            client_order_id=order.client_order_id,
            kind=classify_status(answer),
            order_status=answer,
            broker_order_id=f"b-{order.symbol}",
            http_status=200,
        )


class FakePrices:
    name = "fake"

    def __init__(self, prices: dict[str, str] | Exception) -> None:
        self.prices = prices
        self.asked: list[str] = []

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        self.asked.extend(symbols)
        if isinstance(self.prices, Exception):
            raise self.prices
        book = PriceBook()
        for symbol in symbols:
            if symbol in self.prices:
                book.quotes[symbol] = PriceQuote(
                    symbol=symbol,
                    price=Decimal(self.prices[symbol]),
                    timestamp=now - timedelta(seconds=1),
                    source="fake",
                )
            else:
                book.problems[symbol] = "not in fake book"
        return book


EXECUTION_FIELDS = frozenset(Execution.__dataclass_fields__)


def make_request(symbols: list[str], **changes: object) -> RunRequest:
    """A run of `symbols` on seed-like inputs; `changes` may name RunSpec or Execution fields."""
    spec: dict[str, object] = {
        "symbols": symbols,
        "strategy_id": "alpha_baseline",
        "capital": Decimal("100000"),
        "max_position_size": Decimal("20000"),
        "dry_run": False,
        "limits": Limits(),
        "as_of_date": AS_OF,
    }
    execution: dict[str, object] = {
        "order_concurrency": 1,
        "lock_stale_seconds": 60.0,
        "allow_live_trading": False,
    }
    for name, value in changes.items():
        (execution if name in EXECUTION_FIELDS else spec)[name] = value
    return RunRequest(RunSpec(**spec), Execution(**execution))  # type: ignore[arg-type]


def run(session_factory, signals, gateway, prices, deadline=None, **changes):
    symbols = (
        [s.symbol for s in signals.response.signals]
        if not isinstance(signals.response, Exception)
        else ["AAPL"]
    )
    request = make_request(symbols, deadline=deadline, **changes)
    return execute_run(request, services_for(session_factory, signals, gateway, prices)).result


def services_for(session_factory, signals, gateway, prices):
    return RunServices(
        signals=signals,
        gateway=gateway,
        prices=prices,
        sessions=session_factory,
        clock=lambda: NOW,
    )
