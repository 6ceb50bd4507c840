"""Settings: flags beat the environment, which beats `.env`, which beats the defaults.

No instance is created at import time; `load_settings()` builds and validates one, turning every
problem into a `ConfigError` that names the environment variable (or the flag) to fix.
"""

from __future__ import annotations

import difflib
import importlib.util
import io
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator_cli.errors import ConfigError

APP_NAME = "orch"
ALPACA_DATA_HOST = "data.alpaca.markets"

PriceSourceName = Literal["alpaca", "file", "redis"]
DAY_SECONDS = 86_400
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]
NotifyOn = Literal["problems", "always", "never"]


# The limits that `0`, `off` or `none` turn off, and that a blank value leaves at their default.
BLANK_KEEPS_DEFAULT = (
    "max_order_notional",
    "max_gross_exposure",
    "max_orders_per_run",
    "max_price_move_pct",
)


def data_dir() -> Path:
    """The per-user directory for the default SQLite database and the sandbox state."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_database_url() -> str:
    """A SQLite file in the user's data directory."""
    return f"sqlite:///{data_dir() / 'orch.db'}"


def sandbox_state_path(settings: Settings) -> Path:
    """Where `--sandbox` keeps simulated positions and orders between runs."""
    return settings.sandbox_state_file or data_dir() / "sandbox-state.json"


def sandbox_settings(settings: Settings) -> Settings:
    """`settings` with the database `--sandbox` records its runs in: a SQLite file beside the
    sandbox's state (`sandbox-state.db`), never DATABASE_URL.

    A rehearsal's runs are kept apart from the real ones: a sandbox run can neither finish an
    interrupted real run against simulated services, nor make the day's real run "already
    completed", nor hold its lock or change its orders' ids; and the runs recorded there are
    the ones that made the sandbox's positions.
    """
    state = sandbox_state_path(settings)
    database = state.with_suffix(".db")
    if database == state:
        database = state.with_name(f"{state.name}.runs.db")
    real = settings.database_url.removeprefix("sqlite:///").split("?")[0]
    if settings.database_url.startswith("sqlite:///") and _same_file(Path(real), database):
        raise ConfigError(
            f"SANDBOX_STATE_FILE {state} would record sandbox runs in {database}, which is "
            "DATABASE_URL: give the sandbox's state file another name"
        )
    return settings.model_copy(update={"database_url": f"sqlite:///{database}"})


def _same_file(one: Path, other: Path) -> bool:
    if one.exists() and other.exists():
        return one.samefile(other)
    return one.expanduser().resolve() == other.expanduser().resolve()


def _check_http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise ValueError(f"not an http(s) URL (bad port): {mask_url(value)!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in value.strip())
    ):
        raise ValueError(f"not an http(s) URL: {mask_url(value)!r}")
    return value.strip().rstrip("/")


