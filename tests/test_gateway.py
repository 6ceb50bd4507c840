import json
import socket
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
from fakes import FakeClock
from urllib3.exceptions import MaxRetryError, NewConnectionError

from orchestrator_cli.errors import ServiceError, ServiceUnavailableError
from orchestrator_cli.gateway import GatewayClient
from orchestrator_cli.schemas import OrderRequest, OutcomeKind
from orchestrator_cli.transport import HttpClient

BASE = "http://gateway.test"
ORDERS_URL = f"{BASE}/api/v1/orders"
COID = "alpha_20241231_AAPL_b133"
ORDER = OrderRequest(symbol="AAPL", side="buy", qty=133, client_order_id=COID)
WIRE = json.dumps(ORDER.wire(), separators=(",", ":")).encode()
SETTLE = f"the order may exist: settle it with GET /api/v1/orders/{COID}"

ACCEPTED, REJECTED, BLOCKED = OutcomeKind.ACCEPTED, OutcomeKind.REJECTED, OutcomeKind.BLOCKED
UNKNOWN, NOT_SENT = OutcomeKind.UNKNOWN, OutcomeKind.NOT_SENT


def ack(status: str = "accepted", **changes: Any) -> dict[str, Any]:
    body = {
        "client_order_id": COID,
        "status": status,
        "broker_order_id": "b-7f3a",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 133,
        "order_type": "market",
        "limit_price": None,
        "stop_price": None,
        "created_at": "2024-12-31T14:30:00Z",
        "message": "Order submitted",
    }
    body.update(changes)
    return body


def refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111]")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api/v1/orders", reason=reason))  # type: ignore[arg-type]


# A reply is (status, body[, headers]) or the name of a transport failure.
FAILURES: dict[str, Callable[[], requests.RequestException]] = {
    "refused": refused,
    "connect_timeout": lambda: requests.ConnectTimeout("connect timed out"),
    "read_timeout": lambda: requests.ReadTimeout("read timed out"),
    "lost": lambda: requests.ConnectionError("Connection aborted: RemoteDisconnected"),
}


def add_reply(rsps, method: str, url: str, reply: Any) -> None:
    if isinstance(reply, str):
        rsps.add(method, url, body=FAILURES[reply]())
        return
    status, body, *rest = reply
    headers = rest[0] if rest else {}
    if isinstance(body, str):
        rsps.add(method, url, status=status, body=body, headers=headers)
    else:
        rsps.add(method, url, status=status, json=body, headers=headers)


def make_client(
    sleeps: list[float], session: requests.Session, base: str = BASE, **changes: Any
) -> GatewayClient:
    clock = FakeClock(sleeps)
    http = HttpClient(
        service="Execution Gateway",
        base_url=base,
        timeout=5,
        max_attempts=3,
        session=session,
        sleep=clock.sleep,
        clock=clock,
        **changes,
    )
    return GatewayClient(http)


@pytest.fixture
def gateway(sleeps):
    with requests.Session() as session:
        yield make_client(sleeps, session)


# --- submit_order: every classification -----------------------------------------------------

KILL = "Kill-switch engaged - new orders blocked"
BREAKER = "Circuit breaker tripped - trading paused"
LIMIT = {"error": "Position limit exceeded", "symbol": "AAPL", "limit": 1000, "requested": 1500}


