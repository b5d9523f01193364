"""Benchmark of the DC-AE f32c32 (models/dcae.py) against diffusers `AutoencoderDC`, CPU float32, real Sana config.

Uses the cached fixture weights (tests/fixtures/dcae.py: real config, seeded random weights; speed does not depend on
trained values). Timings interleave the two implementations and keep the fastest repeat. On a shared machine wall time
mostly measures waiting, so the ratio is taken on process CPU time with `--threads 1` by default (one thread has no
barrier stalls when descheduled); wall times are printed too. Memory is measured in a fresh child process per mode:
peak resident set (VmHWM, reset after loading through /proc/self/clear_refs) minus the resident set before the pass,
i.e. activation memory without weights.

Prints one JSON object per line:
- {"figure": "decode_vs_diffusers", "size": 512, "threads", "ours_cpu_s", "diffusers_cpu_s", "ratio", "ours_wall_s",
   "diffusers_wall_s", "wall_ratio"}                                                          (goal ratio <= 0.8)
- {"figure": "encode_vs_diffusers", ...}                                                     (informative)
- {"figure": "decode_peak_memory", "size": 1024, "mode": "full"|"tiled", "peak_mib", "estimate_mib"}
- {"figure": "tiled_vs_full_memory", "size": 1024, "ratio"}                                  (goal <= 0.35)
- {"figure": "tiled_vs_full_decode", "size": 1024, "max_abs", "mean_abs", "seam_ratio", "seam_ratio_full"}
                                                                                             (goal seam <= 1.1)

Run: ~/.cache/sana-dev/unit/bin/python tests/benchmarks/bench_dcae.py [--size 512] [--memory-size 1024] [--repeats 3]
     [--skip-speed] [--skip-memory]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from models.dcae_checkpoint import load_dcae  # noqa: E402
from models.tiling import TilingOptions, seam_ratio, tile_borders  # noqa: E402
from tests.fixtures.dcae import DIFFUSERS_DIR, ORIGINAL_DIR, ORIGINAL_FILE, dcae_fixture_root  # noqa: E402

NEVER, ALWAYS = TilingOptions(mode="never"), TilingOptions(mode="always")
MIB = 2**20


def emit(**figure) -> None:
    print(json.dumps(figure), flush=True)


def best_times(functions: dict, repeats: int) -> dict:
    """{name: (CPU s, wall s)}: fastest of `repeats` runs of each function, interleaved within every repeat."""
    best = {name: (float("inf"), float("inf")) for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    return best


def emit_times(figure: str, size: int, times: dict) -> None:
    (ours_cpu, ours_wall), (ref_cpu, ref_wall) = times["ours"], times["diffusers"]
    emit(figure=figure, size=size, threads=torch.get_num_threads(), ours_cpu_s=round(ours_cpu, 3),
         diffusers_cpu_s=round(ref_cpu, 3), ratio=round(ours_cpu / ref_cpu, 3), ours_wall_s=round(ours_wall, 3),
         diffusers_wall_s=round(ref_wall, 3), wall_ratio=round(ours_wall / ref_wall, 3))


def speed(size: int, repeats: int) -> None:
    from diffusers import AutoencoderDC

    root = dcae_fixture_root()
    ours = load_dcae(root / ORIGINAL_DIR / ORIGINAL_FILE)
    reference = AutoencoderDC.from_pretrained(root / DIFFUSERS_DIR, torch_dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 32, size // 32, size // 32, generator=generator) / 0.41407
    image = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    with torch.no_grad():
        warm = latent[..., :2, :2]
        ours.decode(warm, tiling=NEVER), reference.decode(warm)
        emit_times("decode_vs_diffusers", size, best_times({"ours": lambda: ours.decode(latent, tiling=NEVER),
                                                            "diffusers": lambda: reference.decode(latent)}, repeats))
        emit_times("encode_vs_diffusers", size, best_times({"ours": lambda: ours.encode(image, tiling=NEVER),
                                                            "diffusers": lambda: reference.encode(image)}, repeats))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(mode: str, size: int, output: str) -> None:
    """One decode in this (fresh) process; writes {peak_mib, estimate_mib} and the image to `output`."""
    model = load_dcae(dcae_fixture_root() / ORIGINAL_DIR / ORIGINAL_FILE)
    latent = torch.randn(1, 32, size // 32, size // 32, generator=torch.Generator().manual_seed(0)) / 0.41407
    options = ALWAYS if mode == "tiled" else NEVER
    model.decode(latent[..., :1, :1], tiling=NEVER)  # pages in every weight (safetensors maps the file lazily)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _rss_kib("VmRSS")
    image = model.decode(latent, tiling=options)
    peak = (_rss_kib("VmHWM") - before) * 1024
    torch.save({"peak": peak, "estimate": model.estimate_decode_bytes(latent.shape, latent.dtype), "image": image},
               output)


def memory(size: int) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("full", "tiled"):
            output = str(Path(folder) / f"{mode}.pt")
            subprocess.run([sys.executable, __file__, "--child", mode, "--memory-size", str(size), "--output", output],
                           check=True)
            results[mode] = torch.load(output)
            emit(figure="decode_peak_memory", size=size, mode=mode, peak_mib=round(results[mode]["peak"] / MIB),
                 estimate_mib=round(results[mode]["estimate"] / MIB))
    emit(figure="tiled_vs_full_memory", size=size, ratio=round(results["tiled"]["peak"] / results["full"]["peak"], 3))
    full, tiled = results["full"]["image"], results["tiled"]["image"]
    borders = tile_borders(size // 32, ALWAYS, 32)
    if not borders:
        return
    emit(figure="tiled_vs_full_decode", size=size, tile_px=ALWAYS.tile * 32, overlap_px=ALWAYS.overlap * 32,
         max_abs=round((tiled - full).abs().max().item(), 4), mean_abs=round((tiled - full).abs().mean().item(), 5),
         seam_ratio=round(seam_ratio(tiled, borders, borders), 3),
         seam_ratio_full=round(seam_ratio(full, borders, borders), 3),
         seam_ratio_latent_grid=round(seam_ratio(tiled, borders, borders, period=32), 3),
         seam_ratio_latent_grid_full=round(seam_ratio(full, borders, borders, period=32), 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="output side for the timing comparison")
    parser.add_argument("--memory-size", type=int, default=1024, help="output side for the memory comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the timing comparison")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", choices=("full", "tiled"), help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.memory_size, args.output)
        return
    if not args.skip_speed:
        torch.set_num_threads(args.threads)
        speed(args.size, args.repeats)
    if not args.skip_memory:
        memory(args.memory_size)


if __name__ == "__main__":
    main()
