import json
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers

from orchestrator_cli.config import Settings
from orchestrator_cli.errors import ConfigError, PriceSourceError
from orchestrator_cli.prices import (
    MAX_PARALLEL_BATCHES,
    AlpacaPriceSource,
    FilePriceSource,
    build_price_source,
    check_quote,
    parse_timestamp,
)
from orchestrator_cli.transport import HttpClient

D = Decimal
NOW = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)
MAX_AGE = timedelta(seconds=60)
BASE = "http://market.test"
URL = f"{BASE}/v2/stocks/snapshots"


def iso(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


# --- check_quote ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "seconds_ago", "reason"),
    [
        ("150.25", 0, None),
        ("150.25", 60, None),  # exactly at the limit is still fresh
        ("150.25", -5, None),  # 5 s ahead is tolerated clock skew
        ("0.0001", 1, None),
        ("150.25", 95, "stale: 95s old, limit 60s"),
        ("150.25", 60.5, "stale: 60.5s old, limit 60s"),
        ("150.25", -6, "timestamp 2024-12-31T14:30:06+00:00 is 6s in the future"),
        ("0", 0, "price 0 is not positive"),
        ("-1.5", 0, "price -1.5 is not positive"),
        ("NaN", 0, "price NaN is not finite"),
        ("Infinity", 0, "price Infinity is not finite"),
    ],
)
def test_check_quote(price, seconds_ago, reason):
    at = NOW - timedelta(seconds=seconds_ago)
    assert check_quote(D(price), at, now=NOW, max_age=MAX_AGE) == reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-12-31T14:29:59Z", datetime(2024, 12, 31, 14, 29, 59, tzinfo=UTC)),
        ("2024-12-31T14:29:59.1Z", datetime(2024, 12, 31, 14, 29, 59, 100000, tzinfo=UTC)),
        (
            "2024-12-31T14:29:59.123456789Z",
            datetime(2024, 12, 31, 14, 29, 59, 123456, tzinfo=UTC),
        ),
        (
            "2024-12-31T09:29:59.999999999-05:00",
            datetime(2024, 12, 31, 14, 29, 59, 999999, tzinfo=UTC),
        ),
        ("2024-12-31T16:29:59+0200", datetime(2024, 12, 31, 14, 29, 59, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2024-12-31T14:29:59", "has no timezone"),
        ("2024-12-31T14:29:59.1234567890Z", "not RFC 3339"),
        ("2024-12-31", "not RFC 3339"),
        ("yesterday", "not RFC 3339"),
        ("2024-13-31T14:29:59Z", "not a valid time"),
    ],
)
def test_parse_timestamp_refuses(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_timestamp(text)


# --- Alpaca ---------------------------------------------------------------------------------


def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def alpaca(session, *, key_id="key", secret_key="secret", batch_size=200, max_attempts=3):
    http = HttpClient(
        service="market data",
        base_url=BASE,
        timeout=5,
        max_attempts=max_attempts,
        session=session,
        sleep=no_sleep,
    )
    return AlpacaPriceSource(
        http, key_id=key_id, secret_key=secret_key, max_age=MAX_AGE, batch_size=batch_size
    )


def snapshot(*, quote=None, trade=None, **extra):
    body = dict(extra)
    if quote is not None:
        body["latestQuote"] = quote
    if trade is not None:
        body["latestTrade"] = trade
    return body


def quote(ask, bid, seconds_ago=1):
    return {"t": iso(seconds_ago), "ap": ask, "bp": bid, "as": 1, "bs": 1}


def trade(price, seconds_ago=1):
    return {"t": iso(seconds_ago), "p": price, "s": 100}


def serve(mock, body, symbols, status=200):
    text = body if isinstance(body, str) else json.dumps(body)
    return mock.get(
        URL,
        body=text,
        status=status,
        content_type="application/json",
        match=[matchers.query_param_matcher({"symbols": ",".join(symbols)})],
    )


def fetch(session, body, symbols=("AAPL",)):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, body, symbols)
        return alpaca(session).fetch_prices(list(symbols), now=NOW)


