"""The gateway client against the real gateway's safety words: orders the rate limit or pacing
keeps back until the run deadline, fail-closed 503s, health bodies naming a fail-closed
component, and its own strategy."""

import json
import threading

import pytest
import requests
import responses
from test_gateway import (
    ACCEPTED,
    BASE,
    BLOCKED,
    CONFIG_URL,
    KILL_SWITCH_URL,
    NOT_SENT,
    ORDER,
    ORDERS_URL,
    UNKNOWN,
    ack,
    add_reply,
    make_client,
)

from orchestrator_cli.errors import ServiceError, ServiceUnavailableError
from orchestrator_cli.pacing import RequestGate


@pytest.fixture
def gateway(sleeps):
    with requests.Session() as session:
        yield make_client(sleeps, session)


# --- pacing and the rate limit's deadline -----------------------------------------------------


def test_an_order_with_no_pacing_slot_before_the_deadline_is_not_sent(rsps, sleeps):
    with requests.Session() as session:
        gateway = make_client(sleeps, session)
        http = gateway._http
        http.deadline = http.clock() + 10
        http.gate = RequestGate(max_per_minute=1, clock=http.clock, sleep=http.sleep)
        add_reply(rsps, responses.POST, ORDERS_URL, (200, ack()))
        assert gateway.submit_order(ORDER).kind is ACCEPTED
        outcome = gateway.submit_order(ORDER)
    assert (outcome.kind, outcome.order_status, outcome.sent) == (NOT_SENT, "not_sent", False)
    assert outcome.message == (
        "not sent: GATEWAY_MAX_ORDERS_PER_MINUTE leaves it no slot before the run deadline "
        "(RUN_DEADLINE_SECONDS); `orch runs resume` sends it later"
    )
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_a_rate_limit_past_the_deadline_is_not_sent_and_says_so(rsps, sleeps):
    with requests.Session() as session:
        gateway = make_client(sleeps, session)
        gateway._http.deadline = gateway._http.clock() + 30
        body = {"detail": {"error": "rate_limited", "retry_after": 60}}
        add_reply(rsps, responses.POST, ORDERS_URL, (429, body, {"Retry-After": "60"}))
        outcome = gateway.submit_order(ORDER)
        assert outcome.kind is NOT_SENT
        assert outcome.message == (
            "rate limited by the gateway (HTTP 429) after 1 attempt: rate_limited "
            "(retry_after=60); the order was not created: the gateway did not let it through "
            "before the run deadline (RUN_DEADLINE_SECONDS); `orch runs resume` sends it later"
        )
        # Another worker's order meets the held gate: not sent, no request at all.
        other = gateway.submit_order(ORDER.model_copy(update={"client_order_id": "other"}))
    assert other.message == (
        "not sent: the gateway rate-limited orch (HTTP 429) and its Retry-After (60s from now) "
        "reaches past the run deadline (RUN_DEADLINE_SECONDS); `orch runs resume` sends it later"
    )
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_a_read_held_back_past_the_deadline_is_unavailable_without_a_request(rsps, sleeps):
    with requests.Session() as session:
        gateway = make_client(sleeps, session)
        http = gateway._http
        http.deadline = http.clock() + 30
        assert http.gate is not None
        http.gate.hold_until(http.clock() + 60)
        with pytest.raises(ServiceUnavailableError) as caught:
            gateway.get_positions()
    assert str(caught.value).startswith(
        f"Execution Gateway at {BASE} unavailable: GET /api/v1/positions not sent (held back "
        "by the service's rate limit for 60.0s, past the deadline); "
    )
    assert len(rsps.calls) == 0
    assert sleeps == []


# --- fail-closed halts, the real gateway's words ----------------------------------------------

BREAKER_MISSING = "Circuit-breaker state unavailable (fail-closed for safety)"
RESERVATION_MISSING = "Position-reservation state unavailable (fail-closed for safety)"
KILL_SWITCH_MISSING = {
    "error": "Kill-switch unavailable",
    "message": "Kill-switch state could not be read",
    "fail_closed": True,
}


