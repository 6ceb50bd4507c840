"""Fault-injection harness: per-trial seeds, the session's tally, a killable TCP proxy.

Every trial derives its seed from ORCH_FAULT_SEED (default 20261124), its scenario and its
index, prints it, and attaches it to a failure report, so one failing trial is replayed with
`ORCH_FAULT_SEED=<seed> pytest "tests/faults/test_faults.py::test_<scenario>[t<index>]"`.
At the end of the session a table of trials per scenario is printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

from orchestrator_cli import db

FAULT_SEED_ENV = "ORCH_FAULT_SEED"
DEFAULT_FAULT_SEED = 20261124


def base_seed() -> int:
    """The session's seed: ORCH_FAULT_SEED, or the fixed default."""
    raw = os.environ.get(FAULT_SEED_ENV, "").strip()
    return int(raw) if raw else DEFAULT_FAULT_SEED


def trial_seed(base: int, scenario: str, index: int) -> int:
    """A trial's own seed: stable for (base seed, scenario, index)."""
    digest = hashlib.sha256(f"{base}:{scenario}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass
class Tally:
    """One scenario's results in this session."""

    trials: int = 0
    passed: int = 0
    skipped: int = 0
    duplicates: int = 0
    unrecorded: int = 0


@dataclass
class Trial:
    """One randomised trial: its seed, its random generator, and what its audit found."""

    scenario: str
    index: int
    seed: int
    base: int
    rng: random.Random
    duplicates: int = 0
    unrecorded: int = 0

    @property
    def replay(self) -> str:
        test = f"tests/faults/test_faults.py::test_{self.scenario}[t{self.index:02d}]"
        return (
            f"{self.scenario} trial {self.index}, seed {self.seed} "
            f'(replay: {FAULT_SEED_ENV}={self.base} pytest "{test}")'
        )

    def found(self, *, duplicates: int, unrecorded: int) -> None:
        """Add what an audit found (counted in the session table even when the trial fails)."""
        self.duplicates += duplicates
        self.unrecorded += unrecorded


TALLIES: dict[str, Tally] = {}
TRIAL_KEY = pytest.StashKey[Trial]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection trials")


def _scenario(item: pytest.Item) -> str:
    name = getattr(item, "originalname", item.name)
    return name.removeprefix("test_")


@pytest.fixture
def trial(request: pytest.FixtureRequest) -> Trial:
    """This test's trial; the test must be parametrised over `index`."""
    scenario = _scenario(request.node)
    index: int = request.node.callspec.params["index"]
    base = base_seed()
    seed = trial_seed(base, scenario, index)
    made = Trial(scenario, index, seed, base, random.Random(seed))
    request.node.stash[TRIAL_KEY] = made
    print(made.replay)  # noqa: T201 - shown with the captured output of a failure
    return made


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if item.get_closest_marker("faults") is None:
        return report
    tally = TALLIES.setdefault(_scenario(item), Tally())
    made = item.stash.get(TRIAL_KEY, None)
    if report.skipped and report.when == "setup":
        tally.skipped += 1
    elif report.when == "call" or (report.when == "setup" and report.failed):
        tally.trials += 1
        tally.passed += report.passed
        if made is not None:
            tally.duplicates += made.duplicates
            tally.unrecorded += made.unrecorded
    if report.failed and made is not None:
        report.sections.append(("fault trial", made.replay))
    return report


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not TALLIES:
        return
    seed = base_seed()
    terminalreporter.write_sep("=", f"fault-injection trials ({FAULT_SEED_ENV}={seed})")
    header = f"{'scenario':<18}{'trials':>7}{'passed':>8}{'dups':>6}{'unrecorded':>12}{'seed':>10}"
    terminalreporter.write_line(header)
    for scenario, tally in TALLIES.items():
        terminalreporter.write_line(
            f"{scenario:<18}{tally.trials:>7}{tally.passed:>8}{tally.duplicates:>6}"
            f"{tally.unrecorded:>12}{seed:>10}"
        )
    for scenario, tally in TALLIES.items():
        skipped = f", {tally.skipped} skipped" if tally.skipped else ""
        terminalreporter.write_line(
            f"{scenario}: {tally.trials} trials, {tally.passed} ok, {tally.duplicates} "
            f"duplicates, {tally.unrecorded} unrecorded{skipped} (seed {seed})"
        )


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the head migration, copied by each trial (migrating costs ~0.3 s)."""
    path = tmp_path_factory.mktemp("faults-template") / "orch.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        db.upgrade_database(engine)
    finally:
        engine.dispose()
    return path


class TcpProxy:
    """Forwards loopback connections to `upstream` until `kill()` cuts every one at once.

    Stands for a database server that goes away: after kill, open connections see EOF and
    new ones are refused (the listening port is closed).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._killed = False
        self._acceptor = threading.Thread(target=self._accept_forever, daemon=True)
        self._acceptor.start()

    def _accept_forever(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was shut down by kill()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._killed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
                pumps = [
                    threading.Thread(target=self._pump, args=pair, daemon=True)
                    for pair in ((client, server), (server, client))
                ]
                self._threads += pumps
            for pump in pumps:
                pump.start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass  # cut by kill() or by either end
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def kill(self) -> None:
        """Stop accepting and cut every connection; idempotent."""
        with self._lock:
            if self._killed:
                return
            self._killed = True
            sockets, threads = list(self._sockets), list(self._threads)
        # shutdown (not close) wakes the threads blocked in accept/recv without racing on fds.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=10)
        for thread in threads:
            thread.join(timeout=10)
        self._listener.close()
        for sock in sockets:
            sock.close()


@pytest.fixture
def make_tcp_proxy() -> Iterator[Callable[[tuple[str, int]], TcpProxy]]:
    """`make_tcp_proxy((host, port))`: a started proxy; every one is killed at teardown."""
    made: list[TcpProxy] = []

    def make(upstream: tuple[str, int]) -> TcpProxy:
        proxy = TcpProxy(upstream)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.kill()
