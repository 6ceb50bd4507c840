"""The deployment files, checked offline: the Dockerfile.

No container engine is needed: the Dockerfile is read line by line.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY")


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
