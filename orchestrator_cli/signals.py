"""Signal Service client: fetch target weights and refuse any payload that breaks the contract.

A bad payload (not JSON, a missing field, a non-finite number, a weight outside [-1, 1], long
weights summing above 1 or short ones below -1, a value too large for its audit column, a
timestamp without a zone, a missing, duplicate or unrequested symbol, another date, another
strategy) raises `SignalPayloadError`, so the run sends no order at all. The request has no
strategy field: the service serves its own configured strategy and names it in
`metadata.strategy`, which must be the run's. Transient failures are retried by the
transport; whatever outlasts the retries raises `ServiceUnavailableError`, and any other
status raises `ServiceError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import requests
from pydantic import ValidationError

from orchestrator_cli.config import mask_url
from orchestrator_cli.errors import (
    ConfigError,
    ServiceError,
    ServiceUnavailableError,
    SignalPayloadError,
)
from orchestrator_cli.schemas import (
    Signal,
    SignalRequest,
    SignalResponse,
    listed_problems,
    parse_json,
    validation_text,
    weight_sum_tolerance,
)
from orchestrator_cli.transport import (
    RETRYABLE_STATUSES,
    HttpClient,
    describe_error,
    parse_retry_after,
    response_detail,
)

GENERATE_PATH = "/api/v1/signals/generate"

# What each non-retryable status means at the Signal Service, and what the user can do about it.
_STATUS_HINTS = {
    400: ("bad parameters or data unavailable", "check the symbols and the --as-of date"),
    401: ("authentication failed", "check the service credentials"),
    403: (
        "authentication refused or strategy not active",
        "check the service credentials and that the strategy is active",
    ),
    404: ("market data not found", "check the symbols and the --as-of date"),
    422: ("request rejected", "check the symbols, --top-n and --bottom-n"),
    500: ("internal error", "check the Signal Service logs, then re-run"),
}


def _duplicates_and_strangers(symbols: Sequence[str], requested: set[str]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for index, symbol in enumerate(symbols):
        if symbol not in requested:
            problems.append(f"signals[{index}].symbol: {symbol} was not requested")
        elif symbol in seen:
            problems.append(f"signals[{index}].symbol: duplicate symbol {symbol}")
        seen.add(symbol)
    return problems


def _exposure_problems(signals: Sequence[Signal]) -> list[str]:
    """Longs must sum to at most 1 and shorts to at least -1, up to float rounding."""
    weights = [signal.target_weight for signal in signals]
    problems = []
    for side, limit, chosen in (
        ("long", 1, [w for w in weights if w > 0]),
        ("short", -1, [w for w in weights if w < 0]),
    ):
        total = sum(chosen, Decimal(0))
        if abs(total) > 1 + weight_sum_tolerance(len(chosen)):
            problems.append(f"{side} target weights sum to {total}, beyond {limit}")
    return problems


def _count_problems(response: SignalResponse, request: SignalRequest) -> list[str]:
    """More longs than the `top_n` asked for, or shorts than `bottom_n`, or metadata that
    says other counts were used: orders for signals the run never asked for."""
    problems = []
    weights = [signal.target_weight for signal in response.signals]
    for side, asked, said, count in (
        ("long", request.top_n, response.metadata.top_n, sum(1 for w in weights if w > 0)),
        ("short", request.bottom_n, response.metadata.bottom_n, sum(1 for w in weights if w < 0)),
    ):
        if asked is None:
            continue
        if count > asked:
            problems.append(f"{count} {side} signals where {asked} were asked for")
        if said is not None and said != asked:
            flag = "top_n" if side == "long" else "bottom_n"
            problems.append(f"metadata.{flag} is {said}, not the {asked} asked for")
    return problems


def _strategy_problem(served: str, strategy_id: str) -> str:
    return (
        f"metadata.strategy {served[:64]!r} is not the run's strategy {strategy_id!r}: the "
        f"Signal Service serves its own configured strategy, so run with --strategy "
        f"{served[:64]!r} (STRATEGY_ID) or point SIGNAL_SERVICE_URL at the service of "
        f"{strategy_id}"
    )


def check_signals(
    response: SignalResponse,
    requested: Sequence[str],
    as_of_date: date | None,
    strategy_id: str | None = None,
) -> list[str]:
    """Contract problems a schema cannot see: every requested symbol once, the requested date,
    the run's strategy (None: any), longs and shorts each summing to at most 1 in size."""
    symbols = [signal.symbol for signal in response.signals]
    wanted = set(requested)
    problems = []
    if strategy_id is not None and response.metadata.strategy != strategy_id:
        problems.append(_strategy_problem(response.metadata.strategy, strategy_id))
    problems += _duplicates_and_strangers(symbols, wanted)
    answered = set(symbols)  # a set: the universe can be tens of thousands of symbols
    missing = [symbol for symbol in dict.fromkeys(requested) if symbol not in answered]
    if missing:
        problems.append(f"no signal for requested symbol(s) {', '.join(missing)}")
    if as_of_date is not None and response.metadata.as_of_date != as_of_date:
        problems.append(
            f"metadata.as_of_date {response.metadata.as_of_date} differs from the requested "
            f"{as_of_date}"
        )
    problems += _exposure_problems(response.signals)
    return problems


