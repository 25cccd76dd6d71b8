#!/usr/bin/env bash
# The checks of docs/gpu.md in one call of the device tool.
#   here, once:       bash scripts/gpu_check.sh prepare outputs/.../config.yml   (a trained tinysplat run)
#   device tool:      run  command="bash scripts/gpu_check.sh"  carry=[".gpu"]
# There is no network there: gsplat's wheel and the inputs travel in .gpu/ (git-ignored).
set -euo pipefail
if [ "${1:-}" = prepare ]; then
  mkdir -p .gpu && (grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude)
  .venv/bin/pip download -q --no-deps gsplat==1.4.0 -d .gpu
  .venv/bin/tinysplat-export --load-config "$2" --output .gpu/scene.ply --frame data --min-opacity 0
  .venv/bin/python -c "
import torch; from pathlib import Path; from tinysplat_ns.core.scene import load_cameras
viewmats, Ks, sizes, _ = load_cameras(Path('${TINYSPLAT_DATA:-../shared/data}') / 'tumbler'); pick = [0, 12, 24, 36]
torch.save({'viewmats': viewmats[pick].float(), 'Ks': Ks[pick].float(), 'sizes': [tuple(map(int, sizes[i])) for i in pick]},
           '.gpu/cameras.pt')"
  exit
fi
out=${OUT:-.}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/gsplat-*.whl
export PYTHONPATH=/tmp/site:$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu_check.log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu_check.log"
python3 benchmarks/gpu_check.py .gpu/scene.ply .gpu/cameras.pt "$out/gpu_check.json" 2>&1 | tee -a "$out/gpu_check.log"
