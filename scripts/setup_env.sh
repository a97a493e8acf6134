#!/usr/bin/env bash
# Create the project environment from nothing: .venv with the pinned Python stack (numpy<2 for
# bpy, the CPU torch build), then pbrfit itself (editable). pbrfit needs no system library; the
# system LLVM installed here is for the optional Mitsuba ray engine on the CPU, which the tests
# compare with Embree (tests/test_raycast.py).
# Idempotent; `make setup` runs it when requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."

have_llvm() {
  local f
  for f in /usr/lib/*-linux-gnu/libLLVM.so.{16,17,18,19,20}* /usr/lib/*-linux-gnu/libLLVM-{16,17,18,19,20}.so \
           /usr/lib/llvm-{16,17,18,19,20}/lib/libLLVM*.so*; do
    [ -e "$f" ] && return 0
  done
  return 1
}
if ! have_llvm; then
  echo "setup: installing libLLVM 19 (the optional Mitsuba ray engine's CPU backend needs LLVM >= 16)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libllvm19 >/dev/null \
      || { echo "setup: could not install libllvm19; install LLVM >= 16 and set DRJIT_LIBLLVM_PATH" >&2; exit 1; }
  else
    echo "setup: no apt-get; install LLVM >= 16 and set DRJIT_LIBLLVM_PATH to its libLLVM" >&2; exit 1
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e core 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import numpy, torch, embreex, pxr, MaterialX, OpenImageIO, mitsuba, bpy, pbrfit; assert numpy.__version__ < '2'" \
  || { echo "setup: the environment is incomplete (see pip's messages above)" >&2; exit 1; }
echo "setup: environment ready (.venv)" >&2
