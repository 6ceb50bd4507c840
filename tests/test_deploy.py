"""The deployment files, checked offline: Dockerfile, Kubernetes manifests, Airflow DAG.

No container engine, cluster or Airflow is needed: the Dockerfile is read line by line, the
manifests with PyYAML, and the DAG is compiled and imported against small stand-ins for the
Airflow, Kubernetes-client and pendulum modules, so its own logic (skip on a closed market,
fail when started late) runs for real. The settings in the manifests are validated by orch's
own `Settings`.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import shlex
import signal
import subprocess
import sys
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from orchestrator_cli.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
DAG_FILE = ROOT / "deploy" / "airflow" / "orch_dag.py"
SECRET_EXAMPLE = "secret.example.yaml"
SCHEDULE = "31 9 * * 1-5"
NO_RETRY_EXIT_CODES = {2, 4, 70, 75}
# Variables the manifests may set that are not orch settings.
NON_SETTINGS = {"XDG_DATA_HOME", "HOME"}
SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY")


def dag_constant(name: str) -> Any:
    """A literal module-level constant of the DAG file, read without importing Airflow."""
    for node in ast.parse(DAG_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in {DAG_FILE}")


def dag_strategies() -> list[dict[str, Any]]:
    return list(dag_constant("STRATEGIES"))


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command, _, args = (pending + line).strip().partition(" ")
        instructions.append((command.upper(), args.strip()))
        pending = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (command, _) in enumerate(instructions) if command == "FROM")
    return instructions[last_from:]


def assignments(args: str) -> dict[str, str | None]:
    """ENV/ARG arguments as names and values (None: an ARG without a default)."""
    words = shlex.split(args)
    if len(words) == 2 and "=" not in words[0]:  # the legacy `ENV NAME value` form
        return {words[0]: words[1]}
    pairs: dict[str, str | None] = {}
    for word in words:
        name, sep, value = word.partition("=")
        pairs[name] = value if sep else None
    return pairs


def dockerfile_problems(text: str) -> list[str]:
    """What makes an image unfit to run orch in production; [] when none."""
    instructions = dockerfile_instructions(text)
    problems = []
    stages: set[str] = set()
    for command, args in instructions:
        if command == "FROM":
            words = args.split()
            if words[0] not in stages and not words[0].startswith("python:3.11-slim"):
                problems.append(f"base image {words[0]} is not python:3.11-slim")
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        if command in ("ENV", "ARG"):
            for name in assignments(args):
                if any(word in name.upper() for word in SECRET_WORDS):
                    problems.append(f"{command} {name} would build a secret into the image")
    last = final_stage(instructions)
    users = [args for command, args in last if command == "USER"]
    user = users[-1].split(":")[0] if users else "root"
    if not user.isdigit() or int(user) == 0:
        problems.append(f"final USER {user!r} is not a numeric non-root uid")
    entrypoints = [args for command, args in last if command == "ENTRYPOINT"]
    if not entrypoints or not entrypoints[-1].startswith("["):
        problems.append("ENTRYPOINT is not in exec form")
    elif json.loads(entrypoints[-1]) != ["orch"]:
        problems.append(f"ENTRYPOINT is {entrypoints[-1]}, not orch")
    return problems


def test_the_dockerfile_has_none_of_the_problems():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


GOOD_DOCKERFILE = """\
FROM python:3.11-slim-bookworm AS build
FROM python:3.11-slim-bookworm
USER 10001:10001
ENTRYPOINT ["orch"]
"""


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("slim-bookworm\nUSER", "bookworm\nUSER", "is not python:3.11-slim"),
        ("USER 10001:10001", "USER 0", "is not a numeric non-root uid"),
        ("USER 10001:10001", "USER root", "is not a numeric non-root uid"),
        ("USER 10001:10001", "USER orch", "is not a numeric non-root uid"),
        ("USER 10001:10001\n", "", "is not a numeric non-root uid"),
        ('ENTRYPOINT ["orch"]', "ENTRYPOINT orch", "not in exec form"),
        ('ENTRYPOINT ["orch"]', 'ENTRYPOINT ["python"]', "not orch"),
        ("USER", "ENV GATEWAY_API_TOKEN=abc\nUSER", "ENV GATEWAY_API_TOKEN"),
        ("USER", "ENV A=1 \\\n    DB_PASSWORD=x\nUSER", "ENV DB_PASSWORD"),
        ("USER", "ENV INTERNAL_TOKEN_SECRET s3cr3t\nUSER", "ENV INTERNAL_TOKEN_SECRET"),
        ("USER", "ARG ALPACA_API_SECRET_KEY=x\nUSER", "ARG ALPACA_API_SECRET_KEY"),
    ],
)
def test_the_dockerfile_check_catches_each_problem(old, new, problem):
    assert dockerfile_problems(GOOD_DOCKERFILE) == []
    assert old in GOOD_DOCKERFILE
    found = dockerfile_problems(GOOD_DOCKERFILE.replace(old, new, 1))
    assert any(problem in line for line in found), found


def test_the_image_runs_orch_unbuffered_with_help_by_default():
    last = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    env: dict[str, str | None] = {}
    for command, args in last:
        if command == "ENV":
            env.update(assignments(args))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert [json.loads(args) for command, args in last if command == "CMD"] == [["--help"]]


def test_the_image_installs_the_package_with_the_redis_extra():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    runs = [args for command, args in instructions if command == "RUN"]
    assert any("pip install '.[redis]'" in args for args in runs)


def test_everything_the_dockerfile_copies_exists_and_is_not_ignored():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", ".git", ".env", ".pytest_cache", ".mypy_cache", ".ruff_cache"):
        assert needed in ignored
    sources = []
    for command, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if command == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert set(sources) == {"pyproject.toml", "README.md", "alembic", "orchestrator_cli"}
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def dockerfile_uid() -> int:
    last = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    return int([args for command, args in last if command == "USER"][-1].split(":")[0])


# --- Kubernetes manifests -----------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text())]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(kind)}


def job_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return job_spec(doc)["template"]["spec"]


def workloads() -> list[dict[str, Any]]:
    return of_kind("CronJob") + of_kind("Job")


def data_of(doc: dict[str, Any]) -> dict[str, str]:
    return doc.get("data") or doc.get("stringData") or {}


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds: envFrom sources, then `env` (which wins)."""
    env: dict[str, str] = {}
    sources = {"configMapRef": by_name("ConfigMap"), "secretRef": by_name("Secret")}
    for source in container.get("envFrom", []):
        for ref, docs in sources.items():
            if ref in source:
                env.update(data_of(docs[source[ref]["name"]]))
    env.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
    return env