@pytest.mark.parametrize(
    ("replies", "kind", "order_status", "http_status", "message"),
    [
        pytest.param([(200, ack())], ACCEPTED, "accepted", 200, "Order submitted", id="accepted"),
        pytest.param([(200, ack("filled"))], ACCEPTED, "filled", 200, None, id="filled"),
        pytest.param([(200, ack("new"))], ACCEPTED, "new", 200, None, id="new"),
        pytest.param([(200, ack("dry_run"))], ACCEPTED, "dry_run", 200, None, id="gateway-dry-run"),
        pytest.param(
            [(200, ack("accepted", message="Order already exists (idempotent retry)"))],
            ACCEPTED,
            "accepted",
            200,
            "Order already exists (idempotent retry)",
            id="idempotent-retry",
        ),
        pytest.param([(200, ack("canceled"))], REJECTED, "canceled", 200, None, id="canceled"),
        pytest.param([(200, ack("rejected"))], REJECTED, "rejected", 200, None, id="rejected"),
        pytest.param([(200, ack("failed"))], REJECTED, "failed", 200, None, id="failed"),
        pytest.param(
            [(200, ack("blocked_kill_switch"))],
            BLOCKED,
            "blocked_kill_switch",
            200,
            None,
            id="200-blocked",
        ),
        pytest.param(
            [(200, ack("submitted_unconfirmed"))],
            UNKNOWN,
            "submitted_unconfirmed",
            200,
            None,
            id="unconfirmed",
        ),
        pytest.param(
            [(200, ack(client_order_id="someone_else"))],
            UNKNOWN,
            "unknown",
            200,
            "the Execution Gateway answered HTTP 200 with an unusable body: it acknowledged "
            f"client_order_id 'someone_else'; {SETTLE}",
            id="200-other-id",
        ),
        pytest.param(
            [(200, "<html>ok</html>")],
            UNKNOWN,
            "unknown",
            200,
            "the Execution Gateway answered HTTP 200 with an unusable body: body is not valid "
            f"JSON (Expecting value: line 1 column 1 (char 0)); {SETTLE}",
            id="200-not-json",
        ),
        pytest.param(
            [(200, {"client_order_id": COID})],
            UNKNOWN,
            "unknown",
            200,
            "the Execution Gateway answered HTTP 200 with an unusable body: status: Field "
            f"required; {SETTLE}",
            id="200-missing-status",
        ),
        pytest.param(
            [(200, ack("new\u0000"))],
            UNKNOWN,
            "unknown",
            200,
            "the Execution Gateway answered HTTP 200 with an unusable body: status: contains "
            f"a control character or a lone surrogate; {SETTLE}",
            id="200-unrecordable-status",
        ),
        pytest.param(
            [(400, {"detail": "Order rejected by fat-finger checks: notional"})],
            REJECTED,
            "rejected",
            400,
            "Order rejected by fat-finger checks: notional",
            id="400",
        ),
        pytest.param(
            [(422, {"detail": LIMIT})],
            REJECTED,
            "rejected",
            422,
            "Position limit exceeded (symbol=AAPL, limit=1000, requested=1500)",
            id="422-object",
        ),
        pytest.param(
            [(422, {"detail": [{"loc": ["body", "qty"], "msg": "Input should be > 0"}]})],
            REJECTED,
            "rejected",
            422,
            "body.qty: Input should be > 0",
            id="422-schema",
        ),
        pytest.param(
            [(409, {"detail": "client_order_id exists with a different payload"})],
            REJECTED,
            "rejected",
            409,
            f"client_order_id {COID} already used for a different order at the gateway: "
            "client_order_id exists with a different payload",
            id="409",
        ),
        pytest.param(
            [(401, {"detail": "invalid_internal_token"})],
            BLOCKED,
            "blocked",
            401,
            "the Execution Gateway refused authentication (HTTP 401): invalid_internal_token; "
            "check the service credentials; no further order is sent",
            id="401",
        ),
        pytest.param(
            [(403, {"detail": "permission_denied"})],
            BLOCKED,
            "blocked",
            403,
            "the Execution Gateway refused permission (HTTP 403): permission_denied; "
            "check the service credentials; no further order is sent",
            id="403",
        ),
        pytest.param(
            [(503, {"detail": KILL})], BLOCKED, "blocked_kill_switch", 503, KILL, id="kill-switch"
        ),
        pytest.param(
            [(503, {"detail": BREAKER})],
            BLOCKED,
            "blocked_circuit_breaker",
            503,
            BREAKER,
            id="circuit-breaker",
        ),
        pytest.param(
            [(429, {"detail": "Rate limit exceeded"}, {"Retry-After": "3"})] * 3,
            NOT_SENT,
            "not_sent",
            429,
            "rate limited by the gateway (HTTP 429) after 3 attempts: Rate limit exceeded; "
            "the order was not created: the gateway did not let it through; `orch runs resume` "
            "sends it later",
            id="429-after-retries",
        ),
        pytest.param(
            [(503, {"detail": "Broker unavailable"})] * 3,
            UNKNOWN,
            "unknown",
            503,
            f"the Execution Gateway answered HTTP 503 after 3 attempts: Broker unavailable; "
            f"{SETTLE}",
            id="503-after-retries",
        ),
        pytest.param(
            [(502, "Bad Gateway")] * 3,
            UNKNOWN,
            "unknown",
            502,
            f"the Execution Gateway answered HTTP 502 after 3 attempts: Bad Gateway; {SETTLE}",
            id="502-after-retries",
        ),
        pytest.param(
            [(504, "")] * 3,
            UNKNOWN,
            "unknown",
            504,
            f"the Execution Gateway answered HTTP 504 after 3 attempts: no detail given; {SETTLE}",
            id="504-after-retries",
        ),
        pytest.param(
            [(500, {"detail": "Internal Server Error"})],
            UNKNOWN,
            "unknown",
            500,
            f"the Execution Gateway answered HTTP 500: Internal Server Error; {SETTLE}",
            id="500",
        ),
        pytest.param(
            [(404, {"detail": "Not Found"})],
            UNKNOWN,
            "unknown",
            404,
            f"the Execution Gateway answered HTTP 404: Not Found; {SETTLE}",
            id="unexpected-404",
        ),
        pytest.param(
            [(503, {"detail": "Broker unavailable"}), (200, ack())],
            ACCEPTED,
            "accepted",
            200,
            "Order submitted",
            id="transient-503-then-accepted",
        ),
        pytest.param(
            [(429, {}, {"Retry-After": "1"}), (200, ack("filled"))],
            ACCEPTED,
            "filled",
            200,
            None,
            id="429-then-filled",
        ),
        pytest.param(
            [(503, {"detail": "Broker unavailable"}), (429, {}), (429, {})],
            UNKNOWN,
            "unknown",
            429,
            "the Execution Gateway answered HTTP 429 after 3 attempts: no detail given, but an "
            f"earlier attempt may have reached it; {SETTLE}",
            id="503-then-429-may-exist",
        ),
    ],
)
def test_submit_classifies_every_answer(
    rsps, gateway, sleeps, replies, kind, order_status, http_status, message
):
    for reply in replies:
        add_reply(rsps, responses.POST, ORDERS_URL, reply)
    outcome = gateway.submit_order(ORDER)
    assert (outcome.kind, outcome.order_status, outcome.http_status) == (
        kind,
        order_status,
        http_status,
    )
    if message is not None:
        assert outcome.message == message
    assert outcome.client_order_id == COID
    assert outcome.stops_run is (kind is BLOCKED)
    assert outcome.sent is (kind is not NOT_SENT)
    acknowledged = http_status == 200 and order_status != "unknown"
    assert outcome.broker_order_id == ("b-7f3a" if acknowledged else None)
    # Every attempt carried the same bytes, so a retry is the same order to the gateway.
    assert [call.request.body for call in rsps.calls] == [WIRE] * len(replies)
    assert len(sleeps) == len(replies) - 1


