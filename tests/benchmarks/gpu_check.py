"""GPU check of the Sana DiT inside ComfyUI's model management, against diffusers, and of the DC-AE decode.

For each size (600M, 1.6B, 4.8B at full depth; random weights) and dtype (bf16, fp16): diffusers
`SanaTransformer2DModel` is built with seeded weights, the same tensors go into ComfyUI the way nodes/dit_adapter.py
`load_sana_dit` loads a file (SanaModelConfig -> SanaModel on the offload device -> ModelPatcher; comfy.sample.sample,
i.e. KSampler, loads it with comfy.model_management), and both run 20 CFG steps (batch 2) at 1024^2 (32^2 latent
tokens) with a 300-token caption (`--valid-tokens` kept). Reported per model and dtype: per-step latency (median
of steps 2..n, CUDA-synchronised), peak VRAM over the run, achieved TFLOP/s against `dit_step_flops` (matmul FLOPs
of the kept caption tokens) and as a fraction of a bf16 8192^3 matmul measured in the same process, the relative
difference of one forward of ours vs diffusers, and whether any output was non-finite (random weights: this checks
the fp16 code path and clip guards, not a trained model's activations).
DC-AE f32c32 (real config, random weights, bf16): decode of 1024^2 and tiled 4096^2 (512 px tiles, 128 px overlap;
diffusers `enable_tiling(512, 512, 384, 384)`): latency and peak VRAM, ours vs diffusers.

Prints one JSON document (and writes it to `--out`). `--smoke` runs tiny sizes on the CPU, one thread, bf16 only
(tests/test_gpu_check_smoke.py).
Run on a GPU: COMFYUI_PATH=/path/to/ComfyUI python tests/benchmarks/gpu_check.py --out result.json
(on the project's lent machine: bash tests/benchmarks/gpu_run.sh, prepared by tests/benchmarks/gpu_prepare.sh).
"""

import argparse
import importlib
import json
import os
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PACK = "sana_pack"  # the repository imported as a package, without running its ComfyUI entry point
# name: (hidden, cross heads, depth, qk-norm) (NVlabs SanaMS_600M_P1_D28, SanaMS_1600M_P1_D20; Sana 1.5 4.8B: depth
# 60 with RMSNorm qk-norm in both attentions). The smoke model takes the 1.5 path to cover its detection too.
MODELS = {"600M": (1152, 16, 28, False), "1.6B": (2240, 20, 20, False), "4.8B": (2240, 20, 60, True)}
SMOKE_MODELS = {"tiny": (64, 4, 2, True)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CAPTION_TOKENS, CAPTION_CHANNELS, LATENT_CHANNELS, LINEAR_HEAD_DIM = 300, 2304, 32, 32
MLP_RATIO, GLU_KERNEL = 2.5, 3
CFG_SCALE = 4.5
MATMUL_SIDE = 8192  # bf16 roofline probe (a sustained dense matmul rate, measured in this process)
DCAE_TILE, DCAE_OVERLAP = 16, 4  # latent pixels (models/tiling.py defaults)
GIB = 2**30
# diffusers `scripts/convert_dcae_to_diffusers.py::get_ae_config("dc-ae-f32c32-sana-1.0")` (as tests/fixtures/dcae.py).
DCAE_DIFFUSERS_CONFIG = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3], decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]], decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
    decoder_act_fns="silu", scaling_factor=0.41407)


