"""Dead-man's switch pings (HEARTBEAT_URL), in the convention of healthchecks.io and its peers.

`GET {url}/start` when the command begins, `GET {url}` on exit 0, `GET {url}/{code}` on any
other exit. The URL's path is a secret token, so only its host is ever logged. Never fatal.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 2


def host_of(url: str) -> str:
    """What may be said about a secret URL: its host (and port)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return host if parts.port is None else f"{host}:{parts.port}"


def ping(url: str, suffix: str) -> bool:
    """GET `url/suffix` (just `url` when `suffix` is empty); whether the monitor took it."""
    target = f"{url}/{suffix}" if suffix else url
    problem = ""
    for _ in range(ATTEMPTS):
        try:
            response = requests.get(target, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            problem = type(exc).__name__  # the message would quote the URL
            continue
        if response.ok:
            return True
        problem = f"HTTP {response.status_code}"
    logger.warning(
        "heartbeat ping /%s to %s failed after %s attempts (%s); ignored",
        suffix,
        host_of(url),
        ATTEMPTS,
        problem,
    )
    return False
