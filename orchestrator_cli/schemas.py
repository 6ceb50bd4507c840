"""Pydantic models for the data that crosses a boundary: HTTP payloads, plans and run results.

Numbers from the wire are parsed as `Decimal` (see `parse_json`), never through float, and a
number field refuses strings, booleans and non-finite values: a payload that breaks the
contract is a bad payload, not something to coerce.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,15}$"
CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,24}$"


def _reject_constant(name: str) -> Decimal:
    raise ValueError(f"non-finite number {name} in JSON")


def parse_json(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as Decimal; NaN/Infinity literals are refused.

    Raises ValueError for anything that is not usable JSON, including a document nested deeper
    than Python's recursion limit (about 1,000 levels), which `json` reports as RecursionError.
    """
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


# Control characters but tab and newline: C0 (NUL, BEL, ESC, CR...), DEL and C1 (CSI...).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def storable(text: str) -> str:
    """`text` as both databases can hold it and any terminal can show it: a lone surrogate
    (what a JSON `\\ud800` in a service's answer decodes to) and a control character (NUL,
    which PostgreSQL refuses; ESC or BEL, which would drive the terminal of whoever reads the
    audit trail or the log) become their backslash escapes; everything else is kept."""
    text = _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _stored_as_given(value: str) -> str:
    """A short value kept as the service gave it (a status, an id) must fit its column as
    it is: a control character or a lone surrogate there makes the answer unusable, not the
    write fail."""
    if storable(value) != value:
        raise ValueError("contains a control character or a lone surrogate")
    return value


def _wire_number(value: Any) -> Any:
    """Accept an int or Decimal (or float from Python callers); refuse str, bool and None."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise ValueError("must be a JSON number")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise ValueError("must be a finite number")
    return number


def _wire_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a JSON integer")
    return value


def _decimal_string(value: Any) -> Any:
    """Accept a decimal given as a string or number (gateway quantities and prices)."""
    if isinstance(value, bool) or value is None:
        raise ValueError("must be a decimal number or string")
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except ArithmeticError as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc
    if not number.is_finite():
        raise ValueError("must be finite")
    return number


def _in_utc(value: datetime) -> datetime:
    """An aware timestamp converted to UTC; one that UTC cannot hold (year 1 at +01:00) is
    refused here rather than failing the audit insert."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp {value.isoformat()} is out of range") from None


def _canonical_position_symbol(value: str) -> str:
    """A held symbol must be spelled as orch spells symbols (upper-case, no spaces): a position
    in `aapl` or `"AAPL "` would not match the universe's `AAPL`, and the full target would be
    bought again on top of it. Other canonical spellings (`BTC/USD`, an option) are kept: they
    cannot match a symbol of the universe and are left alone."""
    canonical = value.isascii() and value.isprintable() and value == value.upper()
    if not value or not canonical or any(character.isspace() for character in value):
        raise ValueError(
            f"position symbol {value[:40]!r} is not in canonical form (upper case, no spaces), "
            "so it would not match the run's symbols"
        )
    return value


# The audit columns' limits (models.py), so a value that cannot be stored is a bad payload,
# refused the same way on SQLite (which would store it) and PostgreSQL (which would not).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RETURN_LIMIT = Decimal(10) ** 18  # predicted_return, NUMERIC(36, 18)
QTY_LIMIT = Decimal(10) ** 18  # quantities, NUMERIC(24, 6)
PRICE_LIMIT = Decimal(10) ** 14  # prices, NUMERIC(20, 6)
MODEL_VERSION_LENGTH = 64


def _below(limit: Decimal) -> AfterValidator:
    """A check that a number's size is below `limit` (what its audit column holds)."""

    def check(value: Decimal) -> Decimal:
        if abs(value) >= limit:
            raise ValueError(f"{value} is too large to record (limit {limit:.0e})")
        return value

    return AfterValidator(check)


WireDecimal = Annotated[Decimal, BeforeValidator(_wire_number)]
WireInt = Annotated[int, BeforeValidator(_wire_int)]
DecimalText = Annotated[Decimal, BeforeValidator(_decimal_string)]
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN)]
UtcTimestamp = Annotated[AwareDatetime, AfterValidator(_in_utc)]
Quantity = Annotated[DecimalText, _below(QTY_LIMIT)]
FillPrice = Annotated[DecimalText, Field(ge=0), _below(PRICE_LIMIT)]


