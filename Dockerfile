# syntax=docker/dockerfile:1
# The falco-misp-operator image: `falco-misp run` on the official python:3.11-slim, as a non-root numeric user, with
# exactly the dependency versions of requirements.lock. tests/deploy/test_image.py runs the same pip steps.
#
#   docker build -t falco-misp-operator:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# Pin the base image by digest in your build (--build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Dependencies first, in their own layer: the pinned versions only (--no-deps: a requirement missing from the lock
# fails `pip check` below instead of being resolved to an unpinned version), wheels only (no compiler needed).
COPY requirements.lock ./
RUN python -m venv /opt/falco-misp \
 && /opt/falco-misp/bin/pip install --no-deps --only-binary=:all: -r requirements.lock

# The package itself, as a wheel built from the source tree.
COPY pyproject.toml README.md LICENSE ./
COPY operator ./operator
COPY rules ./rules
RUN /opt/falco-misp/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/falco-misp/bin/pip install --no-deps /wheels/*.whl \
 && /opt/falco-misp/bin/pip check \
 && /opt/falco-misp/bin/pip uninstall -y -q pip setuptools

# ---------------------------------------------------------------------------------------------------- final stage
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="falco-misp-operator" \
      org.opencontainers.image.description="Keeps Falco's network threat-intel rules in step with MISP." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# No package manager front-ends for Python at run time; a named user for the numeric id (some libraries ask the OS).
RUN python -m pip uninstall -y -q pip setuptools wheel \
 && groupadd --system --gid 65532 falco-misp \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin falco-misp

COPY --from=build /opt/falco-misp /opt/falco-misp
ENV PATH=/opt/falco-misp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
# kopf's health endpoint (falco-misp run --liveness, default http://0.0.0.0:8080/healthz) and the Prometheus
# metrics (--metrics-port, default 9090).
EXPOSE 8080 9090
ENTRYPOINT ["falco-misp", "run"]
