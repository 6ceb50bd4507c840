"""A wrong price is refused, not only a missing one: each quote against its reference price."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest
import requests
from test_prices import NOW, fetch, iso, quote, snapshot, trade, write

from orchestrator_cli.config import Settings
from orchestrator_cli.price_reference import (
    ReferenceCheck,
    check_moves,
    move_problem,
    unchecked_warning,
)
from orchestrator_cli.prices import FilePriceSource, build_price_source, parse_timestamp
from orchestrator_cli.schemas import PriceBook, PriceQuote

MAX_AGE = timedelta(seconds=60)


@pytest.fixture
def session():
    with requests.Session() as http:
        yield http


def quoted(price: str, reference: str | None, symbol: str = "AAPL") -> PriceQuote:
    return PriceQuote(
        symbol=symbol,
        price=D(price),
        timestamp=NOW,
        source="test",
        reference=None if reference is None else D(reference),
    )


@pytest.mark.parametrize(
    ("price", "reference", "problem"),
    [
        ("100", "100", None),
        ("125", "100", None),  # exactly 25% is at the limit
        ("75", "100", None),
        ("125.01", "100", "quote 125.01 is 25.0% above the reference 100.00"),
        ("74.99", "100", "quote 74.99 is 25.0% below the reference 100.00"),
        ("1", "100", "quote 1.00 is 99.0% below the reference 100.00"),
        ("1000", "100", "quote 1000.00 is 900.0% above the reference 100.00"),
        ("1", None, None),  # nothing to check against
    ],
)
def test_move_problem_names_quote_reference_and_move(price, reference, problem):
    found = move_problem(quoted(price, reference), D(25))
    if problem is None:
        assert found is None
    else:
        assert found == f"{problem} (previous close), beyond MAX_PRICE_MOVE_PCT 25%"


def test_check_moves_makes_wrong_prices_unavailable_and_lists_the_unchecked():
    book = PriceBook(
        quotes={
            "AAPL": quoted("190", "189", "AAPL"),
            "MSFT": quoted("4.20", "420", "MSFT"),
            "TSLA": quoted("250", None, "TSLA"),
        },
        problems={"NVDA": "stale"},
    )
    checked = check_moves(book, D(25))
    assert sorted(checked.book.quotes) == ["AAPL"]
    assert checked.book.problems["NVDA"] == "stale"
    assert checked.book.problems["MSFT"].startswith("quote 4.20 is 99.0% below the reference")
    # The source gave references, but none for TSLA: nothing vouches for its quote.
    assert checked.book.problems["TSLA"].startswith("no reference price")
    assert checked.unchecked == []
    unreferenced = PriceBook(quotes={"TSLA": quoted("250", None, "TSLA")})
    assert check_moves(unreferenced, D(25)).unchecked == ["TSLA"]


class FixedSource:
    name = "redis"

    def __init__(self, book: PriceBook) -> None:
        self.book = book

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        return self.book


def test_quotes_without_a_reference_are_said_once_per_fetch_in_one_line(caplog):
    quotes = {f"S{i}": quoted("10", None, f"S{i}") for i in range(8)}
    source = ReferenceCheck(FixedSource(PriceBook(quotes=quotes)), max_move_pct=D(25))
    with caplog.at_level(logging.WARNING):
        book = source.fetch_prices(list(quotes), now=NOW)
    assert sorted(book.quotes) == sorted(quotes)  # going ahead
    (record,) = caplog.records
    assert record.getMessage() == (
        "price source redis gave no reference price (previous close) for 8 of 8 quotes "
        "(S0, S1, S2, S3, S4 and 3 more): MAX_PRICE_MOVE_PCT cannot check them; going ahead"
    )
    assert source.name == "redis"


def test_a_quote_without_a_reference_from_a_source_that_gives_them_is_unavailable(caplog):
    quotes = {"A": quoted("10", "10", "A"), "B": quoted("0.10", None, "B")}
    source = ReferenceCheck(FixedSource(PriceBook(quotes=quotes)), max_move_pct=D(25))
    with caplog.at_level(logging.WARNING):
        book = source.fetch_prices(["A", "B"], now=NOW)
    assert sorted(book.quotes) == ["A"]
    assert book.problems["B"].startswith("no reference price (previous close) to check")
    assert caplog.records == []


def test_no_warning_when_every_quote_has_a_reference(caplog):
    source = ReferenceCheck(
        FixedSource(PriceBook(quotes={"A": quoted("10", "10")})), max_move_pct=D(25)
    )
    with caplog.at_level(logging.WARNING):
        source.fetch_prices(["A"], now=NOW)
    assert caplog.records == []


def test_unchecked_warning_lists_few_symbols():
    assert unchecked_warning("file", ["A"], 3) == (
        "price source file gave no reference price (previous close) for 1 of 3 quotes (A): "
        "MAX_PRICE_MOVE_PCT cannot check them; going ahead"
    )


# --- Alpaca: the previous close of the snapshot ---------------------------------------------


def bar(close):
    return {"t": "2024-12-30T05:00:00Z", "o": close, "h": close, "l": close, "c": close, "v": 1}


def test_alpaca_reads_the_previous_close_as_the_reference(session):
    body = {"AAPL": snapshot(quote=quote(1.01, 0.99), trade=trade(1.0), prevDailyBar=bar(100.0))}
    got = fetch(session, body).quotes["AAPL"]
    assert (got.price, got.reference) == (D("1.00"), D("100.0"))


def test_alpaca_without_a_previous_bar_has_no_reference(session):
    got = fetch(session, {"AAPL": snapshot(trade=trade(150.0))}).quotes["AAPL"]
    assert got.reference is None


@pytest.mark.parametrize(
    ("previous", "problem"),
    [
        ([1], "prevDailyBar is not a JSON object"),
        ({"o": 1}, "previous close None is not a number"),
        (bar(0), "previous close 0 is outside"),
        (bar("100"), "previous close '100' is not a number"),
    ],
)
def test_alpaca_unusable_previous_bar_spoils_its_symbol(session, previous, problem):
    result = fetch(session, {"AAPL": snapshot(trade=trade(150.0), prevDailyBar=previous)})
    assert result.quotes == {}
    assert result.problems["AAPL"].startswith(problem)


# --- PRICES_FILE: an optional prev_close column ---------------------------------------------


@pytest.mark.parametrize("header", ["", "symbol,price,timestamp,prev_close\n"])
def test_file_prev_close_column_is_the_reference(tmp_path, header):
    rows = (
        "AAPL,1.90,2024-12-31T14:29:30Z,190\n"
        "MSFT,420,2024-12-31T14:29:30Z,\n"
        "TSLA,250,2024-12-31T14:29:30Z\n"
    )
    source = FilePriceSource(write(tmp_path, header + rows), max_age=MAX_AGE)
    book = source.fetch_prices(["AAPL", "MSFT", "TSLA"], now=NOW)
    assert book.quotes["AAPL"].reference == D("190")
    assert book.quotes["MSFT"].reference is None
    assert book.quotes["TSLA"].reference is None


# --- build_price_source ----------------------------------------------------------------------


def settings(**values):
    return Settings(_env_file=None, **values)


def test_build_checks_references_by_default_and_not_when_off(session, tmp_path):
    path = write(tmp_path, "AAPL,1.00,2024-12-31T14:29:30Z,100\n")
    checked = build_price_source(settings(price_source="file", prices_file=path), session=session)
    assert (
        checked.fetch_prices(["AAPL"], now=NOW)
        .problems["AAPL"]
        .startswith("quote 1.00 is 99.0% below the reference 100.00 (previous close)")
    )
    for off in ("0", "off"):
        bare = build_price_source(
            settings(price_source="file", prices_file=path, max_price_move_pct=off),
            session=session,
        )
        assert "AAPL" in bare.fetch_prices(["AAPL"], now=NOW).quotes


def test_the_default_price_age_is_the_gateways_30_seconds(session, tmp_path):
    assert settings().max_price_age_seconds == 30
    path = write(tmp_path, f"AAPL,150,{iso(31)}\nMSFT,420,{iso(30)}\n")
    source = build_price_source(settings(price_source="file", prices_file=path), session=session)
    book = source.fetch_prices(["AAPL", "MSFT"], now=NOW)
    assert book.problems == {"AAPL": "stale: 31s old, limit 30s"}
    assert "MSFT" in book.quotes


# --- quote times that cannot be held -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "\uff12\uff10\uff12\uff14-12-31T14:29:59Z",
    ],
)
def test_an_out_of_range_or_odd_quote_time_is_a_value_error(text):
    with pytest.raises(ValueError, match=r"out of range|not RFC 3339"):
        parse_timestamp(text)


def test_an_out_of_range_quote_time_spoils_only_its_symbol(session):
    body = {
        "AAPL": snapshot(trade={"t": "0001-01-01T00:00:00+01:00", "p": 150.0}),
        "MSFT": snapshot(trade=trade(420.0)),
    }
    result = fetch(session, body, ("AAPL", "MSFT"))
    assert "out of range" in result.problems["AAPL"]
    assert result.quotes["MSFT"].price == D("420.0")
