import json
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import requests
import responses
from fakes import FakeClock
from urllib3.exceptions import MaxRetryError, NewConnectionError

from orchestrator_cli.gateway import is_halt_response
from orchestrator_cli.pacing import NotAdmittedError, RequestGate
from orchestrator_cli.transport import (
    HttpClient,
    describe_error,
    environment_for,
    make_session,
    never_sent,
    parse_retry_after,
    response_detail,
)

BASE = "http://service.test"
URL = f"{BASE}/api/v1/thing"
NOW = datetime(2024, 12, 31, 14, 30, tzinfo=UTC).timestamp()


def refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111]")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api/v1/thing", reason=reason))  # type: ignore[arg-type]


@pytest.fixture
def clock(sleeps):
    return FakeClock(sleeps)


@pytest.fixture
def http(clock):
    with requests.Session() as session:
        yield HttpClient(
            service="Test Service",
            base_url=BASE,
            timeout=5,
            max_attempts=3,
            session=session,
            sleep=clock.sleep,
            clock=clock,
        )


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        (format_datetime(datetime(2024, 12, 31, 14, 30, 30, tzinfo=UTC), usegmt=True), 30.0),
        (format_datetime(datetime(2024, 12, 31, 14, 29, tzinfo=UTC), usegmt=True), 0.0),
        ("soon", None),
        ("Tue, 99 Foo 2024", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_retries_stop_at_max_attempts_and_return_the_last_response(
    rsps, sleeps, http, max_attempts
):
    http.max_attempts = max_attempts
    rsps.add(responses.GET, URL, status=503, json={"detail": "model not loaded"})
    response = http.request("GET", "/api/v1/thing")
    assert response.status_code == 503
    assert len(rsps.calls) == max_attempts
    assert len(sleeps) == max_attempts - 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_other_statuses_are_never_retried(rsps, sleeps, http, status):
    rsps.add(responses.POST, URL, status=status, json={"detail": "no"})
    assert http.request("POST", "/api/v1/thing", json_body={"a": 1}).status_code == status
    assert len(rsps.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "detail", ["Kill-switch engaged - new orders blocked", "Circuit breaker tripped"]
)
def test_a_halt_503_is_not_retried(rsps, sleeps, http, detail):
    """A client's `is_final` (the gateway's halt classification) stops the retries."""
    http.is_final = is_halt_response
    rsps.add(responses.POST, URL, status=503, json={"detail": detail})
    response = http.request("POST", "/api/v1/thing", json_body={})
    assert response.status_code == 503
    assert is_halt_response(response)
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_a_transient_status_then_success_returns_the_success(rsps, sleeps, http):
    rsps.add(responses.GET, URL, status=502)
    rsps.add(responses.GET, URL, status=429, headers={"Retry-After": "4"})
    rsps.add(responses.GET, URL, status=200, json={"ok": True})
    response = http.request("GET", "/api/v1/thing")
    assert response.json() == {"ok": True}
    assert len(rsps.calls) == 3
    assert len(sleeps) == 2
    assert sleeps[1] == 4.0


@pytest.mark.parametrize(
    ("make_error", "expected_type"),
    [
        (refused, requests.ConnectionError),
        (lambda: requests.ConnectTimeout("connect timed out"), requests.ConnectTimeout),
        (lambda: requests.ReadTimeout("read timed out"), requests.ReadTimeout),
    ],
)
def test_transport_errors_are_reraised_after_the_last_attempt(
    rsps, sleeps, http, make_error, expected_type
):
    for _ in range(3):
        rsps.add(responses.GET, URL, body=make_error())
    with pytest.raises(expected_type):
        http.request("GET", "/api/v1/thing")
    assert len(rsps.calls) == 3
    assert len(sleeps) == 2


def test_a_connection_error_then_success_is_retried(rsps, http):
    rsps.add(responses.GET, URL, body=refused())
    rsps.add(responses.GET, URL, json={"ok": True})
    assert http.request("GET", "/api/v1/thing").status_code == 200
    assert len(rsps.calls) == 2


def test_the_body_is_compact_and_identical_on_every_attempt(rsps, http):
    rsps.add(responses.POST, URL, status=503)
    rsps.add(responses.POST, URL, status=504)
    rsps.add(responses.POST, URL, status=200)
    body = {"symbol": "AAPL", "qty": 133, "limit_price": "150.25", "tags": [1, 2]}
    http.request("POST", "/api/v1/thing", json_body=body)
    sent = [call.request.body for call in rsps.calls]
    assert sent == [b'{"symbol":"AAPL","qty":133,"limit_price":"150.25","tags":[1,2]}'] * 3
    assert json.loads(sent[0]) == body
    assert all(c.request.headers["Content-Type"] == "application/json" for c in rsps.calls)


def test_a_get_sends_no_body(rsps, http):
    rsps.add(responses.GET, URL, json={})
    http.request("GET", "/api/v1/thing")
    assert rsps.calls[0].request.body is None
    assert rsps.calls[0].request.headers["Accept"] == "application/json"


def test_backoff_waits_grow_and_go_through_the_injected_sleep(rsps, sleeps, http):
    http.max_attempts = 4
    rsps.add(responses.GET, URL, status=503)
    http.request("GET", "/api/v1/thing")
    base = http.base_backoff
    assert len(sleeps) == 3
    for attempt, waited in enumerate(sleeps):
        assert base * 2**attempt <= waited <= base * 2**attempt + base


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0.5", 0.5), ("30", 30.0)])
def test_without_a_deadline_retry_after_is_waited_in_full(rsps, sleeps, http, header, expected):
    rsps.add(responses.GET, URL, status=429, headers={"Retry-After": header})
    assert http.request("GET", "/api/v1/thing").status_code == 429
    assert sleeps == [expected, expected]


def test_without_a_deadline_a_retry_after_beyond_max_retry_wait_is_not_retried_early(
    rsps, sleeps, http
):
    """Retrying before the Retry-After only fills the service's window again: never early."""
    rsps.add(responses.GET, URL, status=429, headers={"Retry-After": "3600"})
    assert http.request("GET", "/api/v1/thing").status_code == 429
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_with_a_deadline_the_full_retry_after_is_waited_however_long(rsps, sleeps, http, clock):
    """The old 30 s cap retried inside the service's 60 s window: every attempt was refused."""
    http.deadline = clock() + 4000
    rsps.add(responses.GET, URL, status=429, headers={"Retry-After": "3600"})
    rsps.add(responses.GET, URL, status=429, headers={"Retry-After": "60"})
    rsps.add(responses.GET, URL, json={"ok": True})
    assert http.request("GET", "/api/v1/thing").status_code == 200
    assert sleeps == [3600.0, 60.0]


def test_with_a_deadline_a_429_is_retried_past_max_attempts(rsps, sleeps, http, clock):
    http.deadline = clock() + 100
    for _ in range(5):
        rsps.add(responses.GET, URL, status=429, headers={"Retry-After": "7"})
    rsps.add(responses.GET, URL, json={"ok": True})
    assert http.request("GET", "/api/v1/thing").status_code == 200
    assert sleeps == [7.0] * 5


@pytest.mark.parametrize("header", ["3600", "60"])
def test_a_retry_after_past_the_deadline_ends_the_retries_at_once(
    rsps, sleeps, http, clock, header
):
    http.deadline = clock() + 59
    rsps.add(responses.GET, URL, status=429, headers={"Retry-After": header})
    assert http.request("GET", "/api/v1/thing").status_code == 429
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_a_503_retry_after_is_honoured_in_full_before_the_deadline(rsps, sleeps, http, clock):
    http.deadline = clock() + 100
    rsps.add(responses.GET, URL, status=503, headers={"Retry-After": "45"})
    rsps.add(responses.GET, URL, json={"ok": True})
    assert http.request("GET", "/api/v1/thing").status_code == 200
    assert sleeps == [45.0]


def test_a_429_holds_every_client_of_the_same_service(rsps, sleeps, http, clock):
    """Clients sharing a gate (one per service; `replace` keeps it) back off together."""
    other = replace(http, is_final=is_halt_response)
    assert other.gate is http.gate
    http.deadline = other.deadline = clock() + 100
    rsps.add(responses.POST, URL, status=429, headers={"Retry-After": "20"})
    rsps.add(responses.POST, URL, json={"ok": True})
    rsps.add(responses.GET, URL, json={"ok": True})
    assert http.request("POST", "/api/v1/thing", json_body={}).status_code == 200
    clock.now -= 20  # as if the other worker asked right after the 429 arrived
    assert other.request("GET", "/api/v1/thing").status_code == 200
    assert sleeps == [20.0, 20.0]


def test_a_429_without_retry_after_holds_the_gate_for_a_backoff(rsps, sleeps, http):
    rsps.add(responses.GET, URL, status=429)
    rsps.add(responses.GET, URL, json={})
    http.request("GET", "/api/v1/thing")
    (waited,) = sleeps
    assert http.base_backoff <= waited <= 2 * http.base_backoff


def test_a_first_attempt_held_past_the_deadline_is_not_sent(rsps, sleeps, http, clock):
    http.deadline = clock() + 10
    assert http.gate is not None
    http.gate.hold_until(clock() + 60)
    with pytest.raises(NotAdmittedError) as caught:
        http.request("POST", "/api/v1/thing", json_body={})
    assert (caught.value.reason, caught.value.wait) == ("backoff", 60.0)
    assert len(rsps.calls) == 0
    assert sleeps == []


@pytest.fixture
def paced(clock):
    """A client whose gate paces to 2 requests a minute: slots 30.6 s apart."""
    gate = RequestGate(max_per_minute=2, clock=clock, sleep=clock.sleep)
    with requests.Session() as session:
        yield HttpClient(
            "Test Service", BASE, 5, session=session, clock=clock, sleep=clock.sleep, gate=gate
        )


def test_only_paced_requests_wait_for_a_pacing_slot(rsps, sleeps, paced):
    for _ in range(2):
        rsps.add(responses.POST, URL, json={})
    rsps.add(responses.GET, URL, json={})
    paced.request("POST", "/api/v1/thing", json_body={}, paced=True)
    paced.request("GET", "/api/v1/thing")
    assert sleeps == []
    paced.request("POST", "/api/v1/thing", json_body={}, paced=True)
    assert sleeps == [pytest.approx(30.6)]


def test_a_retry_with_no_slot_before_the_deadline_returns_the_last_answer(
    rsps, sleeps, paced, clock
):
    paced.deadline = clock() + 20
    rsps.add(responses.POST, URL, status=503, json={"detail": "Broker unavailable"})
    response = paced.request("POST", "/api/v1/thing", json_body={}, paced=True)
    assert response.status_code == 503
    assert len(rsps.calls) == 1  # the retry's slot (30.6 s) comes after the deadline
    with pytest.raises(NotAdmittedError) as caught:
        paced.request("POST", "/api/v1/thing", json_body={}, paced=True)
    assert caught.value.reason == "pacing"
    assert len(rsps.calls) == 1


# --- classification helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_error", "sent", "description"),
    [
        (refused, False, "connection failed"),
        (lambda: requests.ConnectTimeout("connect timed out"), False, "timed out"),
        (lambda: requests.ReadTimeout("read timed out"), True, "timed out"),
        (lambda: requests.ConnectionError("Connection aborted."), True, "connection lost"),
    ],
)
def test_never_sent_and_describe_error(make_error, sent, description):
    error = make_error()
    assert never_sent(error) is not sent
    assert describe_error(error) == description


