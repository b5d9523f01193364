"""Benchmark of the Sana DiT forward (models/dit.py) against diffusers `SanaTransformer2DModel`, CPU float32.

Both models hold the same seeded weights with the real 1.6B hidden size (2240, 20 cross heads) and a few blocks (the
per-block cost is the real one). Inputs are a CFG batch with a 300-token caption of which `--valid-tokens` are kept by
the mask, as the reference pipelines pad prompts. Timings interleave the two models and keep the fastest repeat.

Prints one JSON object per line:
- {"figure": "forward_vs_diffusers", "latent": 16, ..., "ratio": ours / diffusers}  (goal <= 0.8)
- {"figure": "token_scaling", "latent": 32, "ratio_vs_previous": t(32) / t(16)}      (goal <= 4.4 per 4x tokens)

Run: ~/.cache/sana-dev/unit/bin/python tests/benchmarks/bench_dit.py [--blocks 2] [--repeats 3]
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.dit import SanaDiT  # noqa: E402
from models.dit_checkpoint import config_from_state_dict, diffusers_to_original  # noqa: E402

HIDDEN, CROSS_HEADS, CAPTION_TOKENS = 2240, 20, 300


def build_pair(blocks: int):
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(0)
    ref = SanaTransformer2DModel(num_layers=blocks, num_attention_heads=HIDDEN // 32, attention_head_dim=32,
                                 num_cross_attention_heads=CROSS_HEADS, cross_attention_head_dim=HIDDEN // CROSS_HEADS,
                                 cross_attention_dim=HIDDEN, sample_size=32).eval()
    sd = diffusers_to_original(ref.state_dict())
    ours = SanaDiT(config_from_state_dict(sd, dict(ref.config), reference="diffusers"))
    ours.load_state_dict(sd, strict=True)
    return ours.eval(), ref


def inputs(latent: int, batch: int, valid: int):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 32, latent, latent, generator=gen)
    context = torch.randn(batch, CAPTION_TOKENS, 2304, generator=gen)
    mask = torch.zeros(batch, CAPTION_TOKENS)
    mask[:, :valid] = 1
    return x, context, mask, torch.full((batch,), 500.0)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def compare(ours, ref, latent: int, args) -> dict:
    x, context, mask, t = inputs(latent, args.batch, args.valid_tokens)
    run_ours = lambda: ours(x, t, context, attention_mask=mask)  # noqa: E731
    run_ref = lambda: ref(x, encoder_hidden_states=context, timestep=t, encoder_attention_mask=mask)  # noqa: E731
    run_ours(), run_ref()  # warm-up (weight reorders, allocator)
    t_ours, t_ref = [], []
    for _ in range(args.repeats):
        t_ours.append(best_time(run_ours, 1))
        t_ref.append(best_time(run_ref, 1))
    return {"figure": "forward_vs_diffusers", "latent": latent, "tokens": latent * latent, "blocks": args.blocks,
            "batch": args.batch, "valid_tokens": args.valid_tokens, "ours_s": round(min(t_ours), 4),
            "diffusers_s": round(min(t_ref), 4), "ratio": round(min(t_ours) / min(t_ref), 3), "goal": 0.8}


@torch.no_grad()
def scaling(ours, latents, args) -> list[dict]:
    rows, previous = [], None
    for latent in latents:
        x, context, mask, t = inputs(latent, 1, args.valid_tokens)
        run = functools.partial(ours, x, t, context, attention_mask=mask)
        run()
        seconds = best_time(run, args.repeats)
        row = {"figure": "token_scaling", "latent": latent, "tokens": latent * latent, "blocks": args.blocks,
               "batch": 1, "ours_s": round(seconds, 4), "goal_per_4x": 4.4}
        if previous is not None:
            row["ratio_vs_previous"] = round(seconds / previous, 3)
        rows.append(row)
        previous = seconds
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="batch of the diffusers comparison (CFG pair)")
    parser.add_argument("--valid-tokens", type=int, default=40, help="caption tokens kept by the mask (of 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", type=int, nargs="+", default=[16, 32], help="latent sides compared to diffusers")
    parser.add_argument("--scaling", type=int, nargs="+", default=[16, 32, 64, 128], help="latent sides for scaling")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    ours, ref = build_pair(args.blocks)
    print(json.dumps({"figure": "setup", "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "hidden": HIDDEN, "blocks": args.blocks}), flush=True)
    for latent in args.compare:
        print(json.dumps(compare(ours, ref, latent, args)), flush=True)
    del ref
    for row in scaling(ours, args.scaling, args):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
