"""The sandbox's shared state (prices, positions, orders) and the faults it can inject.

`SandboxState` guards everything with one lock; the gateway's idempotency check, risk checks,
order store and fill happen in one critical section (`place_order`), so concurrent submissions
of the same `client_order_id` create one order. Faults are never persisted.

With a state file, every mutation is kept at once, so a later process (the next `orch run
--sandbox`, or a run resumed after a crash) sees every order and fill: each mutation appends
one JSON line of what it changed (absolute values, so replaying a line twice changes nothing)
to a journal beside the file (`<file>.journal`), in constant time, however many orders the
state holds. Loading replays the journal over the file and writes the result back as the new
file (the journal is then removed), as does stopping the sandbox. (Rewriting the whole file
on every mutation made a 1,000-order run over ten times slower, and slower every day.)
"""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from orchestrator_cli.sandbox import persistence

CENT = Decimal("0.01")
FAT_FINGER_NOTIONAL = Decimal(1_000_000)
KILL_SWITCH_DETAIL = "Kill-switch engaged - new orders blocked"
# Safety states the real gateway fails closed on when it cannot read them (`fail_closed` fault).
FAIL_CLOSED_FAULTS = frozenset({"circuit_breaker", "position_reservation", "kill_switch"})
SIGNAL_FAULTS = frozenset(
    {
        "malformed",
        "nan_weight",
        "weight_out_of_range",
        "wrong_date",
        "unrequested_symbol",
        "duplicate_symbol",
        "http_500",
        "http_503",
        "rank_out_of_range",
        "return_out_of_range",
        "naive_generated_at",
        "long_model_version",
        "longs_above_one",
    }
)
# Hostile answers of the gateway's read endpoints (each one a bad payload for orch).
POSITIONS_FAULTS = frozenset({"lowercase_symbol", "padded_symbol", "qty_out_of_range"})
ORDER_FAULTS = frozenset({"filled_qty_above_qty", "naive_filled_at"})
# The string faults whose value is one of a fixed set.
FAULT_CHOICES = {
    "signal_fault": SIGNAL_FAULTS,
    "positions_fault": POSITIONS_FAULTS,
    "order_fault": ORDER_FAULTS,
}
DEFAULT_STRATEGY = "alpha_baseline"
DEFAULT_PRICES = {
    symbol: Decimal(price)
    for symbol, price in {
        "AAPL": "190.00",
        "MSFT": "420.00",
        "GOOGL": "170.00",
        "GOOG": "171.00",
        "AMZN": "185.00",
        "TSLA": "250.00",
        "NVDA": "120.00",
        "META": "500.00",
        "SPY": "560.00",
        "QQQ": "480.00",
        "JPM": "200.00",
        "V": "275.00",
        "NFLX": "650.00",
        "AMD": "160.00",
        "INTC": "22.00",
    }.items()
}


