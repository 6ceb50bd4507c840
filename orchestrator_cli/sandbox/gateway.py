"""Execution Gateway simulation: order validation, derived ids and the response shapes.

The order store itself (idempotency, risk checks, fills) is `SandboxState.place_order`; the
transport-level faults (429, 503, hang, drop) are injected by the server around it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

from orchestrator_cli.sandbox.state import (
    CENT,
    OrderTicket,
    SandboxFaults,
    SandboxState,
    iso_z,
    utc_now,
)

IDEMPOTENT_MESSAGE = "Order already exists (idempotent retry)"
CIRCUIT_BREAKER_UNAVAILABLE = "Circuit-breaker state unavailable (fail-closed for safety)"
# The 503 bodies of the real gateway when it cannot read a safety state (`fail_closed` fault).
FAIL_CLOSED_BODIES: dict[str, Any] = {
    "circuit_breaker": {"detail": CIRCUIT_BREAKER_UNAVAILABLE},
    "position_reservation": {
        "detail": "Position-reservation state unavailable (fail-closed for safety)"
    },
    "kill_switch": {
        "error": "Kill-switch unavailable",
        "message": "Kill-switch state could not be read; new orders are refused",
        "fail_closed": True,
    },
}
Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


class OrderForm(BaseModel):
    """`POST /api/v1/orders` body; pydantic's ValidationError is answered 422 like FastAPI."""

    model_config = ConfigDict(extra="ignore")

    symbol: Annotated[
        str, StringConstraints(strict=True, strip_whitespace=True, to_upper=True, min_length=1)
    ]
    side: Literal["buy", "sell"]
    qty: StrictInt = Field(gt=0)
    order_type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    time_in_force: Literal["day", "gtc", "ioc", "fok"] = "day"
    limit_price: Price | None = None
    stop_price: Price | None = None
    client_order_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,24}$")] | None = (
        None
    )

    @model_validator(mode="after")
    def _prices_match_type(self) -> Self:
        if self.order_type in ("limit", "stop_limit") and self.limit_price is None:
            raise ValueError(f"limit_price is required for {self.order_type} orders")
        if self.order_type in ("stop", "stop_limit") and self.stop_price is None:
            raise ValueError(f"stop_price is required for {self.order_type} orders")
        return self


def parse_order(body: Any) -> OrderTicket:
    """Validate an order body (ValidationError -> 422); without an id, derive the gateway's."""
    form = OrderForm.model_validate(body)
    return OrderTicket(
        client_order_id=form.client_order_id or derive_client_order_id(form),
        symbol=form.symbol,
        side=form.side,
        qty=form.qty,
        order_type=form.order_type,
        time_in_force=form.time_in_force,
        limit_price=form.limit_price,
        stop_price=form.stop_price,
    )


def derive_client_order_id(form: OrderForm) -> str:
    """24 hex chars from the order fields and the UTC date: same order, same day, same id."""

    def canonical(price: Decimal | None) -> str:
        return "" if price is None else format(price.normalize(), "f")

    key = "|".join(
        (
            form.symbol,
            form.side,
            str(form.qty),
            form.order_type,
            form.time_in_force,
            canonical(form.limit_price),
            canonical(form.stop_price),
            utc_now().date().isoformat(),
        )
    )
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class RateWindow:
    """The real gateway's per-user rate limit: a sliding window over every order request,
    rejected ones included, so a client retrying early keeps its own window full."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self.rejected = 0  # requests answered 429 by the window

    def admit(self, cap: int | None, window: float) -> bool:
        """Count one request; False when `cap` requests were already in the last `window`."""
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] <= now - window:
                self._times.popleft()
            over = cap is not None and len(self._times) >= cap
            self._times.append(now)
            if over:
                self.rejected += 1
            return not over

    def reset(self) -> None:
        with self._lock:
            self._times.clear()
            self.rejected = 0


def rate_limited(faults: SandboxFaults) -> tuple[int, Any, dict[str, str]]:
    """The real gateway's 429: `Retry-After` is the whole window, so waiting it out clears it."""
    window = faults.rate_limit_window_seconds
    retry_after = format(window, "g")
    body = {
        "detail": {
            "error": "rate_limited",
            "message": f"Rate limit exceeded: {faults.rate_limit_per_window} orders per "
            f"{retry_after}s",
            "retry_after": window,
            "reason": "per_user_limit_exceeded",
        }
    }
    return 429, body, {"Retry-After": retry_after}


def fail_closed_refusal(faults: SandboxFaults) -> Any | None:
    """The 503 body of a safety state the gateway cannot read, or None when it can."""
    if faults.circuit_breaker_state_missing:
        return FAIL_CLOSED_BODIES["circuit_breaker"]
    if faults.fail_closed is not None:
        return FAIL_CLOSED_BODIES[faults.fail_closed]
    return None


