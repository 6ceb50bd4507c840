# orch in a container: one image for every strategy and account; what differs between them
# is configuration (environment variables), never the image.
#
#   docker build -t orch .
#   docker run --rm orch --version
#   docker run --rm --env-file orch.env -v "$PWD/universe.txt:/config/universe.txt:ro" \
#       orch run --symbols-file /config/universe.txt --json
#
# Nothing secret is built in: DATABASE_URL, INTERNAL_TOKEN_SECRET / GATEWAY_API_TOKEN and the
# Alpaca keys come from the environment at run time (a Kubernetes Secret, an env file).
# deploy/kubernetes/ and deploy/airflow/ run this image; tests/test_deploy.py checks this file.

# --- build: install the package and its dependencies into a virtualenv ------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/orch

WORKDIR /src
# Only what the wheel is built from (pyproject.toml names README.md as the long description;
# the migrations are packaged from alembic/), so a stray .env or database in the build context
# can never end up in a layer.
COPY pyproject.toml README.md ./
COPY alembic ./alembic
COPY orchestrator_cli ./orchestrator_cli
# The redis extra: PRICE_SOURCE=redis works without another image.
RUN /opt/orch/bin/pip install '.[redis]'

# --- run: the virtualenv on a clean base, as an unprivileged user -------------------------------
FROM python:3.11-slim-bookworm

# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (Kubernetes
# readOnlyRootFilesystem); the virtualenv's bytecode was compiled at install time.
# PYTHONUNBUFFERED: log lines reach `kubectl logs` as they are written, not at exit.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/orch/bin:$PATH

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# manifests' runAsUser/fsGroup name the same ids.
RUN groupadd --system --gid 10001 orch \
    && useradd --system --uid 10001 --gid 10001 --no-log-init \
        --home-dir /home/orch --create-home --shell /usr/sbin/nologin orch

COPY --from=build /opt/orch /opt/orch

USER 10001:10001
# orch reads .env from its working directory: this one holds none.
WORKDIR /home/orch

# orch is PID 1: it handles SIGTERM itself (stops sending, lets orders in flight finish,
# releases the run lock), so `docker stop` and a pod's termination stop a run cleanly.
ENTRYPOINT ["orch"]
CMD ["--help"]
