"""The real `orch` command in its own process, in an environment the developer's cannot leak into.

Used by the end-to-end tests and the fault trials to build the environment and run `orch`, and
by the CLI tests to clear the same variables in-process. Which variables orch reads is derived
from the settings model, so a new setting is scrubbed without anyone updating a list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from orchestrator_cli.config import Settings
from orchestrator_cli.sandbox import Sandbox

ORCH_COMMAND = (sys.executable, "-m", "orchestrator_cli")
DEFAULT_TIMEOUT = 120.0


def _settings_variables() -> frozenset[str]:
    """The variable each settings field is read from: its name (after any prefix), upper-cased."""
    config = Settings.model_config
    if config.get("case_sensitive"):
        raise RuntimeError("Settings became case-sensitive: match variable names exactly here")
    prefix = config.get("env_prefix") or ""
    for name, field in Settings.model_fields.items():
        if field.alias is not None or field.validation_alias is not None:
            raise RuntimeError(f"Settings.{name} has an alias: scrub that variable too")
    return frozenset(f"{prefix}{name}".upper() for name in Settings.model_fields)


SETTINGS_VARIABLES = _settings_variables()


def is_setting(name: str) -> bool:
    """Whether orch reads the variable `name` as a setting (names match in any case)."""
    return name.upper() in SETTINGS_VARIABLES


def settings_in(environ: Mapping[str, str]) -> list[str]:
    """The variables of `environ` that orch would read as settings."""
    return [name for name in environ if is_setting(name)]


def scrubbed_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) without any variable orch reads as a setting."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if not is_setting(name)}


def orch_environ(home: Path, **variables: str) -> dict[str, str]:
    """The scrubbed environment, orch's data directory under `home`, then `variables` on top."""
    return {
        **scrubbed_environ(),
        # Not settings, but read by orch or a library it uses; nothing else is scrubbed.
        # platformdirs' data directory: home of the default SQLite database and of the
        # `--sandbox` state file, so both stay under the test's own directory.
        "XDG_DATA_HOME": str(home / "data"),
        # Rich's width when orch writes to a terminal (a pipe, as here, gets 180 columns):
        # pinned so that the developer's terminal cannot change what a test reads.
        "COLUMNS": "200",
        "LOG_LEVEL": "WARNING",  # stderr carries warnings and errors only
        # Runs go ahead whatever today is (a weekend, a holiday, after the close); the
        # calendar's own tests set IGNORE_CALENDAR=false.
        "IGNORE_CALENDAR": "true",
        **variables,
    }


def sandbox_variables(sandbox: Sandbox, database_url: str) -> dict[str, str]:
    """The settings that point orch at the sandbox's three services and at `database_url`."""
    return {
        "SIGNAL_SERVICE_URL": sandbox.signal_url,
        "EXECUTION_GATEWAY_URL": sandbox.gateway_url,
        "MARKET_DATA_URL": sandbox.market_data_url,
        "PRICE_SOURCE": "alpaca",
        "DATABASE_URL": database_url,
    }


class Orch:
    """Runs `python -m orchestrator_cli` in `cwd` with `env`; keyword arguments to a call add
    variables for that call only. A call that outlives `timeout` seconds raises."""

    def __init__(
        self, cwd: Path, env: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.timeout = timeout

    @classmethod
    def at_sandbox(
        cls,
        cwd: Path,
        sandbox: Sandbox,
        database_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        **env: str,
    ) -> Orch:
        """orch in `cwd` (its data directory under it) against `sandbox` and `database_url`."""
        variables = {**sandbox_variables(sandbox, database_url), **env}
        return cls(cwd, orch_environ(cwd, **variables), timeout=timeout)

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def command(self, *args: str) -> list[str]:
        return [*ORCH_COMMAND, *args]

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run to the end; stdout and stderr captured as text."""
        return subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )

    def start(
        self,
        *args: str,
        stdout: int | IO[Any] = subprocess.PIPE,
        stderr: int | IO[Any] = subprocess.PIPE,
        **env: str,
    ) -> subprocess.Popen[str]:
        """Start without waiting (to signal or race it); output piped as text unless redirected."""
        return subprocess.Popen(
            self.command(*args),
            cwd=self.cwd,
            env={**self.env, **env},
            stdout=stdout,
            stderr=stderr,
            text=True,
        )

    def json(self, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
        """Run with `--json`: the exit code and the one document printed on stdout."""
        done = self(*args, "--json", **env)
        assert done.stdout.strip(), done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return done.returncode, document
