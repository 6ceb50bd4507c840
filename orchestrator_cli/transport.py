"""One HTTP transport for every service client: pooled session, timeout, tenacity retries.

Retried (transient): connection errors, timeouts, 429 (honouring `Retry-After`) and 502/503/504,
unless the client's `is_final` says the answer cannot change by asking again (the gateway's
halts: `gateway.is_halt_response`). Never retried: any other 4xx or 5xx. A retried POST is
safe only because every order carries a deterministic `client_order_id` that the gateway
de-duplicates; the signal request has no side effect. Bodies are serialised once, so the bytes
sent are the bytes a request signer hashes.

A 429 is waited out in full, never retried early: it holds the client's `RequestGate` (shared
by every client of the same service, so every worker backs off together) until its
`Retry-After`, and every attempt waits at the gate. With a deadline the wait is bounded only by
the deadline; without one, a wait longer than `max_retry_wait` ends the retries instead.

What `requests` reads from the environment (`HTTP(S)_PROXY` and `NO_PROXY`, `REQUESTS_CA_BUNDLE`
or `CURL_CA_BUNDLE`, `~/.netrc`) is read once per service, when its client is made, and the
session itself ignores the environment: left to `requests`, every request would scan all of
`os.environ` twice and look for `~/.netrc` again, a fifth of the client's CPU per order. A batch
process has one environment, so the answer cannot change during a run.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception

from orchestrator_cli.pacing import NotAdmittedError, RequestGate
from orchestrator_cli.schemas import storable

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
DETAIL_LIMIT = 200

# Sees every attempt's response or transport error.
Observer = Callable[[requests.Response | requests.RequestException], None]
# Asked just before an attempt goes out: None to send it, else why not (a run lock lost).
Permit = Callable[[], str | None]


def never_final(_response: requests.Response) -> bool:
    """The default `is_final`: every retryable status is worth retrying."""
    return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class TransientStatusError(Exception):
    """A retryable HTTP status; carries the response so the last one can be returned."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after = parse_retry_after(response.headers.get("Retry-After"))


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientStatusError | requests.ConnectionError | requests.Timeout)


def never_sent(exc: BaseException) -> bool:
    """True when a transport error proves the request never reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc.args[0]) if exc.args else ""
        return "NewConnectionError" in text or "Connection refused" in text
    return False


def is_loopback(host: str | None) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a transport failure."""
    if isinstance(exc, TransientStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.exceptions.ProxyError):
        return (
            "could not get through the proxy (HTTP_PROXY / HTTPS_PROXY; hosts listed in "
            "NO_PROXY are reached directly)"
        )
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed" if never_sent(exc) else "connection lost"
    return type(exc).__name__


COMPACT_DEPTH = 4


def _compact(value: Any, depth: int = 0) -> str:
    """Render a JSON error detail (object, list, scalar) as short text; levels below
    COMPACT_DEPTH are `...` (a hostile detail may be nested thousands deep)."""
    if depth >= COMPACT_DEPTH and isinstance(value, dict | list):
        return "..."
    deeper = depth + 1
    if isinstance(value, dict):
        if "loc" in value and "msg" in value and isinstance(value["loc"], list):
            # one FastAPI validation error
            where = ".".join(_compact(part, deeper) for part in value["loc"])
            return f"{where}: {_compact(value['msg'], deeper)}"
        rest = ", ".join(
            f"{key}={_compact(item, deeper)}" for key, item in value.items() if key != "error"
        )
        if "error" not in value:
            return rest
        error = _compact(value["error"], deeper)
        return f"{error} ({rest})" if rest else error
    if isinstance(value, list):
        return "; ".join(_compact(item, deeper) for item in value)
    return str(value)


def response_detail(response: requests.Response) -> str:
    """The service's `detail` (or its body text) as one line of at most ~200 characters; for
    a redirect, where it points (orch follows none: the URL setting should name that place)."""
    location = response.headers.get("Location")
    if 300 <= response.status_code < 400 and location:
        text = " ".join(location.split())[:DETAIL_LIMIT]
        return f"redirected to {text}; orch follows no redirect: set the service's URL to it"
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
        text = response.text
    else:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        text = detail if isinstance(detail, str) else _compact(detail)
    text = storable(" ".join(text.split()))  # no control character reaches a terminal
    if len(text) > DETAIL_LIMIT:
        text = text[: DETAIL_LIMIT - 3] + "..."
    return text or "no detail given"


