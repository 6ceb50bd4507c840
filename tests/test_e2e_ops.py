"""End to end: heartbeat pings, metrics, notifications and JSON logs of the real `orch run`.

A loopback recorder stands in for healthchecks.io, the Pushgateway and a chat webhook: it
records each request's method, path and body and answers 200 (or 500, when told to).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import Orch
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_cli.sandbox import Sandbox, SandboxFaults

pytestmark = pytest.mark.e2e

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,TSLA"
PING_TOKEN = "5f0c1d2e-ping-token-7a8b"
HOOK_TOKEN = "T000/B000/hook-secret-xyz"
GATEWAY_TOKEN = "gw-bearer-secret-123"
METRIC_NAMES = {
    "orch_run_last_timestamp_seconds",
    "orch_run_last_success_timestamp_seconds",
    "orch_run_status",
    "orch_run_duration_seconds",
    "orch_orders_total",
    "orch_run_exit_code",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes


@dataclass
class Recorder:
    """What the loopback monitoring endpoints were sent; `status` is what they answer."""

    url: str
    requests: list[Request] = field(default_factory=list)
    status: int = 200

    def paths(self, prefix: str) -> list[str]:
        return [r.path for r in self.requests if r.path.startswith(prefix)]

    def bodies(self, prefix: str) -> list[bytes]:
        return [r.body for r in self.requests if r.path.startswith(prefix)]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    lock = threading.Lock()
    recording = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                recording.requests.append(Request(self.command, self.path, body))
            reason = b"OK" if recording.status == 200 else b"Error"
            # Headers and body in one write (see STYLE: Nagle and delayed ACK).
            self.wfile.write(
                b"HTTP/1.1 %d %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                % (recording.status, reason)
            )

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recording.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recording
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=7)) as running:
        yield running


@pytest.fixture
def orch(tmp_path: Path, sandbox: Sandbox) -> Orch:
    return Orch.at_sandbox(
        tmp_path, sandbox, f"sqlite:///{tmp_path}/orch.db", HTTP_TIMEOUT_SECONDS="5"
    )


def monitored(recorder: Recorder, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HEARTBEAT_URL": f"{recorder.url}/ping/{PING_TOKEN}",
        "NOTIFY_WEBHOOK_URL": f"{recorder.url}/hook/{HOOK_TOKEN}",
        "METRICS_FILE": str(tmp_path / "orch.prom"),
        **extra,
    }


def read_metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, parsed as node-exporter would."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def value(metrics: dict, name: str, **labels: str) -> float:
    key = tuple(sorted({"strategy_id": "alpha_baseline", **labels}.items()))
    return metrics[name][key]


def json_lines(stderr: str) -> list[dict]:
    lines = stderr.strip().splitlines()
    assert lines, "no log line at all"
    records = [json.loads(line) for line in lines]  # each line alone is valid JSON
    for record in records:
        assert {"ts", "level", "msg"} <= set(record), record
        assert record["ts"].endswith("Z")
    return records


def test_a_completed_run_pings_writes_metrics_and_notifies_nobody(
    orch: Orch, recorder: Recorder, tmp_path: Path
) -> None:
    env = monitored(
        recorder,
        tmp_path,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        LOG_FILE=str(tmp_path / "orch.log"),
        GATEWAY_API_TOKEN=GATEWAY_TOKEN,
    )
    done = orch("run", "--symbols", SYMBOLS, **env)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout  # the human table is unchanged
    assert recorder.paths("/ping") == [f"/ping/{PING_TOKEN}/start", f"/ping/{PING_TOKEN}"]
    assert [r.method for r in recorder.requests] == ["GET", "GET"]
    assert recorder.paths("/hook") == []  # NOTIFY_ON=problems

    metrics = read_metrics(tmp_path / "orch.prom")
    assert set(metrics) == METRIC_NAMES
    for series in metrics.values():
        assert all(dict(labels)["strategy_id"] == "alpha_baseline" for labels in series)
    assert value(metrics, "orch_run_exit_code") == 0
    assert value(metrics, "orch_run_status", status="completed") == 1
    for other in ("running", "partial", "failed"):
        assert value(metrics, "orch_run_status", status=other) == 0
    accepted = value(metrics, "orch_orders_total", outcome="accepted")
    assert accepted >= 1
    for outcome in ("rejected", "blocked", "unknown", "not_sent"):
        assert value(metrics, "orch_orders_total", outcome=outcome) == 0
    assert value(metrics, "orch_run_duration_seconds", phase="total") > 0
    last = value(metrics, "orch_run_last_timestamp_seconds")
    assert value(metrics, "orch_run_last_success_timestamp_seconds") == last

    records = json_lines(done.stderr)
    run_records = [r for r in records if "run_id" in r]
    assert run_records, records
    assert {r["strategy_id"] for r in run_records} == {"alpha_baseline"}
    (end,) = [r for r in records if "exit_code" in r]
    assert end["status"] == "completed"
    assert end["num_orders_accepted"] == accepted
    for secret in (PING_TOKEN, HOOK_TOKEN, GATEWAY_TOKEN):
        assert secret not in done.stderr
    log_file = (tmp_path / "orch.log").read_text()
    assert log_file == done.stderr  # the same lines, appended
    assert GATEWAY_TOKEN not in (tmp_path / "orch.prom").read_text()


def test_a_failed_run_pings_its_code_notifies_and_keeps_the_last_success(
    orch: Orch, sandbox: Sandbox, recorder: Recorder, tmp_path: Path
) -> None:
    env = monitored(recorder, tmp_path, PUSHGATEWAY_URL=f"{recorder.url}/gateway")
    assert orch("run", "--symbols", SYMBOLS, **env).returncode == 0
    success = value(read_metrics(tmp_path / "orch.prom"), "orch_run_last_success_timestamp_seconds")
    recorder.requests.clear()

    sandbox.faults.signal_fault = "http_500"
    done = orch("run", "--symbols", SYMBOLS, "--force", LOG_FORMAT="json", **env)
    assert done.returncode == 1, done.stderr
    assert recorder.paths("/ping") == [f"/ping/{PING_TOKEN}/start", f"/ping/{PING_TOKEN}/1"]

    (posted,) = recorder.bodies("/hook")
    text = json.loads(posted)["text"]
    assert "alpha_baseline" in text
    assert "failed (exit 1)" in text
    assert "error: " in text
    assert "500" in text

    metrics = read_metrics(tmp_path / "orch.prom")
    assert value(metrics, "orch_run_exit_code") == 1
    assert value(metrics, "orch_run_status", status="failed") == 1
    assert value(metrics, "orch_run_status", status="completed") == 0
    assert value(metrics, "orch_run_last_success_timestamp_seconds") == success
    assert value(metrics, "orch_run_last_timestamp_seconds") > success

    # The Pushgateway gets the same, grouped by strategy, without a success to overwrite.
    (pushed,) = [r for r in recorder.requests if r.path.startswith("/gateway")]
    assert pushed.method == "POST"
    assert pushed.path == "/gateway/metrics/job/orch/strategy_id/alpha_baseline"
    names = {f.name for f in text_string_to_metric_families(pushed.body.decode())}
    assert names == METRIC_NAMES - {"orch_run_last_success_timestamp_seconds"}
    json_lines(done.stderr)
    assert PING_TOKEN not in done.stderr
    assert HOOK_TOKEN not in done.stderr


@pytest.mark.parametrize(("faulty", "code"), [(None, 0), ("http_500", 1)])
def test_failing_monitoring_endpoints_warn_and_keep_the_exit_code(
    orch: Orch, sandbox: Sandbox, recorder: Recorder, tmp_path: Path, faulty, code
) -> None:
    sandbox.faults.signal_fault = faulty
    recorder.status = 500
    env = monitored(recorder, tmp_path, NOTIFY_ON="always", PUSHGATEWAY_URL=closed_port_url())
    done = orch("run", "--symbols", SYMBOLS, **env)
    assert done.returncode == code, done.stderr
    # Two attempts at each ping, one post: all answered 500.
    assert len(recorder.paths(f"/ping/{PING_TOKEN}/start")) == 2
    assert len(recorder.paths("/hook")) == 1
    assert "heartbeat ping /start to 127.0.0.1" in done.stderr
    assert "notification to 127.0.0.1" in done.stderr
    assert "push to http://127.0.0.1" in done.stderr
    assert PING_TOKEN not in done.stderr
    assert HOOK_TOKEN not in done.stderr
    assert value(read_metrics(tmp_path / "orch.prom"), "orch_run_exit_code") == code


def test_unreachable_heartbeat_and_webhook_only_warn(
    orch: Orch, recorder: Recorder, tmp_path: Path
) -> None:
    nowhere = closed_port_url()
    done = orch(
        "run",
        "--symbols",
        SYMBOLS,
        HEARTBEAT_URL=f"{nowhere}/{PING_TOKEN}",
        NOTIFY_WEBHOOK_URL=f"{nowhere}/{HOOK_TOKEN}",
        NOTIFY_ON="always",
    )
    assert done.returncode == 0, done.stderr
    assert "heartbeat ping /start" in done.stderr
    assert "(ConnectionError)" in done.stderr
    assert PING_TOKEN not in done.stderr
    assert HOOK_TOKEN not in done.stderr


def test_without_the_settings_nothing_is_contacted_or_imported(
    orch: Orch, recorder: Recorder, tmp_path: Path
) -> None:
    done = orch("run", "--symbols", SYMBOLS, PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0, done.stderr
    assert recorder.requests == []
    imported = done.stderr
    for module in ("prometheus_client", "orchestrator_cli.heartbeat", "orchestrator_cli.notify"):
        assert f" {module}\n" not in imported
        assert f" {module}." not in imported
    assert not any(line.startswith("{") for line in done.stderr.splitlines())
    assert list(tmp_path.glob("*.prom")) == []


def test_a_bad_log_file_is_refused_before_anything_is_contacted(
    orch: Orch, sandbox: Sandbox, recorder: Recorder, tmp_path: Path
) -> None:
    env = monitored(recorder, tmp_path, LOG_FILE=str(tmp_path / "missing" / "orch.log"))
    done = orch("run", "--symbols", SYMBOLS, **env)
    assert done.returncode == 4, done.stderr
    assert "LOG_FILE" in done.stderr
    assert "does not exist" in done.stderr
    assert recorder.requests == []
    assert sandbox.state.post_attempts == 0


def test_a_bad_heartbeat_url_is_refused_without_showing_it(orch: Orch, recorder: Recorder) -> None:
    done = orch("run", "--symbols", SYMBOLS, HEARTBEAT_URL=f"ftp://example.com/{PING_TOKEN}")
    assert done.returncode == 4, done.stderr
    assert "HEARTBEAT_URL" in done.stderr
    assert PING_TOKEN not in done.stderr


def test_an_error_is_a_json_line_and_is_pinged(orch: Orch, recorder: Recorder) -> None:
    done = orch(
        "run",
        "--symbols",
        "NOT A SYMBOL",
        LOG_FORMAT="json",
        LOG_LEVEL="CRITICAL",  # the error line is shown all the same, as in text mode
        HEARTBEAT_URL=f"{recorder.url}/ping/{PING_TOKEN}",
    )
    assert done.returncode == 4, done.stderr
    (error,) = [r for r in json_lines(done.stderr) if r["level"] == "ERROR"]
    assert error["msg"].startswith("Error: not a ticker symbol")
    assert recorder.paths("/ping") == [f"/ping/{PING_TOKEN}/start", f"/ping/{PING_TOKEN}/4"]


def test_a_bad_option_is_an_error_line_in_the_log_format_asked_for(orch: Orch) -> None:
    """The options are refused, the environment is not: its LOG_FORMAT still applies."""
    done = orch("run", "--symbols", SYMBOLS, "--capital", "-5", LOG_FORMAT="json")
    assert done.returncode == 4, done.stderr
    (error,) = json_lines(done.stderr)
    assert error["level"] == "ERROR"
    assert error["msg"].startswith("Error: invalid configuration: --capital")


def test_a_librarys_warning_is_a_json_line_too(orch: Orch, tmp_path: Path) -> None:
    """SQLAlchemy warns about a query argument it ignores: under LOG_FORMAT=json, as a record."""
    url = f"sqlite:///{tmp_path}/orch.db?mode=ro"
    done = orch("runs", "list", LOG_FORMAT="json", LOG_LEVEL="WARNING", DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    (warning,) = json_lines(done.stderr)
    assert (warning["level"], warning["logger"]) == ("WARNING", "py.warnings")
    assert "SAWarning" in warning["msg"]


def test_resume_is_observed_too(
    orch: Orch, sandbox: Sandbox, recorder: Recorder, tmp_path: Path
) -> None:
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 0
    done = orch("runs", "resume", run["run_id"], **monitored(recorder, tmp_path))
    assert done.returncode == 0, done.stderr
    assert recorder.paths("/ping") == [f"/ping/{PING_TOKEN}/start", f"/ping/{PING_TOKEN}"]
    metrics = read_metrics(tmp_path / "orch.prom")
    assert value(metrics, "orch_run_status", status="completed") == 1
