"""What a run needs of the outside world, as protocols; `wiring` builds the real ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli.clock import utc_now
from orchestrator_cli.gateway import GatewayMode, Safety
from orchestrator_cli.prices import PriceSource
from orchestrator_cli.schemas import OrderDetail, OrderRequest, SignalResponse, SubmitOutcome


class SignalSource(Protocol):
    """What the run needs of the Signal Service (`signals.SignalClient`)."""

    def fetch_signals(
        self,
        symbols: Sequence[str],
        *,
        as_of_date: date | None,
        top_n: int | None = None,
        bottom_n: int | None = None,
        strategy_id: str | None = None,
    ) -> SignalResponse: ...


class OrderGateway(Protocol):
    """What the run needs of an execution gateway (`gateway.GatewayClient`).

    `trading_mode` and `safety` are the gateway's own preflight in gateway-neutral terms
    (`safety` also checks that the gateway files orders under the run's `strategy_id`); a
    second kind of gateway implements these five methods and nothing else.
    """

    def trading_mode(self) -> GatewayMode: ...

    def safety(self, strategy_id: str) -> Safety: ...

    def get_positions(self) -> dict[str, Decimal]: ...

    def submit_order(
        self, order: OrderRequest, permit: Callable[[], str | None] | None = None
    ) -> SubmitOutcome: ...

    def get_order(self, client_order_id: str) -> OrderDetail | None: ...


@dataclass
class RunServices:
    """The run's collaborators; tests pass fakes or clients pointed at the sandbox."""

    signals: SignalSource
    gateway: OrderGateway
    prices: PriceSource
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = utc_now
    progress: Callable[[str], None] = lambda _message: None
    # Called after each order's outcome with (orders answered so far, orders to send), from
    # the thread that collects the outcomes: a progress bar, or a periodic line.
    order_progress: Callable[[int, int], None] = lambda _done, _total: None
    # Called when the run stops sending (a halt, an interruption): requests waiting for their
    # turn at the gateway (rate limit, pacing) give up at once instead of going out late.
    stop_waiting: Callable[[], None] = lambda: None
    # Asked before each order goes out: why it may not (the run lock lost), or None.
    send_permit: Callable[[], str | None] = lambda: None