class Settings(BaseSettings):
    """Every knob of `orch`; field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    signal_service_url: str = "http://localhost:8001"
    execution_gateway_url: str = "http://localhost:8002"
    database_url: str = Field(default_factory=default_database_url)
    capital: Decimal = Field(default=Decimal("100000"), gt=0, max_digits=16, decimal_places=2)
    max_position_size: Decimal = Field(
        default=Decimal("20000"), gt=0, max_digits=16, decimal_places=2
    )
    strategy_id: str = Field(default="alpha_baseline", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    dry_run: bool = False
    log_level: LogLevel = "INFO"

    price_source: PriceSourceName = "alpaca"
    market_data_url: str = "https://data.alpaca.markets"
    alpaca_api_key_id: SecretStr | None = None
    alpaca_api_secret_key: SecretStr | None = None
    prices_file: Path | None = None
    # The gateway's own fat-finger check treats a quote older than 30 s as missing.
    max_price_age_seconds: int = Field(default=30, gt=0, le=DAY_SECONDS)
    # A quote further than this (%) from its previous close is a wrong price (None/0: off).
    # 25: wide enough for nearly every genuine overnight move of a listed stock, narrow enough
    # to catch a mis-scaled or mis-keyed quote (a decimal slip is 90% off).
    max_price_move_pct: Decimal | None = Field(
        default=Decimal(25), gt=0, le=1000, allow_inf_nan=False
    )

    # Every number has an upper bound, so time arithmetic (deadlines, lock staleness) cannot
    # overflow and a typo (1e300) is refused with its name rather than failing mid-run.
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)
    http_max_attempts: int = Field(default=3, ge=1, le=10)
    order_concurrency: int = Field(default=8, ge=1, le=64)

    run_deadline_seconds: float = Field(default=300.0, gt=0, le=DAY_SECONDS, allow_inf_nan=False)
    # At least locking.MIN_STALE_SECONDS: a holder confirms its hold well within it.
    lock_stale_seconds: float = Field(default=60.0, ge=10, le=DAY_SECONDS, allow_inf_nan=False)

    # The exchange calendar (an exchange_calendars code, checked when first used): on a day
    # without a session a run sends nothing, and no order goes out after the session's close.
    market_calendar: str = "XNYS"
    ignore_calendar: bool = False

    # Client-side pacing of order submissions (retries included), across all workers; off
    # (None or 0) by default. Set it at or a little below the gateway's own cap.
    gateway_max_orders_per_minute: int | None = Field(default=None, ge=1, le=6000)

    # Pre-trade limits (None or 0: off), checked on the whole plan before anything is sent.
    max_order_notional: Decimal | None = Field(default=None, gt=0, max_digits=17, decimal_places=2)
    max_gross_exposure: Decimal | None = Field(
        default=Decimal("2"), gt=0, le=100, allow_inf_nan=False
    )
    max_orders_per_run: int | None = Field(default=None, gt=0, le=1_000_000)
    long_only: bool = False
    restricted_symbols: Annotated[frozenset[str], NoDecode] = Field(default_factory=frozenset)
    min_trade_dollars: Decimal = Field(default=Decimal(0), ge=0, max_digits=17, decimal_places=2)
    min_trade_pct: Decimal = Field(default=Decimal(0), ge=0, le=100, allow_inf_nan=False)
    allow_live_trading: bool = False

    # Service authentication: the platform's HMAC scheme, or bearer tokens.
    internal_token_secret: SecretStr | None = None
    service_id: str = Field(default="orchestrator", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    gateway_api_token: SecretStr | None = None
    signal_api_token: SecretStr | None = None

    redis_url: str = "redis://127.0.0.1:6379/0"

    sandbox_state_file: Path | None = None

    # Operations (all off by default; see README "Monitoring"). The heartbeat and webhook URLs
    # carry their secret in the path, so they are secrets: never shown, logged or stored.
    log_format: LogFormat = "text"
    log_file: Path | None = None
    metrics_file: Path | None = None
    pushgateway_url: str | None = None
    heartbeat_url: SecretStr | None = None
    notify_webhook_url: SecretStr | None = None
    notify_on: NotifyOn = "problems"

    @field_validator("restricted_symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("restricted_symbols")
    @classmethod
    def _tickers(cls, value: frozenset[str]) -> frozenset[str]:
        """A restriction that is no ticker (`[B]`, a typo'd separator) would never match."""
        from orchestrator_cli.schemas import SYMBOL_PATTERN

        wrong = sorted(symbol for symbol in value if not re.fullmatch(SYMBOL_PATTERN, symbol))
        if wrong:
            raise ValueError(f"{wrong[0][:20]!r} is not a ticker symbol (e.g. AAPL,BRK.B)")
        return value

    @field_validator(*BLANK_KEEPS_DEFAULT, mode="before")
    @classmethod
    def _zero_or_off_is_off(cls, value: Any) -> Any:
        """`0`, `off` or `none` turn a limit off; a blank value keeps the default (a stray
        `MAX_GROSS_EXPOSURE=` line must not silently remove a safety limit)."""
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "":
                raise PydanticUseDefault
            if text in ("0", "none", "off"):
                return None
        return value

    @field_validator("gateway_max_orders_per_minute", mode="before")
    @classmethod
    def _pacing_off(cls, value: Any) -> Any:
        """`0`, `off`, `none` or blank: no client-side pacing (the default)."""
        if isinstance(value, str) and value.strip().lower() in ("", "0", "none", "off"):
            return None
        return None if value == 0 and not isinstance(value, bool) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a redis:// URL: {value!r}")
        return value

    @field_validator("signal_service_url", "execution_gateway_url", "market_data_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("log_file", "metrics_file", "pushgateway_url", mode="before")
    @classmethod
    def _blank_is_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_file", "metrics_file")
    @classmethod
    def _file_in_existing_directory(cls, value: Path | None) -> Path | None:
        """Checked before anything is contacted: a typo must not lose the day's record."""
        if value is None:
            return None
        if value.is_dir():
            raise ValueError(f"{value} is a directory; give a file path")
        if not value.parent.is_dir():
            raise ValueError(f"the directory {value.parent} does not exist; create it first")
        return value

    @field_validator("pushgateway_url")
    @classmethod
    def _optional_http_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("metrics_file", "pushgateway_url")
    @classmethod
    def _metrics_extra(cls, value: Any) -> Any:
        """Refused at start rather than warned at the end: a deployment that asked for metrics
        and silently had none would look to monitoring like a job that never ran."""
        if value is not None and importlib.util.find_spec("prometheus_client") is None:
            raise ValueError("needs prometheus_client: pip install 'orchestrator-cli[metrics]'")
        return value

    @field_validator("heartbeat_url", "notify_webhook_url", mode="before")
    @classmethod
    def _secret_http_url(cls, value: Any) -> Any:
        """An http(s) URL, named in no error: its path is the secret."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        try:
            return _check_http_url(str(raw))
        except ValueError:
            raise ValueError(
                "not an http(s) URL (the value is not shown: it holds a secret)"
            ) from None

    @field_validator("log_format", "notify_on", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # Imported here, not with this module: SQLAlchemy takes a quarter of a second to
        # import, and what imports config without validating settings (`orch --help`) needs none.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        shown = mask_url(value)
        if not value.startswith(("sqlite:///", "postgresql:", "postgresql+")):
            raise ValueError(f"{shown!r} must start with sqlite:/// or postgresql://")
        try:
            url = make_url(value)
            url.port  # noqa: B018 - a bad port raises here
        except (ArgumentError, ValueError):
            raise ValueError(
                f"{shown!r} is not a database URL (postgresql://user:password@host:5432/db; "
                "percent-encode special characters in the password)"
            ) from None
        if url.drivername not in ("sqlite", "postgresql", "postgresql+psycopg2"):
            raise ValueError(
                f"{shown!r}: orch connects with sqlite:/// or postgresql:// (psycopg2), not "
                f"{url.drivername}"
            )
        if "@" in (url.host or ""):  # the host would hold the rest of the password
            raise ValueError(f"{shown!r}: percent-encode an @ in the password as %40")
        database = url.database or ""
        if url.drivername == "sqlite" and (
            database in ("", ":memory:") or url.query.get("mode") == "memory"
        ):
            raise ValueError(
                f"{shown!r} is an in-memory database, which keeps no record once orch exits: "
                "give a file, e.g. sqlite:////var/lib/orch/orch.db"
            )
        return value

    @field_validator("market_calendar")
    @classmethod
    def _calendar_code(cls, value: str) -> str:
        """The shape of a code; whether the calendar exists is checked when it is first used."""
        if not re.fullmatch(r"[A-Za-z0-9_/]{1,32}", value):
            raise ValueError(f"{value!r} is not an exchange calendar code (e.g. XNYS)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("price_source", mode="before")
    @classmethod
    def _lower_source(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*)@(?P<rest>[^@]*)$")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`, for output, logs and stored settings.

    The user part runs to the last `@`, so a password holding `@`, `#` or `/` is masked whole.
    """
    url = _QUERY_PASSWORD.sub(r"\1***", url)  # libpq also takes ?password=
    match = _USERINFO.match(url)
    if match is None or ":" not in match["userinfo"]:
        return url
    user = match["userinfo"].split(":", 1)[0]
    return f"{match['scheme']}{user}:***@{match['rest']}"


def _describe(loc: tuple[int | str, ...], flags: dict[str, str]) -> str:
    if not loc:
        return "configuration"
    field = str(loc[0])
    if field in flags:
        return flags[field]
    return field.upper()


ENV_FILE_MAX_BYTES = 1024 * 1024


def check_env_file(path: Path = Path(".env")) -> None:
    """Refuse a `.env` that would be read wrong rather than fail: python-dotenv skips a line it
    cannot parse (`CAPITAL="100`, `CAPITAL: 5000`) with a warning naming no variable, and the
    setting silently takes its default. A line that starts with a setting's name and cannot be
    parsed, a file that is not UTF-8 text, too large, or not a regular file (a named pipe
    would be waited on forever) is a ConfigError. Other programs' lines are left alone."""
    if not path.exists():
        return
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file: make it one, or remove it")
    from dotenv.parser import parse_stream

    try:
        with path.open("rb") as file:
            data = file.read(ENV_FILE_MAX_BYTES + 1)
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    if len(data) > ENV_FILE_MAX_BYTES:
        raise ConfigError(f"{path} is over {ENV_FILE_MAX_BYTES} bytes: is it the right file?")
    known = {name.upper() for name in Settings.model_fields}
    for binding in parse_stream(io.StringIO(text)):
        name = _LEADING_NAME.match(binding.original.string)
        if binding.error and name and name[1].upper() in known:
            line = binding.original.line + binding.original.string[: name.start(1)].count("\n")
            raise ConfigError(
                f"{path} line {line} sets {name[1]} but cannot be read "
                f"({binding.original.string.strip()[:60]!r}): write it as {name[1]}=value, "
                "quotes closed"
            )


_LEADING_NAME = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)")


def load_settings(flags: dict[str, Any] | None = None, **flag_names: str) -> Settings:
    """Build validated settings; `flags` are command-line values (None means not given).

    `flag_names` maps a field to the flag spelling used in error messages (e.g.
    `capital="--capital"`); a field given by flag is reported by its flag, else by its variable.
    `.env` is checked first (`check_env_file`).
    """
    check_env_file()
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    named = {field: flag_names.get(field, f"--{field.replace('_', '-')}") for field in given}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = _describe(tuple(err["loc"]), named)
            message = str(err["msg"]).removeprefix("Value error, ")
            if where == "configuration":
                problems.append(message)
            else:
                problems.append(f"{where}: {message}")
        raise ConfigError(
            "invalid configuration: " + "; ".join(problems) + " (fix the flag, variable or .env)"
        ) from exc


def env_file_warnings(path: Path = Path(".env")) -> list[str]:
    """A warning for each `.env` key that is no setting but is close to one (a typo).

    Keys far from every setting are left alone: a `.env` may hold other programs' variables.
    """
    if not path.is_file():
        return []
    from dotenv import dotenv_values

    known = sorted(name.upper() for name in Settings.model_fields)
    warnings = []
    for key in dotenv_values(path):
        name = key.strip().upper()
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            warnings.append(
                f"{path}: {key!r} is not a setting and is ignored; did you mean {close[0]}?"
            )
    return warnings
