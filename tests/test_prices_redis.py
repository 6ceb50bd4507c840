"""The Redis price source against a real Redis (logical database 15, only keys written here).

Redis is expected at 127.0.0.1:6379; unreachable, these tests are skipped with a visible
reason, except in CI (CI=true), where they fail.
"""

import json
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
import requests

from orchestrator_cli.config import Settings
from orchestrator_cli.errors import PriceSourceError
from orchestrator_cli.prices import RedisPriceSource, build_price_source

D = Decimal
NOW = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)
MAX_AGE = timedelta(seconds=60)
REDIS_URL = "redis://127.0.0.1:6379/15"
# Nothing listens on port 1: connecting is refused at once.
DEAD_URL = "redis://orch:s3cret-pw@127.0.0.1:1/0"
DROP = object()


def connect(url):
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


class Quotes:
    """Writes quotes under fresh symbols and remembers the keys, so teardown deletes only them."""

    def __init__(self, client):
        self.client = client
        self.keys = []

    def symbol(self):
        return f"ZT{secrets.token_hex(4).upper()}"

    def put(self, symbol, value):
        key = f"price:{symbol}"
        self.keys.append(key)
        self.client.set(key, value if isinstance(value, str | bytes) else json.dumps(value))


def quote(symbol, /, *, mid=150.25, seconds_ago=1.0, **changes):
    """A quote as the platform's market-data service writes it; DROP removes a field."""
    at = NOW - timedelta(seconds=seconds_ago)
    body = {
        "symbol": symbol,
        "bid": 150.2,
        "ask": 150.3,
        "mid": mid,
        "bid_size": 100,
        "ask_size": 200,
        "timestamp": at.isoformat(),
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not DROP}


@pytest.fixture(scope="module")
def client(redis_server):
    client = connect(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def quotes(client):
    written = Quotes(client)
    yield written
    if written.keys:
        client.delete(*written.keys)


@pytest.fixture
def source(client):
    return RedisPriceSource(client, max_age=MAX_AGE)


def test_fresh_mid_is_the_price(quotes, source):
    symbol = quotes.symbol()
    quotes.put(symbol, quote(symbol, mid=0.45, seconds_ago=2))
    book = source.fetch_prices([symbol], now=NOW)
    assert book.problems == {}
    got = book.quotes[symbol]
    assert got.price == D("0.45")
    assert type(got.price) is Decimal
    assert got.timestamp == NOW - timedelta(seconds=2)
    assert got.source == "redis:mid"


def test_decimal_string_mid_is_accepted_exactly(quotes, source):
    symbol = quotes.symbol()
    quotes.put(symbol, quote(symbol, mid="190.005"))
    got = source.fetch_prices([symbol], now=NOW).quotes[symbol]
    assert got.price == Decimal("190.005")


def test_integer_mid_and_the_age_limit(quotes, source):
    symbol = quotes.symbol()
    quotes.put(symbol, quote(symbol, mid=400, seconds_ago=60))  # exactly at the limit
    assert source.fetch_prices([symbol], now=NOW).quotes[symbol].price == D("400")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"seconds_ago": 61}, "stale: 61s old, limit 60s"),
        ({"seconds_ago": 95.5}, "stale: 95.5s old, limit 60s"),
        ({"seconds_ago": -6}, "timestamp 2024-12-31T14:30:06+00:00 is 6s in the future"),
        ({"mid": float("nan")}, "price NaN is not finite"),
        ({"mid": float("inf")}, "price Infinity is not finite"),
        ({"mid": float("-inf")}, "price -Infinity is not finite"),
        ({"mid": 0}, "price 0 is not positive"),
        ({"mid": -1.5}, "price -1.5 is not positive"),
        ({"mid": "lots"}, "mid 'lots' is not a number"),
        ({"mid": "NaN"}, "price NaN is not finite"),
        ({"mid": True}, "mid True is not a number"),
        ({"mid": DROP}, "quote has no mid"),
        ({"mid": None}, "quote has no mid"),
        ({"symbol": "MSFT"}, "holds a quote for 'MSFT', not @S"),
        ({"symbol": DROP}, "holds a quote for None, not @S"),
        ({"timestamp": DROP}, "quote has no timestamp"),
        ({"timestamp": 1735655399}, "timestamp 1735655399 is not a string"),
        ({"timestamp": "2024-12-31T14:29:59"}, "has no timezone"),
        ({"timestamp": "yesterday"}, "is not RFC 3339"),
    ],
)
def test_unusable_quote_spoils_only_its_symbol(quotes, source, changes, reason):
    bad, good = quotes.symbol(), quotes.symbol()
    quotes.put(bad, quote(bad, **changes))
    quotes.put(good, quote(good))
    book = source.fetch_prices([bad, good], now=NOW)
    assert set(book.quotes) == {good}
    assert set(book.problems) == {bad}
    assert reason.replace("@S", bad) in book.problems[bad]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"not json", "is not JSON"),
        (b"\xff\xfe\x00garbage", "is not JSON"),
        (b"", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b"null", "is not a JSON object"),
        (b"150.25", "is not a JSON object"),
    ],
)
def test_value_that_is_not_a_json_object(quotes, source, raw, problem):
    symbol = quotes.symbol()
    quotes.put(symbol, raw)
    book = source.fetch_prices([symbol], now=NOW)
    assert book.quotes == {}
    assert book.problems == {symbol: f"price:{symbol} {problem}"}


