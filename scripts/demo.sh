#!/usr/bin/env bash
# Train TinySplat on a real scene on the CPU, evaluate it on its held-out views and export the splat.
# Usage: scripts/demo.sh [scene dir] (default ../shared/data/tumbler); STEPS=N for a longer run.
set -euo pipefail
scene=${1:-../shared/data/tumbler}
steps=${STEPS:-500}
out=outputs/demo
[ -d "$scene" ] || { echo "error: $scene: no such scene folder; pass the folder with transforms.json" >&2; exit 1; }

ns-train tinysplat-cpu --data "$scene" --output-dir "$out" --max-num-iterations "$steps" \
  --vis tensorboard --steps-per-eval-all-images 0 --viewer.quit-on-train-completion True
run=$(dirname "$(ls -td "$out"/*/tinysplat-cpu/*/config.yml | head -1)")
ns-eval --load-config "$run/config.yml" --output-path "$run/eval.json"
tinysplat-export --load-config "$run/config.yml" --output "$run/export/splat.ply"

python - "$run" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
results = json.loads((run / "eval.json").read_text())["results"]
checkpoint = sorted((run / "nerfstudio_models").glob("*.ckpt"))[-1]
print(f"\nTest views: PSNR {results['psnr']:.2f} dB, SSIM {results['ssim']:.3f}")
print(f"Checkpoint: {checkpoint}")
print(f"Splat:      {run / 'export' / 'splat.ply'}")
print(f"Look at it: ns-viewer --load-config {run / 'config.yml'}")
print(f"Compare:    tinysplat-compare --load-config {run / 'config.yml'} --load-config <another run>/config.yml")
PY