def import_pack(comfyui: str, cpu: bool):
    """Import ComfyUI core and this repository as package `sana_pack` (nodes/ and models/ without __init__ side
    effects, so no node registration and no text-encoder imports)."""
    sys.path.insert(0, comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    for name, folder in ((PACK, ROOT), (f"{PACK}.nodes", ROOT / "nodes"), (f"{PACK}.models", ROOT / "models")):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        sys.modules[name] = module
    return types.SimpleNamespace(**{name: importlib.import_module(f"{PACK}.{path}") for name, path in (
        ("adapter", "nodes.dit_adapter"), ("ckpt", "models.dit_checkpoint"), ("dcae", "models.dcae"),
        ("dcae_ckpt", "models.dcae_checkpoint"), ("tiling", "models.tiling"))})


def dit_step_flops(hidden: int, depth: int, tokens: int, text_tokens: int, batch: int) -> float:
    """Matmul/conv FLOPs (2 per multiply-add) of one DiT forward of `batch` samples with N tokens, width C, GLU width
    h = 2.5C and T kept caption tokens. Per block: qkv + proj 8NC^2, linear attention 4NC(d+1), cross-attention q and
    proj 4NC^2, kv 4TC^2, scores and values 4NTC, GLU 1x1 convs 6NCh plus the 3x3 depthwise 36Nh. Plus the patch
    embedding and final layer (4*32*NC) and the caption projection 2T(2304C + C^2)."""
    c, n, t, d = hidden, tokens, text_tokens, LINEAR_HEAD_DIM
    h = int(c * MLP_RATIO)
    self_attn = 2 * n * c * 3 * c + 2 * n * c * c + 4 * n * c * (d + 1)
    cross = 4 * n * c * c + 4 * t * c * c + 4 * n * t * c
    glu = 2 * n * c * 2 * h + 2 * n * 2 * h * GLU_KERNEL**2 + 2 * n * h * c
    edges = 2 * n * LATENT_CHANNELS * c * 2 + 2 * t * (CAPTION_CHANNELS * c + c * c)
    return float(batch * (depth * (self_attn + cross + glu) + edges))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / GIB, 3) if device.type == "cuda" else None


def matmul_tflops(device: torch.device, side: int) -> float:
    a = torch.randn(side, side, device=device, dtype=torch.bfloat16)
    b = torch.randn(side, side, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * side**3 * repeats / (time.perf_counter() - start) / 1e12


def build_reference(size: tuple, device, dtype):
    from diffusers import SanaTransformer2DModel

    hidden, heads, depth, qk_norm = size
    torch.manual_seed(0)
    with torch.device(device):
        ref = SanaTransformer2DModel(num_layers=depth, num_attention_heads=hidden // LINEAR_HEAD_DIM,
                                     attention_head_dim=LINEAR_HEAD_DIM, num_cross_attention_heads=heads,
                                     cross_attention_head_dim=hidden // heads, cross_attention_dim=hidden,
                                     caption_channels=CAPTION_CHANNELS, sample_size=32,
                                     qk_norm="rms_norm_across_heads" if qk_norm else None)
    return ref.to(dtype).eval()


def comfy_patcher(pack, ref, device, dtype):
    """The recipe of nodes/dit_adapter.load_sana_dit, from tensors instead of a file."""
    import comfy.model_management as mm
    import comfy.model_patcher

    sd = pack.ckpt.diffusers_to_original(ref.state_dict())
    config = pack.ckpt.config_from_state_dict(sd, dict(ref.config), reference="diffusers")
    model_config = pack.adapter.SanaModelConfig(config)
    model_config.set_inference_dtype(dtype, None)
    offload = mm.unet_offload_device()
    model = model_config.get_model(sd, "").to(offload)
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=offload)