@pytest.mark.parametrize(
    ("last", "stops_run"),
    [
        pytest.param((400, {"detail": "fat finger"}), False, id="400"),
        pytest.param((422, {"detail": LIMIT}), False, id="422"),
        pytest.param((409, {"detail": "different payload"}), False, id="409"),
        pytest.param((401, {"detail": "invalid_internal_token"}), True, id="401"),
        pytest.param((503, {"detail": KILL}), True, id="kill-switch"),
        pytest.param((429, {}), False, id="429"),
    ],
)
def test_a_refusal_after_an_attempt_that_may_have_reached_the_gateway_is_unknown(
    rsps, gateway, last, stops_run
):
    # The first attempt timed out reading: the gateway may have created the order, so a
    # refusal of the retry does not prove there is no order.
    add_reply(rsps, responses.POST, ORDERS_URL, "read_timeout")
    add_reply(rsps, responses.POST, ORDERS_URL, last)
    outcome = gateway.submit_order(ORDER)
    assert (outcome.kind, outcome.order_status, outcome.sent) == (UNKNOWN, "unknown", True)
    assert outcome.stops_run is stops_run
    assert outcome.http_status == last[0]
    assert outcome.message is not None
    attempts = 3 if last[0] == 429 else 2  # a 429 is retried to the end
    assert len(rsps.calls) == attempts
    assert outcome.message.startswith(
        f"the Execution Gateway answered HTTP {last[0]} after {attempts} attempts: "
    )
    assert outcome.message.endswith(f"but an earlier attempt may have reached it; {SETTLE}")