# --- the environment, read once -------------------------------------------------------------


def test_the_environment_is_read_once_per_service(monkeypatch, tmp_path):
    """Proxies (NO_PROXY honoured), the CA bundle and ~/.netrc are read when the client is
    made; the session itself ignores the environment, so later changes do not apply."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine service.test login user password pass\n")
    netrc.chmod(0o600)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corporate.pem")
    monkeypatch.setenv("NETRC", str(netrc))

    proxied = environment_for(BASE)
    assert proxied.proxies.get("http") == "http://proxy.test:3128"
    assert proxied.verify == "/etc/ssl/corporate.pem"
    assert proxied.netrc_auth == ("user", "pass")
    assert environment_for("http://bypassed.test").proxies == {}
    assert make_session(4).trust_env is False


def test_a_request_carries_the_environment_read_when_the_client_was_made(monkeypatch, rsps):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = make_session(4)
    client = HttpClient(service="Test Service", base_url=BASE, timeout=5, session=session)
    monkeypatch.setenv("HTTP_PROXY", "http://changed.test:1")
    adapter = session.get_adapter(BASE)
    sent: list[dict[str, object]] = []
    original = adapter.send

    def spy(request, **kwargs):
        sent.append(kwargs)
        return original(request, **kwargs)

    monkeypatch.setattr(adapter, "send", spy)
    rsps.add(responses.GET, URL, json={})
    client.request("GET", "/api/v1/thing")
    assert sent[0]["proxies"]["http"] == "http://proxy.test:3128"  # type: ignore[index]
    assert sent[0]["verify"] == client.service_environment.verify
    assert rsps.calls[0].request.headers["User-Agent"] == "orch/0.1"  # the session's own


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_answered_not_followed(rsps, http, status):
    """A redirected order POST would go out again as a GET (301/302), or with its signature to
    another host (307/308): the 3xx itself is the answer."""
    rsps.add(responses.POST, URL, status=status, headers={"Location": "http://elsewhere.test/x"})
    response = http.request("POST", "/api/v1/thing", json_body={"qty": 1})
    assert response.status_code == status
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.8.9.10", "http://localhost:1", "http://[::1]:1"]
)
def test_a_loopback_address_is_never_sent_through_a_proxy(monkeypatch, url):
    """The sandbox and local tunnels listen on loopback, which to a proxy is its own machine."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert environment_for(url).proxies == {}
    assert environment_for("http://10.0.0.1").proxies.get("http") == "http://proxy.test:3128"


def test_a_proxy_failure_names_the_proxy():
    error = requests.exceptions.ProxyError("Cannot connect to proxy.")
    assert describe_error(error) == (
        "could not get through the proxy (HTTP_PROXY / HTTPS_PROXY; hosts listed in NO_PROXY "
        "are reached directly)"
    )


def test_a_redirect_says_where_it_points(rsps, http):
    rsps.add(responses.GET, URL, status=302, headers={"Location": "https://new.test/api"})
    response = http.request("GET", "/api/v1/thing")
    assert response_detail(response) == (
        "redirected to https://new.test/api; orch follows no redirect: set the service's URL to it"
    )
