"""The gateway client against the real gateway's safety words: orders the rate limit or pacing
keeps back until the run deadline."""

import pytest
import requests
import responses
from test_gateway import (
    ACCEPTED,
    BASE,
    NOT_SENT,
    ORDER,
    ORDERS_URL,
    ack,
    add_reply,
    make_client,
)

from orchestrator_cli.errors import ServiceUnavailableError
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