class SignalClient:
    """Client of the Signal Service over one `HttpClient` (retries live in the transport)."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http

    def fetch_signals(
        self,
        symbols: Sequence[str],
        *,
        as_of_date: date | None,
        top_n: int | None = None,
        bottom_n: int | None = None,
        strategy_id: str | None = None,
    ) -> SignalResponse:
        """Signals for exactly `symbols` of `strategy_id` (None: whichever the service serves);
        raises SignalPayloadError on any contract breach."""
        try:
            request = SignalRequest(
                symbols=list(symbols), as_of_date=as_of_date, top_n=top_n, bottom_n=bottom_n
            )
        except ValidationError as exc:
            raise ConfigError(
                f"invalid Signal Service request: {validation_text(exc)} "
                "(fix --symbols, --top-n or --bottom-n)"
            ) from exc
        try:
            response = self._http.request(
                "POST", GENERATE_PATH, json_body=request.model_dump(mode="json")
            )
        except requests.RequestException as exc:
            raise self._unavailable(describe_error(exc), self._http.attempts_text(exc)) from exc
        if response.status_code != 200:
            raise self._status_error(response)
        try:
            parsed = SignalResponse.model_validate(parse_json(response.content))
        except ValidationError as exc:
            raise self._bad_payload(validation_text(exc)) from exc
        except ValueError as exc:
            raise self._bad_payload(f"body is not valid JSON ({exc})") from exc
        problems = check_signals(parsed, request.symbols, as_of_date, strategy_id)
        problems += _count_problems(parsed, request)
        if problems:
            raise self._bad_payload(listed_problems(problems))
        return parsed

    def _unavailable(
        self, reason: str, attempts: str, retry_after: float | None = None
    ) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"{self._http.service} at {mask_url(self._http.base_url)} unavailable: "
            f"POST {GENERATE_PATH} {reason}{attempts}; check that it is running and ready "
            "(GET /ready) and that SIGNAL_SERVICE_URL points at it, then re-run",
            retry_after=retry_after,
        )

    def _status_error(self, response: requests.Response) -> ServiceError:
        status = response.status_code
        detail = response_detail(response)
        if status in RETRYABLE_STATUSES:
            what = "rate limited" if status == 429 else f"HTTP {status}"
            return self._unavailable(
                f"{what} ({detail})",
                self._http.attempts_text(response),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        meaning, action = _STATUS_HINTS.get(status, ("unexpected answer", "check the service"))
        return ServiceError(
            f"{self._http.service} POST {GENERATE_PATH} failed: HTTP {status} {meaning}: "
            f"{detail}; {action}"
        )

    def _bad_payload(self, reason: str) -> SignalPayloadError:
        return SignalPayloadError(
            f"{self._http.service} returned a bad payload at POST {GENERATE_PATH}: {reason}; "
            "no order was sent"
        )