def json_number(value: Decimal) -> float | int:
    """A Decimal for a JSON number field (weights, returns): int when integral, else float."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def money_text(value: Decimal) -> str:
    """A price as text: trailing zeros dropped, at least two decimals (150 -> "150.00")."""
    normal = value.normalize()
    if normal.as_tuple().exponent > -2:  # type: ignore[operator]
        normal = normal.quantize(Decimal("0.01"))
    return format(normal, "f")


def plural(count: int, noun: str) -> str:
    """`1 order`, `3 orders`."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


MoneyOut = Annotated[Decimal, PlainSerializer(money_text, return_type=str, when_used="json")]
NumberOut = Annotated[
    Decimal, PlainSerializer(json_number, return_type=float | int, when_used="json")
]


def _in_unit_range(value: Decimal) -> Decimal:
    if not Decimal(-1) <= value <= Decimal(1):
        raise ValueError("target_weight must be within [-1, 1]")
    return value


Weight = Annotated[WireDecimal, AfterValidator(_in_unit_range)]

# A weight from the wire is usually a binary64 float printed in its shortest form: 1/67 is
# 0.014925373134328358, and 67 of them sum to slightly more than 1. Each weight (|w| <= 1)
# carries one rounding to binary64 when the service computes it and one when it is printed,
# each at most 2**-53; WEIGHT_ROUNDING allows four of them (a service may normalise with a few
# more float operations). A sum of n weights may therefore exceed its limit by n *
# WEIGHT_ROUNDING (about 9e-14 for 200 weights: a millionth of a cent on $100k) and still
# be at the limit; anything more is a real excess.
WEIGHT_ROUNDING = Decimal(2) ** -51


def weight_sum_tolerance(count: int) -> Decimal:
    """How far a sum of `count` weights may pass its limit from float rounding alone."""
    return count * WEIGHT_ROUNDING


class _Wire(BaseModel):
    """Tolerates unknown extra fields from a newer service; required ones must be there."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# --- Signal Service -------------------------------------------------------------------------


class SignalRequest(BaseModel):
    symbols: list[Symbol] = Field(min_length=1)
    as_of_date: date | None = None
    top_n: int | None = Field(default=None, ge=0)
    bottom_n: int | None = Field(default=None, ge=0)


class Signal(_Wire):
    symbol: Symbol
    predicted_return: Annotated[WireDecimal, _below(RETURN_LIMIT)]
    rank: Annotated[WireInt, Field(ge=INT32_MIN, le=INT32_MAX)]
    target_weight: Weight


class SignalMetadata(_Wire):
    as_of_date: date
    model_version: Annotated[
        str, Field(max_length=MODEL_VERSION_LENGTH), AfterValidator(_stored_as_given)
    ]
    strategy: str
    num_signals: WireInt
    generated_at: UtcTimestamp
    top_n: int | None = None
    bottom_n: int | None = None


class SignalResponse(_Wire):
    signals: list[Signal]
    metadata: SignalMetadata


# --- Execution Gateway ----------------------------------------------------------------------

OrderSide = Literal["buy", "sell"]
# Bounded to the audit columns, so an oversized value is an unusable answer, not a failed insert.
GatewayStatus = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_stored_as_given)]
BrokerOrderId = Annotated[str, Field(max_length=64), AfterValidator(_stored_as_given)]


class OrderRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: Symbol
    side: OrderSide
    qty: int = Field(gt=0)
    order_type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    time_in_force: Literal["day", "gtc", "ioc", "fok"] = "day"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str = Field(pattern=CLIENT_ORDER_ID_PATTERN)

    def wire(self) -> dict[str, Any]:
        """The JSON body the gateway expects (decimals as strings)."""
        return self.model_dump(mode="json")


class OrderAck(_Wire):
    """The gateway's 200 answer to `POST /api/v1/orders`."""

    client_order_id: str
    status: GatewayStatus
    broker_order_id: BrokerOrderId | None = None
    symbol: str | None = None
    side: str | None = None
    qty: DecimalText | None = None
    message: str | None = None


class OrderDetail(_Wire):
    """`GET /api/v1/orders/{client_order_id}`."""

    client_order_id: str
    status: GatewayStatus
    broker_order_id: BrokerOrderId | None = None
    symbol: str | None = None
    side: str | None = None
    qty: DecimalText | None = None
    filled_qty: Quantity | None = None
    filled_avg_price: FillPrice | None = None
    filled_at: UtcTimestamp | None = None
    error_message: str | None = None
    # The strategy the gateway filed the order under (its own configured one).
    strategy_id: str | None = None

    @model_validator(mode="after")
    def _filled_within_qty(self) -> Self:
        filled = self.filled_qty
        if filled is not None and (filled < 0 or (self.qty is not None and filled > self.qty)):
            raise ValueError(f"filled_qty {filled} is outside 0..qty ({self.qty})")
        return self


