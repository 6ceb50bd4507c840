"""Execution Gateway client: submit orders and classify every answer; read positions and state.

`submit_order` never raises for a per-order outcome: every answer, and every transport failure,
becomes a `SubmitOutcome`. A failure is never called a rejection: an order that may have reached
the gateway is UNKNOWN (settled later with `get_order`), and NOT_SENT is kept for the cases
where no attempt can have created it (connection refused, rate limited). The read endpoints
raise `ServiceError` / `ServiceUnavailableError` instead.

Halts are this gateway's words, classified here (`halt_status`): a 503 that names the kill
switch or the circuit breaker (any spelling), says fail-closed (in its text or a `fail_closed`
flag) or that a safety state is unavailable refused the order without creating it, and asking
again cannot help. Order submissions are paced (`GATEWAY_MAX_ORDERS_PER_MINUTE`) through the
transport's shared gate.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal, TypeVar
from urllib.parse import quote

import requests
from pydantic import BaseModel, ValidationError

from orchestrator_cli import halts
from orchestrator_cli.config import mask_url
from orchestrator_cli.errors import ServiceError, ServiceUnavailableError
from orchestrator_cli.pacing import NotAdmittedError
from orchestrator_cli.schemas import (
    GatewayConfig,
    GatewayHealth,
    KillSwitchStatus,
    OrderAck,
    OrderDetail,
    OrderRequest,
    OutcomeKind,
    PositionsResponse,
    SubmitOutcome,
    classify_status,
    parse_json,
    validation_text,
)
from orchestrator_cli.transport import (
    RETRYABLE_STATUSES,
    HttpClient,
    Permit,
    describe_error,
    never_sent,
    parse_retry_after,
    response_detail,
)

ORDERS_PATH = "/api/v1/orders"
POSITIONS_PATH = "/api/v1/positions"
HEALTH_PATH = "/health"
KILL_SWITCH_PATH = "/api/v1/kill-switch/status"
CONFIG_PATH = "/api/v1/config"
# Starlette's answer for a path it has no route for: a wrong base URL, not a missing order.
NO_ROUTE_DETAIL = "Not Found"

ModelT = TypeVar("ModelT", bound=BaseModel)
GatewayMode = Literal["live", "paper", "dry_run"]


def halt_status(response: requests.Response) -> str | None:
    """The blocked status a halting 503 means, or None for any other answer.

    `blocked_kill_switch` when it names the kill switch (engaged or its state unavailable),
    `blocked_circuit_breaker` for the circuit breaker (tripped or its state unavailable),
    `blocked` for any other fail-closed refusal (e.g. position-reservation state unavailable).
    A 503 that says none of these (`Broker unavailable`) is transient.
    """
    if response.status_code != 503:
        return None
    return halts.halt_status(response.content)


def is_halt_response(response: requests.Response) -> bool:
    """True for a 503 that halts trading: the transport does not retry it and the run stops."""
    return halt_status(response) is not None


def gateway_mode(config: GatewayConfig) -> GatewayMode:
    """`dry_run` (the gateway logs orders), `paper` (simulated account) or `live`."""
    if config.dry_run:
        return "dry_run"
    return "paper" if config.alpaca_paper else "live"


@dataclass(frozen=True)
class Safety:
    """The gateway's own word on whether orders may go out now, in gateway-neutral terms.

    `problems` stop a run that sends orders; `warnings` are only worth logging.
    """

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def assess_safety(
    kill_switch: KillSwitchStatus,
    health: GatewayHealth,
    *,
    strategy_id: str | None = None,
    gateway_strategy: str | None = None,
) -> Safety:
    """Kill switch, health body (the endpoint answers 200 even when unhealthy) and strategy.

    `degraded` is a warning unless the body names a safety component that fails closed (see
    `halts`): then every order would be refused, so the run is. A gateway that files orders
    under another strategy than the run's (`gateway_strategy`, from its config) is refused.
    """
    problems = []
    warnings = []
    if kill_switch.state == "ENGAGED":
        problems.append("the gateway's kill switch is engaged")
    if health.status == "unhealthy":
        problems.append("the gateway reports itself unhealthy (GET /health)")
    elif health.status == "degraded":
        named = halts.fail_closed_components(health.model_dump(mode="json"))
        if named:
            problems.append(
                "the gateway reports itself degraded with a safety component failing closed "
                f"({halts.describe(named)}) (GET /health): it would refuse every order"
            )
        else:
            warnings.append("the gateway reports itself degraded (GET /health); going ahead")
    if gateway_strategy is not None and strategy_id is not None and gateway_strategy != strategy_id:
        problems.append(strategy_mismatch(gateway_strategy, strategy_id))
    return Safety(tuple(problems), tuple(warnings))


def strategy_mismatch(gateway_strategy: str, strategy_id: str) -> str:
    """The refusal when the gateway would file this run's orders under another strategy."""
    return (
        f"the gateway files every order under its own strategy {gateway_strategy[:100]!r} "
        f"(GET {CONFIG_PATH}), not this run's strategy {strategy_id!r}: run with --strategy "
        f"{gateway_strategy[:100]!r} (STRATEGY_ID) or point EXECUTION_GATEWAY_URL at the "
        f"gateway of {strategy_id!r}"
    )


