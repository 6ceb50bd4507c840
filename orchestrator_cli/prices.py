"""Price sources behind one Protocol; each returns a `PriceBook` and never invents a price.

A quote is usable only when it is finite, positive, no older than `MAX_PRICE_AGE_SECONDS` and
at most 5 s in the future (`check_quote`), and, with `MAX_PRICE_MOVE_PCT` on, no further than
that from its reference price (`ReferenceCheck`): the previous close of an Alpaca snapshot
(`prevDailyBar.c`) or the `prev_close` column of a `PRICES_FILE`. A wrong price is worse than
a missing one: a $1 quote for a $100 stock sizes an order 100 times too big, and a notional
limit checked at that price cannot see it. Every unusable symbol gets a reason in the book, so
the plan can say why it was skipped. A failure of the source as a whole (refused credentials,
a service error, an unreadable answer, Redis unreachable) raises `PriceSourceError`; a bad
`PRICES_FILE` or a missing `redis` extra raises `ConfigError` when the source is built, before
any service is contacted.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import requests

from orchestrator_cli.config import ALPACA_DATA_HOST, Settings
from orchestrator_cli.errors import ConfigError, PriceSourceError
from orchestrator_cli.inputs import InputFileError, read_input_text
from orchestrator_cli.price_reference import ReferenceCheck
from orchestrator_cli.schemas import SYMBOL_PATTERN, PriceBook, PriceQuote
from orchestrator_cli.transport import RETRYABLE_STATUSES, HttpClient, describe_error

if TYPE_CHECKING:
    import redis

MAX_FUTURE_SKEW = timedelta(seconds=5)

# RFC 3339: date, time, 1-9 fractional digits, and a zone (Z or an offset) that may be absent
# here only so that a naive timestamp gets its own, clearer reason.
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


class PriceSource(Protocol):
    name: str

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        """Quotes for the usable symbols and a reason for every other one."""
        ...


def _shown(cell: str) -> str:
    """A cell for an error message: quoted, and cut short (a line may be megabytes long)."""
    return repr(cell if len(cell) <= 40 else cell[:37] + "...")


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.3f}".rstrip("0").rstrip(".")


MIN_PRICE = Decimal("0.0001")
MAX_PRICE = Decimal("1000000000")


def check_quote(
    price: Decimal, timestamp: datetime, *, now: datetime, max_age: timedelta
) -> str | None:
    """Why a quote is unusable (not finite, <= 0, out of range, older than max_age, > 5 s
    ahead), or None. The range [MIN_PRICE, MAX_PRICE] keeps a corrupt quote (1e-7, 1e400)
    from sizing an absurd order or failing the audit insert."""
    if not price.is_finite():
        return f"price {price} is not finite"
    if price <= 0:
        return f"price {price} is not positive"
    if not MIN_PRICE <= price <= MAX_PRICE:
        return f"price {price} is outside the plausible range {MIN_PRICE} to {MAX_PRICE:,}"
    age = now - timestamp
    if age > max_age:
        return f"stale: {_seconds(age)}s old, limit {_seconds(max_age)}s"
    if -age > MAX_FUTURE_SKEW:
        return f"timestamp {timestamp.isoformat()} is {_seconds(-age)}s in the future"
    return None


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp (up to 9 fractional digits, truncated to microseconds) in UTC.

    Raises ValueError for anything else, including a timestamp without a zone.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    shown = _shown(text)
    if match is None:
        raise ValueError(f"timestamp {shown} is not RFC 3339")
    day, clock, fraction, zone = match.groups()
    if zone is None:
        raise ValueError(f"timestamp {shown} has no timezone")
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if zone in ("Z", "z") else f"{zone[:3]}:{zone[-2:]}"
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
        return parsed.astimezone(UTC)
    except ValueError as exc:
        raise ValueError(f"timestamp {shown} is not a valid time: {exc}") from exc
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC datetime
        raise ValueError(f"timestamp {shown} is out of range") from None


# --- Alpaca-compatible snapshot API ---------------------------------------------------------


def _decimal_constant(name: str) -> Decimal:
    # NaN/Infinity for one symbol must spoil only that symbol, so keep them as values.
    return Decimal(name)


def _number(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"{what} {value!r} is not a number")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} {number} is not finite")
    return number


def _timestamp_of(entry: dict[str, Any]) -> datetime:
    value = entry.get("t")
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is not a string")
    return parse_timestamp(value)


def _quote_mid(quote: Any, *, now: datetime, max_age: timedelta) -> tuple[Decimal, datetime]:
    if not isinstance(quote, dict):
        raise ValueError("missing")
    ask = _number(quote.get("ap"), "ask")
    bid = _number(quote.get("bp"), "bid")
    if ask <= 0 or bid <= 0:
        raise ValueError(f"not two-sided (ask {ask}, bid {bid})")
    if ask < bid:
        raise ValueError(f"crossed (ask {ask}, bid {bid})")
    timestamp = _timestamp_of(quote)
    mid = (ask + bid) / 2
    problem = check_quote(mid, timestamp, now=now, max_age=max_age)
    if problem:
        raise ValueError(problem)
    return mid, timestamp


def _trade_price(trade: Any, *, now: datetime, max_age: timedelta) -> tuple[Decimal, datetime]:
    if not isinstance(trade, dict):
        raise ValueError("missing")
    price = _number(trade.get("p"), "price")
    timestamp = _timestamp_of(trade)
    problem = check_quote(price, timestamp, now=now, max_age=max_age)
    if problem:
        raise ValueError(problem)
    return price, timestamp


MAX_PARALLEL_BATCHES = 8  # snapshot requests at once: 1,600 symbols in one round trip


class AlpacaPriceSource:
    """`GET /v2/stocks/snapshots`: the latest quote's mid, else the latest trade, if fresh."""

    name = "alpaca"

    def __init__(
        self,
        http: HttpClient,
        *,
        key_id: str | None,
        secret_key: str | None,
        max_age: timedelta,
        batch_size: int = 200,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._http = http
        self._headers: dict[str, str] = {}
        if key_id:
            self._headers["APCA-API-KEY-ID"] = key_id
        if secret_key:
            self._headers["APCA-API-SECRET-KEY"] = secret_key
        self._max_age = max_age
        self._batch_size = batch_size

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        """One request per `batch_size` symbols, up to `MAX_PARALLEL_BATCHES` at a time; any
        failed request fails the whole book (the first failed batch, in order, is raised)."""
        book, wanted, size = PriceBook(), list(dict.fromkeys(symbols)), self._batch_size
        batches = [wanted[start : start + size] for start in range(0, len(wanted), size)]
        workers = min(MAX_PARALLEL_BATCHES, len(batches)) or 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-prices") as pool:
            answers = [pool.submit(self._get_snapshots, batch) for batch in batches]
        for batch, answer in zip(batches, answers, strict=True):
            snapshots = answer.result()
            for symbol in batch:
                try:
                    book.quotes[symbol] = self._quote_from(symbol, snapshots.get(symbol), now)
                except ValueError as exc:
                    book.problems[symbol] = str(exc)
        return book

    def _get_snapshots(self, batch: list[str]) -> dict[str, Any]:
        try:
            response = self._http.request(
                "GET",
                "/v2/stocks/snapshots",
                params={"symbols": ",".join(batch)},
                headers=self._headers,
            )
        except requests.RequestException as exc:
            raise PriceSourceError(
                f"market data unreachable: {describe_error(exc)}"
                f" after {self._http.max_attempts} attempt(s)"
            ) from exc
        status = response.status_code
        if status in (401, 403):
            raise PriceSourceError(
                f"market data refused the credentials (HTTP {status}):"
                " set ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY"
            )
        if status != 200:
            tries = (
                f" after {self._http.max_attempts} attempt(s)"
                if status in RETRYABLE_STATUSES
                else ""
            )
            raise PriceSourceError(f"market data answered HTTP {status}{tries}")
        try:
            body = json.loads(response.text, parse_float=Decimal, parse_constant=_decimal_constant)
        except RecursionError:
            raise PriceSourceError("market data answered with JSON nested too deeply") from None
        except ValueError as exc:
            raise PriceSourceError("market data answered with a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise PriceSourceError("market data answered with JSON that is not an object")
        return body

    def _quote_from(self, symbol: str, snapshot: Any, now: datetime) -> PriceQuote:
        """The usable price of one snapshot; ValueError carries the reason it has none."""
        if snapshot is None:
            raise ValueError("not known to the market-data API")
        if not isinstance(snapshot, dict):
            raise ValueError("snapshot is not a JSON object")
        other = snapshot.get("symbol", symbol)
        if other != symbol:
            raise ValueError(f"snapshot is for {str(other)[:40]!r}, not {symbol}")
        reference = _previous_close(snapshot.get("prevDailyBar"))
        price, at, source = self._latest(snapshot, now)
        return PriceQuote(
            symbol=symbol, price=price, timestamp=at, source=source, reference=reference
        )

    def _latest(self, snapshot: dict[str, Any], now: datetime) -> tuple[Decimal, datetime, str]:
        """The latest quote's mid, else the latest trade: (price, time, how it was read)."""
        try:
            mid, at = _quote_mid(snapshot.get("latestQuote"), now=now, max_age=self._max_age)
            return mid, at, "alpaca:quote_mid"
        except ValueError as exc:
            quote_problem = str(exc)
        try:
            price, at = _trade_price(snapshot.get("latestTrade"), now=now, max_age=self._max_age)
            return price, at, "alpaca:trade"
        except ValueError as exc:
            raise ValueError(f"latest quote: {quote_problem}; latest trade: {exc}") from None


def _previous_close(bar: Any) -> Decimal | None:
    """The reference price of a snapshot: `prevDailyBar.c`; None when there is no such bar.

    A bar that is there but unusable spoils the symbol (a corrupt snapshot is not trusted)."""
    if bar is None:
        return None
    if not isinstance(bar, dict):
        raise ValueError("prevDailyBar is not a JSON object")
    close = _number(bar.get("c"), "previous close")
    if not MIN_PRICE <= close <= MAX_PRICE:
        raise ValueError(f"previous close {close} is outside {MIN_PRICE} to {MAX_PRICE:,}")
    return close


# --- CSV file -------------------------------------------------------------------------------

_HEADER = ["symbol", "price", "timestamp"]
REFERENCE_COLUMN = "prev_close"


class _FileRow(NamedTuple):
    price: Decimal
    timestamp: datetime
    reference: Decimal | None  # the optional prev_close column


class FilePriceSource:
    """`PRICES_FILE`: read and validated completely when built; judged against `now` per fetch.

    Rows are `symbol,price,timestamp` with an optional fourth `prev_close` (the reference price
    MAX_PRICE_MOVE_PCT checks against; empty or absent: none for that symbol).
    """

    name = "file"

    def __init__(self, path: Path, *, max_age: timedelta) -> None:
        self._path = path
        self._max_age = max_age
        self._rows = self._load()

    def _fail(self, problem: str, line: int | None = None) -> ConfigError:
        where = f"{self._path} line {line}" if line is not None else str(self._path)
        return ConfigError(
            f"PRICES_FILE {where}: {problem}; expected symbol,price,timestamp[,prev_close] "
            "with a timezone"
        )

    def _load(self) -> dict[str, _FileRow]:
        try:
            text = read_input_text(self._path)
        except InputFileError as exc:
            raise self._fail(str(exc)) from None
        rows: dict[str, _FileRow] = {}
        first_line: dict[str, int] = {}
        seen_data = False
        reader = csv.reader(io.StringIO(text, newline=""))
        while True:
            try:
                fields = next(reader, None)
            except csv.Error as exc:  # e.g. a field beyond the csv module's size limit
                raise self._fail(f"not CSV ({exc})", reader.line_num) from None
            if fields is None:
                return rows
            line = reader.line_num
            cells = [cell.strip() for cell in fields]
            if not any(cells):
                continue
            header = [cell.lower() for cell in cells]
            if not seen_data and header in (_HEADER, [*_HEADER, REFERENCE_COLUMN]):
                seen_data = True
                continue
            seen_data = True
            symbol, row = self._parse_row(cells, line)
            if symbol in rows:
                raise self._fail(
                    f"duplicate symbol {symbol} (first on line {first_line[symbol]})", line
                )
            rows[symbol] = row
            first_line[symbol] = line

    def _number(self, raw: str, what: str, line: int) -> Decimal:
        try:
            number = Decimal(raw)
        except InvalidOperation:
            raise self._fail(f"{what} {_shown(raw)} is not a number", line) from None
        if not number.is_finite():
            raise self._fail(f"{what} {_shown(raw)} is not a finite number", line)
        return number

    def _parse_row(self, cells: list[str], line: int) -> tuple[str, _FileRow]:
        if len(cells) not in (3, 4):
            raise self._fail(f"expected 3 or 4 fields, got {len(cells)}", line)
        raw_symbol, raw_price, raw_timestamp = cells[:3]
        symbol = raw_symbol.upper()
        if not re.fullmatch(SYMBOL_PATTERN, symbol):
            raise self._fail(f"bad symbol {_shown(raw_symbol)}", line)
        price = self._number(raw_price, "price", line)
        try:
            timestamp = parse_timestamp(raw_timestamp)
        except ValueError as exc:
            raise self._fail(str(exc), line) from None
        reference = None
        if len(cells) == 4 and cells[3]:
            reference = self._number(cells[3], REFERENCE_COLUMN, line)
            if not MIN_PRICE <= reference <= MAX_PRICE:
                raise self._fail(
                    f"{REFERENCE_COLUMN} {reference} is outside {MIN_PRICE} to {MAX_PRICE:,}",
                    line,
                )
        return symbol, _FileRow(price, timestamp, reference)

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        """Every file quote that passes `check_quote` at `now`; absent symbols get a reason."""
        book = PriceBook()
        for symbol in symbols:
            row = self._rows.get(symbol)
            if row is None:
                book.problems[symbol] = "not in PRICES_FILE"
                continue
            problem = check_quote(row.price, row.timestamp, now=now, max_age=self._max_age)
            if problem:
                book.problems[symbol] = problem
            else:
                book.quotes[symbol] = PriceQuote(
                    symbol=symbol,
                    price=row.price,
                    timestamp=row.timestamp,
                    source=self.name,
                    reference=row.reference,
                )
        return book


# --- Redis (the platform's market-data service) ---------------------------------------------


def _redis_location(client: redis.Redis) -> str:
    """Where the client connects, as a URL whose password (if any) reads `***`."""
    # Rebuilt from the client rather than passed in, so the message names what was really
    # contacted and the password never sits in a string here.
    pool = client.connection_pool
    options = pool.connection_kwargs
    db = options.get("db") or 0
    if options.get("path"):
        return f"unix://{options['path']}?db={db}"
    from redis.connection import SSLConnection

    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    userinfo = options.get("username") or ""
    if options.get("password"):
        userinfo += ":***"
    if userinfo:
        userinfo += "@"
    return f"{scheme}://{userinfo}{options.get('host')}:{options.get('port') or 6379}/{db}"


class RedisPriceSource:
    """`price:{SYMBOL}` JSON quotes published by the platform's market-data service; uses `mid`."""

    name = "redis"

    def __init__(self, client: redis.Redis, *, max_age: timedelta) -> None:
        self._client = client
        self._max_age = max_age

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        """All symbols in one MGET (one round trip); a Redis failure fails the whole book."""
        from redis.exceptions import RedisError

        book = PriceBook()
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            return book
        keys = [f"price:{symbol}" for symbol in wanted]
        try:
            values = self._client.mget(keys)
        except RedisError as exc:
            reason = str(exc).rstrip(".") or type(exc).__name__
            raise PriceSourceError(
                f"Redis at {_redis_location(self._client)} unreachable: {reason};"
                " check REDIS_URL and that Redis is running"
            ) from exc
        for symbol, key, value in zip(wanted, keys, values, strict=True):
            try:
                book.quotes[symbol] = self._quote_from(symbol, key, value, now)
            except ValueError as exc:
                book.problems[symbol] = str(exc)
        return book

    def _quote_from(
        self, symbol: str, key: str, value: bytes | str | None, now: datetime
    ) -> PriceQuote:
        """The usable mid of one stored quote; ValueError carries the reason it has none."""
        if value is None:
            raise ValueError(f"no quote in Redis ({key})")
        try:
            quote = json.loads(value, parse_float=Decimal, parse_constant=_decimal_constant)
        except RecursionError:
            raise ValueError(f"{key} holds JSON nested too deeply") from None
        except ValueError:  # also bytes that are not UTF-8
            raise ValueError(f"{key} is not JSON") from None
        if not isinstance(quote, dict):
            raise ValueError(f"{key} is not a JSON object")
        other = quote.get("symbol")
        if other != symbol:
            raise ValueError(f"{key} holds a quote for {other!r}, not {symbol}")
        mid = quote.get("mid")
        if mid is None:
            raise ValueError("quote has no mid")
        # Decimal fields are often serialised as strings ("190.00"): accept a decimal string.
        if isinstance(mid, str):
            try:
                mid = Decimal(mid.strip())
            except InvalidOperation:
                raise ValueError(f"mid {mid!r} is not a number") from None
        if isinstance(mid, bool) or not isinstance(mid, int | Decimal):
            raise ValueError(f"mid {mid!r} is not a number")
        stamp = quote.get("timestamp")
        if stamp is None:
            raise ValueError("quote has no timestamp")
        if not isinstance(stamp, str):
            raise ValueError(f"timestamp {stamp!r} is not a string")
        price = Decimal(mid)
        timestamp = parse_timestamp(stamp)
        problem = check_quote(price, timestamp, now=now, max_age=self._max_age)
        if problem:
            raise ValueError(problem)
        return PriceQuote(symbol=symbol, price=price, timestamp=timestamp, source="redis:mid")


# --- Factory --------------------------------------------------------------------------------


def build_price_source(
    settings: Settings,
    *,
    session: requests.Session,
    sleep: Callable[[float], None] = time.sleep,
) -> PriceSource:
    """The configured source, its quotes checked against their reference price while
    MAX_PRICE_MOVE_PCT is on; ConfigError for a setting that cannot work (before any call)."""
    max_age = timedelta(seconds=settings.max_price_age_seconds)
    source: PriceSource
    if settings.price_source == "file":
        if settings.prices_file is None:
            raise ConfigError(
                "PRICE_SOURCE=file needs PRICES_FILE: the path of a CSV of"
                " symbol,price,timestamp with a timezone"
            )
        source = FilePriceSource(settings.prices_file, max_age=max_age)
    elif settings.price_source == "redis":
        source = _redis_source(settings, max_age)
    else:
        source = _alpaca_source(settings, max_age, session=session, sleep=sleep)
    if settings.max_price_move_pct is None:
        return source
    return ReferenceCheck(source, max_move_pct=settings.max_price_move_pct)


def _redis_source(settings: Settings, max_age: timedelta) -> RedisPriceSource:
    try:
        import redis
    except ImportError:
        raise ConfigError(
            "PRICE_SOURCE=redis needs the redis extra: pip install 'orchestrator-cli[redis]'"
        ) from None
    # No ping here: nothing is contacted before the run starts; the first MGET is the contact.
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.http_timeout_seconds,
        socket_connect_timeout=settings.http_timeout_seconds,
        decode_responses=False,
        # Attempts follow HTTP_MAX_ATTEMPTS like every other service call.
        retry=Retry(NoBackoff(), settings.http_max_attempts - 1),
    )
    return RedisPriceSource(client, max_age=max_age)


def _alpaca_source(
    settings: Settings,
    max_age: timedelta,
    *,
    session: requests.Session,
    sleep: Callable[[float], None],
) -> AlpacaPriceSource:
    key_id = settings.alpaca_api_key_id
    secret_key = settings.alpaca_api_secret_key
    missing = [
        name
        for name, secret in (("ALPACA_API_KEY_ID", key_id), ("ALPACA_API_SECRET_KEY", secret_key))
        if secret is None or not secret.get_secret_value()
    ]
    if missing and urlsplit(settings.market_data_url).hostname == ALPACA_DATA_HOST:
        raise ConfigError(
            f"{ALPACA_DATA_HOST} needs {' and '.join(missing)};"
            " set them, or use --sandbox, or PRICE_SOURCE=file with PRICES_FILE"
        )
    http = HttpClient(
        service="market data",
        base_url=settings.market_data_url,
        timeout=settings.http_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        session=session,
        sleep=sleep,
    )
    return AlpacaPriceSource(
        http,
        key_id=key_id.get_secret_value() if key_id else None,
        secret_key=secret_key.get_secret_value() if secret_key else None,
        max_age=max_age,
    )


def check_price_source(settings: Settings) -> None:
    """Build the price source and drop it: a setting that cannot work (PRICE_SOURCE=file
    without PRICES_FILE, a malformed file, missing market-data keys) is refused (exit 4) even
    on a day nothing runs. Nothing is contacted."""
    with requests.Session() as session:
        build_price_source(settings, session=session)
