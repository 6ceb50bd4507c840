"""Files and numbers from the operator are bounded: nothing is read or computed without limit."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import get_args

import pytest
from harness import settings_in
from typer.testing import CliRunner

from orchestrator_cli import cli
from orchestrator_cli.config import Settings
from orchestrator_cli.inputs import (
    MAX_INPUT_FILE_BYTES,
    InputFileError,
    parse_symbols,
    read_input_text,
)

DEV_ZERO = Path("/dev/zero")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated working directory and environment; nothing here reaches a service."""
    for name in settings_in(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/orch.db")
    # Nothing listens here: a test that got past the check would fail to connect, not trade.
    monkeypatch.setenv("SIGNAL_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("EXECUTION_GATEWAY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MARKET_DATA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("IGNORE_CALENDAR", "true")  # the same answer on any day
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def refused_with(result, *fragments: str) -> str:
    assert result.exit_code == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# --- read_input_text -------------------------------------------------------------------------


def test_a_file_at_the_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    path = tmp_path / "symbols.txt"
    path.write_text("A\n" * 50)
    assert read_input_text(path, limit=100) == "A\n" * 50
    path.write_text("A\n" * 50 + "B")
    with pytest.raises(InputFileError, match="larger than 100 bytes"):
        read_input_text(path, limit=100)


@pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero on this system")
def test_an_endless_file_is_refused_after_the_limit():
    with pytest.raises(InputFileError, match="larger than 10 MiB"):
        read_input_text(DEV_ZERO)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"AAPL\x00MSFT\n", "not a text file (NUL byte at offset 4)"),
        (b"AAPL\n\xff\xfeMSFT", "not UTF-8 text (byte 0xff at offset 5)"),
    ],
)
def test_binary_files_are_refused(tmp_path, data, problem):
    path = tmp_path / "f"
    path.write_bytes(data)
    with pytest.raises(InputFileError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_input_text(path)


def test_a_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\xef\xbb\xbfAAPL\n")
    assert read_input_text(path) == "AAPL\n"


# --- --symbols-file and PRICES_FILE ----------------------------------------------------------


@pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero on this system")
def test_symbols_file_dev_zero_is_refused_with_exit_4(env):
    result = invoke("run", "--symbols-file", str(DEV_ZERO))
    refused_with(result, "--symbols-file /dev/zero: it is larger than 10 MiB", "text file")


def test_binary_symbols_file_is_refused_with_exit_4(env):
    path = env / "universe.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    result = invoke("run", "--symbols-file", str(path))
    refused_with(result, f"--symbols-file {path}: it is not", "give a text file of symbols")


def test_a_long_wrong_symbols_file_makes_a_short_message(env):
    path = env / "universe.txt"
    path.write_text("\n".join(f"not a symbol {i} " * 20 for i in range(1000)))
    line = refused_with(invoke("run", "--symbols-file", str(path)), "not a ticker symbol", "more")
    assert len(line) < 300


def test_a_named_pipe_nobody_writes_to_is_refused_not_waited_on(env):
    """A cron job must not hang on `open` until it is killed."""
    fifo = env / "universe.fifo"
    os.mkfifo(fifo)
    refused_with(
        invoke("run", "--symbols-file", str(fifo)), f"--symbols-file {fifo} holds no symbols"
    )


def test_a_pipe_with_data_is_read():
    """`--symbols-file /dev/stdin` (or `<(command)`): what was written is read."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"AAPL,MSFT\n")
    os.close(write_end)
    try:
        assert parse_symbols(None, Path(f"/dev/fd/{read_end}")) == ["AAPL", "MSFT"]
    finally:
        os.close(read_end)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", " , ,\n"])
def test_a_symbols_file_without_symbols_says_so(env, text):
    path = env / "universe.txt"
    path.write_text(text)
    refused_with(
        invoke("run", "--symbols-file", str(path)), f"--symbols-file {path} holds no symbols"
    )


def test_a_trading_date_before_1900_is_refused(env):
    refused_with(invoke("run", "--symbols", "AAPL", "--as-of", "0001-01-01"), "is before 1900")


@pytest.mark.parametrize("text", ["20261127", "2026-W48-5", "2026-11-27T00:00", " 2026-11-27"])
def test_a_trading_date_in_another_format_is_refused(env, text):
    """What the README and the error say, YYYY-MM-DD, and nothing else Python would read."""
    refused_with(invoke("run", "--symbols", "AAPL", "--as-of", text), "use YYYY-MM-DD")


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "list", "--offset", "99999999999999999999"),
        ("runs", "list", "--offset", "1000000001"),
        ("run", "--symbols", "AAPL", "--top-n", "99999999999999999999999"),
        ("run", "--symbols", "AAPL", "--bottom-n", "1000001"),
    ],
)
def test_counting_options_have_an_upper_bound(env, args):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "less than or equal to" in result.output


@pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero on this system")
def test_prices_file_dev_zero_is_refused_with_exit_4(env, monkeypatch):
    monkeypatch.setenv("PRICE_SOURCE", "file")
    monkeypatch.setenv("PRICES_FILE", str(DEV_ZERO))
    result = invoke("run", "--symbols", "AAPL")
    refused_with(result, "PRICES_FILE /dev/zero: it is larger than 10 MiB")
    assert not (env / "orch.db").exists()


def test_max_input_file_bytes_is_10_mib():
    assert MAX_INPUT_FILE_BYTES == 10 * 1024 * 1024


# --- every numeric setting has an upper bound -----------------------------------------------


def numeric_settings() -> list[str]:
    """Every setting whose value is a number (int, float or Decimal, optional or not)."""
    names = []
    for name, field in Settings.model_fields.items():
        kinds = get_args(field.annotation) or (field.annotation,)
        if any(kind in (int, float, Decimal) for kind in kinds):
            names.append(name)
    return names


def test_the_numeric_settings_are_found():
    assert {"lock_stale_seconds", "max_price_age_seconds", "capital"} <= set(numeric_settings())
    assert "dry_run" not in numeric_settings()


@pytest.mark.parametrize("value", ["1e300", "1" + "0" * 300])
@pytest.mark.parametrize("name", numeric_settings())
def test_an_absurd_number_is_refused_naming_the_variable(env, monkeypatch, name, value):
    variable = name.upper()
    monkeypatch.setenv(variable, value)
    result = invoke("run", "--symbols", "AAPL")
    refused_with(result, f"{variable}: ")
    assert not (env / "orch.db").exists()


@pytest.mark.parametrize("name", numeric_settings())
def test_each_numeric_setting_documents_its_upper_bound(name):
    field = Settings.model_fields[name]
    bounded = any(
        getattr(meta, "le", None) is not None
        or getattr(meta, "lt", None) is not None
        or getattr(meta, "max_digits", None) is not None
        for meta in field.metadata
    )
    assert bounded, f"{name} has no upper bound"
