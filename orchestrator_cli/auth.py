"""Service authentication: the platform's HMAC request signature, and plain bearer tokens.

Both are `requests.auth.AuthBase`, so `requests` calls them on every prepared request: each
attempt of a retried call is signed anew (fresh nonce and timestamp) over the exact body bytes
about to be sent. `verify_internal_request` is the server's side of the same scheme (the
sandbox uses it). Secrets are kept out of every repr and error message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import requests

SERVICE_ID_HEADER = "X-Service-ID"
TIMESTAMP_HEADER = "X-Internal-Timestamp"
NONCE_HEADER = "X-Internal-Nonce"
BODY_HASH_HEADER = "X-Body-Hash"
TOKEN_HEADER = "X-Internal-Token"
STRATEGY_HEADER = "X-Strategy-ID"
USER_HEADER = "X-User-ID"
REQUIRED_HEADERS = (
    SERVICE_ID_HEADER,
    TIMESTAMP_HEADER,
    NONCE_HEADER,
    BODY_HASH_HEADER,
    TOKEN_HEADER,
)

AUTHENTICATION_REQUIRED = "authentication_required"
INVALID_INTERNAL_TOKEN = "invalid_internal_token"
MAX_SKEW_SECONDS = 300.0

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _new_nonce() -> str:
    return str(uuid.uuid4())


def body_hash(body: bytes) -> str:
    """sha256 hex of the exact body bytes (of b"" when there is no body)."""
    return hashlib.sha256(body).hexdigest()


def internal_token(
    secret: str,
    *,
    service_id: str,
    method: str,
    path: str,
    query: str,
    timestamp: str,
    nonce: str,
    user_id: str,
    strategy_id: str,
    body_hash: str,
) -> str:
    """Hex HMAC-SHA256 over the compact, key-sorted JSON of the nine signed fields."""
    payload = json.dumps(
        {
            "service_id": service_id,
            "method": method,
            "path": path,
            "query": query,
            "timestamp": timestamp,
            "nonce": nonce,
            "user_id": user_id,
            "strategy_id": strategy_id,
            "body_hash": body_hash,
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _body_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else body


class InternalTokenAuth(requests.auth.AuthBase):
    """Signs each request with the platform's `X-Internal-*` headers; the secret never shows."""

    def __init__(
        self,
        secret: str,
        *,
        service_id: str = "orchestrator",
        strategy_id: str | None = None,
        user_id: str | None = None,
        clock: Callable[[], float] = time.time,
        new_nonce: Callable[[], str] = _new_nonce,
    ) -> None:
        if not secret:
            raise ValueError("the internal token secret is empty")
        self._secret = secret
        self.service_id = service_id
        self.strategy_id = strategy_id
        self.user_id = user_id
        self._clock = clock
        self._new_nonce = new_nonce

    def __repr__(self) -> str:
        return (
            f"InternalTokenAuth(service_id={self.service_id!r}, strategy_id={self.strategy_id!r}, "
            f"user_id={self.user_id!r}, secret='***')"
        )

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Add the signature headers for this attempt (a new nonce and timestamp each call)."""
        # The prepared URL is already percent-encoded: its path and query are what goes on
        # the wire, so they are what the server sees and signs.
        url = urlsplit(request.url or "")
        timestamp = str(int(self._clock()))
        nonce = self._new_nonce()
        digest = body_hash(_body_bytes(request.body))
        token = internal_token(
            self._secret,
            service_id=self.service_id,
            method=(request.method or "GET").upper(),
            path=url.path or "/",
            query=url.query,
            timestamp=timestamp,
            nonce=nonce,
            user_id=self.user_id or "",
            strategy_id=self.strategy_id or "",
            body_hash=digest,
        )
        request.headers[SERVICE_ID_HEADER] = self.service_id
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[NONCE_HEADER] = nonce
        request.headers[BODY_HASH_HEADER] = digest
        request.headers[TOKEN_HEADER] = token
        if self.strategy_id:
            request.headers[STRATEGY_HEADER] = self.strategy_id
        if self.user_id:
            request.headers[USER_HEADER] = self.user_id
        return request


class BearerAuth(requests.auth.AuthBase):
    """`Authorization: Bearer <token>` on each request; the token never shows."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the bearer token is empty")
        self._token = token

    def __repr__(self) -> str:
        return "BearerAuth(token='***')"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


def verify_internal_request(
    secret: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    seen_nonces: set[str],
    max_skew: float = MAX_SKEW_SECONDS,
) -> str | None:
    """None when the signature is valid, else the 401 error code.

    `path` and `query` are raw, as received. `seen_nonces` is the caller's, guarded by the
    caller's lock; a nonce is recorded only when the request is valid, so a refused request
    cannot burn the nonce of a genuine one.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    values = [lowered.get(name.lower(), "") for name in REQUIRED_HEADERS]
    if not all(values):
        return AUTHENTICATION_REQUIRED
    service_id, timestamp, nonce, claimed_hash, token = values
    expected = internal_token(
        secret,
        service_id=service_id,
        method=method.upper(),
        path=path,
        query=query,
        timestamp=timestamp,
        nonce=nonce,
        user_id=lowered.get(USER_HEADER.lower(), ""),
        strategy_id=lowered.get(STRATEGY_HEADER.lower(), ""),
        body_hash=claimed_hash,
    )
    # Compared as bytes: compare_digest refuses non-ASCII str, and header text is untrusted.
    if not hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace")):
        return INVALID_INTERNAL_TOKEN
    if claimed_hash != body_hash(body):
        return INVALID_INTERNAL_TOKEN
    if not _TIMESTAMP.fullmatch(timestamp) or abs(now - int(timestamp)) > max_skew:
        return INVALID_INTERNAL_TOKEN
    if nonce in seen_nonces:
        return INVALID_INTERNAL_TOKEN
    seen_nonces.add(nonce)
    return None