@pytest.mark.parametrize(
    ("body", "order_status", "message"),
    [
        pytest.param(
            {"detail": BREAKER_MISSING}, "blocked_circuit_breaker", BREAKER_MISSING, id="breaker"
        ),
        pytest.param({"detail": RESERVATION_MISSING}, "blocked", RESERVATION_MISSING, id="resv"),
        pytest.param(
            KILL_SWITCH_MISSING,
            "blocked_kill_switch",
            "Kill-switch unavailable (message=Kill-switch state could not be read, "
            "fail_closed=True)",
            id="kill-switch-json",
        ),
        pytest.param(
            {"detail": {"error": "Safety state lost", "fail_closed": True}},
            "blocked",
            "Safety state lost (fail_closed=True)",
            id="flag-only",
        ),
        pytest.param(
            {"detail": "kill_switch engaged"}, "blocked_kill_switch", None, id="underscores"
        ),
        pytest.param(
            {"detail": "circuit_breaker open"}, "blocked_circuit_breaker", None, id="breaker_"
        ),
        pytest.param({"detail": "Trading FAIL CLOSED"}, "blocked", None, id="fail-closed-text"),
    ],
)
def test_a_fail_closed_503_is_a_halt_sent_once_in_the_gateways_words(
    rsps, gateway, sleeps, body, order_status, message
):
    add_reply(rsps, responses.POST, ORDERS_URL, (503, body))
    outcome = gateway.submit_order(ORDER)
    assert (outcome.kind, outcome.order_status, outcome.http_status) == (
        BLOCKED,
        order_status,
        503,
    )
    assert outcome.stops_run is True
    if message is not None:
        assert outcome.message == message
    assert len(rsps.calls) == 1  # never retried: asking again cannot help
    assert sleeps == []


@pytest.mark.parametrize(
    "body",
    [
        {"detail": "Broker unavailable"},
        {"detail": "Broker unavailable", "fail_closed": False},
        {"detail": "Service temporarily unavailable"},
    ],
)
def test_a_503_that_names_no_halt_is_retried_as_transient(rsps, gateway, body):
    for _ in range(3):
        add_reply(rsps, responses.POST, ORDERS_URL, (503, body))
    outcome = gateway.submit_order(ORDER)
    assert (outcome.kind, outcome.order_status) == (UNKNOWN, "unknown")
    assert outcome.stops_run is False
    assert len(rsps.calls) == 3


@pytest.mark.parametrize(
    ("health", "problem"),
    [
        pytest.param(
            {
                "status": "degraded",
                "database_connected": True,
                "circuit_breaker_available": False,
                "message": BREAKER_MISSING,
            },
            "circuit_breaker_available=false; message=" + json.dumps(BREAKER_MISSING),
            id="breaker-flag-and-message",
        ),
        pytest.param(
            {"status": "degraded", "checks": {"kill_switch": {"connected": False}}},
            "checks.kill_switch.connected=false",
            id="nested-flag",
        ),
        pytest.param(
            {"status": "degraded", "position_reservation": "unavailable"},
            'position_reservation="unavailable"',
            id="component-text",
        ),
        pytest.param(
            {"status": "degraded", "components": {"redis": {"fail_closed": True}}},
            "components.redis.fail_closed=true",
            id="fail-closed-flag",
        ),
    ],
)
def test_a_degraded_health_naming_a_fail_closed_component_refuses(rsps, gateway, health, problem):
    add_reply(rsps, responses.GET, KILL_SWITCH_URL, (200, {"state": "ACTIVE"}))
    add_reply(rsps, responses.GET, f"{BASE}/health", (200, health))
    add_reply(rsps, responses.GET, CONFIG_URL, (200, {"dry_run": True, "alpaca_paper": True}))
    safety = gateway.safety("alpha_baseline")
    assert safety.problems == (
        "the gateway reports itself degraded with a safety component failing closed "
        f"({problem}) (GET /health): it would refuse every order",
    )
    assert safety.warnings == ()


