import json
import socket
from datetime import date
from decimal import Decimal

import pytest
import requests
import responses
from fakes import FakeClock

from orchestrator_cli.errors import (
    ConfigError,
    ServiceError,
    ServiceUnavailableError,
    SignalPayloadError,
)
from orchestrator_cli.signals import SignalClient
from orchestrator_cli.transport import HttpClient, response_detail

BASE = "http://signals.test"
URL = f"{BASE}/api/v1/signals/generate"
AS_OF = date(2024, 12, 31)
SYMBOLS = ["AAPL", "MSFT", "TSLA"]
BAD = "Signal Service returned a bad payload at POST /api/v1/signals/generate: "


def signal(symbol: str, rank: int | str, weight: str, predicted: str = "0.01") -> str:
    return (
        f'{{"symbol": "{symbol}", "predicted_return": {predicted}, "rank": {rank}, '
        f'"target_weight": {weight}}}'
    )


METADATA = (
    '{"as_of_date": "2024-12-31", "model_version": "v1.0.0", "strategy": "alpha_baseline", '
    '"num_signals": 3, "generated_at": "2024-12-31T10:30:00.123456Z", "top_n": 1, "bottom_n": 1}'
)
GOOD_SIGNALS = [
    signal("AAPL", 1, "0.333333333333", "0.0234"),
    signal("MSFT", 2, "0.0", "0.0056"),
    signal("TSLA", 3, "-1", "-0.0231"),
]


def payload(signals: list[str] = GOOD_SIGNALS, metadata: str = METADATA) -> str:
    """The body as text, so literals like NaN or 1.5 reach the client exactly as written."""
    return f'{{"signals": [{", ".join(signals)}], "metadata": {metadata}}}'


def make_client(sleeps: list[float], session: requests.Session, base: str = BASE) -> SignalClient:
    clock = FakeClock(sleeps)  # a 429 is waited out at the client's gate, on this clock
    http = HttpClient(
        service="Signal Service",
        base_url=base,
        timeout=5,
        max_attempts=3,
        session=session,
        sleep=clock.sleep,
        clock=clock,
    )
    return SignalClient(http)


@pytest.fixture
def client(sleeps):
    with requests.Session() as session:
        yield make_client(sleeps, session)


def add(rsps, body: str, status: int = 200, **headers: str) -> None:
    rsps.add(
        responses.POST,
        URL,
        body=body,
        status=status,
        headers=headers,
        content_type="application/json",
    )


# --- success --------------------------------------------------------------------------------


def test_a_valid_payload_parses_with_exact_decimals(rsps, client, sleeps):
    add(rsps, payload())
    result = client.fetch_signals(SYMBOLS, as_of_date=AS_OF, top_n=1, bottom_n=1)
    weights = {s.symbol: s.target_weight for s in result.signals}
    assert weights == {
        "AAPL": Decimal("0.333333333333"),
        "MSFT": Decimal("0.0"),
        "TSLA": Decimal("-1"),
    }
    assert all(isinstance(w, Decimal) for w in weights.values())
    assert str(weights["AAPL"]) == "0.333333333333"
    assert result.signals[0].predicted_return == Decimal("0.0234")
    assert result.metadata.as_of_date == AS_OF
    assert result.metadata.model_version == "v1.0.0"
    assert json.loads(rsps.calls[0].request.body) == {
        "symbols": SYMBOLS,
        "as_of_date": "2024-12-31",
        "top_n": 1,
        "bottom_n": 1,
    }
    assert sleeps == []


def test_without_a_requested_date_any_metadata_date_is_accepted(rsps, client):
    add(rsps, payload(metadata=METADATA.replace("2024-12-31", "2024-12-30", 1)))
    result = client.fetch_signals(SYMBOLS, as_of_date=None)
    assert result.metadata.as_of_date == date(2024, 12, 30)
    assert json.loads(rsps.calls[0].request.body)["as_of_date"] is None


def test_extra_fields_from_a_newer_service_are_ignored(rsps, client):
    extra = signal("AAPL", 1, "0.5").replace("}", ', "confidence": 0.9}')
    add(rsps, payload([extra, signal("MSFT", 2, "0"), signal("TSLA", 3, "-0.5")]))
    assert len(client.fetch_signals(SYMBOLS, as_of_date=AS_OF).signals) == 3


def test_a_transient_503_is_retried_then_succeeds(rsps, client, sleeps):
    add(rsps, '{"detail": "model not loaded"}', status=503)
    add(rsps, payload())
    assert len(client.fetch_signals(SYMBOLS, as_of_date=AS_OF).signals) == 3
    assert len(rsps.calls) == 2
    assert len(sleeps) == 1


