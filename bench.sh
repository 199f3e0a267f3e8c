#!/usr/bin/env bash
# Benchmark: PyTorch eager, torch.compile, ONNX Runtime, OpenVINO and Tessera on the zoo models.
# Options: --models, --batches, --reps, --warmup, --threads, --systems, --json out.json (see --help).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
if ! .venv/bin/python -c "import openvino" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "openvino==2026.4.1" || echo "bench.sh: could not install openvino; it will be skipped" >&2
fi
exec .venv/bin/python -m bench.run "$@"
