#!/usr/bin/env bash
# Third-party differentiable rasterizers that install from PyPI, tried on the CPU in an environment
# of their own (.venv-peers): never TinySplat's dependencies. Usage: bash benchmarks/peers.sh [sizes...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-peers/bin/python ]; then
  python3 -m venv .venv-peers
  .venv-peers/bin/pip install -q torch==2.14.1 scikit-learn plyfile
  # taichi-splatting asks for taichi-nightly, which PyPI does not carry: stable taichi stands in.
  .venv-peers/bin/pip install -q taichi beartype tqdm tensordict
  .venv-peers/bin/pip install -q --no-deps taichi-splatting
  .venv-peers/bin/pip install -q gswarp
fi
.venv-peers/bin/pip list 2>/dev/null | grep -iE "^(taichi|taichi-nightly|taichi-splatting|gswarp|warp-lang) " || true
PYTHONPATH=. .venv-peers/bin/python benchmarks/peers.py "$@"
