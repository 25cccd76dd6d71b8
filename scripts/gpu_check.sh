#!/usr/bin/env bash
# The checks of docs/gpu.md, each in one call of the device tool. There is no network there: what
# they need travels in .gpu/ (git-ignored), named in the call's carry.
#   here:   bash scripts/gpu_check.sh prepare [--python-version 3.12] [outputs/.../config.yml]
#           the kit: wheels of scripts/gpu_kit.txt and of TinySplat for that Python (manylinux
#           x86_64), gsplat 1.4.0 and 1.5.3, the bundled scene; with a trained tinysplat run, the
#           core check's inputs too. Prints the size of what travels.
#   there:  run  command="bash scripts/gpu_check.sh train"  carry=[".gpu"]  timeout_s=600
#     core   our PyTorch rasterizer and MCMC relocation against gsplat's CUDA kernels (benchmarks/gpu_check.py)
#     smoke  20 steps of ns-train tinysplat, its .ply, ns-train splatfacto's model built offline
#            (on a CPU: 0 steps, as gsplat has no CPU kernels); what tests/test_gpu_kit.py runs here
#     train [RUN...]  smoke, then ns-train splatfacto and tinysplat, STEPS (7000) each, and
#            tinysplat-mcmc for splatfacto's wall time: wall and step time, peak GPU memory, Gaussians,
#            ns-eval's PSNR/SSIM, into $OUT/train.json after each run (a second call on the warm
#            machine can take the runs the first had no time for: `train tinysplat-mcmc`)
#   GSPLAT=1.5.3 installs gsplat 1.5.3 instead of 1.4.0 (RTX 50-series cards need it).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${GPU_KIT:-.gpu}

wheel_tags() {  # pip download's tags for CPython $1 on manylinux x86_64 (pip matches each N exactly)
  echo --only-binary=:all: --implementation cp --python-version "$1"
  for n in 39 38 37 36 35 34 33 32 31 30 29 28 27 26 25 24 17; do echo --platform "manylinux_2_${n}_x86_64"; done
  echo --platform manylinux2014_x86_64 --platform manylinux1_x86_64
}

if [ "${1:-}" = prepare ]; then
  shift
  python_version=3.12
  if [ "${1:-}" = --python-version ]; then python_version=$2; shift 2; fi
  pip=${PIP:-.venv/bin/pip}
  mkdir -p "$kit/wheels" "$kit/gsplat"
  # shellcheck disable=SC2046
  $pip download -q --no-deps $(wheel_tags "$python_version") -d "$kit/wheels" -r <(grep -v -e '^#' -e '^gsplat' scripts/gpu_kit.txt)
  for gsplat in "$(grep '^gsplat' scripts/gpu_kit.txt)" gsplat==1.5.3; do
    # shellcheck disable=SC2046
    $pip download -q --no-deps $(wheel_tags "$python_version") -d "$kit/gsplat" "$gsplat"
  done
  rm -f "$kit"/wheels/tinysplat-*.whl
  $pip wheel -q --no-deps --no-build-isolation -w "$kit/wheels" . && rm -rf build
  scene=${TINYSPLAT_DATA:-../shared/data}/tumbler
  rm -rf "$kit/tumbler" && cp -r "$scene" "$kit/tumbler"
  if [ -n "${1:-}" ]; then
    .venv/bin/tinysplat-export --load-config "$1" --output "$kit/scene.ply" --frame data --min-opacity 0
    .venv/bin/python -c "
import torch; from pathlib import Path; from tinysplat_ns.core.scene import load_cameras
viewmats, Ks, sizes, _ = load_cameras(Path('$scene')); pick = [0, 12, 24, 36]
torch.save({'viewmats': viewmats[pick].float(), 'Ks': Ks[pick].float(), 'sizes': [tuple(map(int, sizes[i])) for i in pick]},
           '$kit/cameras.pt')"
  fi
  kit_bytes=$(du -sb "$kit" | cut -f1)
  repo_bytes=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
  python3 -c "print(f'kit {$kit_bytes / 2**20:.1f} MiB + checkout {$repo_bytes / 2**20:.1f} MiB = {($kit_bytes + $repo_bytes) / 2**20:.1f} MiB of the 64 MiB that travel')"
  exit
fi

case "${1:-}" in
  core | smoke | train) ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