# --- bad payloads ---------------------------------------------------------------------------

A, M, T = (signal("AAPL", 1, "0.5"), signal("MSFT", 2, "0"), signal("TSLA", 3, "-0.5"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(
            payload([A.replace('"rank": 1, ', ""), M, T]),
            "signals[0].rank: Field required",
            id="missing-field",
        ),
        pytest.param(
            payload([A, signal("MSFT", 2, "NaN"), T]),
            "body is not valid JSON (non-finite number NaN in JSON)",
            id="nan",
        ),
        pytest.param(
            payload([A, M, signal("TSLA", 3, "-0.5", "Infinity")]),
            "body is not valid JSON (non-finite number Infinity in JSON)",
            id="infinity",
        ),
        pytest.param(
            payload([A, M, signal("TSLA", 3, "1.5")]),
            "signals[2].target_weight: target_weight must be within [-1, 1]",
            id="weight-above-one",
        ),
        pytest.param(
            payload([signal("AAPL", 1, '"0.5"'), M, T]),
            "signals[0].target_weight: must be a JSON number",
            id="number-as-string",
        ),
        pytest.param(
            payload([signal("AAPL", "true", "0.5"), M, T]),
            "signals[0].rank: must be a JSON integer",
            id="rank-as-bool",
        ),
        pytest.param(
            payload([A, M, T, signal("AAPL", 4, "0")]),
            "signals[3].symbol: duplicate symbol AAPL",
            id="duplicate-symbol",
        ),
        pytest.param(
            payload([A, M, T, signal("XYZ", 4, "0")]),
            "signals[3].symbol: XYZ was not requested",
            id="unrequested-symbol",
        ),
        pytest.param(
            payload([A, T]),
            "no signal for requested symbol(s) MSFT",
            id="missing-requested-symbol",
        ),
        pytest.param(
            payload(metadata=METADATA.replace("2024-12-31", "2024-12-30", 1)),
            "metadata.as_of_date 2024-12-30 differs from the requested 2024-12-31",
            id="metadata-date-mismatch",
        ),
        pytest.param(
            "<html>Bad Gateway</html>",
            "body is not valid JSON (Expecting value: line 1 column 1 (char 0))",
            id="not-json",
        ),
        pytest.param(
            f'{{"signals": {A}, "metadata": {METADATA}}}',
            "signals: Input should be a valid list",
            id="signals-not-a-list",
        ),
        pytest.param(
            f'{{"signals": [{A}, {M}, {T}]}}',
            "metadata: Field required",
            id="missing-metadata",
        ),
        pytest.param(
            f"[{A}]",
            "Input should be a valid dictionary or instance of SignalResponse",
            id="body-is-a-list",
        ),
        pytest.param(
            payload([signal("AAPL", 1, "0.5", "null"), M, T]),
            "signals[0].predicted_return: must be a JSON number",
            id="null-number",
        ),
    ],
)
def test_a_bad_payload_is_refused_with_a_precise_reason(rsps, client, sleeps, body, reason):
    add(rsps, body)
    with pytest.raises(SignalPayloadError) as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    assert str(caught.value) == f"{BAD}{reason}; no order was sent"
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_many_problems_are_capped_to_keep_one_line(rsps, client):
    strangers = [signal(f"X{i}", i, "0") for i in range(10)]
    add(rsps, payload([A, M, T, *strangers]))
    with pytest.raises(SignalPayloadError) as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    message = str(caught.value)
    assert "signals[5].symbol: X2 was not requested; and 7 more; no order was sent" in message
    assert "X3" not in message
    assert "\n" not in message


# --- statuses and transport failures --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        (400, "bad parameters or data unavailable"),
        (401, "authentication failed"),
        (403, "authentication refused or strategy not active"),
        (404, "market data not found"),
        (422, "request rejected"),
        (500, "internal error"),
        (418, "unexpected answer"),
    ],
)
def test_an_error_status_is_a_service_error_without_retry(rsps, client, sleeps, status, meaning):
    add(rsps, '{"detail": "Strategy alpha_baseline not active"}', status=status)
    with pytest.raises(ServiceError) as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    assert type(caught.value) is ServiceError
    assert str(caught.value).startswith(
        f"Signal Service POST /api/v1/signals/generate failed: HTTP {status} {meaning}: "
        "Strategy alpha_baseline not active; "
    )
    assert len(rsps.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "rate limited"), (502, "HTTP 502"), (503, "HTTP 503"), (504, "HTTP 504")],
)
def test_a_transient_status_outlasting_the_retries_is_unavailable(
    rsps, client, sleeps, status, reason
):
    add(rsps, '{"detail": "model not loaded"}', status=status, **{"Retry-After": "2"})
    with pytest.raises(ServiceUnavailableError) as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    assert str(caught.value) == (
        f"Signal Service at {BASE} unavailable: POST /api/v1/signals/generate {reason} "
        "(model not loaded) after 3 attempts; check that it is running and ready (GET /ready) "
        "and that SIGNAL_SERVICE_URL points at it, then re-run"
    )
    assert caught.value.retry_after == 2.0
    assert len(rsps.calls) == 3
    assert sleeps == [2.0, 2.0]


