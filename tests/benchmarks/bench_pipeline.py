"""Real-size CPU benchmark of one sampling step of the Sana DiT and of the DC-AE decode, ours against diffusers.

DiT: one CFG step (batch 2, a 300-token caption of which `--valid-tokens` are kept by the mask, as the pipelines pad
prompts) of Sana 1.6B (hidden 2240, 20 cross heads) and 600M (hidden 1152, 16 heads) at their real width and depth 2
(the per-block cost is the real one), at 512^2 and 1024^2 (16^2 and 32^2 latent tokens), models/dit.py vs diffusers
`SanaTransformer2DModel`, float32, seeded random weights (speed does not depend on trained values).
DC-AE: decode of a 1024^2 image and a tiled 2048^2 image (both sides tiled with 512 px tiles and 128 px overlap),
models/dcae.py vs diffusers `AutoencoderDC` (`enable_tiling(512, 512, 384, 384)`), the fixture weights
(tests/fixtures/dcae.py: real config, random weights).
Compile: one 1.6B block at 1024^2 (CFG batch), eager vs torch.compile (inductor) in the same process.

Every measurement runs in a fresh child process, ours and diffusers alternating for `--rounds` rounds; the fastest
round counts. On a shared machine wall time mostly measures waiting, so ratios use process CPU time with
`--threads 1` by default (wall times are printed too). Peak RSS: VmHWM of the child during the timed call, reset
after building and warming the model (/proc/self/clear_refs), with the resident set before the call (`base_mib`,
weights and runtime) beside it.

Prints one JSON object per line, then a summary object {"figure": "summary", ...} with every ratio:
- {"figure": "dit_step", "model": "1.6B", "size": 1024, "ours_cpu_s", "diffusers_cpu_s", "ratio", ...} (goal <= 0.8)
- {"figure": "dcae_decode", "size": 1024, "tiled": false, ...}                                       (goal <= 0.8)
- {"figure": "compiled_block", "size": 1024, "eager_cpu_s", "compiled_cpu_s", "speedup", "compile_s"}

Run: python tests/benchmarks/bench_pipeline.py [--rounds 2] [--threads 1] [--only dit,dcae,compile] [--sizes 512 1024]
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

MIB = 2**20
DIT_MODELS = {"1.6B": (2240, 20), "600M": (1152, 16)}  # hidden size, cross-attention heads (NVlabs configs)
DIT_DEPTH = 2
CFG_BATCH = 2
CAPTION_TOKENS = 300  # NVlabs/diffusers `max_sequence_length`
CAPTION_CHANNELS = 2304
PIXELS_PER_LATENT = 32
LATENT_SCALE = 0.41407  # DC-AE f32c32 scaling factor: latents of unit variance after division
DCAE_TILE, DCAE_OVERLAP = 16, 4  # latent pixels: 512 px tiles, 128 px overlap (models/tiling.py defaults)
RATIO_GOAL = 0.8


def emit(**figure) -> dict:
    print(json.dumps(figure), flush=True)
    return figure


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def timed(fn, repeats: int) -> dict:
    """Fastest of `repeats` calls: CPU and wall seconds, and the peak RSS over the calls (VmHWM reset before)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    base = _rss_kib("VmRSS")
    cpu_best = wall_best = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        cpu_best, wall_best = min(cpu_best, time.process_time() - cpu), min(wall_best, time.perf_counter() - wall)
    return {"cpu_s": cpu_best, "wall_s": wall_best, "peak_mib": _rss_kib("VmHWM") / 1024, "base_mib": base / 1024}