@dataclass
class SandboxFaults:
    """What the sandbox gets wrong on purpose: every fault off by default, mutable at run time."""

    latency_ms: int = 0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_seconds: float = 0.0
    timeout_after_accept_rate: float = 0.0
    hang_seconds: float = 2.0
    drop_after_accept_rate: float = 0.0
    kill_switch_engaged: bool = False
    kill_switch_after_orders: int | None = None
    signal_fault: str | None = None
    # The strategy the Signal Service is configured to serve (named in metadata.strategy).
    signal_strategy: str = DEFAULT_STRATEGY
    missing_price_symbols: set[str] = field(default_factory=set)
    stale_price_symbols: set[str] = field(default_factory=set)
    # Quotes and trades stamped without a timezone.
    naive_time_symbols: set[str] = field(default_factory=set)
    # Quoted at 1/100 of their price (a corrupt quote); the previous close stays true.
    wrong_price_symbols: set[str] = field(default_factory=set)
    # Snapshots without prevDailyBar (no reference price).
    no_reference_symbols: set[str] = field(default_factory=set)
    # Paths whose 200 answer is replaced by JSON nested far deeper than any parser allows;
    # an entry also covers the paths below it (`/api/v1/orders` covers each order's look-up).
    nested_json_paths: set[str] = field(default_factory=set)
    positions_fault: str | None = None
    order_fault: str | None = None
    gateway_dry_run: bool = False
    gateway_health: str = "healthy"
    max_position_shares: int = 1000
    seed: int | None = None
    # The real gateway's per-user limit: at most this many order requests in any sliding
    # window, every request counted, rejected ones included; a 429 says Retry-After: window.
    rate_limit_per_window: int | None = None
    rate_limit_window_seconds: float = 60.0
    # Every order refused with the 503 of one safety state the gateway cannot read (health
    # unchanged: the state went missing after the run's preflight).
    fail_closed: str | None = None
    # As the real gateway with its circuit-breaker state missing: /health says degraded and
    # names it, every order gets the circuit breaker's fail-closed 503.
    circuit_breaker_state_missing: bool = False
    # The strategy the gateway files every order under (order details and, unless
    # gateway_strategy_in_config is false, GET /api/v1/config report it).
    gateway_strategy: str | None = None
    gateway_strategy_in_config: bool = True
    # GET /api/v1/config says the orders reach a live (non-paper) account.
    gateway_live: bool = False
    # GET /api/v1/kill-switch/status answers 503: the gateway cannot read its kill switch.
    kill_switch_state_unknown: bool = False

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update from JSON; ValueError names a bad field and nothing changes."""
        kinds = {f.name: str(f.type) for f in fields(self)}
        parsed = {}
        for name, value in changes.items():
            if name not in kinds:
                known = ", ".join(sorted(f.name for f in fields(self)))
                raise ValueError(f"unknown fault: {name} (known: {known})")
            parsed[name] = _fault_value(name, kinds[name], value)
        for name, value in parsed.items():
            setattr(self, name, value)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, set):
                data[name] = sorted(value)
        return data

    def nests(self, path: str) -> bool:
        """Whether the answer at `path` is to be replaced by deeply nested JSON."""
        return any(
            path == nested or path.startswith(nested.rstrip("/") + "/")
            for nested in self.nested_json_paths
        )


def _bad_fault(name: str, value: Any) -> ValueError:
    return ValueError(f"bad value for fault {name}: {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bool_fault(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _bad_fault(name, value)


# Faults that make no sense at zero (a window, a cap of requests in it).
POSITIVE_FAULTS = frozenset({"rate_limit_per_window", "rate_limit_window_seconds"})
# Faults that take one of a few strings.
STR_FAULT_CHOICES = {**FAULT_CHOICES, "fail_closed": FAIL_CLOSED_FAULTS}


def _int_fault(name: str, value: Any) -> int:
    if _is_number(value) and isinstance(value, int) and (value > 0 or name not in POSITIVE_FAULTS):
        return value
    raise _bad_fault(name, value)


def _float_fault(name: str, value: Any) -> float:
    """A finite number >= 0 (> 0 for a window); a `*_rate` is a probability, at most 1."""
    limit = 1 if name.endswith("_rate") else math.inf
    lowest = 0 if name not in POSITIVE_FAULTS else math.ulp(0)  # a window of 0 is no window
    if _is_number(value) and math.isfinite(value) and lowest <= value <= limit:
        return float(value)
    raise _bad_fault(name, value)


def _str_fault(name: str, value: Any) -> str:
    choices = STR_FAULT_CHOICES.get(name)
    if isinstance(value, str) and (choices is None or value in choices):
        return value
    if choices is None:
        raise _bad_fault(name, value)
    raise ValueError(
        f"bad value for fault {name}: {value!r} (one of: {', '.join(sorted(choices))})"
    )


def _symbols_fault(name: str, value: Any) -> set[str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return set(value)
    raise _bad_fault(name, value)


# The parser for each annotation a fault field has (dataclass types are strings here).
_FAULT_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "bool": _bool_fault,
    "int": _int_fault,
    "float": _float_fault,
    "str": _str_fault,
    "set[str]": _symbols_fault,
}


def _fault_value(name: str, kind: str, value: Any) -> Any:
    """Check one JSON value against the field's annotation; `X | None` also takes null."""
    if value is None and kind.endswith(" | None"):
        return None
    parse = _FAULT_PARSERS.get(kind.removesuffix(" | None"))
    if parse is None:
        raise _bad_fault(name, value)
    return parse(name, value)


