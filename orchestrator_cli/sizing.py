"""Position sizing: pure functions from weights, prices and positions to a plan of orders.

No I/O, no clock, no logging, no randomness: the same inputs always give the same plan. The
arithmetic is `Decimal` (in the caller's decimal context, 28 digits by default); share counts
are `int`.

For a signal of weight `w` on `capital`, at price `p`, with `current` shares held (signed,
negative for a short):

- `target_dollars = min(|w| * capital, max_position_size)`;
- `target_qty = sign(w) * floor(target_dollars / p)`: whole shares, never above the target;
- `order = target_qty - current`, truncated toward zero. A fractional position (say 10.5
  shares) cannot be traded to an exact whole target, so the order stops short of the target
  rather than passing it: with a target of 12 that is a buy of 1 (to 11.5), never 2 (to 12.5).
  After the order the position lies between `current` and `target_qty` inclusive.
- a positive order is a `buy`, a negative one a `sell` (a sell below zero opens a short);
  `order_qty` on the plan is always the absolute number of shares.

Skips, each with `order_qty` 0 and no side:

- `zero_weight`: weight 0 and nothing held. No price is needed.
- `price_unavailable`: weight not 0 and the price book has no usable quote; the book's reason
  goes to `skip_detail`. No default price is ever used.
- `qty_less_than_one_share`: the order rounds to no whole share and the target is 0 shares
  (the price is above the target dollars, or only a fraction of a share is held).
- `already_at_target`: the order rounds to no whole share and the target is not 0.

Weight 0 with a position held closes it (target 0); closing needs no price. A weight whose
target rounds to 0 shares while a position is held sells it down to 0 the same way.

Sequencing: an order that moves the position toward zero `reduces` it (it frees buying
power and is sent first). An order that would take the position across zero (long 10 to
short 5) is split into two mappings of the same symbol: leg 0 closes the whole shares held
(`reduces`), leg 1 opens the other side; each gets its own `client_order_id`. Together the
legs net to the same delta.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal

from orchestrator_cli.schemas import OrderSide, PlannedMapping, PriceBook, Signal, SkipReason

CLIENT_ORDER_ID_VERSION = "v1"
CLIENT_ORDER_ID_LENGTH = 24


def target_quantity(
    weight: Decimal, price: Decimal, capital: Decimal, max_position_size: Decimal
) -> tuple[Decimal, int]:
    """(target_dollars, signed target_qty); floors so |target_qty| * price <= target_dollars."""
    if not price > 0:
        raise ValueError(f"price must be positive, got {price}")
    target_dollars = min(abs(weight) * capital, max_position_size)
    # `//` is exact integer division (no rounding of the quotient), so floor never rounds up.
    shares = int(target_dollars // price)
    return target_dollars, shares if weight >= 0 else -shares


def order_delta(target_qty: int, current_qty: Decimal) -> int:
    """Signed whole shares to trade, truncated toward zero so the order never passes the target."""
    return int(Decimal(target_qty) - current_qty)


def _side(delta: int) -> OrderSide:
    return "buy" if delta > 0 else "sell"


def _no_order_reason(target_qty: int) -> SkipReason:
    if target_qty == 0:
        return SkipReason.QTY_LESS_THAN_ONE_SHARE
    return SkipReason.ALREADY_AT_TARGET


def _plan_one(
    signal: Signal,
    prices: PriceBook,
    current: Decimal,
    capital: Decimal,
    max_position_size: Decimal,
) -> list[PlannedMapping]:
    quote = prices.quotes.get(signal.symbol)
    weight = signal.target_weight
    target_dollars: Decimal | None
    target_qty: int | None
    skip_detail = None

    if weight == 0:
        target_dollars, target_qty = Decimal(0), 0
        delta = order_delta(0, current)
        if current == 0:
            skip_reason: SkipReason | None = SkipReason.ZERO_WEIGHT
        else:
            skip_reason = None if delta != 0 else _no_order_reason(0)
    elif quote is None:
        target_dollars, target_qty, delta = None, None, 0
        skip_reason = SkipReason.PRICE_UNAVAILABLE
        skip_detail = prices.reason(signal.symbol)
    else:
        target_dollars, target_qty = target_quantity(
            weight, quote.price, capital, max_position_size
        )
        delta = order_delta(target_qty, current)
        skip_reason = None if delta != 0 else _no_order_reason(target_qty)

    common = {
        "symbol": signal.symbol,
        "predicted_return": signal.predicted_return,
        "rank": signal.rank,
        "target_weight": weight,
        "price": quote.price if quote else None,
        "price_timestamp": quote.timestamp if quote else None,
        "current_qty": current,
        "target_dollars": target_dollars,
        "target_qty": target_qty,
        "skip_detail": skip_detail,
    }
    legs = split_at_zero(current, delta)
    if not legs:
        return [PlannedMapping(**common, order_qty=0, order_side=None, skip_reason=skip_reason)]
    return [
        PlannedMapping(
            **common,
            order_qty=abs(qty),
            order_side=_side(qty),
            skip_reason=None,
            leg=leg,
            reduces=reduces,
        )
        for leg, (qty, reduces) in enumerate(legs)
    ]


def split_at_zero(current: Decimal, delta: int) -> list[tuple[int, bool]]:
    """(signed qty, reduces) per order for `delta`; an order crossing zero becomes two.

    The closing leg trades the whole shares held, so a fractional remainder (0.5 of a share)
    stays with the opening leg's side rather than being overshot.
    """
    if delta == 0:
        return []
    if current == 0 or (current > 0) == (delta > 0):
        return [(delta, False)]
    closing = int(abs(current))
    if abs(delta) <= closing:
        return [(delta, True)]
    sign = 1 if delta > 0 else -1
    legs = [(sign * closing, True)] if closing else []
    return [*legs, (delta - sign * closing, False)]


def plan_orders(
    signals: Sequence[Signal],
    prices: PriceBook,
    positions: Mapping[str, Decimal],
    *,
    capital: Decimal,
    max_position_size: Decimal,
) -> list[PlannedMapping]:
    """Mappings in the signals' order (two for an order split at zero); absent position = 0."""
    return [
        mapping
        for signal in signals
        for mapping in _plan_one(
            signal,
            prices,
            positions.get(signal.symbol, Decimal(0)),
            capital,
            max_position_size,
        )
    ]


def client_order_id(
    strategy_id: str,
    as_of_date: date,
    symbol: str,
    side: OrderSide,
    qty: int,
    leg: int = 0,
    generation: int = 0,
) -> str:
    """24 hex chars, the same for the same planned order, so a retry or resume is idempotent.

    The hash covers a versioned JSON array of the fields: unambiguous whatever the strings hold.
    `generation` counts the earlier runs of the strategy and date: a later run (after --force
    or a failed run) orders anew rather than being answered with an earlier run's order.
    Generation 0 hashes exactly as before it existed. Changing this encoding changes every
    id, so a re-run across versions would order twice.
    """
    fields: list[object] = [
        CLIENT_ORDER_ID_VERSION,
        strategy_id,
        as_of_date.isoformat(),
        symbol,
        side,
        qty,
        leg,
    ]
    if generation:
        fields.append(generation)
    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()[:CLIENT_ORDER_ID_LENGTH]
