"""Request signing: fixed vectors computed here by hand, verification, retries, secrecy."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
import responses

from orchestrator_cli.auth import (
    BearerAuth,
    InternalTokenAuth,
    body_hash,
    internal_token,
    verify_internal_request,
)
from orchestrator_cli.transport import HttpClient

SECRET = "test-secret"
NOW = 1735650000.75
NONCE = "11111111-2222-4333-8444-555555555555"
ORDER_BODY = b'{"symbol":"AAPL","side":"buy","qty":10}'
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SIGNATURE_HEADERS = (
    "X-Service-ID",
    "X-Internal-Timestamp",
    "X-Internal-Nonce",
    "X-Body-Hash",
    "X-Internal-Token",
)


def by_hand(payload: str) -> str:
    return hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signer(**options: object) -> InternalTokenAuth:
    settings: dict[str, object] = {"clock": lambda: NOW, "new_nonce": lambda: NONCE, **options}
    return InternalTokenAuth(SECRET, **settings)  # type: ignore[arg-type]


def prepare(
    auth: requests.auth.AuthBase,
    method: str = "POST",
    url: str = "http://gw.test/api/v1/orders",
    **kwargs: object,
) -> requests.PreparedRequest:
    return requests.Request(method, url, auth=auth, **kwargs).prepare()


def verify(
    prepared: requests.PreparedRequest,
    *,
    secret: str = SECRET,
    now: float = NOW,
    seen: set[str] | None = None,
    body: bytes | None = None,
    path: str | None = None,
    headers: dict[str, str] | None = None,
) -> str | None:
    """Verify a prepared request as a server would, optionally with one part tampered with."""
    url = urlsplit(str(prepared.url))
    sent = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body or b""
    return verify_internal_request(
        secret,
        method=prepared.method or "",
        path=url.path if path is None else path,
        query=url.query,
        headers=dict(prepared.headers) if headers is None else headers,
        body=sent if body is None else body,
        now=now,
        seen_nonces=set() if seen is None else seen,
    )


# --- signing: fixed vectors ---------------------------------------------------------------


def test_post_with_json_body_matches_the_hand_computed_vector() -> None:
    prepared = prepare(
        signer(strategy_id="alpha_baseline"),
        data=ORDER_BODY,
        headers={"Content-Type": "application/json"},
    )
    digest = hashlib.sha256(ORDER_BODY).hexdigest()
    payload = (
        f'{{"body_hash":"{digest}","method":"POST","nonce":"{NONCE}",'
        '"path":"/api/v1/orders","query":"","service_id":"orchestrator",'
        '"strategy_id":"alpha_baseline","timestamp":"1735650000","user_id":""}'
    )
    token = by_hand(payload)
    # Pinned too, so a change in how the payload is built cannot go unnoticed.
    assert token == "4f3e6f0069fbdb44015b8b9a6884f664924acb987db33728bcf5335dfc43bdcd"
    assert {name: prepared.headers[name] for name in (*SIGNATURE_HEADERS, "X-Strategy-ID")} == {
        "X-Service-ID": "orchestrator",
        "X-Internal-Timestamp": "1735650000",
        "X-Internal-Nonce": NONCE,
        "X-Body-Hash": digest,
        "X-Internal-Token": token,
        "X-Strategy-ID": "alpha_baseline",
    }
    assert "X-User-ID" not in prepared.headers
    assert prepared.body == ORDER_BODY


def test_get_with_query_signs_the_encoded_path_and_raw_query() -> None:
    prepared = prepare(
        signer(user_id="ops", new_nonce=lambda: "nonce-get"),
        "get",
        "http://gw.test/api/v1/orders/a b",
        params={"symbols": "AAPL,MSFT", "limit": "5"},
    )
    payload = (
        f'{{"body_hash":"{EMPTY_SHA256}","method":"GET","nonce":"nonce-get",'
        '"path":"/api/v1/orders/a%20b","query":"symbols=AAPL%2CMSFT&limit=5",'
        '"service_id":"orchestrator","strategy_id":"","timestamp":"1735650000","user_id":"ops"}'
    )
    assert prepared.path_url == "/api/v1/orders/a%20b?symbols=AAPL%2CMSFT&limit=5"
    assert prepared.body is None
    assert prepared.headers["X-Body-Hash"] == EMPTY_SHA256
    assert prepared.headers["X-Internal-Token"] == by_hand(payload)
    assert prepared.headers["X-User-ID"] == "ops"
    assert "X-Strategy-ID" not in prepared.headers


def test_internal_token_matches_the_documented_json() -> None:
    fields = {
        "service_id": "svc",
        "method": "POST",
        "path": "/p",
        "query": "a=1",
        "timestamp": "5",
        "nonce": "n",
        "user_id": "u",
        "strategy_id": "s",
        "body_hash": "h",
    }
    payload = (
        '{"body_hash":"h","method":"POST","nonce":"n","path":"/p","query":"a=1",'
        '"service_id":"svc","strategy_id":"s","timestamp":"5","user_id":"u"}'
    )
    assert internal_token(SECRET, **fields) == by_hand(payload)


def test_body_hash_is_sha256_of_the_exact_bytes() -> None:
    assert body_hash(b"") == hashlib.sha256(b"").hexdigest() == EMPTY_SHA256
    assert body_hash(ORDER_BODY) == hashlib.sha256(ORDER_BODY).hexdigest()
    # A str body is hashed as the UTF-8 bytes that requests will send.
    prepared = prepare(signer(), data="é")
    assert prepared.headers["X-Body-Hash"] == hashlib.sha256("é".encode()).hexdigest()


def test_service_id_and_method_case() -> None:
    prepared = prepare(signer(service_id="batch-7"), "post", data=b"{}")
    assert prepared.headers["X-Service-ID"] == "batch-7"
    assert verify(prepared) is None


def test_each_call_gets_a_fresh_nonce_and_timestamp() -> None:
    auth = InternalTokenAuth(SECRET, clock=iter([NOW, NOW + 2.0]).__next__)
    first = prepare(auth, data=ORDER_BODY)
    second = prepare(auth, data=ORDER_BODY)
    assert first.headers["X-Internal-Nonce"] != second.headers["X-Internal-Nonce"]
    assert first.headers["X-Internal-Timestamp"] == "1735650000"
    assert second.headers["X-Internal-Timestamp"] == "1735650002"
    assert first.headers["X-Internal-Token"] != second.headers["X-Internal-Token"]


def test_bearer_auth_sets_the_authorization_header() -> None:
    prepared = prepare(BearerAuth("tok-123"), "GET", "http://gw.test/api/v1/positions")
    assert prepared.headers["Authorization"] == "Bearer tok-123"


# --- secrecy ------------------------------------------------------------------------------


def test_secrets_never_show_in_repr_or_str() -> None:
    for auth in (signer(strategy_id="alpha"), BearerAuth(SECRET)):
        assert SECRET not in repr(auth)
        assert SECRET not in str(auth)
        assert "***" in repr(auth)
    assert "alpha" in repr(signer(strategy_id="alpha"))


@pytest.mark.parametrize("make", [lambda: InternalTokenAuth(""), lambda: BearerAuth("")])
def test_empty_secret_is_refused(make: object) -> None:
    with pytest.raises(ValueError, match="empty"):
        make()  # type: ignore[operator]


# --- verification -------------------------------------------------------------------------


def test_fresh_signed_request_is_accepted_and_its_nonce_recorded() -> None:
    seen: set[str] = set()
    prepared = prepare(signer(strategy_id="alpha", user_id="ops"), data=ORDER_BODY)
    assert verify(prepared, seen=seen) is None
    assert seen == {NONCE}


@pytest.mark.parametrize("skew", [-300.0, 0.0, 299.9, 300.0])
def test_timestamp_within_the_window_is_accepted(skew: float) -> None:
    assert verify(prepare(signer(), data=ORDER_BODY), now=int(NOW) + skew) is None


@pytest.mark.parametrize("skew", [-300.5, 301.0, -3600.0, 86400.0])
def test_stale_or_future_timestamp_is_refused(skew: float) -> None:
    seen: set[str] = set()
    result = verify(prepare(signer(), data=ORDER_BODY), now=int(NOW) + skew, seen=seen)
    assert result == "invalid_internal_token"
    assert seen == set()


def test_replayed_nonce_is_refused() -> None:
    seen: set[str] = set()
    prepared = prepare(signer(), data=ORDER_BODY)
    assert verify(prepared, seen=seen) is None
    assert verify(prepared, seen=seen, now=NOW + 1) == "invalid_internal_token"


@pytest.mark.parametrize(
    "tamper",
    [
        {"body": b'{"symbol":"AAPL","side":"buy","qty":1000}'},
        {"body": b""},
        {"path": "/api/v1/orders/other"},
        {"secret": "wrong-secret"},
    ],
    ids=["body", "empty-body", "path", "secret"],
)
def test_tampered_request_is_refused(tamper: dict[str, object]) -> None:
    seen: set[str] = set()
    prepared = prepare(signer(), data=ORDER_BODY)
    assert verify(prepared, seen=seen, **tamper) == "invalid_internal_token"  # type: ignore[arg-type]
    assert seen == set()  # a refused request cannot burn a genuine request's nonce


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Body-Hash", EMPTY_SHA256),  # hash of another body: the token no longer matches
        ("X-Service-ID", "intruder"),
        ("X-Strategy-ID", "other"),
        ("X-User-ID", "root"),
        ("X-Internal-Timestamp", "1735650001"),
        ("X-Internal-Timestamp", "1735650000.0"),
        ("X-Internal-Nonce", "another"),
        ("X-Internal-Token", "0" * 64),
        ("X-Internal-Token", "é" * 64),  # non-ASCII must refuse, not raise
    ],
)
def test_tampered_header_is_refused(header: str, value: str) -> None:
    prepared = prepare(signer(strategy_id="alpha"), data=ORDER_BODY)
    headers = {**prepared.headers, header: value}
    assert verify(prepared, headers=headers) == "invalid_internal_token"


def test_query_is_signed() -> None:
    prepared = prepare(signer(), "GET", "http://gw.test/api/v1/orders", params={"limit": "5"})
    seen: set[str] = set()
    assert (
        verify_internal_request(
            SECRET,
            method="GET",
            path="/api/v1/orders",
            query="limit=500",
            headers=dict(prepared.headers),
            body=b"",
            now=NOW,
            seen_nonces=seen,
        )
        == "invalid_internal_token"
    )
    assert verify(prepared, seen=seen) is None


@pytest.mark.parametrize("missing", SIGNATURE_HEADERS)
def test_missing_header_is_authentication_required(missing: str) -> None:
    prepared = prepare(signer(), data=ORDER_BODY)
    headers = {name: value for name, value in prepared.headers.items() if name != missing}
    assert verify(prepared, headers=headers) == "authentication_required"


def test_header_names_are_case_insensitive() -> None:
    prepared = prepare(signer(), data=ORDER_BODY)
    headers = {name.lower(): value for name, value in prepared.headers.items()}
    assert verify(prepared, headers=headers) is None


# --- through HttpClient: the exact bytes sent, retries signed anew -----------------------------


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        yield opened


def test_signature_covers_the_bytes_http_client_sends(session: requests.Session) -> None:
    nonces = (f"nonce-{n}" for n in itertools.count())
    auth = InternalTokenAuth(
        SECRET, strategy_id="alpha", clock=lambda: NOW, new_nonce=nonces.__next__
    )
    http = HttpClient("gateway", "http://gw.test", 5.0, session=session, auth=auth)
    body = {"symbol": "AAPL", "qty": 10, "limit_price": "185.50", "note": "café"}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.post("http://gw.test/api/v1/orders", json={"ok": True})
        mock.get("http://gw.test/api/v1/positions", json={"positions": []})
        http.request("POST", "/api/v1/orders", json_body=body)
        http.request("GET", "/api/v1/positions", params={"symbol": "AAPL"})
        sent = [call.request for call in mock.calls]
    seen: set[str] = set()
    assert [verify(request, seen=seen) for request in sent] == [None, None]
    assert seen == {"nonce-0", "nonce-1"}
    assert isinstance(sent[0].body, bytes)
    assert sent[0].headers["X-Body-Hash"] == hashlib.sha256(sent[0].body).hexdigest()
    assert sent[1].headers["X-Body-Hash"] == EMPTY_SHA256


def test_retried_request_is_signed_anew(session: requests.Session) -> None:
    clock = iter([NOW, NOW + 1, NOW + 2])
    auth = InternalTokenAuth(SECRET, clock=clock.__next__)
    http = HttpClient(
        "gateway", "http://gw.test", 5.0, session=session, sleep=lambda _: None, auth=auth
    )
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        url = "http://gw.test/api/v1/orders"
        mock.post(url, status=503, json={"detail": "Broker unavailable"})
        mock.post(url, status=429, json={"detail": "slow down"}, headers={"Retry-After": "0"})
        mock.post(url, json={"ok": True})
        response = http.request("POST", "/api/v1/orders", json_body={"qty": 1})
        sent = [call.request for call in mock.calls]
    assert response.status_code == 200
    assert len(sent) == 3
    assert len({request.headers["X-Internal-Nonce"] for request in sent}) == 3
    stamps = [request.headers["X-Internal-Timestamp"] for request in sent]
    assert stamps == ["1735650000", "1735650001", "1735650002"]
    seen: set[str] = set()
    assert [verify(request, seen=seen, now=NOW + 2) for request in sent] == [None] * 3


@pytest.mark.parametrize("timestamp", ["1_735_650_000", " 1735650000", "+1735650000", "1e9"])
def test_signed_but_malformed_timestamp_is_refused(timestamp: str) -> None:
    digest = body_hash(b"")
    token = internal_token(
        SECRET,
        service_id="orchestrator",
        method="GET",
        path="/api/v1/positions",
        query="",
        timestamp=timestamp,
        nonce="n",
        user_id="",
        strategy_id="",
        body_hash=digest,
    )
    headers = {
        "X-Service-ID": "orchestrator",
        "X-Internal-Timestamp": timestamp,
        "X-Internal-Nonce": "n",
        "X-Body-Hash": digest,
        "X-Internal-Token": token,
    }
    result = verify_internal_request(
        SECRET,
        method="GET",
        path="/api/v1/positions",
        query="",
        headers=headers,
        body=b"",
        now=1735650000,
        seen_nonces=set(),
    )
    assert result == "invalid_internal_token"
