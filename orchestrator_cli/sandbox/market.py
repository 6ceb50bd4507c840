"""Alpaca-compatible market data simulation: `GET /v2/stocks/snapshots` from the sandbox prices."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from orchestrator_cli.sandbox.state import CENT, SandboxFaults, SandboxState, iso_z, utc_now

EXCHANGE_TZ = ZoneInfo("America/New_York")
STALE_AGE = timedelta(hours=1)


def snapshots(
    state: SandboxState, faults: SandboxFaults, query: dict[str, list[str]]
) -> tuple[int, Any]:
    """Snapshots for `?symbols=A,B`; unknown (missing) symbols are left out, as Alpaca does."""
    symbols = [
        symbol.strip().upper()
        for value in query.get("symbols", [])
        for symbol in value.split(",")
        if symbol.strip()
    ]
    if not symbols:
        return 400, {"code": 40010001, "message": "symbols is required"}
    now = utc_now()
    today = datetime.combine(now.astimezone(EXCHANGE_TZ).date(), time(), EXCHANGE_TZ)
    body: dict[str, Any] = {}
    for symbol in dict.fromkeys(symbols):
        if symbol in faults.missing_price_symbols:
            continue
        body[symbol] = _snapshot(symbol, state.price_of(symbol), faults, now, today)
    return 200, body


def _snapshot(
    symbol: str, price: Decimal, faults: SandboxFaults, now: datetime, today: datetime
) -> dict[str, Any]:
    """One symbol's snapshot; the previous close is the true price whatever the quote says."""
    stamp = iso_z(now - STALE_AGE if symbol in faults.stale_price_symbols else now)
    if symbol in faults.naive_time_symbols:
        stamp = stamp.removesuffix("Z")
    quoted = price
    if symbol in faults.wrong_price_symbols:
        quoted = max((price / 100).quantize(CENT), 2 * CENT)
    snapshot = {
        "latestTrade": {
            "t": stamp,
            "x": "V",
            "p": float(quoted),
            "s": 100,
            "c": ["@"],
            "i": 1,
            "z": "C",
        },
        "latestQuote": {
            "t": stamp,
            "ax": "V",
            "ap": float(quoted + CENT),
            "as": 1,
            "bx": "V",
            "bp": float(quoted - CENT),
            "bs": 1,
            "c": ["R"],
            "z": "C",
        },
        "dailyBar": _bar(today, quoted),
        "prevDailyBar": _bar(today - timedelta(days=1), price),
    }
    if symbol in faults.no_reference_symbols:
        del snapshot["prevDailyBar"]
    return snapshot


def _bar(day: datetime, price: Decimal) -> dict[str, Any]:
    """A flat daily bar at the price (the sandbox has no intraday moves)."""
    value = float(price)
    return {
        "t": iso_z(day),
        "o": value,
        "h": value,
        "l": value,
        "c": value,
        "v": 1_000_000,
        "n": 10_000,
        "vw": value,
    }
