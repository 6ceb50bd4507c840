import hashlib
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_cli.schemas import (
    CLIENT_ORDER_ID_PATTERN,
    PriceBook,
    PriceQuote,
    Signal,
    SkipReason,
)
from orchestrator_cli.sizing import client_order_id, order_delta, plan_orders, target_quantity

D = Decimal
AT = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)
CAPITAL = D("100000")
CAP = D("20000")


def signal(symbol: str, weight: str, rank: int = 1) -> Signal:
    return Signal(symbol=symbol, predicted_return=D("0.01"), rank=rank, target_weight=D(weight))


def book(prices: dict[str, str], problems: dict[str, str] | None = None) -> PriceBook:
    quotes = {
        symbol: PriceQuote(symbol=symbol, price=D(price), timestamp=AT, source="test")
        for symbol, price in prices.items()
    }
    return PriceBook(quotes=quotes, problems=problems or {})


@pytest.mark.parametrize(
    ("weight", "price", "capital", "cap", "dollars", "qty"),
    [
        ("0.333", "150", "100000", "20000", "20000", 133),  # the seed example: cap binds
        ("0.1", "150", "100000", "20000", "10000.0", 66),  # cap does not bind
        ("0.2", "150", "100000", "20000", "20000.0", 133),  # exactly at the cap
        ("-0.5", "150", "100000", "20000", "20000", -133),  # short
        ("-0.05", "40", "100000", "20000", "5000.00", -125),  # short, exact division
        ("0.01", "0.0123", "100000", "20000", "1000.00", 81300),  # penny stock
        ("0.001", "150", "100000", "20000", "100.000", 0),  # price above target dollars
        ("1", "100", "100000", "20000", "20000", 200),  # full weight, capped
        ("0.333333", "3", "100000", "1000000", "33333.300000", 11111),  # weight not rounded
    ],
)
def test_target_quantity(weight, price, capital, cap, dollars, qty):
    result = target_quantity(D(weight), D(price), D(capital), D(cap))
    assert result == (D(dollars), qty)
    assert isinstance(result[1], int)


@pytest.mark.parametrize("price", ["0", "-1"])
def test_target_quantity_refuses_non_positive_price(price):
    with pytest.raises(ValueError, match="price must be positive"):
        target_quantity(D("0.5"), D(price), CAPITAL, CAP)


@pytest.mark.parametrize(
    ("target", "current", "delta"),
    [
        (133, "0", 133),
        (133, "100", 33),
        (133, "133", 0),
        (133, "200", -67),
        (-133, "0", -133),
        (-133, "-200", 67),
        (0, "50", -50),
        (12, "10.5", 1),  # fractional: buy 1 to 11.5, never 2 to 12.5
        (10, "10.5", 0),  # half a share over: nothing to sell in whole shares
        (0, "0.4", 0),
        (0, "-2.7", 2),
        (-5, "-2.5", -2),
    ],
)
def test_order_delta(target, current, delta):
    result = order_delta(target, D(current))
    assert result == delta
    assert isinstance(result, int)


# (weight, price or None, current, target_dollars, target_qty, order_qty, side, skip)
PLAN_CASES = [
    pytest.param("0.333", "150", "0", "20000", 133, 133, "buy", None, id="seed-buy"),
    pytest.param("0.333", "150", "100", "20000", 133, 33, "buy", None, id="seed-holding-100"),
    pytest.param("0.333", "150", "133", "20000", 133, 0, None, "already_at_target", id="at-target"),
    pytest.param("0.333", "150", "150", "20000", 133, 17, "sell", None, id="above-target-sells"),
    pytest.param("-0.5", "150", "0", "20000", -133, 133, "sell", None, id="short"),
    pytest.param(
        "0.001", "150", "0", "100.000", 0, 0, None, "qty_less_than_one_share", id="too-dear"
    ),
    pytest.param("0.001", "150", "7", "100.000", 0, 7, "sell", None, id="too-dear-held-sells"),
    pytest.param("0", "150", "0", "0", 0, 0, None, "zero_weight", id="zero-weight"),
    pytest.param("0", None, "0", "0", 0, 0, None, "zero_weight", id="zero-weight-no-price"),
    pytest.param("0", None, "40", "0", 0, 40, "sell", None, id="close-long-without-price"),
    pytest.param("0", "150", "-40", "0", 0, 40, "buy", None, id="close-short"),
    pytest.param("0", None, "0.5", "0", 0, 0, None, "qty_less_than_one_share", id="close-frac"),
    pytest.param("0.333", "150", "100.5", "20000", 133, 32, "buy", None, id="fractional-held"),
    pytest.param(
        "0.333", "150", "133.4", "20000", 133, 0, None, "already_at_target", id="frac-at-target"
    ),
]


