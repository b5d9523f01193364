"""Experiment (issue 8): how each position encoding of the linear DiT carries to grids it was not trained on.

Trains three tiny Sana DiTs (no PE, sin-cos, 2-D RoPE; hidden 64, 2 heads of 32, 4 blocks) with flow matching on a
synthetic latent distribution at an 8x8 token grid, then reports the flow-matching validation loss at 1x, 2x and 4x
that grid for: none, sincos (Sana interpolation), sincos-extrap (base size = grid, i.e. no interpolation), rope,
scaled (Seedream), ntk, yarn, time_aware (Lumina-Next). The RoPE rows share one trained model and differ only in the
inference override (`transformer_options["sana_pos_encoding"]`), as a user would switch them in ComfyUI.

Synthetic distribution: 4 latent channels with structure at a known scale.
- global, scales with the canvas: a centred soft disk (radius 0.25..0.4 of the side) and a vertical ramp;
- local, fixed in tokens: a period-2 checkerboard inside the disk and Gaussian blobs of sigma 0.75 token.
So interpolating positions helps the global layout and hurts the fixed-scale texture, extrapolating does the reverse.

Run (CPU, about 5 minutes on an idle core): ~/.cache/sana-dev/unit/bin/python tests/benchmarks/bench_pe_extrapolation.py
Prints one JSON object per (encoding, scale) cell, then a table.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.dit import SanaDiT, SanaDiTConfig  # noqa: E402
from models.rope import OVERRIDE_KEY, RopeConfig  # noqa: E402

TRAIN_SIDE = 8  # training grid, latent tokens per side
SCALES = (1, 2, 4)
HIDDEN, DEPTH, CROSS_HEADS, CHANNELS, CAPTION = 64, 4, 2, 4, 8
TIMESTEP_SCALE = 1000.0  # the DiT takes sigma * 1000 (docs/ARCHITECTURE.md §2)
STEPS, BATCH, LR = 1000, 32, 1e-3
VAL_TOKENS = 8192  # validation tokens per grid (same for every scale)
VAL_SIGMAS = torch.linspace(0.05, 0.95, 10)
BLOB_SIGMA = 0.75  # tokens
BLOBS_PER_TOKEN = 1 / 16
DISK_RADIUS = (0.25, 0.4)  # of the canvas side
EDGE_WIDTH = 1.0  # tokens, soft edge of the disk


def synthetic_latents(n: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 4, side, side] samples of the synthetic distribution (global layout + fixed-scale texture)."""
    coord = (torch.arange(side) + 0.5) / side - 0.5  # canvas coordinates in (-0.5, 0.5)
    yy, xx = coord[:, None].expand(side, side), coord[None, :].expand(side, side)
    radius = torch.empty(n, 1, 1).uniform_(*DISK_RADIUS, generator=gen)
    disk = torch.tanh((radius - (yy**2 + xx**2).sqrt()) * side / EDGE_WIDTH)
    idx = torch.arange(side)
    phase = torch.randint(0, 2, (n, 1, 1), generator=gen)
    checker = ((idx[:, None] + idx[None, :] + phase) % 2) * 2.0 - 1.0
    checker = checker * (disk > 0) * torch.where(torch.rand(n, 1, 1, generator=gen) < 0.5, -1.0, 1.0)
    blobs = torch.zeros(n, side, side)
    count = max(1, round(side * side * BLOBS_PER_TOKEN))
    centres = torch.rand(n, count, 2, generator=gen) * side
    signs = torch.where(torch.rand(n, count, generator=gen) < 0.5, -1.0, 1.0)
    grid = idx.float() + 0.5
    for c in range(count):
        dy = grid[None, :, None] - centres[:, c, 0, None, None]
        dx = grid[None, None, :] - centres[:, c, 1, None, None]
        blobs += signs[:, c, None, None] * torch.exp(-(dy**2 + dx**2) / (2 * BLOB_SIGMA**2))
    ramp = 2 * yy[None].expand(n, side, side) * torch.empty(n, 1, 1).uniform_(0.5, 1.0, generator=gen)
    return torch.stack([disk, checker, blobs, ramp], dim=1)


def make_model(pos_encoding: str) -> SanaDiT:
    """Tiny DiT with the real block structure (head dim 32) and the given declared encoding."""
    rope = RopeConfig(train_grid=(TRAIN_SIDE, TRAIN_SIDE)) if pos_encoding == "rope" else None
    cfg = SanaDiTConfig(hidden_size=HIDDEN, depth=DEPTH, num_cross_heads=CROSS_HEADS, caption_channels=CAPTION,
                        in_channels=CHANNELS, out_channels=CHANNELS, sample_size=TRAIN_SIDE, base_size=TRAIN_SIDE,
                        use_pe=pos_encoding == "sincos", pos_encoding=pos_encoding, rope=rope,
                        reference="diffusers")  # diffusers numerics: float timesteps, no integer truncation
    model = SanaDiT(cfg)
    with torch.no_grad():  # the tables are torch.empty in the model; NVlabs draws them as randn / sqrt(hidden)
        for name, param in model.named_parameters():
            if name.endswith("scale_shift_table"):
                param.normal_(0.0, HIDDEN**-0.5)
    return model