def test_the_retry_after_of_a_429_is_honoured(rsps, gateway, sleeps):
    for _ in range(3):
        add_reply(rsps, responses.POST, ORDERS_URL, (429, {}, {"Retry-After": "7"}))
    assert gateway.submit_order(ORDER).kind is NOT_SENT
    assert sleeps == [7.0, 7.0]


def test_a_transient_503_is_retried_with_the_identical_order(rsps, gateway, sleeps):
    add_reply(rsps, responses.POST, ORDERS_URL, (503, {"detail": "Broker unavailable"}))
    add_reply(rsps, responses.POST, ORDERS_URL, (200, ack()))
    outcome = gateway.submit_order(ORDER)
    assert outcome.kind is ACCEPTED
    first, second = (json.loads(call.request.body) for call in rsps.calls)
    assert first == second == ORDER.wire()
    assert first["client_order_id"] == COID
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("failures", "kind", "order_status", "reason"),
    [
        pytest.param(["refused"] * 3, NOT_SENT, "not_sent", "connection failed", id="refused"),
        pytest.param(["connect_timeout"] * 3, NOT_SENT, "not_sent", "timed out", id="connect-to"),
        pytest.param(["read_timeout"] * 3, UNKNOWN, "unknown", "timed out", id="read-timeout"),
        pytest.param(["lost"] * 3, UNKNOWN, "unknown", "connection lost", id="connection-lost"),
        # The gateway may have created the order before it crashed: not "not sent".
        pytest.param(
            ["read_timeout", "refused", "refused"],
            UNKNOWN,
            "unknown",
            "connection failed",
            id="timeout-then-refused",
        ),
        pytest.param(
            [(503, {"detail": "Broker unavailable"}), "refused", "refused"],
            UNKNOWN,
            "unknown",
            "connection failed",
            id="503-then-refused",
        ),
        pytest.param(
            [(429, {}), "refused", "refused"],
            NOT_SENT,
            "not_sent",
            "connection failed",
            id="429-then-refused",
        ),
    ],
)
def test_transport_failures_are_never_rejections(
    rsps, gateway, failures, kind, order_status, reason
):
    for failure in failures:
        add_reply(rsps, responses.POST, ORDERS_URL, failure)
    outcome = gateway.submit_order(ORDER)
    assert (outcome.kind, outcome.order_status) == (kind, order_status)
    assert outcome.sent is (kind is UNKNOWN)
    assert outcome.http_status is None
    assert outcome.stops_run is False
    assert f"({reason}) after 3 attempts" in (outcome.message or "")
    if kind is UNKNOWN:
        assert outcome.message is not None
        assert outcome.message.endswith(SETTLE)
    assert len(rsps.calls) == 3


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_real_refused_connection_is_not_sent(sleeps):
    base = f"http://orch:s3cret@127.0.0.1:{unused_port()}"
    with requests.Session() as session:
        outcome = make_client(sleeps, session, base).submit_order(ORDER)
    assert (outcome.kind, outcome.order_status, outcome.sent) == (NOT_SENT, "not_sent", False)
    assert outcome.message is not None
    assert "s3cret" not in outcome.message
    assert "(connection failed) after 3 attempts; the order was not sent" in outcome.message
    assert len(sleeps) == 2


def test_an_order_with_a_limit_price_is_sent_as_decimal_text(rsps, gateway):
    order = ORDER.model_copy(update={"order_type": "limit", "limit_price": Decimal("150.10")})
    add_reply(rsps, responses.POST, ORDERS_URL, (200, ack()))
    gateway.submit_order(order)
    assert json.loads(rsps.calls[0].request.body)["limit_price"] == "150.10"


# --- get_order ------------------------------------------------------------------------------