out=${OUT:-/tmp/gpu_check_out}
work=${WORK:-/tmp/gpu_check}
mkdir -p "$out" "$work"
site=$work/site
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
  "$kit"/wheels/*.whl "$kit/gsplat/gsplat-${GSPLAT:-1.4.0}-"*.whl
export PYTHONPATH=$site PATH=$site/bin:$PATH PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16
log=$out/gpu_check.log
python3 -c "import torch, gsplat; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gsplat', gsplat.__version__)" | tee -a "$log"
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$log"; fi
cuda=$(python3 -c "import torch; print(int(torch.cuda.is_available()))")
scene=$kit/tumbler

ns_train() {  # METHOD NAME ARGS...: a run under $work/outputs/gpu named NAME, its output in $work/NAME.log;
  # with TIME_LIMIT, stopped by SIGINT (as Ctrl-C: checkpoint saved, exit 130) after that many seconds
  local method=$1 name=$2 rc=0; shift 2
  ${TIME_LIMIT:+timeout --preserve-status -s INT "$TIME_LIMIT"} python3 benchmarks/offline_ns.py train "$method" --vis tensorboard \
    --experiment-name gpu --timestamp "$name" --output-dir "$work/outputs" "$@" > "$work/$name.log" 2>&1 || rc=$?
  if [ $rc = 0 ] || { [ -n "${TIME_LIMIT:-}" ] && [ $rc = 130 ]; }; then return 0; fi
  tail -30 "$work/$name.log"
  return 1
}

run_config() { find "$work/outputs/gpu" -path "*/$1/config.yml"; }

smoke() {
  local splatfacto_steps=20 local_writer=True cpu=()
  if [ "$cuda" = 0 ]; then
    splatfacto_steps=0 local_writer=False cpu=(--machine.device-type cpu --pipeline.model.random-init True)
  fi
  ns_train tinysplat smoke-tinysplat --max-num-iterations 20 colmap --data "$scene"
  tinysplat-export --load-config "$(run_config smoke-tinysplat)" --output "$out/smoke.ply" | tee -a "$log"
  # random init on a CPU: splatfacto moves its seed points with .cuda(); no local writer with 0 steps:
  # Nerfstudio's end-of-run table needs a step
  ns_train splatfacto smoke-splatfacto --max-num-iterations "$splatfacto_steps" --logging.local-writer.enable "$local_writer" "${cpu[@]}" \
    colmap --data "$scene" --colmap-path sparse/0
  echo "smoke: tinysplat 20 steps and its .ply, splatfacto $splatfacto_steps steps: ok" | tee -a "$log"
}

timed_run() {  # METHOD NAME ARGS...: ns_train, timed, with peak GPU memory (nvidia-smi every 0.2 s), then
  # ns-eval and tinysplat-export of its last checkpoint; benchmarks/gpu_train_report.py adds it up
  local method=$1 name=$2 start poller; shift 2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/$name.mem" &
  poller=$!
  start=$(date +%s.%N)
  ns_train "$method" "$name" "$@"
  python3 -c "print($(date +%s.%N) - $start)" > "$work/$name.wall"
  kill "$poller"
  python3 benchmarks/offline_ns.py eval --load-config "$(run_config "$name")" --output-path "$work/$name-eval.json" \
    > "$work/$name-eval.log" 2>&1 || tail -20 "$work/$name-eval.log"
  tinysplat-export --load-config "$(run_config "$name")" --output "$work/$name.ply" > "$work/$name-export.log"
  python3 benchmarks/gpu_train_report.py "$work" "$out/train.json" | tee -a "$log"
}

case "${1:-}" in
  core) python3 benchmarks/gpu_check.py "$kit/scene.ply" "$kit/cameras.pt" "$out/gpu_check.json" 2>&1 | tee -a "$log" ;;
  smoke) smoke ;;
  train)
    runs=("${@:2}")
    [ ${#runs[@]} -gt 0 ] || runs=(splatfacto tinysplat tinysplat-mcmc)
    # smoke also builds gsplat's CUDA code (minutes), so that the timed runs do not include it
    [ -e "$work/smoke.done" ] || { smoke && touch "$work/smoke.done"; }
    steps=${STEPS:-7000}
    no_eval=(--steps-per-eval-image 0 --steps-per-eval-batch 0 --steps-per-eval-all-images 0)
    for run in "${runs[@]}"; do
      case $run in
        splatfacto) timed_run splatfacto splatfacto --max-num-iterations "$steps" "${no_eval[@]}" \
          colmap --data "$scene" --colmap-path sparse/0 ;;
        tinysplat) timed_run tinysplat tinysplat --max-num-iterations "$steps" "${no_eval[@]}" colmap --data "$scene" ;;
        tinysplat-mcmc) TIME_LIMIT=$(cut -d. -f1 "$work/splatfacto.wall") timed_run tinysplat-mcmc \
          tinysplat-mcmc-same-wall --max-num-iterations 30000 --steps-per-save 250 "${no_eval[@]}" colmap --data "$scene" ;;
        *) echo "train: no run $run (splatfacto, tinysplat, tinysplat-mcmc)"; exit 2 ;;
      esac
    done
    ;;
esac
