#!/usr/bin/env bash
# Run the GPU check on the device machine (after tests/benchmarks/gpu_prepare.sh here; carry ".gpu").
# Installs .gpu/wheels into $SITE (default /tmp/site), points COMFYUI_PATH at .gpu/ComfyUI and runs gpu_check.py with
# the given arguments, writing $OUT/gpu_check.json and $OUT/gpu_check.log (OUT defaults to /tmp/gpu_check_out).
# Usage: bash tests/benchmarks/gpu_run.sh [--smoke] [--models 600M,1.6B] [--dtypes bf16] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT" "$SITE"
[ -d .gpu/wheels ] || { echo "gpu_run: .gpu/wheels is missing: run tests/benchmarks/gpu_prepare.sh and carry .gpu" >&2; exit 1; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export COMFYUI_PATH=${COMFYUI_PATH:-$PWD/.gpu/ComfyUI}
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
set -o pipefail
"$PY" tests/benchmarks/gpu_check.py "$@" --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