@dataclass
class HttpClient:
    """Base URL + pooled session + retry policy; `sleep` and `clock` are injectable so tests
    never wait."""

    service: str
    base_url: str
    timeout: float
    max_attempts: int = 3
    session: requests.Session = field(default_factory=requests.Session)
    sleep: Callable[[float], None] = time.sleep
    # Without a deadline, the longest wait before a retry; a longer Retry-After ends retrying.
    max_retry_wait: float = 30.0
    base_backoff: float = 0.25
    auth: requests.auth.AuthBase | None = None  # per service: signatures never leak elsewhere
    # time.monotonic() value: with a deadline, a 429 is waited out (same request, same
    # client_order_id) until the deadline instead of giving up after max_attempts.
    deadline: float | None = None
    # A retryable status whose body says asking again cannot help (owned by the client).
    is_final: Callable[[requests.Response], bool] = never_final
    clock: Callable[[], float] = time.monotonic
    # Shared by every client of one service (`dataclasses.replace` keeps it); None: its own.
    gate: RequestGate | None = None
    # What the environment says for this base URL (`environment_for`); None: read it now.
    environment: ServiceEnvironment | None = None
    _urls: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.gate is None:
            self.gate = RequestGate(clock=self.clock, sleep=self.sleep)
        if self.environment is None:
            self.environment = environment_for(self.base_url)

    @property
    def service_environment(self) -> ServiceEnvironment:
        """Proxies, CA bundle and .netrc credentials for this service (set in `__post_init__`)."""
        if self.environment is None:  # pragma: no cover - __post_init__ always sets it
            raise RuntimeError("HttpClient without its environment")
        return self.environment

    @property
    def shared_gate(self) -> RequestGate:
        """The gate every attempt waits at (set in `__post_init__`)."""
        if self.gate is None:  # pragma: no cover - __post_init__ always sets it
            raise RuntimeError("HttpClient without a gate")
        return self.gate

    def send_once(
        self,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> requests.Response:
        """One attempt, straight through the session's connection pool (its adapter).

        Not through `Session.request`, whose merging of cookies, hooks and settings is a
        fifth of the client's CPU per order and buys nothing here. It also follows no
        redirect: these are API calls, and requests would re-send a redirected order POST as
        a GET (301/302) or re-send it, signature headers included, to whatever host a 307
        names. A 3xx answer is returned as it is, and is an error like any other status.
        """
        environment = self.service_environment
        merged = requests.structures.CaseInsensitiveDict(self.session.headers)
        merged.update(headers)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.url = self._prepared_url(url, params)
        prepared.prepare_headers(merged)
        prepared.prepare_body(body, None)
        prepared.prepare_auth(self.auth or environment.netrc_auth, prepared.url)
        adapter = self.session.get_adapter(url)
        response = adapter.send(
            prepared,
            timeout=self.timeout,
            verify=environment.verify,
            proxies=environment.proxies,
            stream=False,
            cert=None,
        )
        response.content  # noqa: B018 - read the body now: the connection goes back to the pool
        return response

    def _prepared_url(self, url: str, params: Mapping[str, str] | None) -> str:
        """`url` with `params`, quoted as requests prepares it; a URL without parameters (the
        order POST's) is prepared once, as parsing and quoting it is a third of preparing a
        request."""
        known = None if params else self._urls.get(url)
        if known is None:
            prepared = requests.PreparedRequest()
            prepared.prepare_url(url, params)
            known = str(prepared.url)
            if not params:
                self._urls[url] = known
        return known

    def is_retried(self, response: requests.Response) -> bool:
        """True when the transport retries this answer (a transient status, not final)."""
        return response.status_code in RETRYABLE_STATUSES and not self.is_final(response)

    def attempts_text(self, failure: requests.Response | BaseException) -> str:
        """` after N attempts` when the failure is one retried to the end, else ``."""
        if isinstance(failure, requests.Response):
            retried = self.is_retried(failure)
        else:
            retried = isinstance(failure, requests.ConnectionError | requests.Timeout)
        if not retried:
            return ""
        return f" after {self.max_attempts} attempt{'s' if self.max_attempts != 1 else ''}"

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        rate_limited = isinstance(exc, TransientStatusError) and exc.response.status_code == 429
        # A 429's wait is the gate's (it may have moved since): the whole pool waits it out.
        wait = self.shared_gate.held_for() if rate_limited else self._wait(state)
        if self.deadline is not None:
            if self.clock() + wait >= self.deadline:
                return True
            if rate_limited:
                return False
        elif wait > self.max_retry_wait:
            return True  # never retry before the service said, never wait without a bound
        return state.attempt_number >= self.max_attempts

    def _backoff(self, attempt_number: int) -> float:
        backoff: float = self.base_backoff * 2 ** (attempt_number - 1)
        return min(backoff + random.uniform(0, self.base_backoff), self.max_retry_wait)

    def _wait(self, state: RetryCallState) -> float:
        """What tenacity sleeps before a retry; a 429 is waited out at the gate instead."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientStatusError):
            if exc.response.status_code == 429:
                return 0.0
            if exc.retry_after is not None:
                return exc.retry_after
        return self._backoff(state.attempt_number)

    def hold_gate(self, response: requests.Response, attempt_number: int) -> None:
        """A 429 holds every request to this service until its Retry-After (or a back-off)."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        wait = self._backoff(attempt_number) if retry_after is None else retry_after
        self.shared_gate.hold_until(self.clock() + wait)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = float(state.next_action.sleep) if state.next_action else 0.0
        if isinstance(exc, TransientStatusError) and exc.response.status_code == 429:
            wait = self.shared_gate.held_for()
        logger.warning(
            "%s: %s on attempt %d, retrying in %.2fs",
            self.service,
            describe_error(exc) if exc else "error",
            state.attempt_number,
            wait,
        )

    def _sleep_between(self, seconds: float) -> None:
        if seconds > 0:  # a 429's wait happens at the gate; tenacity's is then 0
            self.sleep(seconds)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        observe: Observer | None = None,
        paced: bool = False,
        permit: Permit | None = None,
    ) -> requests.Response:
        """Send with retries; returns the final response (possibly a retryable status).

        Raises `requests.RequestException` when the last attempt failed in transport, and
        `NotAdmittedError` when the first attempt could not start in time (the gate's wait
        reaches past the deadline) or `permit` refused it; a later attempt refused so returns
        the previous answer. `observe` sees every attempt's response or transport error, not
        only the last. `paced` requests take the gate's pacing slots. `permit` is asked once
        an attempt's turn has come, just before it goes out (after any wait at the gate).
        """
        body = None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        url = f"{self.base_url}{path}"
        attempt = _Attempts(self, method, url, body, params, all_headers, observe, paced, permit)
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=self._stop,
            wait=self._wait,
            sleep=self._sleep_between,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientStatusError as exc:
            return exc.response
        except NotAdmittedError:
            if not attempt.answers:
                raise
            last = attempt.answers[-1]  # a retry could not start in time: the last answer stands
            if isinstance(last, requests.Response):
                return last
            raise last from None


