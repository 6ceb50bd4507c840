"""Batch-job metrics for Prometheus (the `metrics` extra): a textfile and/or a Pushgateway push.

The names are a contract (README "Monitoring"); every series carries `strategy_id`. A batch job
keeps no process to scrape, so the values describe the last command: when it ended, how, how
long each phase took, and what became of its orders. The last success survives a failure: the
textfile reads it back from the previous file; the Pushgateway keeps it because the push only
replaces the metrics it carries (POST) and a failure carries none for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_cli.config import mask_url
from orchestrator_cli.ops import ORDER_OUTCOMES, order_outcomes

if TYPE_CHECKING:
    from orchestrator_cli.config import Settings
    from orchestrator_cli.ops import Finished

logger = logging.getLogger(__name__)

JOB = "orch"
PUSH_TIMEOUT_SECONDS = 5.0
RUN_STATUSES = ("running", "completed", "partial", "failed")
LAST_SUCCESS = "orch_run_last_success_timestamp_seconds"


def registry_for(finished: Finished, last_success: float | None) -> CollectorRegistry:
    """Every metric of one command's end; `last_success` is left out when None."""
    registry = CollectorRegistry()
    strategy = finished.strategy_id

    def gauge(name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(name, documentation, ["strategy_id", *labels], registry=registry)

    gauge("orch_run_last_timestamp_seconds", "When orch run last ended (Unix time).").labels(
        strategy
    ).set(finished.ended_at)
    if last_success is not None:
        gauge(LAST_SUCCESS, "When a run last ended completed, exit 0 (Unix time).").labels(
            strategy
        ).set(last_success)
    status = gauge("orch_run_status", "1 for the last run's status, 0 for the others.", "status")
    for name in RUN_STATUSES:
        status.labels(strategy, name).set(1 if finished.status == name else 0)
    duration = gauge("orch_run_duration_seconds", "Seconds per phase, and total.", "phase")
    for phase, seconds in finished.phase_seconds.items():
        duration.labels(strategy, phase).set(seconds)
    duration.labels(strategy, "total").set(finished.seconds)
    orders = gauge("orch_orders_total", "The last run's orders by outcome.", "outcome")
    counts = order_outcomes(finished.result)
    for outcome in ORDER_OUTCOMES:
        orders.labels(strategy, outcome).set(counts[outcome])
    gauge("orch_run_exit_code", "The exit code of the last orch run.").labels(strategy).set(
        finished.exit_code
    )
    return registry


def succeeded(finished: Finished) -> bool:
    return finished.exit_code == 0 and finished.status == "completed"


def previous_success(path: Path, strategy_id: str) -> float | None:
    """The last success recorded for `strategy_id` in an earlier textfile, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("metrics: cannot read the previous %s (%s)", path, exc)
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("strategy_id") == strategy_id:
                    return float(sample.value)
    except Exception as exc:  # the parser raises several kinds on a damaged file
        logger.warning("metrics: %s is not in the Prometheus text format (%s)", path, exc)
    return None


def write_textfile(path: Path, finished: Finished) -> None:
    """Replace `path` atomically (a temporary file, then a rename) for node-exporter."""
    last = (
        finished.ended_at if succeeded(finished) else previous_success(path, finished.strategy_id)
    )
    try:
        write_to_textfile(str(path), registry_for(finished, last))
    except OSError as exc:
        logger.warning("metrics: cannot write METRICS_FILE %s (%s); ignored", path, exc)


def push(url: str, finished: Finished) -> None:
    """Push to the Pushgateway, grouped by job `orch` and the strategy."""
    last = finished.ended_at if succeeded(finished) else None
    try:
        pushadd_to_gateway(
            url,
            job=JOB,
            registry=registry_for(finished, last),
            grouping_key={"strategy_id": finished.strategy_id},
            timeout=PUSH_TIMEOUT_SECONDS,
        )
    except OSError as exc:  # URLError, HTTP errors and timeouts are all OSErrors here
        logger.warning("metrics: push to %s failed (%s); ignored", mask_url(url), exc)


def publish(settings: Settings, finished: Finished) -> None:
    """Write METRICS_FILE and push to PUSHGATEWAY_URL, whichever are set; never raises OSError."""
    if settings.metrics_file is not None:
        write_textfile(settings.metrics_file, finished)
    if settings.pushgateway_url is not None:
        push(settings.pushgateway_url, finished)
