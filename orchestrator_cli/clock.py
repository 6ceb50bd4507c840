"""The exchange clock: what time it is, which trading date a moment belongs to, and whether
the market is open for a run.

The trading date is the exchange's calendar date (America/New_York for the default XNYS
calendar), never the machine's local date. Whether a day has a session, why not (a weekend,
a holiday by name), and when its session closes (16:00 New York, 13:00 on a half day) come
from the exchange calendar `MARKET_CALENDAR`, read from the cache that `calendars` keeps, so
a run never imports exchange_calendars. Everything that asks "which day is it for the market"
or "is the market open" asks this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator_cli.calendars import Builder, CalendarTable, library_version, load_table
from orchestrator_cli.config import Settings, data_dir
from orchestrator_cli.errors import ConfigError

logger = logging.getLogger(__name__)

EXCHANGE_TZ = ZoneInfo("America/New_York")
WEEKEND = "weekend"
CALENDAR_CACHE = "market-calendars.json"


def utc_now() -> datetime:
    return datetime.now(UTC)


def trading_date(now: datetime, tz: ZoneInfo = EXCHANGE_TZ) -> date:
    """The exchange's calendar date at `now` (New York unless told), never the machine's."""
    return now.astimezone(tz).date()


def check_as_of(as_of: date, now: datetime, tz: ZoneInfo = EXCHANGE_TZ) -> str | None:
    """Refuse a trading date after today's; a warning when it is an earlier one (which only a
    dry run may plan: `refuse_earlier_day`).

    Whether either day has a session is the calendar's question (`market_for_run`), not this
    one's: with the calendar ignored, a weekend `--as-of` that is today draws no warning.
    """
    today = trading_date(now, tz)
    if as_of > today:
        raise ConfigError(f"--as-of {as_of} is after today's date {today} ({tz.key})")
    if as_of < today:
        return (
            f"--as-of {as_of} is an earlier day than today ({today}, {tz.key}): the plan is "
            "made from today's positions and prices"
        )
    return None


def refuse_earlier_day(as_of: date, today: date, *, sends_orders: bool) -> None:
    """Refuse a run that sends orders for an earlier day than today: its orders would go out
    today, into the account today's run trades, beside that run and the orders it has open,
    which the earlier day's run never sees (each day's runs settle their own)."""
    if sends_orders and as_of < today:
        raise ConfigError(
            f"--as-of {as_of} is an earlier day than today ({today}): its orders would go out "
            "today, beside today's run and its open orders; orch sends orders for today's "
            "trading date only (--dry-run shows that day's plan)"
        )


@dataclass(frozen=True)
class SessionClose:
    """When a session closes, in the exchange's time zone, and whether that is early."""

    at: datetime
    early: bool

    def __str__(self) -> str:
        return self.at.strftime("%H:%M %Z")


@dataclass(frozen=True)
class MarketOpen:
    """The market is open for a run: its trading date and the close of today's session (no
    order goes out after it)."""

    day: date
    close: SessionClose


@dataclass(frozen=True)
class MarketClosed:
    """No run today: the day that is closed and why (`weekend`, a holiday's name, ...)."""

    day: date
    reason: str
    calendar: str

    def line(self) -> str:
        return f"market closed on {self.day}: {self.reason}"

    def document(self) -> dict[str, Any]:
        """The `--json` document: `action` as in the run's own documents."""
        return {
            "action": "market_closed",
            "as_of_date": self.day.isoformat(),
            "reason": self.reason,
            "market_calendar": self.calendar,
        }


@dataclass(frozen=True)
class MarketCalendar:
    """The questions a run asks of an exchange calendar, answered from its table."""

    table: CalendarTable

    @property
    def code(self) -> str:
        return self.table.code

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.table.tz)

    def _check_covers(self, day: date) -> None:
        if not self.table.covers(day):  # load_calendar covers the days it was asked about
            raise ValueError(f"{day} is outside the {self.code} table ({self.table.first}..)")

    def closed_reason(self, day: date) -> str | None:
        """Why `day` has no session (`weekend`, a holiday's name), or None if it has one."""
        self._check_covers(day)
        if day in self.table.closed:
            return self.table.closed[day]
        if self.table.weekmask[day.weekday()] == "0" and day not in self.table.weekend_sessions:
            return WEEKEND
        return None

    def session_close(self, day: date) -> SessionClose:
        """The close of `day`'s session (a day with a session)."""
        self._check_covers(day)
        minutes = self.table.closes.get(day, self.table.regular_close)
        # Wall-clock arithmetic: 16:00 New York whatever the UTC offset is that day.
        at = datetime.combine(day, time(), self.tz) + timedelta(minutes=minutes)
        return SessionClose(at=at, early=minutes < self.table.regular_close)


def market_for_run(
    calendar: MarketCalendar, now: datetime, as_of: date | None = None
) -> MarketOpen | MarketClosed:
    """Whether a run may trade at `now` for trading date `as_of` (default: today's).

    Closed when the `--as-of` day has no session, when today has none (an order sent now
    would wait at the broker for the next open, where that day's run orders again), and once
    today's session has closed. Open before today's session starts: orders wait for the open.
    """
    today = trading_date(now, calendar.tz)
    for day in (as_of, today):
        if day is not None and (reason := calendar.closed_reason(day)) is not None:
            return MarketClosed(day, reason, calendar.code)
    close = calendar.session_close(today)
    if now >= close.at:
        half = " (half day)" if close.early else ""
        return MarketClosed(today, f"after the close at {close}{half}", calendar.code)
    return MarketOpen(as_of or today, close)


def calendar_cache_file() -> Path:
    """Where the calendar tables are cached: a small JSON file in the data directory."""
    return data_dir() / CALENDAR_CACHE


def load_calendar(
    code: str,
    now: datetime,
    as_of: date | None = None,
    *,
    cache_file: Path | None = None,
    build: Builder | None = None,
    version: Callable[[], str] | None = None,
) -> MarketCalendar:
    """Calendar `code` covering today (in any time zone) and `as_of`, from the cache or built
    once and cached. An unknown code raises ConfigError naming MARKET_CALENDAR."""
    utc_today = now.astimezone(UTC).date()
    days = [utc_today - timedelta(days=1), utc_today + timedelta(days=1)]
    if as_of is not None and as_of <= days[-1]:  # a later one is refused (check_as_of)
        days.append(as_of)
    table = load_table(
        code,
        cache_file or calendar_cache_file(),
        days,
        build=build,
        version=version or library_version,
    )
    return MarketCalendar(table)


def market_for(
    settings: Settings, as_of: date | None, now: datetime
) -> MarketOpen | MarketClosed | None:
    """Whether the market is open for `orch run` (None: IGNORE_CALENDAR, nothing is read).

    A date after today's is refused; an earlier one with a session is refused too unless the
    run is a dry run, which it is a warning for (`refuse_earlier_day`).
    """
    calendar = None
    if not settings.ignore_calendar:
        calendar = load_calendar(settings.market_calendar, now, as_of)
    tz = EXCHANGE_TZ if calendar is None else calendar.tz
    warning = None if as_of is None else check_as_of(as_of, now, tz)
    market = None if calendar is None else market_for_run(calendar, now, as_of)
    if isinstance(market, MarketClosed):
        return market
    if as_of is not None:
        refuse_earlier_day(as_of, trading_date(now, tz), sends_orders=not settings.dry_run)
    if warning is not None:
        logger.warning("%s", warning)
    if market is not None and market.close.early:
        logger.info("half day: the market closes at %s; no order is sent after it", market.close)
    return market
