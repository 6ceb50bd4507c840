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
        price = state.price_of(symbol)
        stamp = iso_z(now - STALE_AGE if symbol in faults.stale_price_symbols else now)
        body[symbol] = {
            "latestTrade": {
                "t": stamp,
                "x": "V",
                "p": float(price),
                "s": 100,
                "c": ["@"],
                "i": 1,
                "z": "C",
            },
            "latestQuote": {
                "t": stamp,
                "ax": "V",
                "ap": float(price + CENT),
                "as": 1,
                "bx": "V",
                "bp": float(price - CENT),
                "bs": 1,
                "c": ["R"],
                "z": "C",
            },
            "dailyBar": _bar(today, price),
            "prevDailyBar": _bar(today - timedelta(days=1), price),
        }
    return 200, body


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
