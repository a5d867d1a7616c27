#!/usr/bin/env bash
# Sets up everything the test suite needs and runs it: Debian's sysdig (filter compiler), a virtualenv with the
# package and its test extras, then ruff, mypy, import-linter and pytest. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts the tests start or call: sysdig (Falco's filter compiler), docker-registry (an OCI registry on
# 127.0.0.1, distribution 2.8), promtool (checks the chart's alert rules), htpasswd (the registry's user file).
if ! command -v sysdig >/dev/null 2>&1 || ! command -v docker-registry >/dev/null 2>&1 \
  || ! command -v promtool >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # The recommended kernel-module package is neither needed nor buildable here: compiler only.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    sysdig docker-registry prometheus apache2-utils >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

.venv/bin/ruff check operator tests bench
.venv/bin/ruff format --check operator tests bench
.venv/bin/mypy
.venv/bin/lint-imports --no-cache >/dev/null
.venv/bin/pytest "$@"