def _init_(model: torch.nn.Module) -> torch.nn.Module:
    """Seeded N(0, 0.02) weights (ours are `torch.empty` until loaded) so neither model runs on garbage."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    return model.eval()


def build_dit(impl: str, model: str):
    hidden, heads = DIT_MODELS[model]
    if impl == "diffusers":
        from diffusers import SanaTransformer2DModel

        return _init_(SanaTransformer2DModel(
            num_layers=DIT_DEPTH, num_attention_heads=hidden // 32, attention_head_dim=32,
            num_cross_attention_heads=heads, cross_attention_head_dim=hidden // heads, cross_attention_dim=hidden,
            caption_channels=CAPTION_CHANNELS, sample_size=32))
    from models.dit import SanaDiT, SanaDiTConfig

    return _init_(SanaDiT(SanaDiTConfig(hidden_size=hidden, depth=DIT_DEPTH, num_cross_heads=heads,
                                        reference="diffusers")))


def dit_inputs(latent: int, valid: int) -> tuple:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(CFG_BATCH, 32, latent, latent, generator=gen)
    context = torch.randn(CFG_BATCH, CAPTION_TOKENS, CAPTION_CHANNELS, generator=gen)
    mask = torch.zeros(CFG_BATCH, CAPTION_TOKENS)
    mask[0, :valid] = 1
    mask[1, :max(valid // 4, 1)] = 1  # the negative prompt is shorter
    return x, context, mask, torch.full((CFG_BATCH,), 500.0)


def dit_call(impl: str, net, latent: int, valid: int):
    x, context, mask, t = dit_inputs(latent, valid)
    if impl == "diffusers":
        return lambda: net(x, encoder_hidden_states=context, timestep=t, encoder_attention_mask=mask)
    return lambda: net(x, t, context, attention_mask=mask)


def child_dit(args) -> dict:
    net = build_dit(args.impl, args.model)
    dit_call(args.impl, net, 8, args.valid_tokens)()  # warm-up on a small grid
    return timed(dit_call(args.impl, net, args.size // PIXELS_PER_LATENT, args.valid_tokens), args.repeats)


def child_dcae(args) -> dict:
    from tests.fixtures.dcae import DIFFUSERS_DIR, ORIGINAL_DIR, ORIGINAL_FILE, dcae_fixture_root

    root = dcae_fixture_root()
    latent = torch.randn(1, 32, args.size // 32, args.size // 32, generator=torch.Generator().manual_seed(0))
    latent = latent / LATENT_SCALE
    if args.impl == "diffusers":
        from diffusers import AutoencoderDC

        net = AutoencoderDC.from_pretrained(root / DIFFUSERS_DIR, torch_dtype=torch.float32).eval()
        if args.tiled:
            tile, stride = DCAE_TILE * PIXELS_PER_LATENT, (DCAE_TILE - DCAE_OVERLAP) * PIXELS_PER_LATENT
            net.enable_tiling(tile, tile, stride, stride)
        net.decode(latent[..., :2, :2])  # warm-up; pages in the weights
        return timed(lambda: net.decode(latent), args.repeats)
    from models.dcae_checkpoint import load_dcae
    from models.tiling import TilingOptions

    net = load_dcae(root / ORIGINAL_DIR / ORIGINAL_FILE)
    options = TilingOptions(mode="always" if args.tiled else "never", tile=DCAE_TILE, overlap=DCAE_OVERLAP)
    net.decode(latent[..., :2, :2], tiling=TilingOptions(mode="never"))
    return timed(lambda: net.decode(latent, tiling=options), args.repeats)


def child_block(args) -> dict:
    """Eager vs inductor-compiled 1.6B block in this process (same weights and inputs)."""
    from models.dit import SanaDiTConfig
    from models.dit_blocks import SanaBlock

    hidden, heads = DIT_MODELS["1.6B"]
    block = _init_(SanaBlock(SanaDiTConfig(hidden_size=hidden, num_cross_heads=heads, reference="diffusers"),
                             operations=torch.nn))
    side = args.size // PIXELS_PER_LATENT
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(CFG_BATCH, side * side, hidden, generator=gen)
    y = torch.randn(CFG_BATCH, args.valid_tokens, hidden, generator=gen)
    t0 = torch.randn(CFG_BATCH, 6 * hidden, generator=gen) * 0.1
    compiled = torch.compile(block, backend="inductor", fullgraph=True)
    start = time.perf_counter()
    compiled(x, y, t0, None, (side, side))
    compile_s = time.perf_counter() - start
    block(x, y, t0, None, (side, side))
    result = {"compile_s": compile_s}
    for _ in range(args.repeats):  # interleaved; keep the fastest of each
        for name, fn in (("eager", block), ("compiled", compiled)):
            row = timed(lambda fn=fn: fn(x, y, t0, None, (side, side)), 1)
            best = result.get(name, {"cpu_s": float("inf"), "wall_s": float("inf")})
            result[name] = {key: min(best[key], row[key]) for key in ("cpu_s", "wall_s")}
    eager, fast = block(x, y, t0, None, (side, side)), compiled(x, y, t0, None, (side, side))
    result["max_rel_diff"] = ((fast - eager).abs().max() / eager.abs().max()).item()
    return result


def run_child(args, **fields) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--output", str(output), "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--valid-tokens", str(args.valid_tokens)]
        for key, value in fields.items():
            command += [f"--{key.replace('_', '-')}", str(value)] if value is not True else [f"--{key}"]
        subprocess.run(command, check=True)
        return json.loads(output.read_text())


def compare(args, figure: str, **fields) -> dict:
    """Alternate ours / diffusers children for `--rounds` rounds; emit the fastest of each."""
    best = {}
    for _ in range(args.rounds):
        for impl in ("ours", "diffusers"):
            row = run_child(args, child=figure, impl=impl, **fields)
            if impl not in best or row["cpu_s"] < best[impl]["cpu_s"]:
                best[impl] = row
    ours, ref = best["ours"], best["diffusers"]
    stats = {f"{impl}_{key}": round(best[impl][key], 3) for impl in best for key in best[impl]}
    return emit(figure=figure, **{k: v for k, v in fields.items() if k != "child"}, threads=args.threads, **stats,
                ratio=round(ours["cpu_s"] / ref["cpu_s"], 3), wall_ratio=round(ours["wall_s"] / ref["wall_s"], 3),
                goal=RATIO_GOAL)


def parent(args) -> None:
    emit(figure="setup", torch=torch.__version__, threads=args.threads, rounds=args.rounds, repeats=args.repeats,
         dit_depth=DIT_DEPTH, cfg_batch=CFG_BATCH, valid_tokens=args.valid_tokens)
    rows, only = [], set(args.only.split(","))
    if "dit" in only:
        rows += [compare(args, "dit_step", model=model, size=size) for model in DIT_MODELS for size in args.sizes]
    if "dcae" in only:
        rows += [compare(args, "dcae_decode", size=1024), compare(args, "dcae_decode", size=2048, tiled=True)]
    if "compile" in only:
        block = run_child(args, child="compiled_block", impl="ours", size=max(args.sizes))
        rows.append(emit(figure="compiled_block", model="1.6B", size=max(args.sizes), threads=args.threads,
                         eager_cpu_s=round(block["eager"]["cpu_s"], 3),
                         compiled_cpu_s=round(block["compiled"]["cpu_s"], 3),
                         speedup=round(block["eager"]["cpu_s"] / block["compiled"]["cpu_s"], 3),
                         wall_speedup=round(block["eager"]["wall_s"] / block["compiled"]["wall_s"], 3),
                         compile_s=round(block["compile_s"], 1), max_rel_diff=block["max_rel_diff"]))
    summary = {f"{r['figure']}/{r.get('model', '')}{'/tiled' if r.get('tiled') else ''}/{r['size']}":
               r.get("ratio", r.get("speedup")) for r in rows}
    emit(figure="summary", ratios=summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/diffusers child processes per case")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per child (after a warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in every child")
    parser.add_argument("--valid-tokens", type=int, default=120, help="caption tokens kept by the mask (of 300)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="image sides of the DiT step")
    parser.add_argument("--only", default="dit,dcae,compile", help="comma list of dit, dcae, compile")
    parser.add_argument("--child", choices=("dit_step", "dcae_decode", "compiled_block"), help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=tuple(DIT_MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child:
        parent(args)
        return
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    handler = {"dit_step": child_dit, "dcae_decode": child_dcae, "compiled_block": child_block}[args.child]
    Path(args.output).write_text(json.dumps(handler(args)))


if __name__ == "__main__":
    main()