def strategy_cronjobs() -> dict[str, dict[str, Any]]:
    jobs = {}
    for doc in of_kind("CronJob"):
        (container,) = pod_spec(doc)["containers"]
        jobs[container_env(container)["STRATEGY_ID"]] = doc
    return jobs


def test_every_manifest_has_api_version_kind_and_name():
    docs = manifests()
    assert docs
    for doc in docs:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc


def test_there_is_a_cronjob_per_strategy_each_with_its_own_services():
    jobs = strategy_cronjobs()
    assert {"alpha_baseline", "momentum_v2"} <= set(jobs)
    assert len(jobs) == len(of_kind("CronJob")), "two CronJobs run the same strategy"
    for name in ("SIGNAL_SERVICE_URL", "EXECUTION_GATEWAY_URL"):
        urls = [container_env(pod_spec(job)["containers"][0])[name] for job in jobs.values()]
        assert len(set(urls)) == len(urls), f"strategies share {name}: {urls}"


@pytest.mark.parametrize("strategy", sorted(strategy_cronjobs()))
def test_each_cronjob_runs_once_at_the_open_and_never_retries(strategy):
    cronjob = strategy_cronjobs()[strategy]
    spec, job, pod = cronjob["spec"], job_spec(cronjob), pod_spec(cronjob)
    assert spec["timeZone"] == "America/New_York"
    assert spec["schedule"] == SCHEDULE
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 600
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    assert job["backoffLimit"] == 0
    assert pod["restartPolicy"] == "Never"
    deadline = float(by_name("ConfigMap")["orch-config"]["data"]["RUN_DEADLINE_SECONDS"])
    assert deadline < job["activeDeadlineSeconds"] <= deadline + 300
    (container,) = pod["containers"]
    fail_job = [rule for rule in job["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]
    assert len(fail_job) == 1
    on_exit = fail_job[0]["onExitCodes"]
    assert on_exit["operator"] == "In"
    assert on_exit["containerName"] == container["name"]
    assert set(on_exit["values"]) == NO_RETRY_EXIT_CODES


@pytest.mark.parametrize("strategy", sorted(strategy_cronjobs()))
def test_each_cronjob_runs_orch_with_its_universe_config_and_secret(strategy):
    pod = pod_spec(strategy_cronjobs()[strategy])
    (container,) = pod["containers"]
    assert container["image"] == "orch"
    assert container["args"][0] == "run"
    assert "--json" in container["args"]
    universe = container["args"][container["args"].index("--symbols-file") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "orch-universes"
    ]
    assert universe == f"{mounts[volume['name']]}/{volume['configMap']['items'][0]['path']}"
    assert volume["configMap"]["items"][0]["key"] == f"{strategy}.txt"
    refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
    assert refs == ["orch-config", "orch-secrets"]
    assert container["resources"]["requests"]["memory"] == "256Mi"
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("doc", workloads(), ids=lambda doc: doc["metadata"]["name"])
def test_every_pod_runs_locked_down_as_the_image_user(doc):
    pod = pod_spec(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert pod["automountServiceAccountToken"] is False
    # The run lock tells holders apart by hostname: no shared or fixed hostname.
    assert "hostname" not in pod
    assert not pod.get("hostNetwork", False)
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        env = container_env(container)
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert {"/tmp", env["XDG_DATA_HOME"]} <= writable
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        assert {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")} <= empty_dirs


def test_the_migration_job_upgrades_the_database_with_few_retries():
    (job,) = of_kind("Job")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert container["image"] == "orch"
    assert 0 <= job["spec"]["backoffLimit"] <= 3
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert [next(iter(s.values()))["name"] for s in container["envFrom"]] == [
        "orch-config",
        "orch-secrets",
    ]


def referenced_keys(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, key) of every single ConfigMap or Secret key a workload names."""
    pod = pod_spec(doc)
    found = []
    for volume in pod.get("volumes", []):
        for source, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
            if source in volume:
                name = volume[source].get("name") or volume[source].get("secretName")
                found += [(kind, name, item["key"]) for item in volume[source].get("items", [])]
    for container in pod["containers"]:
        for item in container.get("env", []):
            source = item.get("valueFrom", {})
            for ref, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if ref in source:
                    found.append((kind, source[ref]["name"], source[ref]["key"]))
        for source in container.get("envFrom", []):
            for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if ref in source:
                    found.append((kind, source[ref]["name"], ""))
    return found


@pytest.mark.parametrize("doc", workloads(), ids=lambda doc: doc["metadata"]["name"])
def test_every_config_map_and_secret_key_referenced_exists(doc):
    for kind, name, key in referenced_keys(doc):
        assert name in by_name(kind), f"{kind} {name} is not in {K8S}"
        assert key == "" or key in data_of(by_name(kind)[name]), f"{kind} {name} has no {key}"


def test_config_values_are_strings_and_the_secret_is_a_placeholder():
    for doc in of_kind("ConfigMap") + of_kind("Secret"):
        assert all(isinstance(value, str) for value in data_of(doc).values()), doc
    for doc in workloads():
        for container in pod_spec(doc)["containers"]:
            values = [item.get("value", "") for item in container.get("env", [])]
            assert all(isinstance(value, str) for value in values), values
    (secret,) = of_kind("Secret")
    assert "stringData" in secret
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    # One shared PostgreSQL: a SQLite file in a pod's emptyDir would vanish with the pod.
    assert secret["stringData"]["DATABASE_URL"].startswith("postgresql://")
    assert not any("DATABASE_URL" in data_of(doc) for doc in of_kind("ConfigMap"))


def manifest_env_names() -> set[str]:
    names = set()
    for doc in workloads():
        for container in pod_spec(doc)["containers"]:
            names |= set(container_env(container))
    return names


def test_every_variable_in_the_manifests_and_the_dag_is_a_setting():
    settings = {name.upper() for name in Settings.model_fields}
    names = manifest_env_names() | {name for s in dag_strategies() for name in s["env"]}
    assert "STRATEGY_ID" in names
    assert names - settings <= NON_SETTINGS, names - settings - NON_SETTINGS


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No orch setting from the test's own environment, no .env."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def settings_from(environment, env: dict[str, str]) -> Settings:
    """orch's settings in a pod with exactly this environment (validated as orch would)."""
    for name, value in env.items():
        environment.setenv(name, value)
    return Settings(_env_file=None)


@pytest.mark.parametrize("doc", workloads(), ids=lambda doc: doc["metadata"]["name"])
def test_every_pod_environment_is_a_valid_orch_configuration(doc, clean_environment):
    (container,) = pod_spec(doc)["containers"]
    env = container_env(container)
    settings = settings_from(clean_environment, env)
    assert settings.database_url == env["DATABASE_URL"]
    if doc["kind"] == "CronJob":
        assert settings.strategy_id == env["STRATEGY_ID"]
        assert settings.run_deadline_seconds < job_spec(doc)["activeDeadlineSeconds"]


@pytest.mark.parametrize("strategy", dag_strategies(), ids=lambda s: s["strategy_id"])
def test_every_dag_task_environment_is_a_valid_orch_configuration(strategy, clean_environment):
    env = {
        **data_of(by_name("ConfigMap")["orch-config"]),
        **data_of(by_name("Secret")["orch-secrets"]),
        "STRATEGY_ID": strategy["strategy_id"],
        **strategy["env"],
    }
    settings = settings_from(clean_environment, env)
    assert settings.strategy_id == strategy["strategy_id"]
    assert settings.execution_gateway_url == strategy["env"]["EXECUTION_GATEWAY_URL"]


def test_the_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) == {p.name for p in manifest_files()} - {SECRET_EXAMPLE}
    assert [image["name"] for image in kustomization["images"]] == ["orch"]
    assert kustomization["images"][0]["newTag"]


# --- Airflow DAG --------------------------------------------------------------------------------


def test_the_dag_compiles_and_says_every_required_setting():
    source = DAG_FILE.read_text()
    compile(source, str(DAG_FILE), "exec")
    for needed in (
        "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator",
        'SCHEDULE = "31 9 * * 1-5"',
        'MARKET_TZ = "America/New_York"',
        "max_active_runs=1",
        "catchup=False",
        "do_xcom_push=True",
        "retries=0",
        '"market_closed"',
    ):
        assert needed in source, needed


def test_the_dag_runs_the_same_strategies_as_the_cronjobs():
    jobs = strategy_cronjobs()
    assert [s["strategy_id"] for s in dag_strategies()] == sorted(jobs)
    common = data_of(by_name("ConfigMap")["orch-config"])
    for strategy in dag_strategies():
        (container,) = pod_spec(jobs[strategy["strategy_id"]])["containers"]
        cronjob_env = {i["name"]: i["value"] for i in container["env"]}
        dag_env = {"STRATEGY_ID": strategy["strategy_id"], **strategy["env"]}
        assert dag_env == {k: v for k, v in cronjob_env.items() if k != "XDG_DATA_HOME"}
        assert set(dag_env) - set(common) >= {"SIGNAL_SERVICE_URL", "EXECUTION_GATEWAY_URL"}
        deadline = job_spec(jobs[strategy["strategy_id"]])["activeDeadlineSeconds"]
        assert dag_constant("POD_DEADLINE_SECONDS") == deadline


class _FakeOperator:
    """Stands in for KubernetesPodOperator: records its arguments, 'runs' the pod."""

    pod_result: Any = None
    dag: Any = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.pods_run = 0
        _FakeOperator.dag.tasks.append(self)

    def execute(self, context: Any) -> Any:
        self.pods_run += 1
        return self.pod_result


class _FakeDag:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.tasks: list[_FakeOperator] = []

    def __enter__(self) -> _FakeDag:
        _FakeOperator.dag = self
        return self

    def __exit__(self, *exc: object) -> None:
        _FakeOperator.dag = None


def _module(monkeypatch, name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


@pytest.fixture
def dag_module(monkeypatch):
    """The DAG file imported against stand-ins for airflow, kubernetes.client and pendulum."""
    skip = type("AirflowSkipException", (Exception,), {})
    fail = type("AirflowFailException", (Exception,), {})
    models = _module(monkeypatch, "kubernetes.client.models")
    # Every k8s.V1... model: an object holding its keyword arguments.
    models.__getattr__ = lambda name: lambda **kw: types.SimpleNamespace(kind=name, **kw)
    _module(monkeypatch, "kubernetes")
    _module(monkeypatch, "kubernetes.client", models=models)
    _module(monkeypatch, "airflow", DAG=_FakeDag)
    exceptions = {"AirflowSkipException": skip, "AirflowFailException": fail}
    _module(monkeypatch, "airflow.exceptions", **exceptions)
    pod = "airflow.providers.cncf.kubernetes.operators.pod"
    _module(monkeypatch, pod, KubernetesPodOperator=_FakeOperator)
    for parent in ("airflow.providers", "airflow.providers.cncf"):
        _module(monkeypatch, parent)
    _module(monkeypatch, "airflow.providers.cncf.kubernetes")
    _module(monkeypatch, "airflow.providers.cncf.kubernetes.operators")
    pendulum = _module(monkeypatch, "pendulum")
    pendulum.datetime = lambda *a, tz: datetime(*a, tzinfo=ZoneInfo(tz))
    spec = importlib.util.spec_from_file_location("orch_dag", DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dag_is_one_weekday_run_at_the_open_in_new_york(dag_module):
    dag = dag_module.dag
    assert dag.kwargs["schedule"] == SCHEDULE
    assert dag.kwargs["start_date"].tzinfo == ZoneInfo("America/New_York")
    assert dag.kwargs["max_active_runs"] == 1
    assert dag.kwargs["catchup"] is False
    assert [t.kwargs["task_id"] for t in dag.tasks] == [
        f"run_{s['strategy_id']}" for s in dag_strategies()
    ]
    for task, strategy in zip(dag.tasks, dag_strategies(), strict=True):
        kwargs = task.kwargs
        assert kwargs["retries"] == 0
        assert kwargs["do_xcom_push"] is True
        assert kwargs["deferrable"] is False
        assert kwargs["env_vars"]["STRATEGY_ID"] == strategy["strategy_id"]
        config, secret = kwargs["env_from"]
        assert (config.config_map_ref.name, secret.secret_ref.name) == (
            "orch-config",
            "orch-secrets",
        )
        (item,) = kwargs["volumes"][0].config_map.items
        assert item.key in data_of(by_name("ConfigMap")["orch-universes"])
        assert kwargs["container_security_context"]["runAsUser"] == dockerfile_uid()


def context(run_type: str, minutes_late: float) -> dict[str, Any]:
    due = datetime.now(UTC) - timedelta(minutes=minutes_late)
    return {"dag_run": types.SimpleNamespace(run_type=run_type), "data_interval_end": due}


def test_a_closed_market_skips_the_task_and_a_run_returns_its_json(dag_module):
    task = dag_module.dag.tasks[0]
    closed = {"action": "market_closed", "as_of_date": "2026-11-26", "reason": "Thanksgiving"}
    task.pod_result = closed
    with pytest.raises(dag_module.AirflowSkipException, match="Thanksgiving"):
        task.execute(context("scheduled", 0.5))
    ran = {"action": "ran", "status": "completed", "run_id": "x"}
    task.pod_result = ran
    assert task.execute(context("scheduled", 0.5)) == ran
    assert task.pods_run == 2


def test_a_scheduled_run_started_late_fails_without_starting_a_pod(dag_module):
    task = dag_module.dag.tasks[0]
    task.pod_result = {"action": "ran"}
    late = dag_module.START_DEADLINE.total_seconds() / 60 + 1
    with pytest.raises(dag_module.AirflowFailException, match="unplanned time"):
        task.execute(context("scheduled", late))
    assert task.pods_run == 0
    assert task.execute(context("manual", late)) == {"action": "ran"}  # by hand: goes ahead
    assert task.pods_run == 1


FAKE_ORCH = """#!/bin/sh
# Stands in for orch: prints $FAKE_JSON and exits $FAKE_RC; with $FAKE_BLOCK, runs until
# SIGTERM, then exits 1 as orch does.
if [ -n "$FAKE_BLOCK" ]; then
    sleep 30 & sleeper=$!
    trap 'kill "$sleeper"; echo "{\\"action\\": \\"interrupted\\"}"; exit 1' TERM
    echo started > "$FAKE_BLOCK"
    wait "$sleeper"
fi
printf '%s\\n' "$FAKE_JSON"
exit "$FAKE_RC"
"""


@pytest.fixture
def orch_script(tmp_path):
    """The DAG's pod script, with the XCom folder under tmp_path and a fake orch on PATH."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "orch"
    fake.write_text(FAKE_ORCH)
    fake.chmod(0o755)
    (tmp_path / "xcom").mkdir()
    script = dag_constant("ORCH_SCRIPT").replace("/airflow/xcom", str(tmp_path / "xcom"))

    def start(**env: str) -> subprocess.Popen[str]:
        path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
        return subprocess.Popen(
            ["/bin/sh", "-c", script],
            env={"PATH": path, "FAKE_RC": "0", "FAKE_JSON": "{}", **env},
            stdout=subprocess.PIPE,
            text=True,
        )

    return start, tmp_path / "xcom" / "return.json"


@pytest.mark.parametrize("code", [0, 1, 3, 75])
def test_the_pod_script_keeps_orchs_exit_code_and_hands_its_json_to_xcom(orch_script, code):
    start, xcom = orch_script
    document = json.dumps({"action": "market_closed", "as_of_date": "2026-11-26"})
    process = start(FAKE_RC=str(code), FAKE_JSON=document)
    out, _ = process.communicate(timeout=20)
    assert process.returncode == code
    assert json.loads(xcom.read_text()) == json.loads(document)
    assert out.strip() == document


def test_the_pod_script_passes_sigterm_on_to_orch(orch_script, tmp_path):
    start, xcom = orch_script
    started = tmp_path / "started"
    process = start(FAKE_BLOCK=str(started), FAKE_RC="0")
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline, "the fake orch never started"
        assert process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == 1  # orch's own answer to SIGTERM, not the shell dying
    assert json.loads(xcom.read_text()) == {"action": "interrupted"}