def caption(device, valid: int, dtype=torch.float32) -> tuple:
    gen = torch.Generator().manual_seed(1)
    context = torch.randn(2, CAPTION_TOKENS, CAPTION_CHANNELS, generator=gen).to(device, dtype)
    mask = torch.zeros(2, CAPTION_TOKENS, device=device)
    mask[0, :valid], mask[1, :max(valid // 4, 1)] = 1, 1  # cond, then a shorter negative prompt
    return context, mask


def step_stats(stamps: list, flops: float, peak: float | None, finite: bool) -> dict:
    steps = sorted(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))  # drop the first step (warm-up effects)
    step_s = steps[len(steps) // 2] if steps else stamps[-1] - stamps[0]
    return {"step_ms": round(step_s * 1e3, 3), "total_s": round(stamps[-1] - stamps[0], 3),
            "tflops": round(flops / step_s / 1e12, 2), "peak_vram_gib": peak, "finite": finite}


def run_comfy(patcher, device, latent: int, steps: int, valid: int, flops: float) -> dict:
    import comfy.sample

    context, mask = caption("cpu", valid)
    positive = [[context[:1], {"attention_mask": mask[:1]}]]
    negative = [[context[1:], {"attention_mask": mask[1:]}]]
    noise = torch.randn(1, LATENT_CHANNELS, latent, latent, generator=torch.Generator().manual_seed(2))
    empty = torch.zeros_like(noise)
    stamps = []

    def callback(step, x0, x, total):
        sync(device)
        stamps.append(time.perf_counter())

    run = lambda n, cb: comfy.sample.sample(patcher, noise, n, CFG_SCALE, "euler", "simple", positive,  # noqa: E731
                                            negative, empty, callback=cb, disable_pbar=True, seed=0)
    run(2, None)  # loads the model through comfy.model_management and warms the kernels
    reset_peak(device)
    sync(device)
    stamps.append(time.perf_counter())
    out = run(steps, callback)
    return step_stats(stamps, flops, peak_gib(device), bool(torch.isfinite(out).all()))


@torch.no_grad()
def run_diffusers(ref, device, dtype, latent: int, steps: int, valid: int, flops: float) -> dict:
    context, mask = caption(device, valid, dtype)
    x = torch.randn(1, LATENT_CHANNELS, latent, latent, generator=torch.Generator().manual_seed(2)).to(device)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    forward = lambda xin, s: ref(xin.to(dtype), encoder_hidden_states=context,  # noqa: E731
                                 encoder_attention_mask=mask, timestep=torch.full((2,), s * 1000.0, device=device),
                                 return_dict=False)[0].float()
    forward(torch.cat([x, x]), 1.0)  # warm-up
    reset_peak(device)
    finite, stamps = True, [time.perf_counter()]
    for i in range(steps):
        cond, uncond = forward(torch.cat([x, x]), float(sigmas[i])).chunk(2)
        velocity = uncond + CFG_SCALE * (cond - uncond)
        x = x + (sigmas[i + 1] - sigmas[i]).item() * velocity
        finite = finite and bool(torch.isfinite(velocity).all())
        sync(device)
        stamps.append(time.perf_counter())
    return step_stats(stamps, flops, peak_gib(device), finite)


@torch.no_grad()
def forward_parity(patcher, ref, device, dtype, latent: int, valid: int) -> float:
    """max |ours - diffusers| / max |diffusers| of one CFG forward with the same weights and inputs."""
    context, mask = caption(device, valid, dtype)
    x = torch.randn(2, LATENT_CHANNELS, latent, latent, generator=torch.Generator().manual_seed(3)).to(device, dtype)
    t = torch.full((2,), 500.0, device=device)
    net = patcher.model.diffusion_model
    ours = net(x, t, context, attention_mask=mask).float()
    theirs = ref(x, encoder_hidden_states=context, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
    return (ours - theirs.float()).abs().max().item() / theirs.float().abs().max().item()


def check_dit(pack, name: str, size: tuple, dtype_name: str, args, device) -> dict:
    import comfy.model_management as mm

    dtype = DTYPES[dtype_name]
    hidden, _, depth, _ = size
    latent = args.size // 32
    flops = dit_step_flops(hidden, depth, latent * latent, args.valid_tokens, 2)
    ref = build_reference(size, device, dtype)
    patcher = comfy_patcher(pack, ref, device, dtype)
    row = {"model": name, "dtype": dtype_name, "depth": depth, "size": args.size, "steps": args.steps,
           "gflop_per_step": round(flops / 1e9, 1), "attention": _attention_name()}
    row["variant"] = patcher.model.diffusion_model.config.variant
    row["cross_attention_fn"] = patcher.model.diffusion_model.blocks[0].cross_attn.attention.__qualname__
    row["comfyui"] = run_comfy(patcher, device, latent, args.steps, args.valid_tokens, flops)
    mm.unload_all_models()  # weights back to the offload device: diffusers' peak is its own
    row["diffusers"] = run_diffusers(ref, device, dtype, latent, args.steps, args.valid_tokens, flops)
    row["ratio"] = round(row["comfyui"]["step_ms"] / row["diffusers"]["step_ms"], 3)
    mm.load_models_gpu([patcher])
    row["forward_rel_diff"] = forward_parity(patcher, ref, device, dtype, latent, args.valid_tokens)
    mm.unload_all_models()
    del ref, patcher
    mm.soft_empty_cache(True)
    return row


def _attention_name() -> str:
    import comfy.ldm.modules.attention as attention

    return attention.optimized_attention.__name__


def dcae_models(pack, device, dtype, smoke: bool):
    """(ours, diffusers) DC-AE f32c32 with the same seeded weights (tiny widths in smoke mode)."""
    from diffusers import AutoencoderDC

    config = dict(DCAE_DIFFUSERS_CONFIG)
    if smoke:
        config.update(encoder_block_out_channels=[32] * 6, decoder_block_out_channels=[32] * 6,
                      encoder_layers_per_block=[1] * 6, decoder_layers_per_block=[1] * 6)
    torch.manual_seed(0)
    ref = AutoencoderDC(**config).to(device=device, dtype=dtype).eval()
    sd = pack.dcae_ckpt.diffusers_to_original(ref.state_dict())
    ours = pack.dcae.DCAE(pack.dcae_ckpt.config_from_state_dict(sd), device="meta")
    ours.load_state_dict(sd, strict=True, assign=True)
    return ours.eval(), ref


@torch.no_grad()
def time_decode(fn, latent, device) -> dict:
    fn(latent[..., :2, :2])  # warm-up
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    image = fn(latent)
    sync(device)
    return {"seconds": round(time.perf_counter() - start, 3), "peak_vram_gib": peak_gib(device),
            "finite": bool(torch.isfinite(image).all())}


def check_dcae(pack, args, device) -> list:
    dtype = DTYPES["bf16"]
    ours, ref = dcae_models(pack, device, dtype, args.smoke)
    tile, overlap = (4, 1) if args.smoke else (DCAE_TILE, DCAE_OVERLAP)
    tiled = pack.tiling.TilingOptions(mode="always", tile=tile, overlap=overlap)
    full = pack.tiling.TilingOptions(mode="never")
    rows = []
    for side, tiling in ((args.dcae_size, False), (args.dcae_tiled_size, True)):
        gen = torch.Generator().manual_seed(4)
        latent = torch.randn(1, LATENT_CHANNELS, side // 32, side // 32, generator=gen).to(device, dtype)
        if tiling:
            ref.enable_tiling(tile * 32, tile * 32, (tile - overlap) * 32, (tile - overlap) * 32)
        row = {"figure": "dcae_decode", "size": side, "tiled": tiling, "dtype": "bf16",
               "ours": time_decode(lambda z, t=tiled if tiling else full: ours.decode(z, tiling=t), latent, device),
               "diffusers": time_decode(lambda z: ref.decode(z, return_dict=False)[0], latent, device)}
        row["ratio"] = round(row["ours"]["seconds"] / row["diffusers"]["seconds"], 3)
        rows.append(row)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the CI test)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder (COMFYUI_PATH)")
    parser.add_argument("--models", default=None, help="comma list of 600M,1.6B,4.8B (default all; smoke: tiny)")
    parser.add_argument("--dtypes", default=None, help="comma list of bf16,fp16 (default both; smoke: bf16)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; smoke 3)")
    parser.add_argument("--size", type=int, default=None, help="image side of the DiT runs (default 1024)")
    parser.add_argument("--valid-tokens", type=int, default=120, help="caption tokens kept by the mask (of 300)")
    parser.add_argument("--skip-dcae", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON document here")
    args = parser.parse_args(argv)
    table = SMOKE_MODELS if args.smoke else MODELS
    args.models = {name: table[name] for name in (args.models.split(",") if args.models else table)}
    args.dtypes = (args.dtypes or ("bf16" if args.smoke else "bf16,fp16")).split(",")
    args.steps = args.steps or (2 if args.smoke else 20)
    args.size = args.size or (128 if args.smoke else 1024)
    args.dcae_size, args.dcae_tiled_size = (64, 192) if args.smoke else (1024, 4096)
    if not args.comfyui or not Path(args.comfyui, "comfy").is_dir():
        raise SystemExit(f"gpu_check: no ComfyUI at --comfyui/COMFYUI_PATH '{args.comfyui}'; pass the folder that "
                         "holds comfy/ (tests/benchmarks/gpu_prepare.sh copies one to .gpu/ComfyUI)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    pack = import_pack(args.comfyui, cpu=device.type == "cpu")
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: threads only add barrier waits on a shared CI machine
    torch.set_grad_enabled(False)
    started = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "smoke": args.smoke, "attention": _attention_name(), "dit": [], "dcae": []}
    if device.type == "cuda":
        report["matmul_bf16_tflops"] = round(matmul_tflops(device, MATMUL_SIDE), 1)
    for name, size in args.models.items():
        for dtype_name in args.dtypes:
            row = check_dit(pack, name, size, dtype_name, args, device)
            if "matmul_bf16_tflops" in report:
                row["comfyui"]["roofline_fraction"] = round(row["comfyui"]["tflops"] / report["matmul_bf16_tflops"], 3)
            report["dit"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if not args.skip_dcae:
        report["dcae"] = check_dcae(pack, args, device)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=1)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text)
    return report


if __name__ == "__main__":
    main()
