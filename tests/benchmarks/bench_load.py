"""Benchmark of loading a full-size Sana DiT: load time and peak host RAM (goal: peak <= 1.25 x the weights in their
target dtype), for the pack's ComfyUI loader (nodes/dit_adapter.load_sana_dit: meta-device build + assign) and for
diffusers' `SanaTransformer2DModel.from_pretrained` on the same weights.

Files (random weights, real layouts, written to --workdir, reused when present):
- Sana 1.6B 1024 px as the NVlabs release stores it: `{"state_dict": ...}` in fp32 (`.pth`, 6.4 GB);
- the same weights as an original-layout bf16 safetensors file (3.2 GB) and as a diffusers bf16 transformer folder;
- with --with-4p8b, Sana 1.5 4.8B as an original-layout bf16 safetensors file (9.6 GB), run only when
  MemAvailable > 1.5 x its size.

Each case runs in its own subprocess: peak RSS = the kernel's peak mark (VmHWM, reset after the imports) minus the
RSS before the load.
The page cache is warm (files were just written or read); the finite-weights check is timed again on resident data
to give its share of the load time, and for every case one pass over all weights after the load gives the time and peak
RSS until every weight was read (diffusers, like the pack, maps safetensors lazily). Prints one JSON object per line,
e.g.
{"case": "pack_pth_fp32_to_bf16", "load_s": 9.1, "peak_rss_gb": 3.3, "weights_gb": 3.2, "peak_over_weights": 1.03}

Run: python tests/benchmarks/bench_load.py --workdir /tmp/sana-bench [--with-4p8b] [--depth N (smaller, for a try)]
Needs ComfyUI (COMFYUI_PATH, default ../ComfyUI or /work/shared/ComfyUI) and diffusers.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GOAL = 1.25  # peak host RAM / weights in target dtype
INIT_STD = 0.02
NULL_CAPTION_TOKENS, CAPTION_CHANNELS = 300, 2304  # `y_embedder.y_embedding` of NVlabs files
MEM_MARGIN = 1.5  # run a case only when MemAvailable > margin x its weights
DIFFUSERS_1600M = {"in_channels": 32, "out_channels": 32, "num_attention_heads": 70, "attention_head_dim": 32,
                   "num_cross_attention_heads": 20, "cross_attention_head_dim": 112, "cross_attention_dim": 2240,
                   "caption_channels": CAPTION_CHANNELS, "mlp_ratio": 2.5, "sample_size": 32, "num_layers": 20}
ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
GB = 1e9


def write_safetensors(shapes: dict, path: Path, make, dtype) -> None:
    """Stream a safetensors file tensor by tensor (nothing held in RAM): shapes {name: shape}, make(name) -> tensor."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = torch.Size(shape).numel() * dtype.itemsize
        header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name in shapes:
            f.write(make(name).to(dtype).contiguous().view(torch.uint8).numpy().tobytes())


