"""What the Execution Gateway's own words say about halts: its refusal bodies and health bodies.

Names are compared normalised (lower case; `-`, `_` and camelCase humps read as spaces), so
`Kill-switch`, `kill_switch`, `killSwitch` and `kill switch` are one name, as are `fail-closed`
and `fail_closed`. Bodies are read as data: only their keys and string values are looked at.

A refusal (a 503 body) halts when any of its strings names the kill switch or the circuit
breaker, says fail-closed or that a state is unavailable, or when it carries `fail_closed: true`.

A health body names a fail-closed safety component (`fail_closed_components`) when:
- a key `fail_closed` (any spelling, at any depth) is `true`;
- any string value says fail-closed;
- under a key naming the circuit breaker, kill switch or position reservation, an availability
  flag (a key with the word available, connected, healthy, ready or ok) is `false`, or a string
  value says unavailable, unknown or missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

KILL_SWITCH = "kill switch"
CIRCUIT_BREAKER = "circuit breaker"
SAFETY_COMPONENTS = (KILL_SWITCH, CIRCUIT_BREAKER, "position reservation")
FAIL_CLOSED = "fail closed"
STATE_UNAVAILABLE = "state unavailable"
AVAILABILITY_WORDS = frozenset({"available", "connected", "healthy", "ready", "ok"})
MISSING_WORDS = frozenset({"unavailable", "unknown", "missing"})
QUOTE_LIMIT = 80
MAX_NAMED = 3


def normalised(text: str) -> str:
    """Lower case, `-`, `_` and camelCase humps as spaces, runs of white space as one space."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    return " ".join(re.sub(r"[-_]", " ", spaced.lower()).split())


Path = tuple[str, ...]


def _leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every scalar of a JSON value with the keys that lead to it (list items share a path)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, path)
    else:
        yield path, value


def _body(content: bytes) -> Any:
    """The body as JSON, or as one string when it is not JSON."""
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _flags_fail_closed(path: Path, value: Any) -> bool:
    return bool(path) and normalised(path[-1]) == FAIL_CLOSED and value is True


def halt_status(content: bytes) -> str | None:
    """The blocked status a 503 body means (see the module docstring), or None."""
    leaves = list(_leaves(_body(content)))
    texts = [normalised(value) for _, value in leaves if isinstance(value, str)]
    if any(KILL_SWITCH in text for text in texts):
        return "blocked_kill_switch"
    if any(CIRCUIT_BREAKER in text for text in texts):
        return "blocked_circuit_breaker"
    if any(FAIL_CLOSED in text or STATE_UNAVAILABLE in text for text in texts) or any(
        _flags_fail_closed(path, value) for path, value in leaves
    ):
        return "blocked"
    return None


def _names_component(path: Path) -> bool:
    keys = " ".join(normalised(key) for key in path)
    return any(component in keys for component in SAFETY_COMPONENTS)


def _fails_closed(path: Path, value: Any) -> bool:
    if _flags_fail_closed(path, value):
        return True
    if isinstance(value, str) and FAIL_CLOSED in normalised(value):
        return True
    if not path or not _names_component(path):
        return False
    if value is False:
        return bool(AVAILABILITY_WORDS & set(normalised(path[-1]).split()))
    return isinstance(value, str) and bool(MISSING_WORDS & set(normalised(value).split()))


def _shown(path: Path, value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > QUOTE_LIMIT:
        text = text[: QUOTE_LIMIT - 3] + "..."
    return f"{'.'.join(path)}={text}"


def fail_closed_components(body: Any) -> list[str]:
    """What in a health body says a safety component fails closed, as `path=value` texts."""
    return [_shown(path, value) for path, value in _leaves(body) if _fails_closed(path, value)]


def describe(named: list[str]) -> str:
    """The first few findings as one short text."""
    text = "; ".join(named[:MAX_NAMED])
    return f"{text}; and {len(named) - MAX_NAMED} more" if len(named) > MAX_NAMED else text
