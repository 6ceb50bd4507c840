"""Exchange calendars as small tables: closed days with their names, and the session closes.

`exchange_calendars` (with pandas under it) takes about a second to import and half a second
to build a calendar, far more than a run may spend on its calendar. So the table a run needs
(the week mask, the weekdays without a session and why, the weekend days with one, and every
close that is not the regular one) is built once for a range of years and kept in a JSON file
in the data directory. A run reads only that file and never imports `exchange_calendars`.

The file is rebuilt when the installed `exchange_calendars` version differs from the one that
built it (ad hoc closures arrive with new releases), when a date outside its years is asked
for, and when it cannot be read. This is the one module that imports `exchange_calendars`, and
it translates that library's errors into `ConfigError`.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator_cli.errors import ConfigError

logger = logging.getLogger(__name__)

LIBRARY = "exchange_calendars"
CACHE_FORMAT = 1
# Years kept around the current one: --as-of reaches back, and the cache lasts years ahead.
YEARS_BEHIND = 5
YEARS_AHEAD = 5
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class CalendarTable:
    """One exchange calendar from `first` to `last`: everything a run asks of it.

    Closes are minutes after midnight (exchange time) of the session's date, so a session that
    closes after midnight (a 24-hour calendar) is `1440`.
    """

    code: str
    tz: str
    weekmask: str  # seven 0/1 characters, Monday first
    first: date
    last: date
    regular_close: int
    closed: Mapping[date, str] = field(default_factory=dict)  # weekdays without a session
    weekend_sessions: frozenset[date] = frozenset()
    closes: Mapping[date, int] = field(default_factory=dict)  # closes not the regular one

    def covers(self, day: date) -> bool:
        return self.first <= day <= self.last

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "tz": self.tz,
            "weekmask": self.weekmask,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "regular_close": self.regular_close,
            "closed": {day.isoformat(): name for day, name in sorted(self.closed.items())},
            "weekend_sessions": sorted(day.isoformat() for day in self.weekend_sessions),
            "closes": {day.isoformat(): close for day, close in sorted(self.closes.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CalendarTable:
        """Raises KeyError, TypeError or ValueError on anything malformed."""
        weekmask = str(data["weekmask"])
        if len(weekmask) != 7 or set(weekmask) - {"0", "1"}:
            raise ValueError(f"bad weekmask {weekmask!r}")
        ZoneInfo(str(data["tz"]))  # an unknown zone raises here, not in the middle of a run
        return cls(
            code=str(data["code"]),
            tz=str(data["tz"]),
            weekmask=weekmask,
            first=date.fromisoformat(data["first"]),
            last=date.fromisoformat(data["last"]),
            regular_close=int(data["regular_close"]),
            closed={date.fromisoformat(k): str(v) for k, v in data["closed"].items()},
            weekend_sessions=frozenset(date.fromisoformat(d) for d in data["weekend_sessions"]),
            closes={date.fromisoformat(k): int(v) for k, v in data["closes"].items()},
        )


Builder = Callable[[str, date, date], CalendarTable]


def library_version() -> str:
    """The installed exchange_calendars version, read from its metadata (no import)."""
    return metadata.version(LIBRARY)


def default_years(today: date) -> tuple[date, date]:
    return date(today.year - YEARS_BEHIND, 1, 1), date(today.year + YEARS_AHEAD, 12, 31)


def load_table(
    code: str,
    cache_file: Path,
    days: Iterable[date],
    *,
    build: Builder | None = None,
    version: Callable[[], str] = library_version,
) -> CalendarTable:
    """The table of calendar `code` covering `days`, from the cache or built (and cached).

    An unknown code raises ConfigError naming MARKET_CALENDAR. A cache that cannot be written
    is a warning: the table is still returned.
    """
    wanted = list(days)
    current = version()
    cached = _read_cache(cache_file, current)
    table = cached.get(code)
    if table is not None and all(table.covers(day) for day in wanted):
        return table
    first, last = default_years(max(wanted))
    if table is not None:  # widen, never narrow, what was cached
        first, last = min(first, table.first), max(last, table.last)
    first = min([first, *(date(day.year, 1, 1) for day in wanted)])
    table = (build or build_table)(code, first, last)
    _write_cache(cache_file, current, {**cached, code: table})
    return table


def _read_cache(path: Path, version: str) -> dict[str, CalendarTable]:
    """The cached tables built by this version of the library; {} if none can be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("market calendar cache %s unreadable (%s): rebuilding it", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    if data.get("library_version") != version:
        return {}
    try:
        return {code: CalendarTable.from_json(table) for code, table in data["calendars"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        logger.warning("market calendar cache %s malformed (%s): rebuilding it", path, exc)
        return {}


def _write_cache(path: Path, version: str, tables: Mapping[str, CalendarTable]) -> None:
    """Write atomically (a temporary file renamed over the old one): a concurrent run reads
    the old file or the new one, never half of one."""
    document = {
        "format": CACHE_FORMAT,
        "library": LIBRARY,
        "library_version": version,
        "calendars": {code: table.to_json() for code, table in sorted(tables.items())},
    }
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            temporary = handle.name
            json.dump(document, handle, indent=1)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        logger.warning(
            "market calendar cache %s not written (%s): the calendar will be built again "
            "on the next run (about a second)",
            path,
            exc,
        )


def build_table(code: str, first: date, last: date) -> CalendarTable:
    """Build the table of `code` from exchange_calendars (slow: imports pandas)."""
    with warnings.catch_warnings():
        # pandas deprecations raised inside exchange_calendars are not ours to act on.
        warnings.simplefilter("ignore")
        import exchange_calendars as xcals

        try:
            calendar = xcals.get_calendar(code, start=first.isoformat(), end=last.isoformat())
        except xcals.errors.InvalidCalendarName:
            raise unknown_calendar(code, xcals.get_calendar_names()) from None
        except xcals.errors.CalendarError as exc:
            raise ConfigError(
                f"MARKET_CALENDAR {code}: no calendar from {first} to {last} ({exc})"
            ) from exc
        return _table_of(code, calendar, first, last)


def unknown_calendar(code: str, names: Iterable[str]) -> ConfigError:
    known = sorted(names)
    close = difflib.get_close_matches(code.upper(), known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(
        f"MARKET_CALENDAR: {code!r} is not an exchange calendar{hint}; use an "
        f"exchange_calendars code, e.g. XNYS (New York Stock Exchange), XNAS, XLON"
    )


def _table_of(code: str, calendar: Any, first: date, last: date) -> CalendarTable:
    """The table of an exchange_calendars calendar built for `first`..`last`."""
    tz = ZoneInfo(str(calendar.tz))
    weekmask = str(calendar.weekmask)
    closes: dict[date, int] = {}
    for session, close in calendar.schedule["close"].items():
        day = session.date()
        local = close.to_pydatetime().astimezone(tz)
        closes[day] = (local.date() - day).days * MINUTES_PER_DAY + local.hour * 60 + local.minute
    regular = max(set(closes.values()), key=list(closes.values()).count)
    names = _holiday_names(calendar, first, last)
    adhoc = {stamp.date() for stamp in calendar.adhoc_holidays}
    closed: dict[date, str] = {}
    weekend_sessions: set[date] = set()
    day = first
    while day <= last:
        on_weekmask = weekmask[day.weekday()] == "1"
        if on_weekmask and day not in closes:
            closed[day] = names.get(day) or ("special closure" if day in adhoc else "holiday")
        elif not on_weekmask and day in closes:
            weekend_sessions.add(day)
        day += timedelta(days=1)
    return CalendarTable(
        code=code,
        tz=str(tz),
        weekmask=weekmask,
        first=first,
        last=last,
        regular_close=regular,
        closed=closed,
        weekend_sessions=frozenset(weekend_sessions),
        closes={day: close for day, close in closes.items() if close != regular},
    )


def _holiday_names(calendar: Any, first: date, last: date) -> dict[date, str]:
    """The names of the calendar's regular holidays (ad hoc closures have none)."""
    holidays = calendar.regular_holidays
    if holidays is None:
        return {}
    start = datetime.combine(first, time())
    end = datetime.combine(last, time())
    named = holidays.holidays(start, end, return_name=True)
    names: dict[date, str] = {}
    for stamp, name in named.items():
        names.setdefault(stamp.date(), str(name))
    return names
