"""`orch config`: the effective value of every setting, its variable and where it came from.

The source is read the way pydantic-settings reads values: a variable in the environment (names
match in any case) beats one in `.env`, which beats the default. No setting has a flag outside
`orch run`, so `flag` never appears here. Secrets are `***` (or unset), URLs have their
password masked; nothing printed can carry a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator_cli.config import BLANK_KEEPS_DEFAULT, Settings, env_file_warnings, mask_url
from orchestrator_cli.layout import print_table

Source = Literal["environment", ".env", "default"]
MASKED = "***"
UNSET = "-"


@dataclass(frozen=True)
class SettingRow:
    """One setting: its field name, variable, shown value (None: not set) and source."""

    name: str
    env: str
    value: str | None
    source: Source


@dataclass(frozen=True)
class ConfigReport:
    settings: tuple[SettingRow, ...]
    warnings: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        """The `--json` document: `{"settings": [{"name", "env", "value", "source"}],
        "warnings": [...]}`; a value not set is null."""
        return {
            "settings": [
                {"name": row.name, "env": row.env, "value": row.value, "source": row.source}
                for row in self.settings
            ],
            "warnings": list(self.warnings),
        }


def env_file_path() -> Path:
    """The `.env` file Settings reads (relative to the working directory)."""
    configured = Settings.model_config.get("env_file")
    return Path(str(configured or ".env"))


def env_file_names(path: Path) -> set[str]:
    """The upper-cased keys `.env` gives a value (a bare `KEY` line gives none, and a blank
    `KEY=` of a setting that takes a blank as its default does not count either)."""
    if not path.is_file():
        return set()
    from dotenv import dotenv_values

    return {
        key.strip().upper()
        for key, value in dotenv_values(path).items()
        if value is not None and not _blank_is_default(key, value)
    }


def _blank_is_default(variable: str, value: str) -> bool:
    """A blank value of a limit keeps its default (`MAX_GROSS_EXPOSURE=` removes nothing)."""
    return not value.strip() and variable.strip().lower() in BLANK_KEEPS_DEFAULT


def source_of(variable: str, environ: Mapping[str, str], env_file: set[str]) -> Source:
    """Where pydantic-settings took `variable` from (names match in any case)."""
    given = (name for name, value in environ.items() if not _blank_is_default(name, value))
    if any(name.upper() == variable for name in given):
        return "environment"
    if variable in env_file:
        return ".env"
    return "default"


def shown(name: str, value: Any) -> str | None:
    """A setting's value as text safe to print: secrets masked, URL passwords masked."""
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return MASKED
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset | set):
        return ",".join(sorted(value)) or None
    if isinstance(value, Decimal):
        return format(value, "f")
    if name.endswith("_url"):
        return mask_url(str(value))
    return str(value)


def config_report(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> ConfigReport:
    """Every field of `Settings`, in declaration order, with its source; `.env` typo warnings."""
    environment = os.environ if environ is None else environ
    path = env_file_path() if env_file is None else env_file
    from_file = env_file_names(path)
    rows = []
    for name in Settings.model_fields:
        variable = name.upper()
        rows.append(
            SettingRow(
                name=name,
                env=variable,
                value=shown(name, getattr(settings, name)),
                source=source_of(variable, environment, from_file),
            )
        )
    return ConfigReport(tuple(rows), tuple(env_file_warnings(path)))


def print_report(out: Console, err: Console, report: ConfigReport) -> None:
    """The settings table on `out`, the `.env` warnings on `err`; every value as data."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("variable", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", no_wrap=True)
    for row in report.settings:
        source_style = "dim" if row.source == "default" else ""
        table.add_row(
            Text(row.env),
            Text(UNSET if row.value is None else row.value),
            Text(row.source, style=source_style),
        )
    print_table(out, table)
    for warning in report.warnings:
        err.print(Text.assemble(("Warning: ", "yellow"), warning))
