"""orch at the US market open from Airflow: one KubernetesPodOperator task per strategy.

An example to adapt, the Airflow twin of deploy/kubernetes/ (same image, ConfigMaps and
Secret; see README, "Running many strategies"). Needs Airflow 2.4+ with a recent
apache-airflow-providers-cncf-kubernetes (on_finish_action).

Exit codes of `orch run`: 0 completed, already completed, or market closed; 3 partial;
1 failed; 2 usage; 4 invalid configuration (or a database not yet migrated); 75 another run
of the strategy and day is in progress; 70 internal error. Retries are 0 for every task: 2, 4
and 70 do not go away by trying again, 75 means another pod is doing the work, and a failed
or partial run is for a person to look at before it is run again (orch then resumes or
completes the day's run without sending any order twice).

A closed market: `orch run --json` prints {"action": "market_closed", ...} and exits 0, so
no exit code can tell it apart (skip_on_exit_code does not apply). The pod writes its JSON to
/airflow/xcom/return.json (do_xcom_push=True), and `OrchRun.execute` reads it and marks the
task skipped. Doing it in the task itself (not in a downstream ShortCircuitOperator) shows the
day as skipped on the strategy's own task, and leaves nothing green that did not trade.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
from airflow import DAG
from airflow.exceptions import AirflowFailException, AirflowSkipException
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

MARKET_TZ = "America/New_York"
SCHEDULE = "31 9 * * 1-5"
NAMESPACE = "trading"
IMAGE = "registry.example.com/trading/orch:0.1.0"
# RUN_DEADLINE_SECONDS in orch-config is 300; the pod gets a little more to start and settle.
POD_DEADLINE_SECONDS = 420
# A scheduled run that starts later than this after 09:31 (scheduler down, workers full) fails
# instead of trading at an unplanned time: the CronJobs' startingDeadlineSeconds. With
# catchup=False Airflow still starts the latest missed run when it comes back.
START_DEADLINE = timedelta(minutes=5)

# One task per strategy (or account): the strategy, the Signal Service and gateway that serve
# it (orch refuses a run whose strategy is not theirs), its universe (a key of the ConfigMap
# orch-universes) and per-account overrides of orch-config.
STRATEGIES = (
    {
        "strategy_id": "alpha_baseline",
        "universe": "alpha_baseline.txt",
        "env": {
            "SIGNAL_SERVICE_URL": "http://signals-alpha-baseline.trading.svc:8001",
            "EXECUTION_GATEWAY_URL": "http://gateway-account-a.trading.svc:8002",
        },
    },
    {
        "strategy_id": "momentum_v2",
        "universe": "momentum_v2.txt",
        "env": {
            "SIGNAL_SERVICE_URL": "http://signals-momentum-v2.trading.svc:8001",
            "EXECUTION_GATEWAY_URL": "http://gateway-account-b.trading.svc:8002",
            "CAPITAL": "250000",
            "MAX_POSITION_SIZE": "50000",
        },
    },
)

# The image's entrypoint is orch; a shell is needed only to put the JSON where the XCom
# sidecar reads it. sh is PID 1 and would swallow SIGTERM (task timeout, pod deletion), so it
# passes the signal on to orch, which then stops sending and releases its run lock; a signal
# that comes before orch has started is passed on as soon as it has. The exit code is orch's,
# and the JSON is also printed to the task log.
ORCH_SCRIPT = """\
trap 'if [ -n "$child" ]; then kill -TERM "$child"; else stop=1; fi' TERM INT
orch run --symbols-file /config/universe.txt --json > /airflow/xcom/return.json &
child=$!
if [ -n "$stop" ]; then kill -TERM "$child"; fi
wait "$child"
rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
cat /airflow/xcom/return.json
exit "$rc"
"""


class OrchRun(KubernetesPodOperator):
    """`orch run --json` in a pod: skipped on a closed market, failed when started too late."""

    def execute(self, context: Any) -> Any:
        if context["dag_run"].run_type == "scheduled":  # a run triggered by hand goes ahead
            due = context["data_interval_end"]  # the 09:31 this run was scheduled for
            late = datetime.now(UTC) - due
            if late > START_DEADLINE:
                raise AirflowFailException(
                    f"started {late} after its scheduled time {due}, later than "
                    f"{START_DEADLINE}: not trading at an unplanned time; trigger the DAG by "
                    "hand to run anyway"
                )
        result = super().execute(context)
        if isinstance(result, dict) and result.get("action") == "market_closed":
            raise AirflowSkipException(
                f"market closed on {result.get('as_of_date')}: {result.get('reason')}"
            )
        return result


def orch_task(strategy: dict[str, Any]) -> OrchRun:
    """The pod of one strategy, configured as its CronJob in deploy/kubernetes/ is."""
    strategy_id = strategy["strategy_id"]
    return OrchRun(
        task_id=f"run_{strategy_id}",
        name=f"orch-{strategy_id.replace('_', '-')}",
        namespace=NAMESPACE,
        image=IMAGE,
        cmds=["/bin/sh", "-c"],
        arguments=[ORCH_SCRIPT],
        env_from=[
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name="orch-config")),
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="orch-secrets")),
        ],
        env_vars={
            "STRATEGY_ID": strategy_id,
            **strategy["env"],
            "XDG_DATA_HOME": "/var/lib/orch",
        },
        volumes=[
            k8s.V1Volume(
                name="universe",
                config_map=k8s.V1ConfigMapVolumeSource(
                    name="orch-universes",
                    items=[k8s.V1KeyToPath(key=strategy["universe"], path="universe.txt")],
                ),
            ),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="64Mi")),
            k8s.V1Volume(name="data", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="64Mi")),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="universe", mount_path="/config", read_only=True),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
            k8s.V1VolumeMount(name="data", mount_path="/var/lib/orch"),
        ],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "512Mi"}
        ),
        # Non-root on the orch container only: the XCom sidecar (alpine) runs as root, and a
        # pod-wide runAsNonRoot would keep it from starting.
        security_context={"fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        container_security_context={
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        labels={"app.kubernetes.io/name": "orch", "orch/strategy": strategy_id},
        automount_service_account_token=False,
        do_xcom_push=True,
        # The skip reads execute()'s return value; a deferred task returns it elsewhere.
        deferrable=False,
        active_deadline_seconds=POD_DEADLINE_SECONDS,
        termination_grace_period=60,
        on_finish_action="delete_succeeded_pod",
        retries=0,
        execution_timeout=timedelta(seconds=POD_DEADLINE_SECONDS + 180),
    )


with DAG(
    dag_id="orch_market_open",
    description="orch run for every strategy at the US market open",
    # Not `--as-of {{ ds }}`: orch takes the trading date from the exchange's clock itself.
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz=MARKET_TZ),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["orch", "trading"],
) as dag:
    for strategy in STRATEGIES:
        orch_task(strategy)