def kill_switch_engaged(state: SandboxState, faults: SandboxFaults) -> bool:
    """Engaged by the flag, or once `kill_switch_after_orders` orders are stored."""
    after = faults.kill_switch_after_orders
    return faults.kill_switch_engaged or (after is not None and state.orders_created() >= after)


def order_response(record: dict[str, Any], *, created: bool) -> dict[str, Any]:
    """The 200 body of `POST /api/v1/orders`."""
    if not created:
        message = IDEMPOTENT_MESSAGE
    elif record["status"] == "dry_run":
        message = "Order logged (DRY_RUN mode)"
    else:
        message = "Order submitted to broker"
    fields = (
        "client_order_id",
        "status",
        "broker_order_id",
        "symbol",
        "side",
        "qty",
        "order_type",
        "limit_price",
        "stop_price",
        "created_at",
    )
    return {**{name: record[name] for name in fields}, "message": message}


def order_detail(
    state: SandboxState, client_order_id: str, fault: str | None = None
) -> tuple[int, Any]:
    """`GET /api/v1/orders/{client_order_id}`; an `order_fault` spoils the answer."""
    record = state.order(client_order_id)
    if record is None:
        return 404, {"detail": f"Order not found: {client_order_id}"}
    detail = {**record, "retry_count": 0}
    if fault == "filled_qty_above_qty":
        detail["filled_qty"] = str(int(record["qty"]) + 1)
    elif fault == "naive_filled_at":
        detail["filled_at"] = iso_z(utc_now()).removesuffix("Z")
    return 200, detail


def _spoil_positions(rows: list[dict[str, Any]], fault: str | None) -> None:
    """Apply a `positions_fault` to every row in place."""
    for row in rows:
        if fault == "lowercase_symbol":
            row["symbol"] = row["symbol"].lower()
        elif fault == "padded_symbol":
            row["symbol"] += " "
        elif fault == "qty_out_of_range":
            row["qty"] = "1" + "0" * 30


def positions(state: SandboxState, fault: str | None = None) -> dict[str, Any]:
    """`GET /api/v1/positions`: open positions only, quantities as signed decimal strings."""
    rows = []
    total_unrealized = Decimal(0)
    total_realized = Decimal(0)
    for symbol, holding in sorted(state.holdings().items()):
        total_realized += holding.realized_pl
        if holding.qty == 0:
            continue
        price = state.price_of(symbol)
        unrealized = ((price - holding.avg_entry_price) * holding.qty).quantize(CENT)
        total_unrealized += unrealized
        rows.append(
            {
                "symbol": symbol,
                "qty": format(holding.qty, "f"),
                "avg_entry_price": format(holding.avg_entry_price, "f"),
                "current_price": format(price, "f"),
                "unrealized_pl": format(unrealized, "f"),
                "realized_pl": format(holding.realized_pl, "f"),
                "updated_at": iso_z(holding.updated_at),
                "last_trade_at": None
                if holding.last_trade_at is None
                else iso_z(holding.last_trade_at),
            }
        )
    _spoil_positions(rows, fault)
    return {
        "positions": rows,
        "total_positions": len(rows),
        "total_unrealized_pl": format(total_unrealized, "f"),
        "total_realized_pl": format(total_realized, "f"),
    }


def kill_switch_status(state: SandboxState, faults: SandboxFaults) -> tuple[int, Any]:
    """`GET /api/v1/kill-switch/status`: 503 while the gateway cannot read the state."""
    if faults.kill_switch_state_unknown:
        return 503, FAIL_CLOSED_BODIES["kill_switch"]
    return 200, {"state": "ENGAGED" if kill_switch_engaged(state, faults) else "ACTIVE"}


def config(faults: SandboxFaults) -> dict[str, Any]:
    strategy = faults.gateway_strategy if faults.gateway_strategy_in_config else None
    return {
        "service": "execution_gateway",
        "version": "sandbox",
        "environment": "sandbox",
        "dry_run": faults.gateway_dry_run,
        "alpaca_paper": not faults.gateway_live,
        "circuit_breaker_enabled": True,
        "liquidity_check_enabled": False,
        "max_slice_pct_of_adv": 0.01,
        **({} if strategy is None else {"strategy_id": strategy}),
        "timestamp": iso_z(utc_now()),
    }


def health(faults: SandboxFaults) -> dict[str, Any]:
    """`GET /health` body; the real gateway answers HTTP 200 whatever the status.

    With its circuit-breaker state missing the gateway is `degraded` and says why.
    """
    body = {
        "status": faults.gateway_health,
        "service": "execution_gateway",
        "version": "sandbox",
        "dry_run": faults.gateway_dry_run,
        "database_connected": True,
        "alpaca_connected": True,
        "timestamp": iso_z(utc_now()),
    }
    if faults.circuit_breaker_state_missing:
        if body["status"] == "healthy":
            body["status"] = "degraded"
        body["circuit_breaker_available"] = False
        body["message"] = CIRCUIT_BREAKER_UNAVAILABLE
    return body