@pytest.mark.parametrize(
    "health",
    [
        {"status": "degraded", "database_connected": True, "alpaca_connected": False},
        {"status": "degraded", "circuit_breaker_enabled": False, "fail_closed": False},
        {"status": "healthy", "circuit_breaker": {"fail_closed_policy": "on"}},
    ],
)
def test_a_health_body_naming_no_fail_closed_component_only_warns(rsps, gateway, health):
    add_reply(rsps, responses.GET, KILL_SWITCH_URL, (200, {"state": "ACTIVE"}))
    add_reply(rsps, responses.GET, f"{BASE}/health", (200, health))
    add_reply(rsps, responses.GET, CONFIG_URL, (200, {"dry_run": True, "alpaca_paper": True}))
    safety = gateway.safety("alpha_baseline")
    assert safety.problems == ()
    assert len(safety.warnings) == (health["status"] == "degraded")


# --- the gateway's own strategy -------------------------------------------------------------


@pytest.mark.parametrize("field", ["strategy_id", "strategy"])
def test_a_config_naming_another_strategy_refuses_naming_both(rsps, gateway, field):
    add_reply(rsps, responses.GET, KILL_SWITCH_URL, (200, {"state": "ACTIVE"}))
    add_reply(rsps, responses.GET, f"{BASE}/health", (200, {"status": "healthy"}))
    config = {"dry_run": True, "alpaca_paper": True, field: "momentum_v2"}
    add_reply(rsps, responses.GET, CONFIG_URL, (200, config))
    (problem,) = gateway.safety("alpha_baseline").problems
    assert problem == (
        "the gateway files every order under its own strategy 'momentum_v2' "
        "(GET /api/v1/config), not this run's strategy 'alpha_baseline': run with --strategy "
        "'momentum_v2' (STRATEGY_ID) or point EXECUTION_GATEWAY_URL at the gateway of "
        "'alpha_baseline'"
    )


@pytest.mark.parametrize(
    "config",
    [
        {"dry_run": True, "alpaca_paper": True},
        {"dry_run": True, "alpaca_paper": True, "strategy_id": "alpha_baseline"},
        {"dry_run": True, "alpaca_paper": True, "strategy": "alpha_baseline"},
    ],
)
def test_a_config_naming_no_or_the_same_strategy_is_fine(rsps, gateway, config):
    add_reply(rsps, responses.GET, KILL_SWITCH_URL, (200, {"state": "ACTIVE"}))
    add_reply(rsps, responses.GET, f"{BASE}/health", (200, {"status": "healthy"}))
    add_reply(rsps, responses.GET, CONFIG_URL, (200, config))
    assert gateway.safety("alpha_baseline").problems == ()


def test_a_config_strategy_that_is_not_text_is_a_bad_payload(rsps, gateway):
    add_reply(
        rsps,
        responses.GET,
        CONFIG_URL,
        (200, {"dry_run": True, "alpaca_paper": True, "strategy": 7}),
    )
    with pytest.raises(ServiceError, match="bad payload at GET /api/v1/config: strategy: "):
        gateway.get_config()


# --- the preflight's reads go out together --------------------------------------------------


def test_kill_switch_health_and_config_are_read_together(rsps, gateway):
    """Each answer waits until all three requests are in flight (a barrier with a deadline:
    reads made one after another break it)."""
    barrier = threading.Barrier(3, timeout=10)
    bodies = {
        KILL_SWITCH_URL: {"state": "ACTIVE"},
        f"{BASE}/health": {"status": "healthy"},
        CONFIG_URL: {"dry_run": True, "alpaca_paper": True},
    }

    def answer(request):
        barrier.wait()
        return 200, {}, json.dumps(bodies[request.url])

    for url in bodies:
        rsps.add_callback(responses.GET, url, answer)
    safety = gateway.safety("alpha_baseline")
    assert (safety.problems, safety.warnings) == ((), ())
    assert len(rsps.calls) == 3


def test_a_failed_read_is_raised_in_the_order_kill_switch_health_config(rsps, gateway):
    add_reply(rsps, responses.GET, KILL_SWITCH_URL, (503, {"detail": "state store down"}))
    add_reply(rsps, responses.GET, f"{BASE}/health", (500, {"detail": "boom"}))
    add_reply(rsps, responses.GET, CONFIG_URL, (500, {"detail": "boom"}))
    with pytest.raises(ServiceError, match="kill-switch state unknown"):
        gateway.safety("alpha_baseline")
