"""Pre-trade limits, checked on the whole plan before any order is sent. Pure: no I/O.

Per-order limits skip the order with a reason and let the rest go ahead:
- `restricted_symbol`: the symbol is on RESTRICTED_SYMBOLS (no order in it at all);
- `below_min_trade`: a rebalance worth less than max(MIN_TRADE_DOLLARS, MIN_TRADE_PCT % of
  capital) is not worth its cost (no churning a few shares every morning). Closing a position
  to zero is never skipped for size;
- `max_order_notional`: the order's notional at the planning price is above
  MAX_ORDER_NOTIONAL; an order with no price to check (a close of an unpriced symbol) is
  skipped as `price_unavailable` while that limit is on.

Run-level limits refuse the whole plan (nothing is sent, the run fails naming the limit):
- MAX_GROSS_EXPOSURE: sum of |target dollars| / capital, above the limit by more than the
  weights' own precision. Weights come from JSON numbers that a service wrote from binary64
  floats: 67 longs of 1/67 (0.014925373134328358) and 66 shorts of -1/66 sum to slightly more
  than 2 although the service meant exactly 2. Each weight (|w| <= 1) is off its intended
  value by at most a few roundings of 2**-53, so a plan of n sized signals may pass the limit
  by n * `schemas.WEIGHT_ROUNDING` (2**-51, four roundings; about 9e-14 for 200 signals, a
  millionth of a cent on $100k) and still be at it. Anything beyond is refused;
- MAX_ORDERS_PER_RUN: orders left after the per-order limits.

LONG_ONLY turns negative weights into 0 before sizing (a held short is then covered); the
mapping's detail keeps the signal's own weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from orchestrator_cli.schemas import PlannedMapping, Signal, SkipReason, weight_sum_tolerance


@dataclass(frozen=True)
class Limits:
    """The limits in force for a run (None / 0 / empty: that limit is off).

    Each field is named after its setting (`config.Settings`), which fills it; a new limit is a
    field here, its check below, a setting and a flag.
    """

    max_order_notional: Decimal | None = None
    max_gross_exposure: Decimal | None = None
    max_orders_per_run: int | None = None
    long_only: bool = False
    restricted_symbols: frozenset[str] = field(default_factory=frozenset)
    min_trade_dollars: Decimal = Decimal(0)
    min_trade_pct: Decimal = Decimal(0)

    def record(self) -> dict[str, Any]:
        """JSON-able form stored on the run (decimals as strings, symbols sorted)."""
        return {limit.name: _recorded(getattr(self, limit.name)) for limit in fields(self)}

    def min_trade(self, capital: Decimal) -> Decimal:
        return max(self.min_trade_dollars, capital * self.min_trade_pct / 100)


def _recorded(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, frozenset):
        return sorted(value)
    return value


@dataclass(frozen=True)
class Review:
    """The plan after the per-order limits, and the run-level limits it breaches."""

    plans: list[PlannedMapping]
    violations: list[str]


def apply_long_only(
    signals: Sequence[Signal], limits: Limits
) -> tuple[list[Signal], dict[str, Decimal]]:
    """Signals with negative weights set to 0 in long-only mode, and the weights it zeroed."""
    if not limits.long_only:
        return list(signals), {}
    zeroed = {s.symbol: s.target_weight for s in signals if s.target_weight < 0}
    adjusted = [
        s.model_copy(update={"target_weight": Decimal(0)}) if s.symbol in zeroed else s
        for s in signals
    ]
    return adjusted, zeroed


def _skip(plan: PlannedMapping, reason: SkipReason, detail: str) -> PlannedMapping:
    return plan.model_copy(
        update={
            "order_qty": 0,
            "order_side": None,
            "reduces": False,
            "skip_reason": reason,
            "skip_detail": detail,
        }
    )


def _long_only_note(plan: PlannedMapping, weight: Decimal) -> PlannedMapping:
    note = f"long-only: short signal (weight {weight}) treated as 0"
    if plan.skip_reason == SkipReason.ZERO_WEIGHT:
        return plan.model_copy(update={"skip_reason": SkipReason.LONG_ONLY, "skip_detail": note})
    return plan.model_copy(update={"skip_detail": note})


def _order_check(
    plan: PlannedMapping, limits: Limits, min_trade: Decimal, symbol_notional: Decimal | None
) -> tuple[SkipReason, str] | None:
    if plan.symbol in limits.restricted_symbols:
        return SkipReason.RESTRICTED_SYMBOL, "symbol is on RESTRICTED_SYMBOLS"
    closes_to_zero = plan.target_qty == 0
    if not closes_to_zero and symbol_notional is not None and symbol_notional < min_trade:
        return (
            SkipReason.BELOW_MIN_TRADE,
            f"rebalance of ${symbol_notional:,.2f} is below the minimum trade of ${min_trade:,.2f}",
        )
    if limits.max_order_notional is not None:
        notional = plan.notional
        if notional is None:
            return (
                SkipReason.PRICE_UNAVAILABLE,
                "no price to check the order against MAX_ORDER_NOTIONAL",
            )
        if notional > limits.max_order_notional:
            return (
                SkipReason.MAX_ORDER_NOTIONAL,
                f"order notional ${notional:,.2f} is above MAX_ORDER_NOTIONAL "
                f"${limits.max_order_notional:,.2f}",
            )
    return None


def review_plan(
    plans: Sequence[PlannedMapping],
    *,
    limits: Limits,
    capital: Decimal,
    long_only_zeroed: Mapping[str, Decimal] | None = None,
) -> Review:
    """Apply the per-order limits to `plans` and list the run-level limits they breach."""
    zeroed = long_only_zeroed or {}
    min_trade = limits.min_trade(capital)
    symbol_notional: dict[str, Decimal | None] = {}
    for plan in plans:
        if plan.needs_order:
            so_far = symbol_notional.get(plan.symbol, Decimal(0))
            value = plan.notional
            symbol_notional[plan.symbol] = (
                None if value is None or so_far is None else so_far + value
            )

    reviewed = []
    for plan in plans:
        if plan.symbol in zeroed:
            plan = _long_only_note(plan, zeroed[plan.symbol])
        if plan.needs_order:
            refusal = _order_check(plan, limits, min_trade, symbol_notional.get(plan.symbol))
            if refusal is not None:
                plan = _skip(plan, *refusal)
        reviewed.append(plan)

    violations = []
    if limits.max_gross_exposure is not None:
        sized = [p.target_dollars for p in reviewed if p.leg == 0 and p.target_dollars is not None]
        gross = sum(sized, Decimal(0))
        exposure = gross / capital
        if exposure > limits.max_gross_exposure + weight_sum_tolerance(len(sized)):
            violations.append(
                f"MAX_GROSS_EXPOSURE: the plan's gross exposure is {exposure:.4f}x capital "
                f"(${gross:,.2f}), above the limit of {limits.max_gross_exposure}x"
            )
    orders = sum(1 for p in reviewed if p.needs_order)
    if limits.max_orders_per_run is not None and orders > limits.max_orders_per_run:
        violations.append(
            f"MAX_ORDERS_PER_RUN: the plan has {orders} orders, above the limit of "
            f"{limits.max_orders_per_run}"
        )
    return Review(plans=reviewed, violations=violations)
