"""Signal Service simulation: deterministic predicted returns, ranks and target weights.

`predicted_return` comes from sha256(symbol + as_of_date), so a re-run on the same date gets the
same signals. A `signal_fault` breaks the payload in exactly one documented way.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from orchestrator_cli.sandbox.state import DEFAULT_STRATEGY, iso_z, utc_now

EXCHANGE_TZ = ZoneInfo("America/New_York")
MODEL_VERSION = "sandbox-1"


class SignalForm(BaseModel):
    """The request body; pydantic's ValidationError is answered 422 like FastAPI does."""

    model_config = ConfigDict(extra="ignore")

    symbols: list[Annotated[str, StringConstraints(strict=True, min_length=1)]] = Field(
        min_length=1
    )
    as_of_date: date | None = None
    top_n: StrictInt | None = Field(default=None, ge=0)
    bottom_n: StrictInt | None = Field(default=None, ge=0)


def predicted_return(symbol: str, as_of: date) -> Decimal:
    """A stable return in [-0.05, 0.05] with four decimals."""
    digest = hashlib.sha256(f"{symbol}{as_of.isoformat()}".encode()).digest()
    fraction = Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**64)
    return (fraction * Decimal("0.1") - Decimal("0.05")).quantize(Decimal("0.0001"))


def generate(body: Any, fault: str | None, strategy: str = DEFAULT_STRATEGY) -> tuple[int, Any]:
    """`POST /api/v1/signals/generate`: (HTTP status, JSON body) for the configured
    `strategy` (the request has no strategy field; the real service serves its own)."""
    if fault == "http_500":
        return 500, {"detail": "Internal server error"}
    if fault == "http_503":
        return 503, {"detail": "Model not loaded"}
    form = SignalForm.model_validate(body)
    symbols = list(dict.fromkeys(form.symbols))
    count = len(symbols)
    as_of = form.as_of_date or datetime.now(EXCHANGE_TZ).date()
    # Longs take precedence when the two counts overlap: clip so top_n + bottom_n <= n.
    top_n = min(count, max(1, round(count / 3)) if form.top_n is None else form.top_n)
    bottom_n = min(count - top_n, count // 3 if form.bottom_n is None else form.bottom_n)
    returns = {symbol: predicted_return(symbol, as_of) for symbol in symbols}
    ranked = sorted(symbols, key=lambda symbol: (-returns[symbol], symbol))
    signals: list[dict[str, Any]] = []
    for rank, symbol in enumerate(ranked, start=1):
        weight = 0.0
        if rank <= top_n:
            weight = 1 / top_n
        elif rank > count - bottom_n:
            weight = -1 / bottom_n
        signals.append(
            {
                "symbol": symbol,
                "predicted_return": float(returns[symbol]),
                "rank": rank,
                "target_weight": weight,
            }
        )
    metadata = {
        "as_of_date": as_of.isoformat(),
        "model_version": MODEL_VERSION,
        "strategy": strategy,
        "num_signals": len(signals),
        "generated_at": iso_z(utc_now()),
        "top_n": top_n,
        "bottom_n": bottom_n,
    }
    _break(fault, signals, metadata, symbols, as_of)
    return 200, {"signals": signals, "metadata": metadata}


def _break(
    fault: str | None,
    signals: list[dict[str, Any]],
    metadata: dict[str, Any],
    symbols: list[str],
    as_of: date,
) -> None:
    """Apply a payload fault in place."""
    first = signals[0]
    if fault == "malformed":
        del first["target_weight"]
    elif fault == "nan_weight":
        first["target_weight"] = float("nan")  # json.dumps writes the literal NaN
    elif fault == "weight_out_of_range":
        first["target_weight"] = 1.5
    elif fault == "wrong_date":
        metadata["as_of_date"] = (as_of - timedelta(days=1)).isoformat()
    elif fault == "unrequested_symbol":
        stranger = "ZZZZ"
        while stranger in symbols:
            stranger += "Z"
        signals.append({**signals[-1], "symbol": stranger, "rank": len(signals) + 1})
        metadata["num_signals"] = len(signals)
    elif fault == "duplicate_symbol":
        signals.append({**first, "rank": len(signals) + 1})
        metadata["num_signals"] = len(signals)
    else:
        _break_fit(fault, signals, metadata)


def _break_fit(fault: str | None, signals: list[dict[str, Any]], metadata: dict[str, Any]) -> None:
    """Payloads that pass a loose schema but do not fit orch's contract or audit columns."""
    first = signals[0]
    if fault == "rank_out_of_range":
        first["rank"] = 2**31  # one above a 32-bit INTEGER
    elif fault == "return_out_of_range":
        first["predicted_return"] = 1e30
    elif fault == "naive_generated_at":
        metadata["generated_at"] = metadata["generated_at"].removesuffix("Z")
    elif fault == "long_model_version":
        metadata["model_version"] = "v" * 65
    elif fault == "longs_above_one":
        signals[-1]["target_weight"] = 0.5  # on top of longs that already sum to 1


def health(fault: str | None, strategy: str = DEFAULT_STRATEGY) -> tuple[int, Any]:
    """`GET /health`: 200 while the model is loaded; the `http_503` fault unloads it."""
    loaded = fault != "http_503"
    body = {
        "status": "healthy" if loaded else "unhealthy",
        "service": "signal_service",
        "model_loaded": loaded,
        "model_info": {"version": MODEL_VERSION, "strategy": strategy} if loaded else None,
        "redis_status": "disabled",
        "feature_cache_enabled": False,
        "timestamp": iso_z(utc_now()),
    }
    return (200 if loaded else 503), body


def ready(fault: str | None) -> tuple[int, Any]:
    """`GET /ready`: 200 only when healthy."""
    if fault == "http_503":
        return 503, {"status": "not_ready", "detail": "Model not loaded"}
    return 200, {"status": "ready"}
