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

# Cross toolchain for the arm-neon target: aarch64 gcc + qemu-user (Debian packages). Never fatal:
# without them the Arm tests skip with a reason.
ensure_cross_tools() {
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1 \
    && [ -d /usr/aarch64-linux-gnu/lib ] && return 0
  local pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user" sudo=""
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "WARNING: apt-get not found; install an aarch64 cross gcc and qemu-aarch64 by hand ($pkgs)." >&2
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "WARNING: not root and no passwordless sudo; cannot install $pkgs. Arm (qemu) tests will skip." >&2
      return 0
    fi
  fi
  local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get"
  echo "Installing Arm cross toolchain: $pkgs" >&2
  # shellcheck disable=SC2086  # word splitting of $apt/$pkgs is intended
  if ! $apt install -y -q --no-install-recommends $pkgs >/dev/null 2>&1; then
    $apt update -q >/dev/null 2>&1 || true
    if ! $apt install -y -q --no-install-recommends $pkgs >/dev/null 2>&1; then
      echo "WARNING: could not install $pkgs; Arm (qemu) tests will skip." >&2
    fi
  fi
}
ensure_cross_tools