ORDER_URL = f"{ORDERS_URL}/{COID}"


def test_get_order_parses_the_detail(rsps, gateway):
    body = ack("partially_filled", filled_qty="10.5", filled_avg_price="150.25")
    body |= {"filled_at": "2024-12-31T14:30:05Z", "strategy_id": "alpha_baseline"}
    add_reply(rsps, responses.GET, ORDER_URL, (200, body))
    detail = gateway.get_order(COID)
    assert detail is not None
    assert (detail.status, detail.filled_qty, detail.filled_avg_price) == (
        "partially_filled",
        Decimal("10.5"),
        Decimal("150.25"),
    )
    assert detail.strategy_id == "alpha_baseline"


def test_get_order_is_none_when_the_gateway_has_no_such_order(rsps, gateway, sleeps):
    add_reply(rsps, responses.GET, ORDER_URL, (404, {"detail": f"Order not found: {COID}"}))
    assert gateway.get_order(COID) is None
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_get_order_on_a_path_the_server_does_not_know_is_an_error(rsps, gateway):
    # Starlette's answer for an unknown route: a wrong base URL must not read as "no order".
    add_reply(rsps, responses.GET, ORDER_URL, (404, {"detail": "Not Found"}))
    with pytest.raises(ServiceError, match="check that EXECUTION_GATEWAY_URL points at"):
        gateway.get_order(COID)


def test_get_order_for_another_id_is_a_bad_payload(rsps, gateway):
    add_reply(rsps, responses.GET, ORDER_URL, (200, ack(client_order_id="other")))
    with pytest.raises(ServiceError, match="it describes client_order_id 'other'"):
        gateway.get_order(COID)


@pytest.mark.parametrize(
    ("replies", "error", "fragment"),
    [
        ([(500, {"detail": "db down"})], ServiceError, "HTTP 500: db down; check the gateway"),
        ([(401, {"detail": "x"})], ServiceError, "HTTP 401: x; check the service credentials"),
        ([(503, {"detail": "busy"})] * 3, ServiceUnavailableError, "(busy) after 3 attempts"),
        (["refused"] * 3, ServiceUnavailableError, "connection failed after 3 attempts"),
    ],
)
def test_get_order_failures_raise(rsps, gateway, replies, error, fragment):
    for reply in replies:
        add_reply(rsps, responses.GET, ORDER_URL, reply)
    with pytest.raises(ServiceError) as caught:
        gateway.get_order(COID)
    assert type(caught.value) is error
    assert fragment in str(caught.value)
    assert f"GET /api/v1/orders/{COID}" in str(caught.value)


# --- positions, health, kill switch, config -------------------------------------------------

POSITIONS_URL = f"{BASE}/api/v1/positions"
KILL_SWITCH_URL = f"{BASE}/api/v1/kill-switch/status"
CONFIG_URL = f"{BASE}/api/v1/config"


def position(symbol: str, qty: Any) -> dict[str, Any]:
    return {"symbol": symbol, "qty": qty, "avg_entry_price": "100.00", "current_price": None}


def test_positions_are_signed_decimals_without_flat_ones(rsps, gateway):
    body = {
        "positions": [
            position("AAPL", "100"),
            position("TSLA", "-25"),
            position("MSFT", "0"),
            position("NVDA", "0.5"),
        ],
        "total_positions": 4,
    }
    add_reply(rsps, responses.GET, POSITIONS_URL, (200, body))
    positions = gateway.get_positions()
    assert positions == {"AAPL": Decimal("100"), "TSLA": Decimal("-25"), "NVDA": Decimal("0.5")}
    assert all(isinstance(qty, Decimal) for qty in positions.values())


