#!/usr/bin/env bash
# Create or refresh the project-local virtualenv at .venv (idempotent, fast when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.tessera-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch==2.13.0 is pinned in pyproject; its CPU wheel is available locally on these machines.
  .venv/bin/python -m pip install -q -e '.[torch,dev]'
  touch "$stamp"
fi