def test_alpaca_uses_the_quote_mid(session):
    body = {"AAPL": snapshot(quote=quote(150.30, 150.20), trade=trade(149.0))}
    result = fetch(session, body)
    assert result.problems == {}
    got = result.quotes["AAPL"]
    assert got.price == D("150.25")
    assert type(got.price) is Decimal
    assert got.timestamp == NOW - timedelta(seconds=1)
    assert got.source == "alpaca:quote_mid"


@pytest.mark.parametrize(
    ("ask", "bid", "why"),
    [
        (150.1, 150.2, "crossed (ask 150.1, bid 150.2)"),
        (0, 150.2, "not two-sided (ask 0, bid 150.2)"),
        (150.1, 0, "not two-sided (ask 150.1, bid 0)"),
    ],
)
def test_alpaca_falls_back_to_the_trade_when_the_quote_is_unusable(session, ask, bid, why):
    body = {"AAPL": snapshot(quote=quote(ask, bid), trade=trade(149.87))}
    got = fetch(session, body).quotes["AAPL"]
    assert got.price == D("149.87")
    assert got.source == "alpaca:trade"
    # the reason the quote was passed over is visible once the trade is unusable too
    body = {"AAPL": snapshot(quote=quote(ask, bid), trade=trade(149.87, seconds_ago=600))}
    assert why in fetch(session, body).problems["AAPL"]


def test_alpaca_stale_quote_with_fresh_trade_uses_the_trade(session):
    body = {"AAPL": snapshot(quote=quote(150.3, 150.2, seconds_ago=95), trade=trade(150.0, 2))}
    got = fetch(session, body).quotes["AAPL"]
    assert got.price == D("150.0")
    assert got.timestamp == NOW - timedelta(seconds=2)


def test_alpaca_both_stale_names_both_problems(session):
    body = {"AAPL": snapshot(quote=quote(150.3, 150.2, 95), trade=trade(150.0, 120))}
    result = fetch(session, body)
    assert result.quotes == {}
    assert result.problems["AAPL"] == (
        "latest quote: stale: 95s old, limit 60s; latest trade: stale: 120s old, limit 60s"
    )


def test_alpaca_future_timestamps_are_unusable(session):
    body = {"AAPL": snapshot(quote=quote(150.3, 150.2, -30), trade=trade(150.0, -30))}
    result = fetch(session, body)
    assert "AAPL" not in result.quotes
    assert result.problems["AAPL"].count("30s in the future") == 2


def test_alpaca_missing_quote_and_trade(session):
    result = fetch(session, {"AAPL": {"dailyBar": {"c": 150}}})
    assert result.problems["AAPL"] == "latest quote: missing; latest trade: missing"


def test_alpaca_non_finite_value_spoils_only_its_symbol(session):
    body = (
        '{"AAPL": {"latestQuote": {"t": "@T", "ap": NaN, "bp": 150.2},'
        ' "latestTrade": {"t": "@T", "p": Infinity}},'
        ' "MSFT": {"latestQuote": {"t": "@T", "ap": 401, "bp": 400}}}'
    ).replace("@T", iso(1))
    result = fetch(session, body, ("AAPL", "MSFT"))
    assert result.quotes["MSFT"].price == D("400.5")
    assert set(result.quotes) == {"MSFT"}
    assert result.problems["AAPL"] == (
        "latest quote: ask NaN is not finite; latest trade: price Infinity is not finite"
    )


@pytest.mark.parametrize(
    ("trade_entry", "problem"),
    [
        ({"t": iso(1), "p": "150.0"}, "price '150.0' is not a number"),
        ({"t": iso(1), "p": True}, "price True is not a number"),
        ({"t": iso(1), "p": None}, "price None is not a number"),
        ({"t": "2024-12-31T14:29:59", "p": 150}, "has no timezone"),
        ({"t": "garbage", "p": 150}, "not RFC 3339"),
        ({"t": 1735655399, "p": 150}, "timestamp 1735655399 is not a string"),
    ],
)
def test_alpaca_garbage_spoils_only_its_symbol(session, trade_entry, problem):
    body = {"AAPL": {"latestTrade": trade_entry}, "MSFT": snapshot(trade=trade(400))}
    result = fetch(session, body, ("AAPL", "MSFT"))
    assert set(result.quotes) == {"MSFT"}
    assert problem in result.problems["AAPL"]


