"""The exchange clock on fixed dates: closed days and why, session closes, the run deadline
capped at the close, and the calendar cache (built once, reused, rebuilt when it must be)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fakes import FakeGateway, FakePrices, FakeSignals, run, signals_of

from orchestrator_cli import calendars, clock
from orchestrator_cli.calendars import CalendarTable, build_table
from orchestrator_cli.clock import (
    MarketCalendar,
    MarketClosed,
    MarketOpen,
    SessionClose,
    check_as_of,
    load_calendar,
    market_for_run,
)
from orchestrator_cli.config import Settings
from orchestrator_cli.errors import ConfigError
from orchestrator_cli.request import execution_from

FIRST, LAST = date(2021, 1, 1), date(2031, 12, 31)


@pytest.fixture(scope="module")
def xnys_table() -> CalendarTable:
    """The real XNYS table from exchange_calendars (built once for the module)."""
    return build_table("XNYS", FIRST, LAST)


@pytest.fixture(scope="module")
def xnys(xnys_table: CalendarTable) -> MarketCalendar:
    return MarketCalendar(xnys_table)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- closed days, session closes, what a run may do ----------------------------------------


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        (date(2026, 11, 28), "weekend"),
        (date(2026, 11, 29), "weekend"),
        (date(2026, 11, 26), "Thanksgiving"),
        (date(2026, 12, 25), "Christmas"),
        (date(2026, 1, 19), "Dr. Martin Luther King Jr. Day"),
        (date(2026, 7, 3), "July 4th"),  # observed: the 4th is a Saturday
        (date(2025, 1, 9), "special closure"),  # an ad hoc closure has no name
        (date(2026, 11, 27), None),  # the day after Thanksgiving: a half day, open
        (date(2026, 11, 24), None),
    ],
)
def test_closed_days_and_why(xnys: MarketCalendar, day: date, reason: str | None) -> None:
    assert xnys.closed_reason(day) == reason


@pytest.mark.parametrize(
    ("day", "close_utc", "early", "text"),
    [
        (date(2026, 11, 24), utc(2026, 11, 24, 21, 0), False, "16:00 EST"),
        (date(2026, 11, 27), utc(2026, 11, 27, 18, 0), True, "13:00 EST"),
        (date(2026, 12, 24), utc(2026, 12, 24, 18, 0), True, "13:00 EST"),
        (date(2026, 6, 16), utc(2026, 6, 16, 20, 0), False, "16:00 EDT"),  # summer time
    ],
)
def test_session_close(
    xnys: MarketCalendar, day: date, close_utc: datetime, early: bool, text: str
) -> None:
    close = xnys.session_close(day)
    assert close.at == close_utc
    assert close.early is early
    assert str(close) == text


@pytest.mark.parametrize(
    ("now", "as_of", "expected"),
    [
        pytest.param(utc(2026, 11, 29, 15), None, (date(2026, 11, 29), "weekend"), id="sunday"),
        pytest.param(
            utc(2026, 11, 26, 15), None, (date(2026, 11, 26), "Thanksgiving"), id="thanksgiving"
        ),
        pytest.param(
            utc(2026, 12, 25, 15), None, (date(2026, 12, 25), "Christmas"), id="christmas"
        ),
        pytest.param(
            utc(2026, 11, 30, 15),
            date(2026, 11, 26),
            (date(2026, 11, 26), "Thanksgiving"),
            id="as-of-a-holiday-on-an-open-day",
        ),
        pytest.param(
            utc(2026, 11, 29, 15),
            date(2026, 11, 24),
            (date(2026, 11, 29), "weekend"),
            id="as-of-an-open-day-on-a-weekend",
        ),
        pytest.param(
            utc(2026, 11, 24, 21, 0),
            None,
            (date(2026, 11, 24), "after the close at 16:00 EST"),
            id="at-the-close",
        ),
        pytest.param(
            # Friday 23:30 in New York is still Friday there, though Saturday in UTC.
            utc(2026, 11, 28, 4, 30),
            None,
            (date(2026, 11, 27), "after the close at 13:00 EST (half day)"),
            id="half-day-evening",
        ),
    ],
)
def test_market_closed(
    xnys: MarketCalendar, now: datetime, as_of: date | None, expected: tuple[date, str]
) -> None:
    assert market_for_run(xnys, now, as_of) == MarketClosed(*expected, "XNYS")


@pytest.mark.parametrize(
    ("now", "as_of", "day", "close_utc", "early"),
    [
        pytest.param(
            utc(2026, 11, 24, 14, 31),
            None,
            date(2026, 11, 24),
            utc(2026, 11, 24, 21),
            False,
            id="normal-day",
        ),
        pytest.param(
            utc(2026, 11, 27, 14, 31),
            None,
            date(2026, 11, 27),
            utc(2026, 11, 27, 18),
            True,
            id="day-after-thanksgiving",
        ),
        pytest.param(
            utc(2026, 11, 24, 12),
            None,
            date(2026, 11, 24),
            utc(2026, 11, 24, 21),
            False,
            id="before-the-open",
        ),
        pytest.param(
            utc(2026, 11, 30, 15),
            date(2026, 11, 25),
            date(2026, 11, 25),
            utc(2026, 11, 30, 21),  # orders go out today: today's close bounds them
            False,
            id="earlier-as-of",
        ),
    ],
)
def test_market_open(
    xnys: MarketCalendar,
    now: datetime,
    as_of: date | None,
    day: date,
    close_utc: datetime,
    early: bool,
) -> None:
    market = market_for_run(xnys, now, as_of)
    assert isinstance(market, MarketOpen)
    assert market.day == day
    assert market.close.at == close_utc
    assert market.close.early is early


def test_market_closed_line_and_document() -> None:
    closed = MarketClosed(date(2026, 11, 26), "Thanksgiving", "XNYS")
    assert closed.line() == "market closed on 2026-11-26: Thanksgiving"
    assert closed.document() == {
        "action": "market_closed",
        "as_of_date": "2026-11-26",
        "reason": "Thanksgiving",
        "market_calendar": "XNYS",
    }


# --- --as-of against today ------------------------------------------------------------------


def test_as_of_today_on_a_weekend_draws_no_contradiction() -> None:
    # Was: "--as-of 2026-11-29 is not today's trading date 2026-11-29".
    assert check_as_of(date(2026, 11, 29), utc(2026, 11, 29, 15)) is None


def test_as_of_an_earlier_day_warns_that_the_plan_is_made_from_today() -> None:
    assert check_as_of(date(2026, 11, 24), utc(2026, 11, 25, 15)) == (
        "--as-of 2026-11-24 is an earlier day than today (2026-11-25, America/New_York): "
        "the plan is made from today's positions and prices"
    )


def test_as_of_after_today_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--as-of 2026-11-26 is after today's date 2026-11-25"):
        check_as_of(date(2026, 11, 26), utc(2026, 11, 26, 4))  # 23:00 on the 25th in New York


# --- the run deadline never runs past the session's close -----------------------------------

NOW = utc(2026, 11, 27, 17, 55)  # 12:55 in New York on a half day


def half_day_close() -> SessionClose:
    return SessionClose(at=datetime(2026, 11, 27, 18, tzinfo=UTC), early=True)


@pytest.mark.parametrize(
    ("deadline_seconds", "close", "budget", "cause"),
    [
        pytest.param(300.0, None, 300.0, "RUN_DEADLINE_SECONDS", id="no-calendar"),
        pytest.param(300.0, half_day_close(), 300.0, "RUN_DEADLINE_SECONDS", id="close-later"),
        pytest.param(600.0, half_day_close(), 300.0, "the market's close at", id="capped"),
        pytest.param(
            300.0,
            SessionClose(at=datetime(2026, 11, 27, 17, 54, tzinfo=UTC), early=True),
            -60.0,
            "the market's close at",
            id="already-closed",
        ),
    ],
)
def test_deadline_is_capped_at_the_close(
    deadline_seconds: float, close: SessionClose | None, budget: float, cause: str
) -> None:
    settings = Settings(run_deadline_seconds=deadline_seconds, _env_file=None)  # type: ignore[call-arg]
    execution = execution_from(settings, close=close, clock=lambda: 1000.0, now=lambda: NOW)
    assert execution.deadline == pytest.approx(1000.0 + budget)
    assert cause in execution.deadline_cause


def test_orders_past_the_close_are_not_sent_and_say_why(session_factory) -> None:
    gateway = FakeGateway()
    result = run(
        session_factory,
        FakeSignals(signals_of(("AAPL", "0.5"), ("MSFT", "0.5"))),
        gateway,
        FakePrices({"AAPL": "150", "MSFT": "400"}),
        deadline=time.monotonic() - 1,
        deadline_cause="the market's close at 13:00 EST",
    )
    assert gateway.sent == []
    assert {m.detail for m in result.mappings} == {
        "not sent: the market's close at 13:00 EST passed first"
    }


# --- the calendar cache ------------------------------------------------------------------------


class CountingBuilder:
    """build_table, counted; the real one underneath unless told otherwise."""

    def __init__(self, table: CalendarTable | None = None) -> None:
        self.calls: list[tuple[str, date, date]] = []
        self.table = table

    def __call__(self, code: str, first: date, last: date) -> CalendarTable:
        self.calls.append((code, first, last))
        if self.table is not None:
            return self.table
        return build_table(code, first, last)


def refusing_builder(code: str, first: date, last: date) -> CalendarTable:
    raise AssertionError("the calendar was built again instead of read from the cache")


def test_cache_is_built_once_and_reused(tmp_path: Path, xnys_table: CalendarTable) -> None:
    cache = tmp_path / "data" / "market-calendars.json"
    builder = CountingBuilder(xnys_table)
    now = utc(2026, 11, 27, 15)
    first = load_calendar("XNYS", now, cache_file=cache, build=builder)
    assert len(builder.calls) == 1
    assert cache.exists()
    again = load_calendar("XNYS", now, date(2026, 11, 26), cache_file=cache, build=refusing_builder)
    assert again.table == first.table == xnys_table
    assert again.closed_reason(date(2026, 11, 26)) == "Thanksgiving"


def test_market_for_refuses_a_later_as_of_without_building_its_years(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xnys_table: CalendarTable
) -> None:
    monkeypatch.setattr(clock, "calendar_cache_file", lambda: tmp_path / "cache.json")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    now = utc(2026, 11, 27, 15)
    load_calendar(
        "XNYS", now, cache_file=tmp_path / "cache.json", build=CountingBuilder(xnys_table)
    )
    monkeypatch.setattr(calendars, "build_table", refusing_builder)
    with pytest.raises(ConfigError, match="--as-of 2999-01-04 is after today's date 2026-11-27"):
        clock.market_for(settings, date(2999, 1, 4), now)


def test_cache_is_rebuilt_for_a_new_library_version(
    tmp_path: Path, xnys_table: CalendarTable
) -> None:
    cache = tmp_path / "market-calendars.json"
    builder = CountingBuilder(xnys_table)
    now = utc(2026, 11, 27, 15)
    load_calendar("XNYS", now, cache_file=cache, build=builder, version=lambda: "4.0")
    load_calendar("XNYS", now, cache_file=cache, build=builder, version=lambda: "4.0")
    load_calendar("XNYS", now, cache_file=cache, build=builder, version=lambda: "4.1")
    assert len(builder.calls) == 2
    assert json.loads(cache.read_text())["library_version"] == "4.1"


def test_cache_is_widened_for_an_older_as_of(tmp_path: Path) -> None:
    cache = tmp_path / "market-calendars.json"
    builder = CountingBuilder()
    now = utc(2026, 11, 27, 15)
    load_calendar("XNYS", now, cache_file=cache, build=builder)
    old = load_calendar("XNYS", now, date(2012, 10, 30), cache_file=cache, build=builder)
    assert old.closed_reason(date(2012, 10, 30)) == "special closure"  # Hurricane Sandy
    assert [call[1] for call in builder.calls] == [date(2021, 1, 1), date(2012, 1, 1)]
    assert builder.calls[1][2] == date(2031, 12, 31)  # widened, never narrowed
    load_calendar("XNYS", now, date(2012, 10, 30), cache_file=cache, build=refusing_builder)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"format": 1, "library_version": "LIB", "calendars": {"XNYS": {"code": "XNYS"}}}',
        '{"format": 1, "library_version": "LIB", "calendars": {"XNYS": {"weekmask": "11"}}}',
        "[]",
    ],
)
def test_unusable_cache_is_rebuilt(tmp_path: Path, xnys_table: CalendarTable, content: str) -> None:
    cache = tmp_path / "market-calendars.json"
    cache.write_text(content.replace("LIB", "4.0"))
    builder = CountingBuilder(xnys_table)
    calendar = load_calendar(
        "XNYS", utc(2026, 11, 27, 15), cache_file=cache, build=builder, version=lambda: "4.0"
    )
    assert len(builder.calls) == 1
    assert calendar.table == xnys_table
    assert CalendarTable.from_json(json.loads(cache.read_text())["calendars"]["XNYS"]) == xnys_table


def test_unwritable_cache_still_answers(
    tmp_path: Path, xnys_table: CalendarTable, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory should be")
    calendar = load_calendar(
        "XNYS",
        utc(2026, 11, 27, 15),
        cache_file=blocker / "market-calendars.json",
        build=CountingBuilder(xnys_table),
    )
    assert calendar.closed_reason(date(2026, 11, 26)) == "Thanksgiving"
    assert "not written" in caplog.text


def test_two_calendars_share_the_cache(tmp_path: Path, xnys_table: CalendarTable) -> None:
    cache = tmp_path / "market-calendars.json"
    now = utc(2026, 11, 27, 15)
    load_calendar("XNYS", now, cache_file=cache, build=CountingBuilder(xnys_table))
    london = load_calendar("XLON", now, cache_file=cache)
    assert london.tz.key == "Europe/London"
    assert london.closed_reason(date(2026, 12, 28)) is not None  # Boxing Day, observed
    assert london.closed_reason(date(2026, 11, 26)) is None  # no Thanksgiving in London
    stored = json.loads(cache.read_text())["calendars"]
    assert sorted(stored) == ["XLON", "XNYS"]
    load_calendar("XNYS", now, cache_file=cache, build=refusing_builder)


@pytest.mark.parametrize(
    ("code", "hint"), [("XNYZ", "did you mean"), ("xnys", "XNYS"), ("NOPE", "XNYS")]
)
def test_unknown_calendar_is_refused_naming_the_variable(
    tmp_path: Path, code: str, hint: str
) -> None:
    cache = tmp_path / "market-calendars.json"
    with pytest.raises(ConfigError, match="MARKET_CALENDAR") as refused:
        load_calendar(code, utc(2026, 11, 27, 15), cache_file=cache)
    assert hint in str(refused.value)
    assert repr(code) in str(refused.value)
    assert not cache.exists()


def test_a_run_reads_the_cache_without_importing_exchange_calendars(
    tmp_path: Path, xnys_table: CalendarTable
) -> None:
    cache = tmp_path / "market-calendars.json"
    calendars._write_cache(cache, calendars.library_version(), {"XNYS": xnys_table})
    script = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from pathlib import Path\n"
        "import orchestrator_cli.cli\n"
        "from orchestrator_cli.clock import load_calendar, market_for_run\n"
        "now = datetime(2026, 11, 26, 15, tzinfo=UTC)\n"
        f"calendar = load_calendar('XNYS', now, cache_file=Path({str(cache)!r}))\n"
        "print(market_for_run(calendar, now).line())\n"
        "print(sorted(m for m in ('exchange_calendars', 'pandas', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["market closed on 2026-11-26: Thanksgiving", "[]"]


def test_table_round_trips_through_json(xnys_table: CalendarTable) -> None:
    assert CalendarTable.from_json(json.loads(json.dumps(xnys_table.to_json()))) == xnys_table
    assert xnys_table.regular_close == 16 * 60
    assert xnys_table.closes[date(2026, 11, 27)] == 13 * 60
    assert len(xnys_table.closed) < 11 * 12  # about ten holidays a year, no weekends


def test_default_years_around_today() -> None:
    assert calendars.default_years(date(2026, 11, 30)) == (date(2021, 1, 1), date(2031, 12, 31))
