#!/usr/bin/env bash
# Test suite: set up .venv, lint, then run every test (slow ones included).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/ruff check tessera tests bench
exec .venv/bin/python -m pytest -n 2 -q "$@"