class Position(_Wire):
    symbol: Annotated[str, AfterValidator(_canonical_position_symbol)]
    qty: Quantity


class PositionsResponse(_Wire):
    positions: list[Position]


class GatewayHealth(_Wire):
    """`GET /health`; the other fields are kept: a degraded body may name what fails closed."""

    model_config = ConfigDict(extra="allow", frozen=True)

    status: Literal["healthy", "degraded", "unhealthy"]
    dry_run: bool | None = None
    database_connected: bool | None = None


class KillSwitchStatus(_Wire):
    state: Literal["ACTIVE", "ENGAGED"]


class GatewayConfig(_Wire):
    service: str | None = None
    version: str | None = None
    environment: str | None = None
    dry_run: bool
    alpaca_paper: bool
    circuit_breaker_enabled: bool | None = None
    # The strategy the gateway files every order under, when its config says (either name).
    strategy_id: str | None = None
    strategy: str | None = None

    @property
    def filing_strategy(self) -> str | None:
        """The gateway's own strategy (`strategy_id`, else `strategy`), or None if not said."""
        return self.strategy_id if self.strategy_id is not None else self.strategy


# --- Order outcomes -------------------------------------------------------------------------


class OutcomeKind(StrEnum):
    """How `orch` counts an order's state; the gateway's own string is kept beside it."""

    PLANNED = "planned"  # recorded, not yet answered (or never sent: dry run)
    ACCEPTED = "accepted"  # the gateway took it (includes its own dry_run mode)
    REJECTED = "rejected"  # the gateway or broker refused it (400/409/422, rejected, failed...)
    BLOCKED = "blocked"  # kill switch / circuit breaker / auth: not taken, run stopped sending
    UNKNOWN = "unknown"  # the request may have reached the gateway; settle with GET by id
    NOT_SENT = "not_sent"  # deliberately never sent (run stopped before it)


ACCEPTED_STATUSES = frozenset(
    {
        "pending_new",
        "new",
        "accepted",
        "partially_filled",
        "filled",
        "done_for_day",
        "replaced",
        "stopped",
        "pending_cancel",
        "pending_replace",
        "calculated",
        "submitted",
        "scheduled",
        "dry_run",
    }
)
REJECTED_STATUSES = frozenset({"rejected", "canceled", "expired", "suspended", "failed"})
# Accepted and not finished: may still fill, so a later run must count it as in flight.
# `dry_run` is not here: the gateway only logged the order and it never fills.
OPEN_STATUSES = frozenset(
    {
        "pending_new",
        "new",
        "accepted",
        "partially_filled",
        "stopped",
        "pending_cancel",
        "pending_replace",
        "calculated",
        "submitted",
        "scheduled",
    }
)
BLOCKED_STATUSES = frozenset({"blocked_kill_switch", "blocked_circuit_breaker"})


def classify_status(status: str) -> OutcomeKind:
    """Map a gateway status string to how it counts; unrecognised strings are UNKNOWN."""
    if status in ACCEPTED_STATUSES:
        return OutcomeKind.ACCEPTED
    if status in REJECTED_STATUSES:
        return OutcomeKind.REJECTED
    if status in BLOCKED_STATUSES:
        return OutcomeKind.BLOCKED
    return OutcomeKind.UNKNOWN


class SubmitOutcome(BaseModel):
    """What happened to one order submission, as recorded in the audit trail."""

    model_config = ConfigDict(frozen=True)

    client_order_id: str
    kind: OutcomeKind
    order_status: str  # gateway status string, or a local one: rejected/blocked/unknown/...
    broker_order_id: str | None = None
    message: str | None = None
    http_status: int | None = None
    stops_run: bool = False  # True for kill switch / circuit breaker / auth: send nothing more
    sent: bool = True  # False when the request never left (e.g. connect refused)


# --- Prices ---------------------------------------------------------------------------------