@dataclass(frozen=True)
class OrderTicket:
    """A validated order request, with its client_order_id (given or derived)."""

    client_order_id: str
    symbol: str
    side: str
    qty: int
    order_type: str
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None


@dataclass(frozen=True)
class Holding:
    qty: Decimal
    avg_entry_price: Decimal
    realized_pl: Decimal
    updated_at: datetime
    last_trade_at: datetime | None


class OrderRefused(Exception):
    """The gateway refuses an order: HTTP status and the `detail` of the error body."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


NESTING_DEPTH = 100_000


def deeply_nested_json(depth: int = NESTING_DEPTH) -> bytes:
    """A valid JSON document nested `depth` lists deep (Python's parser stops near 1,000)."""
    return b'{"detail": ' + b"[" * depth + b"]" * depth + b"}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix, as the real services write timestamps."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def hashed_price(symbol: str) -> Decimal:
    """A stable price in [10, 500) with two decimals for a symbol with no default price."""
    cents = int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big") % 49_000
    return Decimal(1_000 + cents).scaleb(-2)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _same_order(record: Mapping[str, Any], ticket: OrderTicket) -> bool:
    """Whether a stored order has the same payload (prices compared as numbers)."""

    def number(text: str | None) -> Decimal | None:
        return None if text is None else Decimal(text)

    return (
        record["symbol"],
        record["side"],
        record["qty"],
        record["order_type"],
        record["time_in_force"],
        number(record["limit_price"]),
        number(record["stop_price"]),
    ) == (
        ticket.symbol,
        ticket.side,
        ticket.qty,
        ticket.order_type,
        ticket.time_in_force,
        ticket.limit_price,
        ticket.stop_price,
    )


def _fill(holding: Holding | None, signed_qty: Decimal, price: Decimal, now: datetime) -> Holding:
    """The holding after a fill: average entry on adds, realized P&L on reductions."""
    old_qty = holding.qty if holding else Decimal(0)
    avg = holding.avg_entry_price if holding else price
    realized = holding.realized_pl if holding else Decimal(0)
    new_qty = old_qty + signed_qty
    if old_qty == 0 or (old_qty > 0) == (signed_qty > 0):
        avg = (abs(old_qty) * avg + abs(signed_qty) * price) / abs(new_qty)
    else:
        closed = min(abs(signed_qty), abs(old_qty))
        realized += (price - avg) * closed * (1 if old_qty > 0 else -1)
        if new_qty != 0 and (new_qty > 0) != (old_qty > 0):
            avg = price  # flipped through zero: the remainder opened at this price
    return Holding(new_qty, avg.quantize(CENT), realized.quantize(CENT), now, now)


class SandboxState:
    """Prices, positions and orders of the simulated services; thread-safe under `lock`."""

    def __init__(self, path: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.path = path
        self.prices: dict[str, Decimal] = dict(DEFAULT_PRICES)
        self.positions: dict[str, Holding] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.post_attempts = 0

    # --- reads ----------------------------------------------------------------------------

    def price_of(self, symbol: str) -> Decimal:
        """The symbol's price: a set or default one, else a stable hash-derived one."""
        with self.lock:
            return self._price_of(symbol)

    def _price_of(self, symbol: str) -> Decimal:
        return self.prices.get(symbol) or hashed_price(symbol)

    def position(self, symbol: str) -> Decimal:
        """Signed quantity held (negative = short), 0 when flat."""
        with self.lock:
            holding = self.positions.get(symbol)
            return holding.qty if holding else Decimal(0)

    def holdings(self) -> dict[str, Holding]:
        with self.lock:
            return dict(self.positions)

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        """A copy of the stored order record, or None."""
        with self.lock:
            record = self.orders.get(client_order_id)
            return None if record is None else dict(record)

    def orders_created(self) -> int:
        with self.lock:
            return len(self.orders)

    def snapshot(self) -> dict[str, Any]:
        """Everything as JSON-able data (the state file holds exactly this)."""
        with self.lock:
            return self._to_json()

    # --- mutations (each one saved when there is a state file) -----------------------------

    def set_price(self, symbol: str, price: Decimal) -> None:
        with self.lock:
            self.prices[symbol] = price
            self._record({"prices": {symbol: format(price, "f")}})

    def set_position(self, symbol: str, qty: Decimal) -> None:
        """Hold `qty` (signed) of `symbol`, entered at its current price."""
        with self.lock:
            old = self.positions.get(symbol)
            now = utc_now()
            realized = old.realized_pl if old else Decimal(0)
            self.positions[symbol] = Holding(
                Decimal(qty), self._price_of(symbol), realized, now, None
            )
            self._record({"positions": {symbol: _holding_json(self.positions[symbol])}})

    def count_post_attempt(self) -> None:
        with self.lock:
            self.post_attempts += 1
            self._record({"post_attempts": self.post_attempts})

    def reset(self) -> None:
        """Forget orders, positions and the POST counter (prices stay)."""
        with self.lock:
            self.orders.clear()
            self.positions.clear()
            self.post_attempts = 0
            self._record({"reset": True, "post_attempts": 0})

    def place_order(
        self,
        ticket: OrderTicket,
        *,
        dry_run: bool,
        max_position_shares: int,
        kill_switch_after_orders: int | None,
        strategy_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store (and for a market order fill) a new order, or return the stored one.

        Returns (record copy, created). Raises OrderRefused for a reused id with a different
        payload (409), the kill switch (503), fat-finger notional (400) or position limit (422).
        """
        with self.lock:
            existing = self.orders.get(ticket.client_order_id)
            if existing is not None:
                if not _same_order(existing, ticket):
                    raise OrderRefused(
                        409,
                        f"Order {ticket.client_order_id} already exists with different parameters",
                    )
                return dict(existing), False
            price = self._price_of(ticket.symbol)
            holding = self.positions.get(ticket.symbol)
            signed = Decimal(ticket.qty if ticket.side == "buy" else -ticket.qty)
            self._refuse_if_unsafe(
                ticket,
                price=price,
                current=holding.qty if holding else Decimal(0),
                signed=signed,
                max_position_shares=max_position_shares,
                kill_switch_after_orders=kill_switch_after_orders,
            )
            now = utc_now()
            fills = ticket.order_type == "market" and not dry_run
            record = _order_record(
                ticket, price=price, now=now, dry_run=dry_run, fills=fills, strategy=strategy_id
            )
            self.orders[ticket.client_order_id] = record
            change: dict[str, Any] = {"orders": {ticket.client_order_id: record}}
            if fills:
                self.positions[ticket.symbol] = _fill(holding, signed, price, now)
                change["positions"] = {ticket.symbol: _holding_json(self.positions[ticket.symbol])}
            self._record(change)
            return dict(record), True

    def _refuse_if_unsafe(
        self,
        ticket: OrderTicket,
        *,
        price: Decimal,
        current: Decimal,
        signed: Decimal,
        max_position_shares: int,
        kill_switch_after_orders: int | None,
    ) -> None:
        """The gateway's own checks: kill switch, fat-finger notional, position limit."""
        if kill_switch_after_orders is not None and len(self.orders) >= kill_switch_after_orders:
            raise OrderRefused(503, KILL_SWITCH_DETAIL)
        if ticket.qty * (ticket.limit_price or price) > FAT_FINGER_NOTIONAL:
            raise OrderRefused(400, "Order rejected by fat-finger checks: notional")
        if abs(current + signed) > max_position_shares:
            raise OrderRefused(
                422,
                {
                    "error": "Position limit exceeded",
                    "symbol": ticket.symbol,
                    "current_position": format(current, "f"),
                    "resulting_position": format(current + signed, "f"),
                    "max_position_shares": max_position_shares,
                },
            )

    # --- persistence ----------------------------------------------------------------------

    def load(self) -> None:
        """Replace the state with the state file's content and its journal replayed over it,
        then write that back as the state file (and remove the journal)."""
        if self.path is None:
            return
        data = persistence.read(self.path)
        if data is None:
            return
        with self.lock:
            self.prices = {**DEFAULT_PRICES, **{s: Decimal(p) for s, p in data["prices"].items()}}
            self.positions = {
                symbol: _holding_from(row) for symbol, row in data["positions"].items()
            }
            self.orders = data["orders"]
            self.post_attempts = data["post_attempts"]
            self._write_file()

    def save(self) -> None:
        """Write the whole state as the state file (and remove the journal)."""
        with self.lock:
            self._write_file()

    def _record(self, change: dict[str, Any]) -> None:
        """Append one mutation to the journal; the caller holds the lock."""
        if self.path is not None:
            persistence.append(self.path, change)

    def _write_file(self) -> None:
        """Write the whole state as the state file; the caller holds the lock."""
        if self.path is not None:
            persistence.write(self.path, self._to_json())

    def _to_json(self) -> dict[str, Any]:
        return {
            "prices": {symbol: format(price, "f") for symbol, price in self.prices.items()},
            "positions": {symbol: _holding_json(h) for symbol, h in self.positions.items()},
            "orders": {key: dict(record) for key, record in self.orders.items()},
            "post_attempts": self.post_attempts,
        }


def _holding_json(h: Holding) -> dict[str, Any]:
    return {
        "qty": format(h.qty, "f"),
        "avg_entry_price": format(h.avg_entry_price, "f"),
        "realized_pl": format(h.realized_pl, "f"),
        "updated_at": iso_z(h.updated_at),
        "last_trade_at": None if h.last_trade_at is None else iso_z(h.last_trade_at),
    }


def _holding_from(row: dict[str, Any]) -> Holding:
    return Holding(
        Decimal(row["qty"]),
        Decimal(row["avg_entry_price"]),
        Decimal(row["realized_pl"]),
        datetime.fromisoformat(row["updated_at"]),
        None if row["last_trade_at"] is None else datetime.fromisoformat(row["last_trade_at"]),
    )


def _order_record(
    ticket: OrderTicket,
    *,
    price: Decimal,
    now: datetime,
    dry_run: bool,
    fills: bool,
    strategy: str | None = None,
) -> dict[str, Any]:
    """The gateway's record of a new order, as GET /api/v1/orders/{id} returns it; filed
    under the gateway's own strategy, whatever the caller's X-Strategy-ID said."""
    return {
        "client_order_id": ticket.client_order_id,
        "status": "dry_run" if dry_run else "filled" if fills else "new",
        "broker_order_id": None if dry_run else str(uuid.uuid4()),
        "symbol": ticket.symbol,
        "side": ticket.side,
        "qty": ticket.qty,
        "order_type": ticket.order_type,
        "time_in_force": ticket.time_in_force,
        "limit_price": _text(ticket.limit_price),
        "stop_price": _text(ticket.stop_price),
        "created_at": iso_z(now),
        "updated_at": iso_z(now),
        "submitted_at": None if dry_run else iso_z(now),
        "filled_qty": str(ticket.qty) if fills else "0",
        "filled_avg_price": _text(price) if fills else None,
        "filled_at": iso_z(now) if fills else None,
        "error_message": None,
        "strategy_id": strategy,
    }
