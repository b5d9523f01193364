"""Benchmark: the time a Sana ControlNet adds to one sampling step (CPU float32, our models, same run).

One step of CFG sampling = one DiT forward on a batch of 2, plus (with a ControlNet) one ControlNet forward on the same
batch whose residuals the DiT adds. Both use seeded random weights with the real hidden sizes (1152 for 600M, 2240 for
1.6B) and the released depth ratio scaled down (released: 28 + 7 and 20 + 7 copied blocks); `--real-depth` runs the
released depths. Timings interleave the two variants and keep the fastest repeat.

Prints one JSON object per line:
  {"figure": "controlnet_step_ratio", "model": "1.6B", "dit_blocks": .., "control_blocks": .., "latent": ..,
   "no_control_s": .., "with_control_s": .., "ratio": with / without}

Run: python tests/benchmarks/bench_controlnet.py [--latent 16] [--repeats 3] [--real-depth] [--device cuda --dtype
bfloat16]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.controlnet import SanaControlNet  # noqa: E402
from models.dit import CONTROL_KEY, SanaDiT, variant_config  # noqa: E402

CAPTION_TOKENS, VALID_TOKENS, BATCH = 300, 40, 2  # CFG batch, a padded 300-token caption
# model -> (hidden, released DiT depth, released copied blocks, scaled DiT depth, scaled copied blocks)
MODELS = {"600M": (1152, 28, 7, 8, 2), "1.6B": (2240, 20, 7, 6, 2)}
INIT_STD = 0.02  # random weights: speed does not depend on trained values


def build(hidden: int, dit_blocks: int, control_blocks: int, dtype, device):
    torch.manual_seed(0)
    kw = {"dtype": dtype, "device": device}
    dit = SanaDiT(variant_config("1.0", hidden, 32, dit_blocks), **kw).eval()
    control = SanaControlNet(variant_config("1.0", hidden, 32, control_blocks), **kw).eval()
    with torch.no_grad():
        for param in list(dit.parameters()) + list(control.parameters()):
            param.normal_(0.0, INIT_STD)
    return dit, control


def inputs(latent: int, device):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 32, latent, latent, generator=gen)
    hint = torch.randn(BATCH, 32, latent, latent, generator=gen)
    context = torch.randn(BATCH, CAPTION_TOKENS, 2304, generator=gen)
    mask = torch.zeros(BATCH, CAPTION_TOKENS)
    mask[:, :VALID_TOKENS] = 1
    return tuple(v.to(device) for v in (x, hint, context, mask, torch.full((BATCH,), 500.0)))


def timed(fn, device) -> float:
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


@torch.no_grad()
def measure(name: str, args) -> dict:
    hidden, real_dit, real_control, dit_blocks, control_blocks = MODELS[name]
    if args.real_depth:
        dit_blocks, control_blocks = real_dit, real_control
    dtype = getattr(torch, args.dtype)
    dit, control = build(hidden, dit_blocks, control_blocks, dtype, args.device)
    x, hint, context, mask, t = inputs(args.latent, args.device)
    plain = lambda: dit(x, t, context, attention_mask=mask)  # noqa: E731

    def controlled():
        residuals = control(x, hint, t, context, attention_mask=mask)
        return dit(x, t, context, attention_mask=mask, control=residuals)

    assert CONTROL_KEY in control(x, hint, t, context, attention_mask=mask)
    plain(), controlled()  # warm-up
    t_plain, t_control = [], []
    for _ in range(args.repeats):
        t_plain.append(timed(plain, args.device))
        t_control.append(timed(controlled, args.device))
    return {"figure": "controlnet_step_ratio", "model": name, "hidden": hidden, "dit_blocks": dit_blocks,
            "control_blocks": control_blocks, "latent": args.latent, "batch": BATCH, "device": args.device,
            "dtype": args.dtype,
            "no_control_s": round(min(t_plain), 4), "with_control_s": round(min(t_control), 4),
            "ratio": round(min(t_control) / min(t_plain), 3),
            "released_block_ratio": round((real_dit + real_control) / real_dit, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent", type=int, default=16, help="latent side (32 = 1024 px)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real-depth", action="store_true", help="released depths (28+7, 20+7): slow on a CPU")
    parser.add_argument("--models", default="600M,1.6B")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    for name in args.models.split(","):
        print(json.dumps(measure(name, args)), flush=True)


if __name__ == "__main__":
    main()
