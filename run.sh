#!/usr/bin/env bash
# Main job: set up .venv, import every zoo model through both frontends, run it (reference executor and compiled
# for the host), print the comparison with PyTorch eager.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/tessera zoo "$@"