def test_missing_key(quotes, source):
    symbol = quotes.symbol()
    book = source.fetch_prices([symbol], now=NOW)
    assert book.quotes == {}
    assert book.problems == {symbol: f"no quote in Redis (price:{symbol})"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-12-31T14:29:58.123456789Z", datetime(2024, 12, 31, 14, 29, 58, 123456, UTC)),
        ("2024-12-31T14:29:58.123456+00:00", datetime(2024, 12, 31, 14, 29, 58, 123456, UTC)),
        ("2024-12-31T09:29:58-05:00", datetime(2024, 12, 31, 14, 29, 58, tzinfo=UTC)),
        ("2024-12-31T14:29:58z", datetime(2024, 12, 31, 14, 29, 58, tzinfo=UTC)),
    ],
)
def test_timestamp_formats(quotes, source, text, expected):
    symbol = quotes.symbol()
    quotes.put(symbol, quote(symbol, timestamp=text))
    got = source.fetch_prices([symbol], now=NOW).quotes[symbol]
    assert got.timestamp == expected
    assert got.timestamp.tzinfo is UTC


def test_all_symbols_in_one_round_trip(client, quotes, source, monkeypatch):
    symbols = [quotes.symbol() for _ in range(5)]
    for symbol in symbols[:4]:
        quotes.put(symbol, quote(symbol))
    sent = []
    execute = client.execute_command

    def spy(*args, **options):
        sent.append(args)
        return execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", spy)
    book = source.fetch_prices([*symbols, symbols[0]], now=NOW)
    assert sent == [("MGET", *[f"price:{symbol}" for symbol in symbols])]
    assert set(book.quotes) == set(symbols[:4])
    assert book.problems == {symbols[4]: f"no quote in Redis (price:{symbols[4]})"}


def test_no_symbols_sends_nothing(client, source, monkeypatch):
    def refuse(*args, **options):
        raise AssertionError(f"unexpected Redis command {args}")

    monkeypatch.setattr(client, "execute_command", refuse)
    book = source.fetch_prices([], now=NOW)
    assert book.quotes == {}
    assert book.problems == {}


def test_unreachable_redis_fails_the_whole_book_without_the_password():
    dead = redis.Redis.from_url(DEAD_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        with pytest.raises(PriceSourceError) as caught:
            RedisPriceSource(dead, max_age=MAX_AGE).fetch_prices(["AAPL"], now=NOW)
    finally:
        dead.close()
    message = str(caught.value)
    assert message.startswith("Redis at redis://orch:***@127.0.0.1:1/0 unreachable: ")
    assert "Connection refused" in message
    assert message.endswith("; check REDIS_URL and that Redis is running")
    assert "s3cret" not in message
    assert isinstance(caught.value.__cause__, redis.ConnectionError)


def test_refused_credentials_fail_the_whole_book_without_the_password(client):
    wrong = connect("redis://nobody:wrong-pw@127.0.0.1:6379/15")
    try:
        with pytest.raises(PriceSourceError) as caught:
            RedisPriceSource(wrong, max_age=MAX_AGE).fetch_prices(["AAPL"], now=NOW)
    finally:
        wrong.close()
    message = str(caught.value)
    assert message.startswith("Redis at redis://nobody:***@127.0.0.1:6379/15 unreachable: ")
    assert "wrong-pw" not in message
    assert isinstance(caught.value.__cause__, redis.AuthenticationError)


# --- build_price_source ---------------------------------------------------------------------


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def settings(**values):
    return Settings(_env_file=None, price_source="redis", **values)


def test_build_does_not_contact_redis(session):
    config = settings(redis_url=DEAD_URL, http_timeout_seconds=0.5, max_price_move_pct=None)
    source = build_price_source(config, session=session)  # would raise if it pinged
    assert isinstance(source, RedisPriceSource)
    assert source.name == "redis"
    # the first fetch is the contact, and it goes where REDIS_URL says
    with pytest.raises(PriceSourceError, match=r"^Redis at redis://orch:\*\*\*@127\.0\.0\.1:1/0 "):
        source.fetch_prices(["AAPL"], now=NOW)


def test_build_reads_the_configured_database_and_age_limit(session, quotes):
    fresh, stale = quotes.symbol(), quotes.symbol()
    quotes.put(fresh, quote(fresh, seconds_ago=5))
    quotes.put(stale, quote(stale, seconds_ago=11))
    config = settings(
        redis_url=REDIS_URL,
        max_price_age_seconds=10,
        http_timeout_seconds=1.5,
        max_price_move_pct=None,  # the bare source, not wrapped in the reference check
    )
    source = build_price_source(config, session=session)
    assert isinstance(source, RedisPriceSource)
    options = source._client.connection_pool.connection_kwargs
    assert options["socket_timeout"] == 1.5
    assert options["socket_connect_timeout"] == 1.5
    assert options["decode_responses"] is False
    try:
        book = source.fetch_prices([fresh, stale], now=NOW)
    finally:
        source._client.close()
    assert book.quotes[fresh].price == D("150.25")
    assert book.problems == {stale: "stale: 11s old, limit 10s"}