def test_alpaca_unknown_symbol_is_left_out(session):
    body = {"AAPL": snapshot(trade=trade(150))}
    result = fetch(session, body, ("AAPL", "ZZZZ"))
    assert set(result.quotes) == {"AAPL"}
    assert result.problems == {"ZZZZ": "not known to the market-data API"}


def test_alpaca_snapshot_for_another_symbol_is_unusable(session):
    body = {"AAPL": snapshot(trade=trade(400), symbol="MSFT")}
    result = fetch(session, body)
    assert result.quotes == {}
    assert result.problems["AAPL"] == "snapshot is for 'MSFT', not AAPL"


def test_alpaca_nanosecond_timestamps(session):
    body = {
        "AAPL": snapshot(
            quote={"t": "2024-12-31T14:29:58.123456789Z", "ap": 10, "bp": 9},
            trade={"t": "2024-12-31T09:29:59.987654321-05:00", "p": 9.5},
        )
    }
    got = fetch(session, body).quotes["AAPL"]
    assert got.price == D("9.5")
    assert got.timestamp == datetime(2024, 12, 31, 14, 29, 58, 123456, tzinfo=UTC)


def test_alpaca_sends_credentials_headers(session):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.get(
            URL,
            json={"AAPL": snapshot(trade=trade(150))},
            match=[
                matchers.header_matcher(
                    {"APCA-API-KEY-ID": "key", "APCA-API-SECRET-KEY": "secret"}
                ),
                matchers.query_param_matcher({"symbols": "AAPL"}),
            ],
        )
        alpaca(session).fetch_prices(["AAPL"], now=NOW)


def test_alpaca_without_credentials_sends_no_credential_headers(session):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.get(URL, json={"AAPL": snapshot(trade=trade(150))})
        alpaca(session, key_id=None, secret_key=None).fetch_prices(["AAPL"], now=NOW)
        sent = mock.calls[0].request.headers
    assert "APCA-API-KEY-ID" not in sent
    assert "APCA-API-SECRET-KEY" not in sent


def test_alpaca_batches_requests(session):
    symbols = ["A", "B", "C", "D", "E"]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        for batch in (["A", "B"], ["C", "D"], ["E"]):
            serve(mock, {s: snapshot(trade=trade(10)) for s in batch}, batch)
        result = alpaca(session, batch_size=2).fetch_prices([*symbols, "A"], now=NOW)
        assert len(mock.calls) == 3
    assert set(result.quotes) == set(symbols)


@pytest.mark.parametrize("status", [401, 403])
def test_alpaca_refused_credentials(session, status):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, {"message": "forbidden"}, ["AAPL"], status=status)
        with pytest.raises(PriceSourceError) as caught:
            alpaca(session).fetch_prices(["AAPL"], now=NOW)
        assert len(mock.calls) == 1
    assert str(caught.value) == (
        f"market data refused the credentials (HTTP {status}):"
        " set ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY"
    )


def test_alpaca_server_error_is_not_retried(session):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, {"message": "boom"}, ["AAPL"], status=500)
        with pytest.raises(PriceSourceError, match=r"^market data answered HTTP 500$"):
            alpaca(session).fetch_prices(["AAPL"], now=NOW)
        assert len(mock.calls) == 1


def test_alpaca_unavailable_after_retries(session):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, {"message": "busy"}, ["AAPL"], status=503)
        with pytest.raises(PriceSourceError, match="HTTP 503 after 3 attempt"):
            alpaca(session, max_attempts=3).fetch_prices(["AAPL"], now=NOW)
        assert len(mock.calls) == 3


def test_alpaca_transport_failure_after_retries(session):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.get(URL, body=requests.ConnectionError("refused"))
        with pytest.raises(PriceSourceError, match=r"unreachable: .* after 2 attempt"):
            alpaca(session, max_attempts=2).fetch_prices(["AAPL"], now=NOW)
        assert len(mock.calls) == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON that is not an object"),
        ("null", "JSON that is not an object"),
    ],
)
def test_alpaca_body_that_is_not_an_object(session, body, problem):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, body, ["AAPL"])
        with pytest.raises(PriceSourceError, match=problem):
            alpaca(session).fetch_prices(["AAPL"], now=NOW)