def test_a_read_timeout_outlasting_the_retries_is_unavailable(rsps, client, sleeps):
    for _ in range(3):
        rsps.add(responses.POST, URL, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(ServiceUnavailableError, match="timed out after 3 attempts") as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    assert isinstance(caught.value.__cause__, requests.ReadTimeout)
    assert len(sleeps) == 2


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_unavailable_and_hides_credentials_in_the_url(sleeps):
    base = f"http://orch:s3cret@127.0.0.1:{unused_port()}"
    with requests.Session() as session:
        client = make_client(sleeps, session, base)
        with pytest.raises(ServiceUnavailableError) as caught:
            client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    message = str(caught.value)
    assert "s3cret" not in message
    assert "orch:***@127.0.0.1" in message
    assert "connection failed after 3 attempts" in message
    assert len(sleeps) == 2


def test_a_long_detail_is_truncated_to_one_short_line(rsps, client):
    add(rsps, json.dumps({"detail": "data unavailable\n" + "x" * 1000}), status=400)
    with pytest.raises(ServiceError) as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF)
    message = str(caught.value)
    assert "\n" not in message
    assert "data unavailable xxx" in message
    assert "x" * 180 in message
    assert "x" * 200 not in message
    assert "...; check the symbols" in message


def test_an_invalid_request_is_refused_before_any_call(rsps, client):
    with pytest.raises(ConfigError, match="symbols"):
        client.fetch_signals([], as_of_date=AS_OF)
    with pytest.raises(ConfigError, match="top_n"):
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF, top_n=-1)
    assert len(rsps.calls) == 0


# --- response_detail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"detail": "Order not found: abc"}', "Order not found: abc"),
        (
            '{"detail": {"error": "Position limit exceeded", "limit": 1000, "requested": 1500}}',
            "Position limit exceeded (limit=1000, requested=1500)",
        ),
        ('{"detail": {"error": "Position limit exceeded"}}', "Position limit exceeded"),
        (
            '{"detail": [{"loc": ["body", "qty"], "msg": "Input should be greater than 0"}]}',
            "body.qty: Input should be greater than 0",
        ),
        ('{"message": "nope", "code": 7}', "message=nope, code=7"),
        ("upstream   connect\nerror", "upstream connect error"),
        ("", "no detail given"),
        # A terminal's escapes (clear screen, set title, colour) are shown, never obeyed.
        (
            '{"detail": "\\u001b[2J\\u001b]0;PWNED\\u0007 \\u001b[31mred"}',
            r"\x1b[2J\x1b]0;PWNED\x07 \x1b[31mred",
        ),
        ("\x1b[31mred\x07", r"\x1b[31mred\x07"),
    ],
)
def test_response_detail(body, expected):
    response = requests.Response()
    response._content = body.encode()
    response.status_code = 400
    assert response_detail(response) == expected


@pytest.mark.parametrize(
    ("top_n", "bottom_n", "metadata", "reason"),
    [
        (0, 1, METADATA, "1 long signals where 0 were asked for"),
        (1, 0, METADATA, "1 short signals where 0 were asked for"),
        (
            1,
            2,
            METADATA,
            "metadata.bottom_n is 1, not the 2 asked for",
        ),
        (2, 1, METADATA.replace('"top_n": 1', '"top_n": 8'), "metadata.top_n is 8, not the 2"),
    ],
)
def test_signals_beyond_the_longs_and_shorts_asked_for_are_refused(
    rsps, client, top_n, bottom_n, metadata, reason
):
    """Orders for signals the run never asked for: the answer is a bad payload."""
    add(rsps, payload(metadata=metadata))
    with pytest.raises(SignalPayloadError) as caught:
        client.fetch_signals(SYMBOLS, as_of_date=AS_OF, top_n=top_n, bottom_n=bottom_n)
    assert reason in str(caught.value)


def test_counts_not_asked_for_are_the_services_own(rsps, client):
    add(rsps, payload(metadata=METADATA.replace('"top_n": 1', '"top_n": 8')))
    assert len(client.fetch_signals(SYMBOLS, as_of_date=AS_OF).signals) == 3