def velocity_loss(model, x0, sigma, noise, options) -> torch.Tensor:
    """Per-sample flow-matching loss ||v(x_sigma) - (noise - x0)||^2 averaged over elements: [B]."""
    s = sigma[:, None, None, None]
    x_t = (1 - s) * x0 + s * noise  # flow convention x_sigma = (1 - sigma) x0 + sigma eps (docs/ARCHITECTURE.md §12.1)
    context = torch.zeros(x0.shape[0], 1, CAPTION)
    pred = model(x_t, sigma * TIMESTEP_SCALE, context, transformer_options={OVERRIDE_KEY: options} if options else None)
    return (pred - (noise - x0)).pow(2).mean(dim=(1, 2, 3))


def train(pos_encoding: str, steps: int, seed: int) -> tuple[SanaDiT, float]:
    torch.manual_seed(seed)
    model = make_model(pos_encoding)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for _ in range(steps):
        x0 = synthetic_latents(BATCH, TRAIN_SIDE, gen)
        sigma = torch.rand(BATCH, generator=gen)
        loss = velocity_loss(model, x0, sigma, torch.randn(x0.shape, generator=gen), None).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), time.time() - start


def validation_set(side: int, seed: int):
    gen = torch.Generator().manual_seed(seed + side)
    n = max(1, VAL_TOKENS // (side * side))
    x0 = synthetic_latents(n, side, gen).repeat(len(VAL_SIGMAS), 1, 1, 1)
    sigma = VAL_SIGMAS.repeat_interleave(n)
    return x0, sigma, torch.randn(x0.shape, generator=gen)


@torch.no_grad()
def evaluate(model, val, options, chunk: int = 64) -> dict:
    x0, sigma, noise = val
    losses = torch.cat([velocity_loss(model, x0[i:i + chunk], sigma[i:i + chunk], noise[i:i + chunk], options)
                        for i in range(0, x0.shape[0], chunk)])
    high = sigma >= 0.5
    return {"loss": losses.mean().item(), "loss_high_noise": losses[high].mean().item(),
            "loss_low_noise": losses[~high].mean().item()}


def rows(scale: int) -> list[tuple[str, str, dict | None]]:
    """(row name, trained model, inference override) for one evaluation scale."""
    side = TRAIN_SIDE * scale
    return [("none", "none", None), ("sincos", "sincos", None),
            ("sincos-extrap", "sincos", {"mode": "sincos", "base_size": side}),
            ("rope", "rope", {"mode": "rope"}), ("scaled", "rope", {"mode": "scaled"}),
            ("ntk", "rope", {"mode": "ntk"}), ("yarn", "rope", {"mode": "yarn"}),
            ("time_aware", "rope", {"mode": "time_aware", "time_watershed": None})]


def print_table(results: dict, key: str, title: str):
    print(f"\n{title}")
    header = "| encoding | " + " | ".join(f"{s}x ({TRAIN_SIDE * s}x{TRAIN_SIDE * s})" for s in SCALES) + " |"
    print(header + "\n|" + "---|" * (len(SCALES) + 1))
    for name in dict.fromkeys(r[0] for r in rows(1)):
        print(f"| {name} | " + " | ".join(f"{results[(name, s)][key]:.4f}" for s in SCALES) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)  # one thread is faster on a shared 2-core machine
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {}
    for kind in ("none", "sincos", "rope"):
        models[kind], seconds = train(kind, args.steps, args.seed)
        print(json.dumps({"figure": "train", "encoding": kind, "steps": args.steps, "seconds": round(seconds, 1)}))
    results = {}
    for scale in SCALES:
        val = validation_set(TRAIN_SIDE * scale, args.seed)
        for name, kind, options in rows(scale):
            results[(name, scale)] = evaluate(models[kind], val, options)
            cell = {"figure": "val_flow_loss", "encoding": name, "scale": scale, "grid": TRAIN_SIDE * scale,
                    **{k: round(v, 5) for k, v in results[(name, scale)].items()}}
            print(json.dumps(cell))
    print_table(results, "loss", "Flow-matching validation loss (mean over sigma in [0.05, 0.95])")
    print_table(results, "loss_high_noise", "sigma >= 0.5 (global layout)")
    print_table(results, "loss_low_noise", "sigma < 0.5 (local detail)")
    if any(math.isnan(r["loss"]) for r in results.values()):
        raise RuntimeError("a validation loss is NaN")


if __name__ == "__main__":
    main()
