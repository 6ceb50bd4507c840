"""Execution Gateway simulation: order validation, derived ids and the response shapes.

The order store itself (idempotency, risk checks, fills) is `SandboxState.place_order`; the
transport-level faults (429, 503, hang, drop) are injected by the server around it.
"""

from __future__ import annotations

import hashlib
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


def kill_switch_status(state: SandboxState, faults: SandboxFaults) -> dict[str, Any]:
    return {"state": "ENGAGED" if kill_switch_engaged(state, faults) else "ACTIVE"}


def config(faults: SandboxFaults) -> dict[str, Any]:
    return {
        "service": "execution_gateway",
        "version": "sandbox",
        "environment": "sandbox",
        "dry_run": faults.gateway_dry_run,
        "alpaca_paper": True,
        "circuit_breaker_enabled": True,
        "liquidity_check_enabled": False,
        "max_slice_pct_of_adv": 0.01,
        "timestamp": iso_z(utc_now()),
    }


def health(faults: SandboxFaults) -> dict[str, Any]:
    """`GET /health` body; the real gateway answers HTTP 200 whatever the status."""
    return {
        "status": faults.gateway_health,
        "service": "execution_gateway",
        "version": "sandbox",
        "dry_run": faults.gateway_dry_run,
        "database_connected": True,
        "alpaca_connected": True,
        "timestamp": iso_z(utc_now()),
    }