@pytest.mark.parametrize(
    ("weight", "price", "current", "dollars", "target", "order_qty", "side", "skip"), PLAN_CASES
)
def test_plan_orders_table(weight, price, current, dollars, target, order_qty, side, skip):
    prices = book({"AAPL": price} if price else {})
    [mapping] = plan_orders(
        [signal("AAPL", weight)],
        prices,
        {"AAPL": D(current)},
        capital=CAPITAL,
        max_position_size=CAP,
    )
    assert mapping.target_dollars == D(dollars)
    assert mapping.target_qty == target
    assert mapping.order_qty == order_qty
    assert mapping.order_side == side
    assert mapping.skip_reason == (SkipReason(skip) if skip else None)
    assert mapping.needs_order == (order_qty > 0)
    assert mapping.current_qty == D(current)
    assert mapping.price == (D(price) if price else None)
    assert mapping.price_timestamp == (AT if price else None)
    assert mapping.skip_detail is None


@pytest.mark.parametrize(
    ("weight", "current", "legs"),
    [
        pytest.param(
            "-0.5", "100", [("sell", 100, True), ("sell", 133, False)], id="long-to-short"
        ),
        pytest.param("0.5", "-100", [("buy", 100, True), ("buy", 133, False)], id="short-to-long"),
        pytest.param("0.5", "-10.5", [("buy", 10, True), ("buy", 133, False)], id="fractional"),
        pytest.param("0.5", "-0.5", [("buy", 133, False)], id="fraction-only"),
        pytest.param("0.5", "200", [("sell", 67, True)], id="reduce-long"),
        pytest.param("-0.5", "-200", [("buy", 67, True)], id="reduce-short"),
        pytest.param("0.5", "100", [("buy", 33, False)], id="add-long"),
        pytest.param("0", "-7", [("buy", 7, True)], id="cover"),
    ],
)
def test_orders_crossing_zero_are_split_and_reducing_ones_flagged(weight, current, legs):
    planned = plan_orders(
        [signal("AAPL", weight)],
        book({"AAPL": "150"}),
        {"AAPL": D(current)},
        capital=CAPITAL,
        max_position_size=CAP,
    )
    assert [(m.order_side, m.order_qty, m.reduces) for m in planned] == legs
    assert [m.leg for m in planned] == list(range(len(legs)))
    ids = {
        client_order_id("s", date(2024, 1, 2), "AAPL", m.order_side, m.order_qty, m.leg)
        for m in planned
    }
    assert len(ids) == len(planned)


def test_price_unavailable_carries_the_books_reason_and_no_target():
    prices = book({}, {"AAPL": "stale: 95s old, limit 60s"})
    [mapping] = plan_orders(
        [signal("AAPL", "0.5")], prices, {"AAPL": D(10)}, capital=CAPITAL, max_position_size=CAP
    )
    assert mapping.skip_reason == SkipReason.PRICE_UNAVAILABLE
    assert mapping.skip_detail == "stale: 95s old, limit 60s"
    assert mapping.target_qty is None
    assert mapping.target_dollars is None
    assert mapping.price is None
    assert mapping.order_qty == 0
    assert mapping.order_side is None


def test_price_unavailable_without_a_recorded_reason_uses_the_books_default():
    [mapping] = plan_orders(
        [signal("AAPL", "0.5")], PriceBook(), {}, capital=CAPITAL, max_position_size=CAP
    )
    assert mapping.skip_detail == PriceBook().reason("AAPL")


def test_plan_keeps_signal_order_and_copies_signal_fields():
    signals = [signal("MSFT", "-0.5", rank=5), signal("AAPL", "0.5", rank=1), signal("GOOGL", "0")]
    mappings = plan_orders(
        signals,
        book({"AAPL": "150", "MSFT": "400"}),
        {"GOOGL": D(3)},
        capital=CAPITAL,
        max_position_size=CAP,
    )
    assert [m.symbol for m in mappings] == ["MSFT", "AAPL", "GOOGL"]
    assert [m.rank for m in mappings] == [5, 1, 1]
    assert [m.target_weight for m in mappings] == [D("-0.5"), D("0.5"), D("0")]
    assert [(m.order_side, m.order_qty) for m in mappings] == [
        ("sell", 50),
        ("buy", 133),
        ("sell", 3),
    ]
    assert all(m.predicted_return == D("0.01") for m in mappings)


# --- client_order_id ------------------------------------------------------------------------

BASE_ID_ARGS = ("alpha_baseline", date(2024, 12, 31), "AAPL", "buy", 133, 0)


def test_client_order_id_is_deterministic_and_well_formed():
    first = client_order_id(*BASE_ID_ARGS)
    assert first == client_order_id(*BASE_ID_ARGS)
    assert len(first) == 24
    assert re.fullmatch(r"[0-9a-f]{24}", first)
    assert re.fullmatch(CLIENT_ORDER_ID_PATTERN, first)