def test_alpaca_failed_batch_fails_the_whole_book(session):
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, {"A": snapshot(trade=trade(10))}, ["A"])
        serve(mock, {"message": "boom"}, ["B"], status=500)
        with pytest.raises(PriceSourceError):
            alpaca(session, batch_size=1).fetch_prices(["A", "B"], now=NOW)


def answering_together(parties: int, body_of):
    """A responses callback that answers only once `parties` requests are in flight at once
    (a barrier with a deadline: requests made one after another break it and fail)."""
    barrier = threading.Barrier(parties, timeout=10)

    def reply(request):
        barrier.wait()
        symbols = parse_qs(urlsplit(request.url).query)["symbols"][0].split(",")
        return body_of(symbols)

    return reply


def test_alpaca_batches_are_in_flight_together(session):
    symbols = [f"S{i}" for i in range(MAX_PARALLEL_BATCHES * 2)]

    def body_of(batch):
        return 200, {}, json.dumps({s: snapshot(trade=trade(10)) for s in batch})

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, URL, answering_together(MAX_PARALLEL_BATCHES, body_of))
        result = alpaca(session, batch_size=2).fetch_prices(symbols, now=NOW)
        assert len(mock.calls) == MAX_PARALLEL_BATCHES
    assert set(result.quotes) == set(symbols)


def test_alpaca_failed_batches_raise_the_first_in_order_not_the_first_to_fail(session):
    """B fails only after C has failed: B's error is the one raised, as if read in order."""
    c_failed = threading.Event()

    def reply(request):
        batch = parse_qs(urlsplit(request.url).query)["symbols"][0]
        if batch == "C":
            c_failed.set()
            return 401, {}, "{}"
        if batch == "B":
            assert c_failed.wait(10)
            return 500, {}, "{}"
        return 200, {}, json.dumps({batch: snapshot(trade=trade(10))})

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, URL, reply)
        with pytest.raises(PriceSourceError, match=r"^market data answered HTTP 500$"):
            alpaca(session, batch_size=1).fetch_prices(["A", "B", "C"], now=NOW)


# --- File -----------------------------------------------------------------------------------


def write(tmp_path, text):
    path = tmp_path / "prices.csv"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ROWS = (
    "aapl,150.25,2024-12-31T14:29:30Z\n"
    "\n"
    "MSFT, 400 ,2024-12-31T09:29:45.123456789-05:00\n"
    "OLD,10,2024-12-31T14:20:00+00:00\n"
)


@pytest.mark.parametrize("header", ["", "symbol,price,timestamp\n", "\nSymbol, Price, Timestamp\n"])
def test_file_source_reads_a_good_file(tmp_path, header):
    source = FilePriceSource(write(tmp_path, header + GOOD_ROWS), max_age=MAX_AGE)
    result = source.fetch_prices(["AAPL", "MSFT", "OLD", "NVDA"], now=NOW)
    assert result.quotes["AAPL"].price == D("150.25")
    assert result.quotes["AAPL"].timestamp == NOW - timedelta(seconds=30)
    assert result.quotes["AAPL"].source == "file"
    assert result.quotes["MSFT"].price == D("400")
    assert result.quotes["MSFT"].timestamp == datetime(2024, 12, 31, 14, 29, 45, 123456, UTC)
    assert result.problems == {
        "OLD": "stale: 600s old, limit 60s",
        "NVDA": "not in PRICES_FILE",
    }


def test_file_source_judges_freshness_at_each_fetch(tmp_path):
    source = FilePriceSource(write(tmp_path, "AAPL,150,2024-12-31T14:30:00Z\n"), max_age=MAX_AGE)
    assert "AAPL" in source.fetch_prices(["AAPL"], now=NOW + timedelta(seconds=60)).quotes
    later = source.fetch_prices(["AAPL"], now=NOW + timedelta(seconds=61))
    assert later.problems == {"AAPL": "stale: 61s old, limit 60s"}
    earlier = source.fetch_prices(["AAPL"], now=NOW - timedelta(seconds=10))
    assert "in the future" in earlier.problems["AAPL"]