def test_no_positions_is_an_empty_dict(rsps, gateway):
    add_reply(rsps, responses.GET, POSITIONS_URL, (200, {"positions": []}))
    assert gateway.get_positions() == {}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"positions": [position("AAPL", "1"), position("AAPL", "2")]}, "AAPL listed twice"),
        ({"positions": [position("AAPL", "lots")]}, "positions[0].qty: not a decimal: 'lots'"),
        ({"positions": [position("AAPL", "NaN")]}, "positions[0].qty: must be finite"),
        ({"positions": [position("AAPL", None)]}, "positions[0].qty: must be a decimal"),
        ({"total_positions": 0}, "positions: Field required"),
    ],
)
def test_bad_positions_are_refused(rsps, gateway, body, fragment):
    add_reply(rsps, responses.GET, POSITIONS_URL, (200, body))
    with pytest.raises(ServiceError) as caught:
        gateway.get_positions()
    message = str(caught.value)
    assert message.startswith("Execution Gateway returned a bad payload at GET /api/v1/positions: ")
    assert fragment in message


@pytest.mark.parametrize("status", ["healthy", "degraded", "unhealthy"])
def test_health_reads_the_body_of_a_200(rsps, gateway, status):
    body = {"status": status, "dry_run": False, "database_connected": status != "unhealthy"}
    add_reply(rsps, responses.GET, f"{BASE}/health", (200, body))
    health = gateway.get_health()
    assert health.status == status
    assert health.database_connected is (status != "unhealthy")


def test_health_with_an_unknown_status_is_a_bad_payload(rsps, gateway):
    add_reply(rsps, responses.GET, f"{BASE}/health", (200, {"status": "ok"}))
    with pytest.raises(ServiceError, match="bad payload at GET /health: status: Input should"):
        gateway.get_health()


@pytest.mark.parametrize("state", ["ACTIVE", "ENGAGED"])
def test_kill_switch_state(rsps, gateway, state):
    add_reply(rsps, responses.GET, KILL_SWITCH_URL, (200, {"state": state}))
    assert gateway.get_kill_switch().state == state


@pytest.mark.parametrize(
    ("detail", "attempts"),
    [("Kill switch state unknown", 1), ("Redis unavailable", 3)],
)
def test_kill_switch_503_is_state_unknown(rsps, gateway, detail, attempts):
    for _ in range(attempts):
        add_reply(
            rsps, responses.GET, f"{BASE}/api/v1/kill-switch/status", (503, {"detail": detail})
        )
    with pytest.raises(ServiceError) as caught:
        gateway.get_kill_switch()
    assert type(caught.value) is ServiceError
    assert str(caught.value) == (
        f"Execution Gateway GET /api/v1/kill-switch/status: kill-switch state unknown (HTTP 503: "
        f"{detail}); treat trading as halted and check the gateway"
    )


def test_config_says_whether_orders_go_live(rsps, gateway):
    body = {
        "service": "execution_gateway",
        "version": "1.2.0",
        "environment": "staging",
        "dry_run": False,
        "alpaca_paper": True,
        "circuit_breaker_enabled": True,
        "extra": {"ignored": 1},
    }
    add_reply(rsps, responses.GET, f"{BASE}/api/v1/config", (200, body))
    config = gateway.get_config()
    assert (config.dry_run, config.alpaca_paper, config.environment) == (False, True, "staging")


def test_config_without_dry_run_is_a_bad_payload(rsps, gateway):
    add_reply(rsps, responses.GET, f"{BASE}/api/v1/config", (200, {"alpaca_paper": True}))
    with pytest.raises(ServiceError, match="dry_run: Field required"):
        gateway.get_config()


def test_an_attempt_the_permit_refuses_is_not_sent(rsps, gateway):
    """Asked once the order's turn has come: a run lock lost while it waited sends nothing."""
    outcome = gateway.submit_order(ORDER, permit=lambda: "the run lock was taken")
    assert (outcome.kind, outcome.sent) == (NOT_SENT, False)
    assert len(rsps.calls) == 0  # `rsps` fails any request it was not told of


def test_a_retry_the_permit_refuses_keeps_the_earlier_answer(rsps, gateway, sleeps):
    """The first attempt timed out (it may have arrived): a refused retry leaves it unknown."""
    asked = []

    def permit() -> str | None:
        asked.append(True)
        return None if len(asked) == 1 else "the run lock was taken"

    rsps.add(responses.POST, ORDERS_URL, body=requests.exceptions.ReadTimeout("slow"))
    outcome = gateway.submit_order(ORDER, permit=permit)
    assert outcome.kind is UNKNOWN
    assert len(rsps.calls) == 1
    assert len(asked) == 2
