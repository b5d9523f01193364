#!/usr/bin/env bash
# Prepare the GPU check for a machine that receives only this repository's working tree and has no network:
#   .gpu/ComfyUI : ComfyUI core (from COMFYUI_PATH or ../shared/ComfyUI) without .git, tests and CI files
#   .gpu/wheels  : the Python packages the check needs beyond the device image (torch, transformers, numpy, scipy,
#                  safetensors, huggingface_hub are there): diffusers, torchsde and its dependency trampoline,
#                  downloaded for CPython 3.12 / manylinux x86-64 (all three are pure-Python wheels).
# Both folders are git-ignored through .git/info/exclude (not .gitignore) and travel with `carry: [".gpu"]`.
# Run here (needs PyPI); then on the device: bash tests/benchmarks/gpu_run.sh. Usage: bash tests/benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
COMFY_SRC=${COMFYUI_PATH:-$REPO/../shared/ComfyUI}
PIP_PYTHON=${PIP_PYTHON:-$(command -v python3)}
WHEELS=("diffusers==0.42.1" "torchsde==0.2.6" "trampoline==0.1.2")
MAX_MIB=60

[ -f "$COMFY_SRC/comfy/model_management.py" ] || { echo "gpu_prepare: no ComfyUI at '$COMFY_SRC' (set COMFYUI_PATH)" >&2; exit 1; }
EXCLUDE=.git/info/exclude
if [ -d .git ]; then
  grep -qxF "/.gpu/" "$EXCLUDE" 2>/dev/null || echo "/.gpu/" >> "$EXCLUDE"
else
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  grep -qxF "/.gpu/" "$EXCLUDE" 2>/dev/null || echo "/.gpu/" >> "$EXCLUDE"
fi

rm -rf .gpu/ComfyUI && mkdir -p .gpu/ComfyUI .gpu/wheels
tar -C "$COMFY_SRC" --exclude=.git --exclude=.github --exclude=.ci --exclude=tests --exclude=tests-unit \
    --exclude=__pycache__ --exclude='*.pyc' --exclude=output --exclude=input --exclude=user --exclude=custom_nodes \
    --exclude=models -cf - . | tar -C .gpu/ComfyUI -xf -
mkdir -p .gpu/ComfyUI/models .gpu/ComfyUI/custom_nodes

have_all=1
for spec in "${WHEELS[@]}"; do
  name=${spec%%==*}; version=${spec##*==}
  ls .gpu/wheels/"${name}"-"${version}"-*.whl >/dev/null 2>&1 || have_all=0
done
if [ "$have_all" = 0 ]; then
  "$PIP_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/wheels "${WHEELS[@]}"
fi

size_mib=$(du -sm .gpu | cut -f1)
echo "gpu_prepare: .gpu is ${size_mib} MiB ($(ls .gpu/wheels | tr '\n' ' '))"
if [ "$size_mib" -ge "$MAX_MIB" ]; then
  echo "gpu_prepare: .gpu is over ${MAX_MIB} MiB; the device copy is limited to 64 MiB in all" >&2
  exit 1
fi
