"""A short message to a chat webhook (NOTIFY_WEBHOOK_URL) when a run needs a person.

The body is Slack-compatible JSON, `{"text": ...}`, which Mattermost, Rocket.Chat, Teams'
Slack-compatible connectors and most webhook relays accept. Text from services (error messages,
order details) is data: json.dumps escapes it for JSON, and `&`, `<` and `>` are escaped as
Slack asks, so a gateway message cannot mention `<!channel>` or forge a link. Never fatal.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import requests

from orchestrator_cli.heartbeat import host_of
from orchestrator_cli.ops import order_outcomes
from orchestrator_cli.schemas import ACCEPTED_STATUSES

if TYPE_CHECKING:
    from orchestrator_cli.config import Settings
    from orchestrator_cli.ops import Finished
    from orchestrator_cli.schemas import RunResult

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
MAX_ORDER_DETAILS = 3
MAX_TEXT = 300  # characters of any one message from a service
# Outcomes `orch runs resume` finishes: settles the unknown, sends the blocked and unsent.
RESUMABLE = ("unknown", "blocked", "not_sent")


def is_problem(finished: Finished) -> bool:
    """A run that did not end completed with exit 0 (or no run at all, with an error)."""
    return finished.exit_code != 0 or finished.status not in (None, "completed")


def should_notify(notify_on: str, finished: Finished) -> bool:
    return notify_on == "always" or (notify_on == "problems" and is_problem(finished))


def _data(text: str) -> str:
    """Outside text as chat data: one line, cut short, no Slack markup."""
    flat = " ".join(text.split())
    if len(flat) > MAX_TEXT:
        flat = flat[: MAX_TEXT - 3] + "..."
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _order_details(result: RunResult) -> list[str]:
    details = []
    for m in result.mappings:
        if not m.client_order_id or m.order_status in ACCEPTED_STATUSES:
            continue
        order = f"{m.order_side} {m.order_qty} " if m.order_side and m.order_qty else ""
        why = f": {m.detail}" if m.detail else ""
        details.append(_data(f"{order}{m.symbol} {m.order_status}{why}"))
        if len(details) == MAX_ORDER_DETAILS:
            break
    return details


def _next_step(finished: Finished) -> str | None:
    result = finished.result
    if finished.interrupted_run is not None:
        return f"orch runs resume {finished.interrupted_run}"
    if result is None or result.status == "completed":
        return None
    counts = order_outcomes(result)
    if result.status == "running" or any(counts[name] for name in RESUMABLE):
        return f"orch runs resume {result.run_id}"
    return None


def message(finished: Finished) -> str:
    """The notification's text: what ran, how it ended, the first problems, what to do next."""
    result = finished.result
    if result is None:
        head = f"orch run {finished.strategy_id}: exit {finished.exit_code}, no run recorded"
        lines = [head]
    else:
        counts = order_outcomes(result)
        shown = ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in counts.items())
        earlier = " earlier; nothing was done now" if finished.action == "already_completed" else ""
        lines = [
            f"orch run {result.strategy_id} {result.as_of_date}: {result.status}{earlier} "
            f"(exit {finished.exit_code}), {result.num_signals} signals; orders: {shown}",
            f"run {result.run_id}",
        ]
        if result.error_message:
            lines.append(f"error: {_data(result.error_message)}")
        lines.extend(f"- {detail}" for detail in _order_details(result))
    if finished.error is not None and (result is None or finished.error != result.error_message):
        lines.append(f"error: {_data(finished.error)}")
    step = _next_step(finished)
    if step is not None:
        lines.append(f"to finish: {step}")
    return "\n".join(lines)


def post(url: str, text: str) -> bool:
    """POST `{"text": text}`; whether the webhook took it. The URL is a secret: host only."""
    try:
        response = requests.post(
            url,
            data=json.dumps({"text": text}),
            headers={"Content-Type": "application/json"},
            timeout=TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        problem = type(exc).__name__  # the message would quote the URL
    else:
        if response.ok:
            return True
        problem = f"HTTP {response.status_code}"
    logger.warning("notification to %s failed (%s); ignored", host_of(url), problem)
    return False


def maybe_notify(settings: Settings, finished: Finished) -> None:
    """Post the message when NOTIFY_ON asks for it."""
    if settings.notify_webhook_url is None or not should_notify(settings.notify_on, finished):
        return
    post(settings.notify_webhook_url.get_secret_value(), message(finished))