def settle_hint(order: OrderRequest) -> str:
    return f"the order may exist: settle it with GET {ORDERS_PATH}/{order.client_order_id}"


def rate_limited(detail: str, attempts: str, *, deadline: bool) -> str:
    """Why an order the gateway kept answering 429 was not sent (it created no order)."""
    late = " before the run deadline (RUN_DEADLINE_SECONDS)" if deadline else ""
    return (
        f"rate limited by the gateway (HTTP 429){attempts}: {detail}; the order was not "
        f"created: the gateway did not let it through{late}; `orch runs resume` sends it later"
    )


def not_admitted(order: OrderRequest, exc: NotAdmittedError) -> SubmitOutcome:
    """No attempt started: its turn at the shared gate came after the run deadline."""
    if exc.reason == "pacing":
        why = (
            "GATEWAY_MAX_ORDERS_PER_MINUTE leaves it no slot before the run deadline "
            "(RUN_DEADLINE_SECONDS)"
        )
    elif exc.reason == "backoff":
        why = (
            f"the gateway rate-limited orch (HTTP 429) and its Retry-After ({exc.wait:.0f}s "
            "from now) reaches past the run deadline (RUN_DEADLINE_SECONDS)"
        )
    else:
        why = "orch stopped sending while it waited for its turn at the gateway"
    return SubmitOutcome(
        client_order_id=order.client_order_id,
        kind=OutcomeKind.NOT_SENT,
        order_status="not_sent",
        message=f"not sent: {why}; `orch runs resume` sends it later",
        sent=False,
    )


class _DeliveryLog:
    """Watches every attempt of one submission (the transport returns only the last).

    An answer to the last attempt does not undo an earlier one: after a read timeout (the
    gateway may have created the order, then crashed), refused connections or a refusal must
    not be recorded as "not sent" or "rejected". Only an attempt that never connected, or got
    a 429, cannot have created the order.
    """

    def __init__(self) -> None:
        self._reached: list[bool] = []  # per attempt: may it have created the order?

    def note(self, result: requests.Response | requests.RequestException) -> None:
        if isinstance(result, requests.Response):
            self._reached.append(result.status_code != 429)
        else:
            self._reached.append(not never_sent(result))

    @property
    def maybe_created(self) -> bool:
        return any(self._reached)

    @property
    def maybe_created_before_last(self) -> bool:
        return any(self._reached[:-1])

    def after(self) -> str:
        attempts = len(self._reached)
        return f" after {attempts} attempt{'s' if attempts != 1 else ''}"


