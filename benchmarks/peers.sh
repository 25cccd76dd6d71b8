#!/usr/bin/env bash
# The CPU rasterizer peer that runs here, gswarp 1.0.5 on Warp's CPU device, beside ours, in an
# environment of its own (.venv-peers): never TinySplat's dependency. gswarp 1.1.0 refuses CPU tensors,
# so 1.1.0 brings the dependencies (warp-lang 1.19.0) and 1.0.5 goes in over it without them.
# Usage: bash benchmarks/peers.sh [sizes...]   (the whole-trainer peer: benchmarks/opensplat.py)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-peers/bin/python ]; then
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install -q torch==2.14.1 numpy scikit-learn ninja plyfile gswarp==1.1.0
  .venv-peers/bin/pip install -q --no-deps gswarp==1.0.5
fi
.venv-peers/bin/pip list 2>/dev/null | grep -iE "^(torch|gswarp|warp-lang) " || true
PYTHONPATH=. .venv-peers/bin/python benchmarks/peers.py "$@"