@dataclass
class _Attempts:
    """The attempts of one request: each waits for its turn at the gate, a 429 holds the gate
    for every request to the service, and every answer is kept (`answers`)."""

    client: HttpClient
    method: str
    url: str
    body: bytes | None
    params: Mapping[str, str] | None
    headers: Mapping[str, str]
    observe: Observer | None = None
    paced: bool = False
    permit: Permit | None = None
    answers: list[requests.Response | requests.RequestException] = field(default_factory=list)

    def __call__(self) -> requests.Response:
        client = self.client
        client.shared_gate.admit(deadline=client.deadline, paced=self.paced)
        if self.permit is not None and self.permit() is not None:
            raise NotAdmittedError("stopped")
        try:
            response = client.send_once(self.method, self.url, self.body, self.params, self.headers)
        except requests.RequestException as exc:
            self._note(exc)
            raise
        self._note(response)
        if response.status_code == 429:
            client.hold_gate(response, len(self.answers))
        if client.is_retried(response):
            raise TransientStatusError(response)
        return response

    def _note(self, answer: requests.Response | requests.RequestException) -> None:
        self.answers.append(answer)
        if self.observe is not None:
            self.observe(answer)


@dataclass(frozen=True)
class ServiceEnvironment:
    """What `requests` would take from the environment for one base URL."""

    proxies: dict[str, str]
    verify: bool | str
    netrc_auth: tuple[str, str] | None


def environment_for(base_url: str) -> ServiceEnvironment:
    """Read, once, what `requests` reads from the environment on every request to `base_url`:
    the proxies that apply to it (honouring `NO_PROXY`), the CA bundle it is verified against,
    and its `~/.netrc` credentials (used only by a service without its own authentication).

    A loopback address (localhost, 127.0.0.0/8, ::1: the sandbox, a local tunnel) is never
    sent through a proxy: to a proxy, loopback is the proxy's own machine, not this one.
    """
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    proxied = not is_loopback(urlsplit(base_url).hostname)
    return ServiceEnvironment(
        proxies=dict(requests.utils.get_environ_proxies(base_url)) if proxied else {},
        verify=bundle or True,
        netrc_auth=requests.utils.get_netrc_auth(base_url),
    )


# Connections kept per host whatever the order concurrency: reads that go out together (the
# preflight's, a price book's batches) find one each instead of opening and dropping extras.
MIN_POOL_SIZE = 8


def make_session(pool_size: int) -> requests.Session:
    """A session with a connection pool big enough for `pool_size` concurrent requests (and at
    least MIN_POOL_SIZE) per host.

    It ignores the environment: each `HttpClient` applies its own `environment_for` instead.
    """
    session = requests.Session()
    session.trust_env = False
    size = max(pool_size, MIN_POOL_SIZE)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "orch/0.1"
    return session