class GatewayClient:
    """Client of the Execution Gateway over one `HttpClient` (retries live in the transport)."""

    def __init__(self, http: HttpClient) -> None:
        self._http = replace(http, is_final=is_halt_response)

    @property
    def _service(self) -> str:
        return self._http.service

    # --- orders ---------------------------------------------------------------------------

    def submit_order(self, order: OrderRequest, permit: Permit | None = None) -> SubmitOutcome:
        """POST (retried under the same client_order_id) and classify the answer; never raises.
        Each attempt goes out only if `permit` (asked once its turn has come) allows it."""
        log = _DeliveryLog()
        try:
            response = self._http.request(
                "POST",
                ORDERS_PATH,
                json_body=order.wire(),
                observe=log.note,
                paced=True,
                permit=permit,
            )
        except requests.RequestException as exc:
            return self._transport_outcome(order, exc, log)
        except NotAdmittedError as exc:
            return not_admitted(order, exc)
        if response.status_code == 200:
            return self._acknowledged(order, response)
        return self._refused_or_unknown(order, response, log)

    def _transport_outcome(
        self, order: OrderRequest, exc: requests.RequestException, log: _DeliveryLog
    ) -> SubmitOutcome:
        reason = describe_error(exc)
        if not log.maybe_created:
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.NOT_SENT,
                order_status="not_sent",
                message=f"could not reach the {self._service} at "
                f"{mask_url(self._http.base_url)} ({reason}){log.after()}; the order was not sent",
                sent=False,
            )
        return SubmitOutcome(
            client_order_id=order.client_order_id,
            kind=OutcomeKind.UNKNOWN,
            order_status="unknown",
            message=f"no answer from the {self._service} ({reason}){log.after()}; "
            f"{settle_hint(order)}",
        )

    def _acknowledged(self, order: OrderRequest, response: requests.Response) -> SubmitOutcome:
        try:
            ack = OrderAck.model_validate(parse_json(response.content))
        except ValidationError as exc:
            problem = validation_text(exc)
        except ValueError as exc:
            problem = f"body is not valid JSON ({exc})"
        else:
            if ack.client_order_id != order.client_order_id:
                problem = f"it acknowledged client_order_id {ack.client_order_id[:40]!r}"
            else:
                kind = classify_status(ack.status)
                return SubmitOutcome(
                    client_order_id=order.client_order_id,
                    kind=kind,
                    order_status=ack.status,
                    broker_order_id=ack.broker_order_id,
                    message=ack.message,
                    http_status=200,
                    stops_run=kind is OutcomeKind.BLOCKED,
                )
        return SubmitOutcome(
            client_order_id=order.client_order_id,
            kind=OutcomeKind.UNKNOWN,
            order_status="unknown",
            message=f"the {self._service} answered HTTP 200 with an unusable body: {problem}; "
            f"{settle_hint(order)}",
            http_status=200,
        )

    def _refused_or_unknown(
        self, order: OrderRequest, response: requests.Response, log: _DeliveryLog
    ) -> SubmitOutcome:
        status = response.status_code
        detail = response_detail(response)
        kind, order_status, message, stop = self._refusal(order, response, detail, log)
        if kind is not OutcomeKind.UNKNOWN and log.maybe_created_before_last:
            kind, order_status = OutcomeKind.UNKNOWN, "unknown"
            message = (
                f"the {self._service} answered HTTP {status}{log.after()}: {detail}, but an "
                f"earlier attempt may have reached it; {settle_hint(order)}"
            )
        return SubmitOutcome(
            client_order_id=order.client_order_id,
            kind=kind,
            order_status=order_status,
            message=message,
            http_status=status,
            stops_run=stop,
            sent=kind is not OutcomeKind.NOT_SENT,
        )

    def _refusal(
        self, order: OrderRequest, response: requests.Response, detail: str, log: _DeliveryLog
    ) -> tuple[OutcomeKind, str, str, bool]:
        """What a non-200 answer to the last attempt says: (kind, status, message, stops run)."""
        status = response.status_code
        if status in (400, 422):
            return OutcomeKind.REJECTED, "rejected", detail, False
        if status == 409:
            message = (
                f"client_order_id {order.client_order_id} already used for a different order "
                f"at the gateway: {detail}"
            )
            return OutcomeKind.REJECTED, "rejected", message, False
        if status in (401, 403):
            refused = "authentication" if status == 401 else "permission"
            message = (
                f"the {self._service} refused {refused} (HTTP {status}): {detail}; "
                "check the service credentials; no further order is sent"
            )
            return OutcomeKind.BLOCKED, "blocked", message, True
        halted = halt_status(response)
        if halted is not None:  # a refusal in the gateway's own words: no order was created
            return OutcomeKind.BLOCKED, halted, detail, True
        if status == 429:
            message = rate_limited(detail, log.after(), deadline=self._http.deadline is not None)
            return OutcomeKind.NOT_SENT, "not_sent", message, False
        retried = log.after() if status in RETRYABLE_STATUSES else ""
        message = (
            f"the {self._service} answered HTTP {status}{retried}: {detail}; {settle_hint(order)}"
        )
        return OutcomeKind.UNKNOWN, "unknown", message, False

    def get_order(self, client_order_id: str) -> OrderDetail | None:
        """The order as the gateway has it, or None when the gateway says it has no such order."""
        path = f"{ORDERS_PATH}/{quote(client_order_id, safe='')}"
        response = self._get(path)
        if response.status_code == 404 and response_detail(response) != NO_ROUTE_DETAIL:
            return None
        detail = self._parse(OrderDetail, path, response)
        if detail.client_order_id != client_order_id:
            raise self._bad_payload(
                path, f"it describes client_order_id {detail.client_order_id[:40]!r}"
            )
        return detail

    # --- preflight ------------------------------------------------------------------------

    def trading_mode(self) -> GatewayMode:
        """Where orders would go: `live`, `paper` or `dry_run` (GET /api/v1/config)."""
        return gateway_mode(self.get_config())

    def safety(self, strategy_id: str) -> Safety:
        """Kill switch, health and the strategy the gateway files orders under, as one answer;
        a 503 kill-switch state raises ServiceError. The circuit breaker is not read: its
        status endpoint refuses this service (403), so a tripped one shows only in answers.

        The three reads go out together (one round trip, not three); a failure is raised as
        if they had been made one after the other: kill switch, health, then config.
        """
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="orch-preflight") as pool:
            kill_switch = pool.submit(self.get_kill_switch)
            health = pool.submit(self.get_health)
            config = pool.submit(self.get_config)
        return assess_safety(
            kill_switch.result(),
            health.result(),
            strategy_id=strategy_id,
            gateway_strategy=config.result().filing_strategy,
        )

    # --- state ----------------------------------------------------------------------------

    def get_positions(self) -> dict[str, Decimal]:
        """Signed quantity per symbol (negative = short); flat positions are left out."""
        positions = self._parse(PositionsResponse, POSITIONS_PATH, self._get(POSITIONS_PATH))
        counts = Counter(position.symbol for position in positions.positions)
        repeated = sorted(symbol for symbol, count in counts.items() if count > 1)
        if repeated:
            raise self._bad_payload(POSITIONS_PATH, f"symbol(s) {', '.join(repeated)} listed twice")
        return {p.symbol: p.qty for p in positions.positions if p.qty != 0}

    def get_health(self) -> GatewayHealth:
        """The health the body reports (the endpoint answers 200 even when unhealthy)."""
        return self._parse(GatewayHealth, HEALTH_PATH, self._get(HEALTH_PATH))

    def get_kill_switch(self) -> KillSwitchStatus:
        """The kill-switch state; a 503 (state unknown) raises ServiceError."""
        response = self._get(KILL_SWITCH_PATH)
        if response.status_code == 503:
            raise ServiceError(
                f"{self._service} GET {KILL_SWITCH_PATH}: kill-switch state unknown (HTTP 503: "
                f"{response_detail(response)}); treat trading as halted and check the gateway"
            )
        return self._parse(KillSwitchStatus, KILL_SWITCH_PATH, response)

    def get_config(self) -> GatewayConfig:
        """The gateway's configuration: dry_run and alpaca_paper say whether orders go live."""
        return self._parse(GatewayConfig, CONFIG_PATH, self._get(CONFIG_PATH))

    # --- plumbing -------------------------------------------------------------------------

    def _get(self, path: str) -> requests.Response:
        try:
            return self._http.request("GET", path)
        except requests.RequestException as exc:
            raise self._unavailable(
                path, describe_error(exc), self._http.attempts_text(exc)
            ) from exc
        except NotAdmittedError as exc:  # a 429 holds the gateway past the run deadline
            raise self._unavailable(path, f"not sent ({exc})", "") from exc

    def _parse(self, model: type[ModelT], path: str, response: requests.Response) -> ModelT:
        """The 200 body of GET `path` as `model`; any other status raises."""
        if response.status_code != 200:
            raise self._status_error(path, response)
        try:
            return model.model_validate(parse_json(response.content))
        except ValidationError as exc:
            raise self._bad_payload(path, validation_text(exc)) from exc
        except ValueError as exc:
            raise self._bad_payload(path, f"body is not valid JSON ({exc})") from exc

    def _unavailable(
        self, path: str, reason: str, attempts: str, retry_after: float | None = None
    ) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"{self._service} at {mask_url(self._http.base_url)} unavailable: GET {path} "
            f"{reason}{attempts}; check that it is running and that EXECUTION_GATEWAY_URL "
            "points at it",
            retry_after=retry_after,
        )

    def _status_error(self, path: str, response: requests.Response) -> ServiceError:
        status = response.status_code
        detail = response_detail(response)
        if status in RETRYABLE_STATUSES:
            return self._unavailable(
                path,
                f"HTTP {status} ({detail})",
                self._http.attempts_text(response),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status in (401, 403):
            action = "check the service credentials"
        elif status == 404:
            action = "check that EXECUTION_GATEWAY_URL points at the Execution Gateway"
        else:
            action = "check the gateway logs"
        return ServiceError(f"{self._service} GET {path} failed: HTTP {status}: {detail}; {action}")

    def _bad_payload(self, path: str, reason: str) -> ServiceError:
        return ServiceError(
            f"{self._service} returned a bad payload at GET {path}: {reason}; "
            "check the gateway version against the contract"
        )