def test_file_source_leaves_non_positive_prices_to_check_quote(tmp_path):
    source = FilePriceSource(write(tmp_path, "AAPL,0,2024-12-31T14:30:00Z\n"), max_age=MAX_AGE)
    assert source.fetch_prices(["AAPL"], now=NOW).problems == {"AAPL": "price 0 is not positive"}


SUFFIX = "; expected symbol,price,timestamp[,prev_close] with a timezone"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("AAPL,150\n", 1, "expected 3 or 4 fields, got 2"),
        ("AAPL,150,2024-12-31T14:30:00Z,x\n", 1, "prev_close 'x' is not a number"),
        ("AAPL,150,2024-12-31T14:30:00Z,1,x\n", 1, "expected 3 or 4 fields, got 5"),
        ("AAPL,150,2024-12-31T14:30:00Z,0\n", 1, "prev_close 0 is outside"),
        ("AAPL,150,0001-01-01T00:00:00+01:00\n", 1, "is out of range"),
        ("symbol,price,timestamp\n\nAAPL,abc,2024-12-31T14:30:00Z\n", 3, "price 'abc' is not"),
        ("AAPL,,2024-12-31T14:30:00Z\n", 1, "price '' is not a number"),
        ("AAPL,NaN,2024-12-31T14:30:00Z\n", 1, "price 'NaN' is not a finite number"),
        ("AAPL,150,2024-12-31T14:30:00\n", 1, "has no timezone"),
        ("AAPL,150,31/12/2024\n", 1, "not RFC 3339"),
        (",150,2024-12-31T14:30:00Z\n", 1, "bad symbol ''"),
        (
            "AAPL,150,2024-12-31T14:30:00Z\nMSFT,1,2024-12-31T14:30:00Z\naapl,2,2024-12-31T14:30:00Z\n",
            3,
            "duplicate symbol AAPL (first on line 1)",
        ),
        ("MSFT,1,2024-12-31T14:30:00Z\nsymbol,price,timestamp\n", 2, "price 'price' is not"),
    ],
)
def test_file_source_refuses_bad_input_with_its_line(tmp_path, text, line, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        FilePriceSource(path, max_age=MAX_AGE)
    message = str(caught.value)
    assert message.startswith(f"PRICES_FILE {path} line {line}: ")
    assert problem in message
    assert message.endswith(SUFFIX)


def test_file_source_refuses_a_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(ConfigError, match=r"absent\.csv: cannot read it \(No such file"):
        FilePriceSource(path, max_age=MAX_AGE)


def test_file_source_refuses_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        FilePriceSource(tmp_path, max_age=MAX_AGE)


def test_file_source_accepts_a_byte_order_mark(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes(b"\xef\xbb\xbfsymbol,price,timestamp\r\nAAPL,1.5,2024-12-31T14:30:00Z\r\n")
    source = FilePriceSource(path, max_age=MAX_AGE)
    assert source.fetch_prices(["AAPL"], now=NOW).quotes["AAPL"].price == D("1.5")


# --- build_price_source ---------------------------------------------------------------------


def settings(**values):
    return Settings(_env_file=None, **values)


def test_build_file_source_needs_prices_file(session):
    with pytest.raises(ConfigError, match="PRICE_SOURCE=file needs PRICES_FILE"):
        build_price_source(settings(price_source="file", prices_file=None), session=session)


def test_build_file_source_validates_the_file_now(session, tmp_path):
    path = write(tmp_path, "AAPL,oops,2024-12-31T14:30:00Z\n")
    with pytest.raises(ConfigError, match="line 1"):
        build_price_source(settings(price_source="file", prices_file=path), session=session)


def test_build_file_source(session, tmp_path):
    path = write(tmp_path, "AAPL,150,2024-12-31T14:29:00Z\n")
    source = build_price_source(
        settings(price_source="file", prices_file=path, max_price_age_seconds=30),
        session=session,
    )
    assert source.name == "file"
    assert source.fetch_prices(["AAPL"], now=NOW).problems == {"AAPL": "stale: 60s old, limit 30s"}


def test_build_redis_without_the_redis_extra(session, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` raise ImportError
    with pytest.raises(ConfigError) as caught:
        build_price_source(settings(price_source="redis"), session=session)
    assert str(caught.value) == (
        "PRICE_SOURCE=redis needs the redis extra: pip install 'orchestrator-cli[redis]'"
    )


@pytest.mark.parametrize(
    ("key_id", "secret_key", "named"),
    [
        (None, None, "ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY"),
        ("key", None, "needs ALPACA_API_SECRET_KEY;"),
        (None, "secret", "needs ALPACA_API_KEY_ID;"),
        ("", "secret", "needs ALPACA_API_KEY_ID;"),
    ],
)
def test_build_alpaca_needs_credentials_for_the_real_host(session, key_id, secret_key, named):
    config = settings(
        price_source="alpaca",
        market_data_url="https://data.alpaca.markets",
        alpaca_api_key_id=key_id,
        alpaca_api_secret_key=secret_key,
    )
    with pytest.raises(ConfigError) as caught:
        build_price_source(config, session=session)
    message = str(caught.value)
    assert named in message
    assert "--sandbox" in message
    assert "PRICE_SOURCE=file" in message


def test_build_alpaca_without_credentials_for_another_host(session):
    config = settings(
        price_source="alpaca",
        market_data_url=BASE,
        alpaca_api_key_id=None,
        alpaca_api_secret_key=None,
    )
    source = build_price_source(config, session=session, sleep=no_sleep)
    assert source.name == "alpaca"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        serve(mock, {"AAPL": snapshot(trade=trade(150))}, ["AAPL"])
        assert source.fetch_prices(["AAPL"], now=NOW).quotes["AAPL"].price == D("150")
        assert "APCA-API-KEY-ID" not in mock.calls[0].request.headers


def test_build_alpaca_sends_the_configured_secrets_and_retries(session):
    config = settings(
        price_source="alpaca",
        market_data_url="https://data.alpaca.markets/",
        alpaca_api_key_id="kid",
        alpaca_api_secret_key="shh",
        http_max_attempts=2,
        max_price_age_seconds=5,
    )
    slept: list[float] = []
    source = build_price_source(config, session=session, sleep=slept.append)
    url = "https://data.alpaca.markets/v2/stocks/snapshots"
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        headers = {"APCA-API-KEY-ID": "kid", "APCA-API-SECRET-KEY": "shh"}
        mock.get(url, status=502, match=[matchers.header_matcher(headers)])
        mock.get(
            url,
            json={"AAPL": snapshot(trade=trade(150, 10))},
            match=[matchers.header_matcher(headers)],
        )
        result = source.fetch_prices(["AAPL"], now=NOW)
        assert len(mock.calls) == 2
    assert len(slept) == 1
    assert result.problems == {
        "AAPL": "latest quote: missing; latest trade: stale: 10s old, limit 5s"
    }


def test_no_float_leaks_from_alpaca(session):
    body = '{"AAPL": {"latestQuote": {"t": "@T", "ap": 0.6, "bp": 0.3}}}'.replace("@T", iso(1))
    got = fetch(session, body).quotes["AAPL"]
    assert (0.6 + 0.3) / 2 != 0.45  # in float
    assert got.price == D("0.45")


def test_fixed_offset_now_is_fine(tmp_path):
    path = write(tmp_path, "AAPL,150,2024-12-31T14:29:30Z\n")
    new_york_now = NOW.astimezone(timezone(timedelta(hours=-5)))
    result = FilePriceSource(path, max_age=MAX_AGE).fetch_prices(["AAPL"], now=new_york_now)
    assert "AAPL" in result.quotes


@pytest.mark.parametrize(
    ("price", "usable"),
    [
        ("0.0001", True),
        ("0.00009999", False),  # a corrupt sub-penny quote would size an absurd order
        ("1000000000", True),
        ("1000000000.01", False),
        ("1E+400", False),
    ],
)
def test_check_quote_refuses_implausible_prices(price, usable):
    now = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)
    reason = check_quote(Decimal(price), now, now=now, max_age=timedelta(seconds=60))
    assert (reason is None) == usable
    if not usable:
        assert "plausible range" in (reason or "")
