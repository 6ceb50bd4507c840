"""The exchange clock: what time it is, and which trading date a moment belongs to.

The trading date is the exchange's calendar date (America/New_York), never the machine's local
date. Everything that asks "which day is it for the market" asks this module.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from orchestrator_cli.errors import ConfigError

EXCHANGE_TZ = ZoneInfo("America/New_York")


def utc_now() -> datetime:
    return datetime.now(UTC)


def trading_date(now: datetime) -> date:
    """The exchange's calendar date (America/New_York) at `now`, never the machine's."""
    return now.astimezone(EXCHANGE_TZ).date()


def check_as_of(as_of: date, now: datetime) -> str | None:
    """Refuse a trading date after today's; a warning when it is not today's (or a weekend)."""
    today = trading_date(now)
    if as_of > today:
        raise ConfigError(f"--as-of {as_of} is after today's trading date {today} (New York)")
    if as_of < today or as_of.weekday() >= 5:
        return (
            f"--as-of {as_of} is not today's trading date {today}: orders go out now, at "
            "today's prices"
        )
    return None
