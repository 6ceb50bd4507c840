"""The three simulated services on loopback ports, and the faults injected around them.

Plain `http.server` (one daemon thread per connection), HTTP/1.1 keep-alive with a
Content-Length on every response. Each response leaves in one socket write (a 64 KiB write
buffer holds headers and body until the handler flushes) and accepted sockets set TCP_NODELAY:
a header write followed by a body write stalls ~40 ms on Nagle plus delayed ACK, which would
hide real timings in benchmarks. Fault sleeps never hold the state lock, and `stop()` cuts
them short.

With `auth_secret` and/or `bearer_token`, the Signal Service's and the gateway's `/api/v1/*`
endpoints refuse unauthenticated requests with 401 as the real services do; `/health`, `/ready`,
the `/_sandbox/*` control API and the market-data service are never checked.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import random
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ValidationError

from orchestrator_cli.auth import (
    AUTHENTICATION_REQUIRED,
    INVALID_INTERNAL_TOKEN,
    verify_internal_request,
)
from orchestrator_cli.errors import ConfigError
from orchestrator_cli.sandbox import gateway, market, signal
from orchestrator_cli.sandbox.state import (
    KILL_SWITCH_DETAIL,
    OrderRefused,
    SandboxFaults,
    SandboxState,
    deeply_nested_json,
)

ORDER_PATH = "/api/v1/orders"
API_PREFIX = "/api/v1/"
INVALID_BEARER_TOKEN = "invalid_token"
AUTH_MESSAGES = {
    AUTHENTICATION_REQUIRED: "Service authentication required",
    INVALID_INTERNAL_TOKEN: "Invalid internal token",
    INVALID_BEARER_TOKEN: "Invalid bearer token",
}


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; a JSONDecodeError is answered 422."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # hold the answer this long (timeout after accept)
    drop: bool = False  # close the connection without any answer (drop after accept)


NOT_FOUND = _Reply(404, {"detail": "Not Found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of connects (a 1 s SYN retry each)

    def __init__(self, address: tuple[str, int], handler: type[_Handler], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup); loopback needs none.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or vanish mid-answer are normal under fault injection.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def wake(self) -> None:
        """Make serve_forever notice a shutdown now rather than at its next poll (on Linux a
        shut-down listening socket turns readable; elsewhere this may do nothing)."""
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)

    def close_connections(self) -> None:
        """Wake the threads blocked on idle keep-alive connections so they exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its own thread
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024
    server: _Server
    checks_auth = False  # the simulated platform services do; the market-data API does not
    service = ""  # the key of this service's count in Sandbox.requests_seen
    arrived = 0.0  # time.monotonic() when the request line came in

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: benchmarks send thousands of requests."""

    def parse_request(self) -> bool:
        # Called as soon as the request line has arrived: `latency_ms` counts from here.
        self.arrived = time.monotonic()
        return super().parse_request()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def route(self, request: _Request) -> _Reply:
        raise NotImplementedError

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return
        url = urlsplit(self.path)
        request = _Request(self.command, url.path, parse_qs(url.query), self.rfile.read(length))
        sandbox = self.server.sandbox
        answer_at = self.arrived
        if not url.path.startswith("/_sandbox/"):  # the control API is not a simulated service
            sandbox.count_request(self.service)
            answer_at += sandbox.faults.latency_ms / 1000
        refusal = None
        if self.checks_auth and url.path.startswith(API_PREFIX):
            headers = dict(self.headers.items())
            refusal = sandbox.authenticate(self.command, url.path, url.query, headers, request.body)
        try:
            reply = self.route(request) if refusal is None else refusal
        except json.JSONDecodeError as exc:
            detail = [{"type": "json_invalid", "loc": ["body", exc.pos], "msg": exc.msg}]
            reply = _Reply(422, {"detail": detail})
        except ValidationError as exc:
            reply = _Reply(422, {"detail": json.loads(exc.json(include_url=False))})
        if reply.status == 200 and sandbox.faults.nests(url.path):
            reply = replace(reply, body=deeply_nested_json())
        # A body given as bytes is sent as it is (hostile documents json.dumps cannot write).
        body = reply.body
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        sandbox.pause(answer_at - time.monotonic())  # the latency includes the work above
        if reply.drop:
            self.close_connection = True
            return
        sandbox.pause(reply.delay)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _SignalHandler(_Handler):
    checks_auth = True
    service = "signal"

    def route(self, request: _Request) -> _Reply:
        fault = self.server.sandbox.faults.signal_fault
        match request.method, request.path:
            case "POST", "/api/v1/signals/generate":
                strategy = self.server.sandbox.faults.signal_strategy
                return _Reply(*signal.generate(request.json(), fault, strategy))
            case "GET", "/health":
                return _Reply(*signal.health(fault, self.server.sandbox.faults.signal_strategy))
            case "GET", "/ready":
                return _Reply(*signal.ready(fault))
        return NOT_FOUND


class _MarketHandler(_Handler):
    service = "market_data"

    def route(self, request: _Request) -> _Reply:
        if (request.method, request.path) == ("GET", "/v2/stocks/snapshots"):
            sandbox = self.server.sandbox
            return _Reply(*market.snapshots(sandbox.state, sandbox.faults, request.query))
        return NOT_FOUND


class _GatewayHandler(_Handler):
    checks_auth = True
    service = "gateway"

    def route(self, request: _Request) -> _Reply:
        sandbox = self.server.sandbox
        state, faults = sandbox.state, sandbox.faults
        match request.method, request.path:
            case "POST", "/api/v1/orders":
                return self._submit(request)
            case "GET", path if path.startswith(ORDER_PATH + "/"):
                client_order_id = unquote(path[len(ORDER_PATH) + 1 :])
                return _Reply(*gateway.order_detail(state, client_order_id, faults.order_fault))
            case "GET", "/api/v1/positions":
                return _Reply(200, gateway.positions(state, faults.positions_fault))
            case "GET", "/api/v1/kill-switch/status":
                return _Reply(*gateway.kill_switch_status(state, faults))
            case "GET", "/api/v1/config":
                return _Reply(200, gateway.config(faults))
            case "GET", "/health":
                return _Reply(200, gateway.health(faults))
            case "GET", "/_sandbox/state":
                return _Reply(200, state.snapshot())
            case "POST", "/_sandbox/faults":
                return self._update_faults(request)
            case "POST", "/_sandbox/reset":
                state.reset()
                sandbox.rate_window.reset()
                return _Reply(200, state.snapshot())
        return NOT_FOUND

    def _submit(self, request: _Request) -> _Reply:
        """Faults in the order a real gateway would meet them; hang/drop only on new orders.

        The rate limit comes first and counts every request, as the real one's does.
        """
        sandbox = self.server.sandbox
        state, faults = sandbox.state, sandbox.faults
        state.count_post_attempt()
        if not sandbox.rate_window.admit(
            faults.rate_limit_per_window, faults.rate_limit_window_seconds
        ):
            return _Reply(*gateway.rate_limited(faults))
        ticket = gateway.parse_order(request.json())
        refusal = self._refusal_before_store()
        if refusal is not None:
            return refusal
        try:
            record, created = state.place_order(
                ticket,
                dry_run=faults.gateway_dry_run,
                max_position_shares=faults.max_position_shares,
                kill_switch_after_orders=faults.kill_switch_after_orders,
                strategy_id=faults.gateway_strategy,
            )
        except OrderRefused as exc:
            return _Reply(exc.status, {"detail": exc.detail})
        delay, drop = 0.0, False
        if created and sandbox.roll(faults.timeout_after_accept_rate):
            delay = faults.hang_seconds
        elif created and sandbox.roll(faults.drop_after_accept_rate):
            drop = True
        return _Reply(200, gateway.order_response(record, created=created), delay=delay, drop=drop)

    def _refusal_before_store(self) -> _Reply | None:
        """Kill switch, a safety state failing closed, random 429 and 503: no order created."""
        sandbox = self.server.sandbox
        state, faults = sandbox.state, sandbox.faults
        if gateway.kill_switch_engaged(state, faults):
            return _Reply(503, {"detail": KILL_SWITCH_DETAIL})
        fail_closed = gateway.fail_closed_refusal(faults)
        if fail_closed is not None:
            return _Reply(503, fail_closed)
        if sandbox.roll(faults.rate_limit_rate):
            retry_after = format(faults.retry_after_seconds, "g")
            return _Reply(429, {"detail": "Rate limit exceeded"}, {"Retry-After": retry_after})
        if sandbox.roll(faults.error_rate):
            return _Reply(503, {"detail": "Broker unavailable"})
        return None

    def _update_faults(self, request: _Request) -> _Reply:
        changes = request.json()
        if not isinstance(changes, dict):
            return _Reply(422, {"detail": "expected a JSON object of fault fields"})
        faults = self.server.sandbox.faults
        try:
            faults.update(changes)
        except ValueError as exc:
            return _Reply(422, {"detail": str(exc)})
        return _Reply(200, faults.as_json())


class Sandbox:
    """Signal Service, Execution Gateway and market data on three loopback ports."""

    def __init__(
        self,
        faults: SandboxFaults | None = None,
        *,
        state_file: Path | None = None,
        host: str = "127.0.0.1",
        signal_port: int = 0,
        gateway_port: int = 0,
        market_data_port: int = 0,
        auth_secret: str | None = None,
        bearer_token: str | None = None,
    ) -> None:
        self.auth_secret = auth_secret
        self.bearer_token = bearer_token
        self.auth_failures = 0  # refused /api/v1/* requests, under the state lock
        # Requests to each simulated service (the control API aside), under the state lock.
        self._requests_seen = {"signal": 0, "gateway": 0, "market_data": 0}
        self.rate_window = gateway.RateWindow()  # its `rejected` counts the window's 429s
        self._seen_nonces: set[str] = set()
        self.faults = faults if faults is not None else SandboxFaults()
        self.state = SandboxState(state_file)
        self._host = host
        self._ports = (signal_port, gateway_port, market_data_port)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._seed = self.faults.seed
        self._rng = random.Random(self._seed)

    def start(self) -> None:
        """Load the state file, bind the three ports (0 = any free one) and serve in threads."""
        if self._servers:
            raise RuntimeError("sandbox already started")
        try:
            self.state.load()
        except (
            OSError,
            ValueError,
            LookupError,
            TypeError,
            AttributeError,
            ArithmeticError,
        ) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise ConfigError(
                f"the sandbox's state file {self.state.path} cannot be used ({reason!r}): fix "
                "it, or delete it (and its .journal) to start from a flat book"
            ) from exc
        self._stopping.clear()
        handlers = (_SignalHandler, _GatewayHandler, _MarketHandler)
        try:
            for handler, port in zip(handlers, self._ports, strict=True):
                try:
                    self._servers.append(_Server((self._host, port), handler, self))
                except OSError as exc:
                    raise ConfigError(
                        f"cannot serve the sandbox on {self._host}:{port}: {exc.strerror}; "
                        "choose other ports (--port BASE, or 0 for any free ones)"
                    ) from exc
        except ConfigError:
            for server in self._servers:
                server.server_close()
            self._servers = []
            raise
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop serving, close every socket and save the state file; a no-op when stopped."""
        if not self._servers:
            return
        self._stopping.set()
        for server in self._servers:
            server.wake()
        for server in self._servers:
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []
        self.state.save()

    def wait(self) -> None:
        """Block until stop() is called or the user presses Ctrl-C."""
        try:
            self._stopping.wait()
        except KeyboardInterrupt:
            return

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def signal_url(self) -> str:
        return self._url(0)

    @property
    def gateway_url(self) -> str:
        return self._url(1)

    @property
    def market_data_url(self) -> str:
        return self._url(2)

    def _url(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError("sandbox not started")
        return f"http://{self._host}:{self._servers[index].server_port}"

    def count_request(self, service: str) -> None:
        with self.state.lock:
            self._requests_seen[service] += 1

    @property
    def requests_seen(self) -> dict[str, int]:
        """Requests each simulated service has received since the sandbox was made."""
        with self.state.lock:
            return dict(self._requests_seen)

    def pause(self, seconds: float) -> None:
        """Sleep for a fault, without any lock; stop() wakes every sleeper."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def authenticate(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> _Reply | None:
        """None when the request passes the configured checks, else the 401 reply.

        `path`, `query` and `body` are raw, exactly as received: the signature covers them.
        """
        code = None
        if self.bearer_token is not None:
            code = self._bearer_refusal(headers)
        if code is None and self.auth_secret is not None:
            with self.state.lock:  # checking the nonce and recording it is one step
                code = verify_internal_request(
                    self.auth_secret,
                    method=method,
                    path=path,
                    query=query,
                    headers=headers,
                    body=body,
                    now=time.time(),
                    seen_nonces=self._seen_nonces,
                )
        if code is None:
            return None
        with self.state.lock:
            self.auth_failures += 1
        return _Reply(401, {"detail": {"error": code, "message": AUTH_MESSAGES[code]}})

    def _bearer_refusal(self, headers: dict[str, str]) -> str | None:
        given = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not given:
            return AUTHENTICATION_REQUIRED
        # Compared as bytes: compare_digest refuses a non-ASCII str, and headers are untrusted.
        expected = f"Bearer {self.bearer_token}".encode()
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            return INVALID_BEARER_TOKEN
        return None

    def roll(self, rate: float) -> bool:
        """True with probability `rate`, from the seeded generator (reseeded if `seed` changes)."""
        if rate <= 0:
            return False
        with self.state.lock:
            if self.faults.seed != self._seed:
                self._seed = self.faults.seed
                self._rng.seed(self._seed)
            return self._rng.random() < rate
