#!/usr/bin/env bash
# Python side of kvbench (scripts/record_kv.py and its tests): a virtual environment .venv on Debian's
# python3 that sees Debian's CPU torch, numpy and h5py (--system-site-packages, installed by setup.sh),
# with Hugging Face transformers from PyPI on top. Idempotent: pip runs only when .venv lacks that version.
# transformers 4.40.x is the newest line that still supports torch 1.13 (Debian bookworm's python3-torch)
# and has Llama (GQA), Qwen2 and GPT-2. Never installs torch from PyPI (no CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

TRANSFORMERS_VERSION=4.40.2
PY=/usr/bin/python3
VENV=.venv

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "setup_python: Debian's python3-torch is missing (scripts/setup.sh installs it); skipping .venv" >&2
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup_python: creating $VENV (system site packages: torch, numpy, h5py)" >&2
  "$PY" -m venv --system-site-packages "$VENV"
fi

have=$("$VENV/bin/python" -c "import transformers; print(transformers.__version__)" 2>/dev/null || true)
if [ "$have" = "$TRANSFORMERS_VERSION" ]; then
  echo "setup_python: $VENV has transformers $have" >&2
  exit 0
fi

echo "setup_python: installing transformers==$TRANSFORMERS_VERSION into $VENV" >&2
# torch and numpy come from Debian; pip must not replace them (transformers does not pin torch).
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
  "transformers==$TRANSFORMERS_VERSION"
"$VENV/bin/python" -c "import torch, transformers; print('setup_python: torch', torch.__version__, 'transformers', transformers.__version__)" >&2
