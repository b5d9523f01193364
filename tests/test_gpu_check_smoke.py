"""tests/benchmarks/gpu_check.py --smoke: the GPU check's whole flow (ComfyUI model management and sampling of the
DiT, diffusers in the same process, DC-AE decode full and tiled) on tiny CPU sizes, so the script cannot rot."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.server import find_comfyui

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "benchmarks" / "gpu_check.py"
TIMEOUT_S = 300
# One bf16 forward of the tiny DiT, ours in ComfyUI vs diffusers, same weights: bf16 rounding of two orderings of the
# same sums (measured 3.7e-3 relative); 5e-2 still fails on a wrong layer (errors of order 1).
BF16_FORWARD_REL_TOL = 5e-2


def test_gpu_check_smoke_runs_and_reports(tmp_path):
    comfy_root, reason = find_comfyui()
    if comfy_root is None:
        pytest.skip(reason)
    missing = [m for m in ("diffusers", "torchsde") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{missing} not importable in {sys.executable}: the GPU check needs the ComfyUI env")
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--comfyui", str(comfy_root), "--out", str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    (row,) = report["dit"]
    assert row["comfyui"]["finite"] and row["diffusers"]["finite"], row
    assert row["comfyui"]["step_ms"] > 0 and row["diffusers"]["step_ms"] > 0 and row["gflop_per_step"] > 0
    assert row["forward_rel_diff"] <= BF16_FORWARD_REL_TOL, row
    assert row["cross_attention_fn"] == "SanaDiTComfy.comfy_attention", "ComfyUI's attention backend is not in use"
    assert [(d["size"], d["tiled"]) for d in report["dcae"]] == [(64, False), (192, True)]
    assert all(d["ours"]["finite"] and d["diffusers"]["finite"] for d in report["dcae"]), report["dcae"]
