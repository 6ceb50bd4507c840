"""Pre-trade limits: each one refuses exactly what it should, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from orchestrator_cli.risk import Limits, apply_long_only, review_plan
from orchestrator_cli.schemas import PriceBook, PriceQuote, Signal, SkipReason
from orchestrator_cli.sizing import plan_orders

AT = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)
CAPITAL = D("100000")
CAP = D("20000")


def signal(symbol: str, weight: str) -> Signal:
    return Signal(symbol=symbol, predicted_return=D("0.01"), rank=1, target_weight=D(weight))


def book(prices: dict[str, str]) -> PriceBook:
    return PriceBook(
        quotes={
            s: PriceQuote(symbol=s, price=D(p), timestamp=AT, source="test")
            for s, p in prices.items()
        }
    )


def plan(rows, prices, positions=None):
    return plan_orders(
        [signal(s, w) for s, w in rows],
        book(prices),
        {s: D(q) for s, q in (positions or {}).items()},
        capital=CAPITAL,
        max_position_size=CAP,
    )


def reviewed(rows, prices, positions=None, **limits):
    return review_plan(plan(rows, prices, positions), limits=Limits(**limits), capital=CAPITAL)


def outcome(review):
    return {(p.symbol, p.leg): (p.order_side, p.order_qty, p.skip_reason) for p in review.plans}


def test_no_limits_changes_nothing():
    plans = plan([("AAPL", "0.2"), ("MSFT", "-0.2")], {"AAPL": "150", "MSFT": "400"})
    review = review_plan(plans, limits=Limits(), capital=CAPITAL)
    assert review.plans == plans
    assert review.violations == []


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (D("19950"), {("AAPL", 0): ("buy", 133, None)}),  # 133 * 150 = 19950: at the limit
        (D("19949.99"), {("AAPL", 0): (None, 0, SkipReason.MAX_ORDER_NOTIONAL)}),
    ],
)
def test_max_order_notional_skips_only_orders_above_it(limit, expected):
    review = reviewed([("AAPL", "0.5")], {"AAPL": "150"}, max_order_notional=limit)
    assert outcome(review) == expected
    assert review.violations == []


def test_max_order_notional_without_a_price_skips_the_close():
    review = reviewed([("AAPL", "0")], {}, {"AAPL": "10"}, max_order_notional=D("1000"))
    (only,) = review.plans
    assert only.skip_reason == SkipReason.PRICE_UNAVAILABLE
    assert "MAX_ORDER_NOTIONAL" in (only.skip_detail or "")


def test_restricted_symbol_is_never_traded_even_to_close():
    review = reviewed(
        [("AAPL", "0.5"), ("TSLA", "0"), ("MSFT", "0.1")],
        {"AAPL": "150", "TSLA": "250", "MSFT": "400"},
        {"TSLA": "5"},
        restricted_symbols=frozenset({"AAPL", "TSLA"}),
    )
    assert outcome(review) == {
        ("AAPL", 0): (None, 0, SkipReason.RESTRICTED_SYMBOL),
        ("TSLA", 0): (None, 0, SkipReason.RESTRICTED_SYMBOL),
        ("MSFT", 0): ("buy", 25, None),
    }


@pytest.mark.parametrize(
    ("limits", "held", "expected"),
    [
        # 3 shares * $150 = $450 below $500: skipped; a full close is never skipped for size
        ({"min_trade_dollars": D("500")}, "130", (None, 0, SkipReason.BELOW_MIN_TRADE)),
        ({"min_trade_dollars": D("450")}, "130", ("buy", 3, None)),
        # 0.5 % of $100k = $500
        ({"min_trade_pct": D("0.5")}, "130", (None, 0, SkipReason.BELOW_MIN_TRADE)),
        ({"min_trade_pct": D("0.45")}, "130", ("buy", 3, None)),
    ],
)
def test_min_trade_skips_small_rebalances(limits, held, expected):
    review = reviewed([("AAPL", "0.333")], {"AAPL": "150"}, {"AAPL": held}, **limits)
    assert outcome(review) == {("AAPL", 0): expected}
    (only,) = review.plans
    if expected[2]:
        assert "below the minimum trade" in (only.skip_detail or "")


def test_min_trade_never_blocks_a_full_close():
    review = reviewed([("AAPL", "0")], {"AAPL": "150"}, {"AAPL": "1"}, min_trade_dollars=D("1000"))
    assert outcome(review) == {("AAPL", 0): ("sell", 1, None)}


def test_min_trade_judges_both_legs_of_a_split_together():
    review = reviewed(
        [("AAPL", "-0.001")], {"AAPL": "10"}, {"AAPL": "2"}, min_trade_dollars=D("100")
    )
    # long 2 -> short 10: 12 shares * $10 = $120 >= $100, both legs go
    assert outcome(review) == {
        ("AAPL", 0): ("sell", 2, None),
        ("AAPL", 1): ("sell", 10, None),
    }


def test_gross_exposure_above_the_limit_refuses_the_whole_plan():
    rows = [("A", "0.5"), ("B", "0.5"), ("C", "-0.5"), ("D", "-0.5")]
    prices = dict.fromkeys("ABCD", "100")
    # each capped at $20k: gross $80k = 0.8x capital
    assert reviewed(rows, prices, max_gross_exposure=D("0.8")).violations == []
    review = reviewed(rows, prices, max_gross_exposure=D("0.79"))
    (violation,) = review.violations
    assert violation.startswith("MAX_GROSS_EXPOSURE")
    assert "0.8000x" in violation


def equal_weights(longs: int, shorts: int) -> list[tuple[str, str]]:
    """Weights as a service writes them: 1/n as a binary64 float in its shortest form."""
    return [(f"L{i}", repr(1 / longs)) for i in range(longs)] + [
        (f"S{i}", repr(-1 / shorts)) for i in range(shorts)
    ]


@pytest.mark.parametrize(("longs", "shorts"), [(33, 33), (67, 66), (34, 33)])
def test_equal_weights_at_the_limit_pass_up_to_the_floats_precision(longs, shorts):
    rows = equal_weights(longs, shorts)
    prices = dict.fromkeys((symbol for symbol, _ in rows), "10")
    plans = plan(rows, prices)
    gross = sum((p.target_dollars for p in plans if p.target_dollars is not None), D(0))
    assert gross / CAPITAL > 2  # really above 2 in exact decimal arithmetic
    review = review_plan(plans, limits=Limits(max_gross_exposure=D(2)), capital=CAPITAL)
    assert review.violations == []


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        pytest.param("0", False, id="exactly-at"),
        pytest.param("0.00000000000001", False, id="within-precision"),  # < 100 * 2**-51
        pytest.param("0.000001", True, id="a-millionth-above"),
        pytest.param("0.001", True, id="a-thousandth-above"),
    ],
)
def test_gross_exposure_just_above_the_limit_by_a_meaningful_amount_is_refused(extra, refused):
    # 100 longs of 0.01, one of them `extra` more: gross 1 + extra against a limit of 1.
    rows = [(f"L{i}", "0.01") for i in range(99)] + [("L99", str(D("0.01") + D(extra)))]
    prices = dict.fromkeys((symbol for symbol, _ in rows), "10")
    review = reviewed(rows, prices, max_gross_exposure=D(1))
    assert bool(review.violations) is refused


def test_max_orders_per_run_counts_orders_left_after_per_order_limits():
    rows = [("A", "0.2"), ("B", "0.2"), ("C", "0.2")]
    prices = dict.fromkeys("ABC", "100")
    assert reviewed(rows, prices, max_orders_per_run=3).violations == []
    (violation,) = reviewed(rows, prices, max_orders_per_run=2).violations
    assert violation.startswith("MAX_ORDERS_PER_RUN")
    assert (
        reviewed(rows, prices, max_orders_per_run=2, restricted_symbols=frozenset({"C"})).violations
        == []
    )


def test_long_only_zeroes_shorts_and_covers_held_shorts():
    signals = [signal("AAPL", "0.5"), signal("TSLA", "-0.5"), signal("MSFT", "-0.2")]
    limits = Limits(long_only=True)
    adjusted, zeroed = apply_long_only(signals, limits)
    assert [s.target_weight for s in adjusted] == [D("0.5"), D(0), D(0)]
    assert zeroed == {"TSLA": D("-0.5"), "MSFT": D("-0.2")}
    plans = plan_orders(
        adjusted,
        book({"AAPL": "150", "TSLA": "250", "MSFT": "400"}),
        {"MSFT": D("-10")},
        capital=CAPITAL,
        max_position_size=CAP,
    )
    review = review_plan(plans, limits=limits, capital=CAPITAL, long_only_zeroed=zeroed)
    assert outcome(review) == {
        ("AAPL", 0): ("buy", 133, None),
        ("TSLA", 0): (None, 0, SkipReason.LONG_ONLY),
        ("MSFT", 0): ("buy", 10, None),
    }
    msft = next(p for p in review.plans if p.symbol == "MSFT")
    assert "weight -0.2" in (msft.skip_detail or "")


def test_long_only_off_keeps_signals():
    signals = [signal("TSLA", "-0.5")]
    assert apply_long_only(signals, Limits()) == (signals, {})


def test_limits_record_is_json_ready():
    record = Limits(max_order_notional=D("5000"), restricted_symbols=frozenset({"B", "A"})).record()
    assert record["max_order_notional"] == "5000"
    assert record["restricted_symbols"] == ["A", "B"]
    assert record["max_gross_exposure"] is None