def _random(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * INIT_STD


def make_1600m(workdir: Path, depth: int) -> dict:
    """The 1.6B files: diffusers bf16 folder, original bf16 safetensors, original fp32 .pth. Returns their paths."""
    from diffusers import SanaTransformer2DModel

    from models.dit_checkpoint import diffusers_to_original
    from models.weights_file import read_weights

    paths = {"diffusers": workdir / f"Sana_1600M_d{depth}_diffusers" / "transformer",
             "st_bf16": workdir / f"Sana_1600M_d{depth}_bf16.safetensors",
             "pth_fp32": workdir / f"Sana_1600M_d{depth}.pth"}
    weights = paths["diffusers"] / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        with torch.device("meta"):
            ref = SanaTransformer2DModel(**{**DIFFUSERS_1600M, "num_layers": depth})
        paths["diffusers"].mkdir(parents=True, exist_ok=True)
        (paths["diffusers"] / "config.json").write_text(json.dumps(dict(ref.config)))
        shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        seeds = {k: i for i, k in enumerate(shapes)}
        write_safetensors(shapes, weights, lambda k: _random(shapes[k], seeds[k]), torch.bfloat16)
    if not paths["st_bf16"].exists() or not paths["pth_fp32"].exists():
        sd = diffusers_to_original(read_weights(weights, "DiT"))
        sd["pos_embed"] = torch.zeros(1, DIFFUSERS_1600M["sample_size"] ** 2, sd["x_embedder.proj.weight"].shape[0])
        sd["y_embedder.y_embedding"] = _random((NULL_CAPTION_TOKENS, CAPTION_CHANNELS), -1)
        write_safetensors({k: v.shape for k, v in sd.items()}, paths["st_bf16"], sd.__getitem__, torch.bfloat16)
        _write_pth_fp32(sd, paths["pth_fp32"], workdir)
    return paths


def _write_pth_fp32(sd: dict, path: Path, workdir: Path) -> None:
    """fp32 `.pth` as NVlabs stores it, written from a memory-mapped fp32 copy (file pages, not anonymous RAM)."""
    from models.weights_file import read_weights

    staging = workdir / "staging_fp32.safetensors"
    write_safetensors({k: v.shape for k, v in sd.items()}, staging, sd.__getitem__, torch.float32)
    torch.save({"state_dict": read_weights(staging, "DiT")}, path)
    staging.unlink()


def make_4800m(workdir: Path) -> Path:
    """Sana 1.5 4.8B (60 blocks, qk-norm) as an original-layout bf16 safetensors file."""
    from models.dit import SanaDiT, variant_config

    path = workdir / "SANA1.5_4.8B_1024px_bf16.safetensors"
    if not path.exists():
        with torch.device("meta"):
            model = SanaDiT(variant_config("1.5", 2240, 32, 60))
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        shapes["pos_embed"] = (1, 32 * 32, 2240)
        seeds = {k: i for i, k in enumerate(shapes)}
        write_safetensors(shapes, path, lambda k: (torch.zeros(shapes[k]) if k == "pos_embed" else
                                                   _random(shapes[k], seeds[k])), torch.bfloat16)
    return path


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`) and return the current RSS,
    so that the import peak does not hide the load's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def _load_pack(path: str, dtype: str):
    sys.argv = [sys.argv[0], "--cpu"]
    comfy_path = os.environ.get("COMFYUI_PATH") or next(
        (str(p) for p in (REPO.parent / "ComfyUI", Path("/work/shared/ComfyUI")) if p.exists()), "")
    sys.path[:0] = [str(REPO.parent), comfy_path]
    import importlib

    import comfy.options
    comfy.options.enable_args_parsing()
    adapter = importlib.import_module(f"{REPO.name}.nodes.dit_adapter")
    weight_dtype = None if dtype == "default" else getattr(torch, dtype)
    return lambda: adapter.load_sana_dit(path, weight_dtype).model.diffusion_model


def _load_diffusers(path: str, dtype: str):
    from diffusers import SanaTransformer2DModel

    return lambda: SanaTransformer2DModel.from_pretrained(path, torch_dtype=getattr(torch, dtype))


def run_case(kind: str, path: str, dtype: str) -> dict:
    """In this (fresh) process: load once, report time and peak RSS (VmHWM) above the RSS before the load."""
    load = _load_pack(path, dtype) if kind == "pack" else _load_diffusers(path, dtype)
    base = _reset_peak()
    start = time.perf_counter()
    model = load()
    load_s = time.perf_counter() - start
    peak = _status_bytes("VmHWM") - base
    sd = model.state_dict()
    weights = sum(t.numel() * t.element_size() for t in sd.values())
    from models.weights_file import check_finite

    start = time.perf_counter()
    check_finite(sd, path)  # one pass over every weight: forces the read of lazily mapped files
    pass_s = time.perf_counter() - start
    peak_read = _status_bytes("VmHWM") - base
    out = {"load_s": round(load_s, 2), "peak_rss_gb": round(peak / GB, 3), "weights_gb": round(weights / GB, 3),
           "peak_over_weights": round(peak / weights, 3), "target_dtype": str(next(iter(sd.values())).dtype),
           "pass_over_weights_s": round(pass_s, 2), "ready_s": round(load_s + pass_s, 2),
           "peak_after_full_read_over_weights": round(peak_read / weights, 3)}
    if kind == "pack":  # the pack's load already ran this check once; the pass above is on resident data
        out["finite_check_share_of_load"] = round(pass_s / load_s, 4)
    return out


def _subprocess(name: str, kind: str, path: Path, dtype: str, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--case", kind, str(path), dtype]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if done.returncode == 0 and lines else {"error": done.stderr[-800:]}
    result = {"case": name, "file": path.name, "file_gb": round(_size(path) / GB, 3), **result}
    if "peak_over_weights" in result:
        result["meets_goal"] = max(result["peak_over_weights"], result["peak_after_full_read_over_weights"]) <= GOAL
    return result


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sana-bench-load"))
    parser.add_argument("--depth", type=int, default=DIFFUSERS_1600M["num_layers"])
    parser.add_argument("--with-4p8b", action="store_true")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case)), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    paths = make_1600m(args.workdir, args.depth)
    print(json.dumps({"generated_s": round(time.perf_counter() - start, 1), "workdir": str(args.workdir)}), flush=True)
    cases = [("pack_pth_fp32_default", "pack", paths["pth_fp32"], "default"),
             ("pack_pth_fp32_to_bf16", "pack", paths["pth_fp32"], "bfloat16"),
             ("pack_safetensors_bf16", "pack", paths["st_bf16"], "bfloat16"),
             ("diffusers_from_pretrained_bf16", "diffusers", paths["diffusers"], "bfloat16"),
             ("diffusers_from_pretrained_bf16_to_fp32", "diffusers", paths["diffusers"], "float32")]
    if args.with_4p8b:
        needed = 9.6 * GB * MEM_MARGIN
        if _mem_available() > needed:
            cases.append(("pack_4p8b_safetensors_bf16", "pack", make_4800m(args.workdir), "bfloat16"))
        else:
            print(json.dumps({"case": "pack_4p8b_safetensors_bf16", "skipped": f"MemAvailable "
                              f"{_mem_available() / GB:.1f} GB < {needed / GB:.1f} GB"}), flush=True)
    for case in cases:
        print(json.dumps(_subprocess(*case, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