def test_client_order_id_encoding_is_pinned():
    # A change of encoding changes every id, and a re-run across versions would order twice.
    preimage = b'["v1","alpha_baseline","2024-12-31","AAPL","buy",133,0]'
    assert client_order_id(*BASE_ID_ARGS) == hashlib.sha256(preimage).hexdigest()[:24]
    assert client_order_id(*BASE_ID_ARGS) == "27b2d54f6c8e776dfc11159d"


@pytest.mark.parametrize(
    "changed",
    [
        ("alpha_other", date(2024, 12, 31), "AAPL", "buy", 133, 0),
        ("alpha_baseline", date(2025, 1, 2), "AAPL", "buy", 133, 0),
        ("alpha_baseline", date(2024, 12, 31), "MSFT", "buy", 133, 0),
        ("alpha_baseline", date(2024, 12, 31), "AAPL", "sell", 133, 0),
        ("alpha_baseline", date(2024, 12, 31), "AAPL", "buy", 134, 0),
        ("alpha_baseline", date(2024, 12, 31), "AAPL", "buy", 133, 1),
    ],
)
def test_client_order_id_differs_when_any_field_differs(changed):
    assert client_order_id(*changed) != client_order_id(*BASE_ID_ARGS)


def test_client_order_id_fields_cannot_run_into_each_other():
    # With a naive "a|b" join these two would hash the same pre-image.
    one = client_order_id("s|2024-12-31", date(2024, 12, 31), "AAPL", "buy", 1)
    two = client_order_id("s", date(2024, 12, 31), "2024-12-31|AAPL", "buy", 1)
    assert one != two


# --- properties -----------------------------------------------------------------------------

weights = st.decimals(min_value=-1, max_value=1, places=6, allow_nan=False)
money = st.decimals(min_value=D("0.01"), max_value=D("10000000"), places=2, allow_nan=False)
prices_st = st.decimals(min_value=D("0.0001"), max_value=D("100000"), places=4, allow_nan=False)
positions_st = st.decimals(min_value=-100000, max_value=100000, places=3, allow_nan=False)
targets = st.integers(min_value=-10_000_000, max_value=10_000_000)


def sign(value: Decimal | int) -> int:
    return (value > 0) - (value < 0)


@given(weight=weights, price=prices_st, capital=money, cap=money)
def test_target_never_overshoots(weight, price, capital, cap):
    dollars, qty = target_quantity(weight, price, capital, cap)
    assert type(dollars) is Decimal
    assert type(qty) is int
    assert abs(qty) * price <= dollars <= cap
    assert dollars <= abs(weight) * capital
    # floor, not less: one more share would pass the target
    assert (abs(qty) + 1) * price > dollars
    assert sign(qty) in (0, sign(weight))


@given(target=targets, current=positions_st)
def test_order_never_passes_the_target(target, current):
    delta = order_delta(target, current)
    assert type(delta) is int
    after = current + delta
    assert min(current, D(target)) <= after <= max(current, D(target))
    assert (delta == 0) == (abs(D(target) - current) < 1)
    if delta != 0:
        assert sign(delta) == sign(D(target) - current)


@given(weight=weights, price=st.one_of(st.none(), prices_st), current=positions_st, cap=money)
def test_plan_is_consistent(weight, price, current, cap):
    prices = book({"AAPL": str(price)} if price is not None else {}, {"AAPL": "no quote"})
    legs = plan_orders(
        [signal("AAPL", str(weight))],
        prices,
        {"AAPL": current},
        capital=CAPITAL,
        max_position_size=cap,
    )
    assert 1 <= len(legs) <= 2
    assert [leg.leg for leg in legs] == list(range(len(legs)))
    if len(legs) == 2:
        close, open_ = legs
        assert close.reduces
        assert not open_.reduces
        assert close.order_side == open_.order_side
        # the closing leg lands on zero (or the fraction held); the opening one goes past it
        assert close.order_qty == int(abs(current))
    for leg in legs:
        assert leg.order_qty > 0 or len(legs) == 1
    m = legs[0]
    if len(legs) == 2:
        m = m.model_copy(update={"order_qty": sum(leg.order_qty for leg in legs)})
    assert m.order_qty >= 0
    assert type(m.order_qty) is int
    assert (m.order_qty == 0) == (m.order_side is None) == (m.skip_reason is not None)
    if m.skip_reason == SkipReason.PRICE_UNAVAILABLE:
        assert weight != 0
        assert price is None
        assert m.target_qty is None
        return
    assert type(m.target_qty) is int
    assert type(m.target_dollars) is Decimal
    signed = m.order_qty if m.order_side == "buy" else -m.order_qty
    assert signed == order_delta(m.target_qty, current)
    after = current + signed
    assert min(current, D(m.target_qty)) <= after <= max(current, D(m.target_qty))
    if price is not None and weight != 0:
        assert abs(m.target_qty) * price <= m.target_dollars <= cap
