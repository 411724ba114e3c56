#!/usr/bin/env bash
# One-time set-up behind `make train` / `make test`: a .venv with the project and its test tools, and the
# Fashion-MNIST files. Safe to run again: it only redoes what is missing or out of date.
#   - torch: the machine's local CPU wheel (torch==2.13.0) where there is no NVIDIA GPU, a CUDA build otherwise
#   - data:  Debian's dataset-fashion-mnist package when the files are not found and apt-get can be used
#   - browser: Debian's chromium and chromium-driver for the explainer's page tests (tests/test_explain_browser.py),
#     where apt-get can be used; elsewhere those tests skip with the reason (and fail under CI=true)
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-stamp
PIP=(env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q)

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      echo "setup: NVIDIA GPU found: installing a CUDA build of torch"
      "${PIP[@]}" torch
    else
      echo "setup: no GPU: installing the CPU build torch==2.13.0"
      "${PIP[@]}" torch==2.13.0
    fi
  fi
  echo "setup: installing the project (editable) with its test extras"
  "${PIP[@]}" -e ".[test]"
  touch "$STAMP"
fi

have_data() {
  local d
  for d in "${FASHION_MNIST_DIR:-}" data/fashion-mnist /usr/share/datasets/fashion-mnist; do
    [ -n "$d" ] || continue
    if ls "$d"/train-images-idx3-ubyte* "$d"/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then return 0; fi
  done
  return 1
}
if ! have_data; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: Fashion-MNIST not found: installing Debian's dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST not found and apt-get is not usable here; put the four IDX files in" \
         "./data/fashion-mnist or set FASHION_MNIST_DIR"
  fi
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's chromium and chromium-driver (the explainer's browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: no chromium/chromedriver and apt-get is not usable here: the explainer's browser tests will skip"
  fi
fi