class PriceQuote(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: Decimal
    timestamp: AwareDatetime
    source: str
    # The price the quote is checked against (the previous close), when the source has one.
    reference: Decimal | None = None


class PriceBook(BaseModel):
    """Prices for a run: a quote per usable symbol, a reason per unusable one."""

    quotes: dict[str, PriceQuote] = Field(default_factory=dict)
    problems: dict[str, str] = Field(default_factory=dict)

    def reason(self, symbol: str) -> str:
        return self.problems.get(symbol, "no price returned")


# --- Plan -----------------------------------------------------------------------------------


class SkipReason(StrEnum):
    ZERO_WEIGHT = "zero_weight"
    QTY_LESS_THAN_ONE_SHARE = "qty_less_than_one_share"
    PRICE_UNAVAILABLE = "price_unavailable"
    ALREADY_AT_TARGET = "already_at_target"
    LONG_ONLY = "long_only"  # a short signal ignored in long-only mode, nothing held
    RESTRICTED_SYMBOL = "restricted_symbol"
    BELOW_MIN_TRADE = "below_min_trade"
    MAX_ORDER_NOTIONAL = "max_order_notional"


class PlannedMapping(BaseModel):
    """One signal turned into (at most) one order; output of the pure sizing module."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    predicted_return: Decimal
    rank: int
    target_weight: Decimal
    price: Decimal | None
    price_timestamp: datetime | None
    current_qty: Decimal
    target_dollars: Decimal | None
    target_qty: int | None
    order_qty: int  # absolute number of shares to order; 0 when skipped
    order_side: OrderSide | None
    skip_reason: SkipReason | None
    skip_detail: str | None = None
    leg: int = 0  # 1 for the opening half of an order split at zero (long 10 -> short 5)
    reduces: bool = False  # the order moves the position toward zero (sent first)

    @property
    def needs_order(self) -> bool:
        return self.order_qty > 0

    @property
    def notional(self) -> Decimal | None:
        """Dollar value of the order at the planning price, when there is one."""
        return None if self.price is None else self.order_qty * self.price


# --- Run results (what `orch run --json` and `orch runs show --json` print) ----------------

RunStatus = Literal["running", "completed", "partial", "failed"]


class MappingResult(BaseModel):
    symbol: str
    predicted_return: NumberOut | None
    rank: int | None
    target_weight: NumberOut | None
    price: MoneyOut | None
    current_qty: NumberOut
    target_qty: int | None
    order_qty: int | None
    order_side: OrderSide | None
    client_order_id: str | None
    order_status: str | None
    skip_reason: str | None
    detail: str | None = None
    note: str | None = None
    broker_order_id: str | None = None
    filled_qty: NumberOut | None = None
    filled_avg_price: MoneyOut | None = None
    leg: int = 0


class RunSummary(BaseModel):
    run_id: uuid.UUID
    strategy_id: str
    as_of_date: date
    status: RunStatus
    dry_run: bool
    num_signals: int
    num_orders_submitted: int
    num_orders_accepted: int
    num_orders_rejected: int
    duration_seconds: float | None
    error_message: str | None
    started_at: datetime | None = None
    num_orders_blocked: int = 0
    num_orders_unknown: int = 0
    gateway_mode: str | None = None
    # What the run used: its universe size, capital, cap and price source.
    num_symbols: int | None = None
    capital: MoneyOut | None = None
    max_position_size: MoneyOut | None = None
    price_source: str | None = None
    # A resumed run: seconds since it first started (duration_seconds is the resume's own).
    elapsed_seconds: float | None = None
    # Seconds spent in each phase by the process that finished the run; None for older runs.
    phase_seconds: dict[str, float] | None = None


class RunResult(RunSummary):
    limits: dict[str, Any] | None = None
    mappings: list[MappingResult] = Field(default_factory=list)


class RunPage(BaseModel):
    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


MAX_LISTED_ERRORS = 3


def listed_problems(problems: Sequence[str]) -> str:
    """The first few problems, so that one bad payload still makes a one-line message."""
    text = "; ".join(problems[:MAX_LISTED_ERRORS])
    extra = len(problems) - MAX_LISTED_ERRORS
    return f"{text}; and {extra} more" if extra > 0 else text


def validation_text(exc: ValidationError) -> str:
    """The first few validation errors as `signals[2].target_weight: <why>; ...`."""
    parts = []
    for err in exc.errors(include_url=False):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where.lstrip('.')}: {message}" if where else message)
    return listed_problems(parts)


def symbols_from(values: Iterable[str]) -> list[str]:
    """Normalise user-given symbols: strip, upper-case, drop blanks, keep first occurrence."""
    seen: dict[str, None] = {}
    for raw in values:
        symbol = raw.strip().upper()
        if symbol:
            seen.setdefault(symbol, None)
    return list(seen)
