"""Sana DiT checkpoint formats: reading, layout and variant detection, diffusers -> original renames, `load_dit`.

Layouts (docs/ARCHITECTURE.md; diffusers scripts/convert_sana_to_diffusers.py): the original NVlabs layout (`.pth`
with a `state_dict` wrapper, or safetensors, with or without ComfyUI's `model.diffusion_model.` prefix) and the
diffusers `SanaTransformer2DModel` layout (a folder or file with `config.json` beside it, single, sharded or as a
precision variant; a pipeline folder's `transformer/`). Files are read by models/weights_file.py. Variant detection
uses only the weights (hidden size, depth, qk-norm, cfg embedder, `pos_embed` shape and content) and, for diffusers
files, `config.json`.
"""

import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

from .dit import DEFAULT_SAMPLE_SIZE, SanaDiT, SanaDiTConfig, variant_config
from .dit_files import (EMA_KEY, assumed_resolution_notice, check_keys, ignored_resolution_notice,
                        refuse_diffusers_controlnet, resolution_sample_size, split_controlnet)
from .pos_embed import sincos_2d
from .rope import ENCODINGS, RopeConfig, declared_encoding
from .weights_file import check_finite, component_folder, convert_dtypes, read_json, read_metadata, read_weights

logger = logging.getLogger(__name__)

ORIGINAL_SIGNATURE = "x_embedder.proj.weight"
DIFFUSERS_SIGNATURE = "patch_embed.proj.weight"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")
WRAPPER_KEYS = ("state_dict", "model", "module")
# Buffers and training-only tensors real files carry that the inference module does not own (NVlabs
# sana_multi_scale.py).
DROPPED_KEYS = ("pos_embed", "y_embedder.y_embedding", "logvar_linear.weight", "logvar_linear.bias")
# bf16 storage of pos_embed: compare its content with recomputed sin-cos at this tolerance.
POS_EMBED_ATOL = 2e-2
# pos_embed interpolation is read back on a grid of quarters (released values: 1.0 for 2K, 2.0 for 4K).
PE_INTERPOLATION_STEPS = 4
# safetensors metadata declaring the position encoding (`save_dit`): "none" | "sincos" | "rope", and for RoPE the
# JSON of its models.rope.RopeConfig (theta, training grid, default scaling). Sin-cos is also declared by `pos_embed`.
META_POS_ENCODING = "sana_pos_encoding"
META_ROPE = "sana_rope"

# diffusers -> original renames (diffusers scripts/convert_sana_to_diffusers.py, inverted).
DIFFUSERS_TOP_LEVEL = {
    "patch_embed.proj.": "x_embedder.proj.",
    "time_embed.emb.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
    "time_embed.emb.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
    "time_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",  # Sprint (SanaCombinedTimestepGuidanceEmbeddings)
    "time_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
    "time_embed.guidance_embedder.linear_1.": "cfg_embedder.mlp.0.",
    "time_embed.guidance_embedder.linear_2.": "cfg_embedder.mlp.2.",
    "time_embed.linear.": "t_block.1.",
    "caption_projection.linear_1.": "y_embedder.y_proj.fc1.",
    "caption_projection.linear_2.": "y_embedder.y_proj.fc2.",
    "caption_norm.": "attention_y_norm.",
    "scale_shift_table": "final_layer.scale_shift_table",
    "proj_out.": "final_layer.linear.",
}
DIFFUSERS_BLOCK = {
    "scale_shift_table": "scale_shift_table",
    "attn1.norm_q.": "attn.q_norm.",
    "attn1.norm_k.": "attn.k_norm.",
    "attn1.to_out.0.": "attn.proj.",
    "attn2.to_q.": "cross_attn.q_linear.",
    "attn2.norm_q.": "cross_attn.q_norm.",
    "attn2.norm_k.": "cross_attn.k_norm.",
    "attn2.to_out.0.": "cross_attn.proj.",
    "ff.conv_inverted.": "mlp.inverted_conv.conv.",
    "ff.conv_depth.": "mlp.depth_conv.conv.",
    "ff.conv_point.": "mlp.point_conv.conv.",
}
# Original fused tensors = diffusers parts concatenated along dim 0 (q, k, v rows; k, v rows).
DIFFUSERS_FUSED = {
    "attn.qkv.weight": ("attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"),
    "cross_attn.kv_linear.weight": ("attn2.to_k.weight", "attn2.to_v.weight"),
    "cross_attn.kv_linear.bias": ("attn2.to_k.bias", "attn2.to_v.bias"),
}
DIFFUSERS_BLOCK_PREFIX = "transformer_blocks."

# What other files look like: (key suffix any key ends with, description). First match wins.
NOT_SANA_SIGNATURES = (
    ("blocks.0.mlp.fc1.weight", "a PixArt-alpha/sigma transformer (original layout, MLP feed-forward)"),
    ("adaln_single.linear.weight", "a PixArt transformer (diffusers layout)"),
    ("label_emb.0.0.weight", "an SDXL UNet"),
    ("input_blocks.0.0.weight", "a Stable Diffusion 1.x/2.x UNet"),
    ("add_embedding.linear_1.weight", "an SDXL UNet (diffusers layout)"),
    ("down_blocks.0.resnets.0.conv1.weight", "a diffusers UNet or VAE"),
    ("double_blocks.0.img_attn.qkv.weight", "a Flux transformer"),
    ("joint_blocks.0.x_block.attn.qkv.weight", "an SD3 MMDiT"),
    ("transformer_blocks.0.attn.add_k_proj.weight", "a Flux/SD3 transformer (diffusers layout)"),
    ("encoder.project_in.conv.weight", "a DC-AE autoencoder (a VAE: load it with SanaVAELoader)"),
    ("decoder.conv_in.weight", "a VAE/autoencoder"),
    ("layers.0.self_attn.q_proj.weight", "an LLM text encoder (Gemma/Llama/Qwen: load it with SanaTextEncoderLoader)"),
    ("block.0.layer.0.SelfAttention.q.weight", "a T5/ByT5 text encoder"),
    ("encoder.layers.0.self_attn.q_proj.weight", "a CLIP text encoder"),
)
EXPECTED = ("a Sana DiT: original NVlabs keys (x_embedder.proj.weight, blocks.N.attn.qkv.weight, ...) or a diffusers "
            "SanaTransformer2DModel (patch_embed.proj.weight, transformer_blocks.N.attn1.to_q.weight, ...)")


def read_checkpoint(path, wrapper: str | None = None, variant: str | None = None) -> tuple[dict, dict | None]:
    """Read a DiT file or folder -> (raw state dict, diffusers config.json dict or None).

    path: a `.pth`/`.pt`/`.safetensors` file; a diffusers `transformer/` folder or the pipeline folder above it; or a
    weights file (or one shard, default or variant) inside such a folder, whose `config.json` and shard index are read
    from beside it. Reading (one weight set, default precision first) is models/weights_file.py's `read_weights`.
    wrapper: the entry of a trainer checkpoint to read (e.g. "state_dict_ema"; None: `state_dict`).
    """
    path = Path(path)
    if path.is_dir():
        path = component_folder(path, "transformer")
    folder = path if path.is_dir() else path.parent
    raw = read_weights(path, "diffusers transformer" if path.is_dir() else "DiT", variant=variant, wrapper=wrapper)
    config_path = folder / "config.json"
    config = read_json(config_path, "diffusers config") if config_path.exists() else None
    return raw, config


def unwrap_state_dict(sd: dict) -> dict:
    """Unwrap `{"state_dict": {...}}`-style containers and strip a `model.diffusion_model.`-style prefix."""
    for key in WRAPPER_KEYS:
        if isinstance(sd.get(key), dict):
            return unwrap_state_dict(sd[key])
    for prefix in PREFIXES:
        if prefix + ORIGINAL_SIGNATURE in sd or prefix + DIFFUSERS_SIGNATURE in sd:
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def describe_foreign(sd: dict) -> str:
    """What a non-Sana state dict looks like, e.g. "an SDXL UNet" or "not a diffusion model (...)"."""
    keys = [k for k in sd if isinstance(k, str)]
    if any("lora_" in k or ".lora." in k for k in keys):
        return "a LoRA (apply it with LoraLoader on top of a loaded Sana model)"
    for suffix, description in NOT_SANA_SIGNATURES:
        if any(k.endswith(suffix) for k in keys):
            return description
    sample = ", ".join(keys[:4])
    return f"not a diffusion model ({len(keys)} entries; first keys: {sample})"


def detect_layout(sd: dict, source: str = "state dict") -> str:
    """"original" or "diffusers"; any other file raises ValueError saying what it looks like."""
    if ORIGINAL_SIGNATURE in sd and "blocks.0.mlp.inverted_conv.conv.weight" in sd:
        return "original"
    if DIFFUSERS_SIGNATURE in sd and "transformer_blocks.0.attn1.to_q.weight" in sd:
        return "diffusers"
    raise ValueError(f"{source}: this looks like {describe_foreign(sd)}, expected {EXPECTED}. Put Sana transformer "
                     f"files (e.g. Sana_1600M_1024px_BF16.pth or a *_diffusers/transformer folder) in "
                     f"models/diffusion_models and pick one of those.")


def _rename_block_key(rest: str, index: int) -> str | None:
    for src, dst in DIFFUSERS_BLOCK.items():
        if rest.startswith(src):
            return f"blocks.{index}.{dst}{rest[len(src):]}"
    return None


def diffusers_to_original(sd: dict, source: str = "state dict") -> dict:
    """Rename a diffusers SanaTransformer2DModel state dict to original NVlabs keys (fusing q/k/v and k/v).

    Raises ValueError listing any key the tables do not cover, so nothing is dropped silently.
    """
    out, parts, unknown = {}, {}, []
    for key, tensor in sd.items():
        if key.startswith(DIFFUSERS_BLOCK_PREFIX):
            index, rest = key[len(DIFFUSERS_BLOCK_PREFIX):].split(".", 1)
            new = _rename_block_key(rest, int(index))
            if new is None:
                parts[(int(index), rest)] = tensor
                continue
        else:
            new = next((dst + key[len(src):] for src, dst in DIFFUSERS_TOP_LEVEL.items() if key.startswith(src)), None)
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    for index in sorted({i for i, _ in parts}):
        for fused, names in DIFFUSERS_FUSED.items():
            if all((index, n) in parts for n in names):
                out[f"blocks.{index}.{fused}"] = torch.cat([parts.pop((index, n)) for n in names], dim=0)
    unknown += [f"{DIFFUSERS_BLOCK_PREFIX}{i}.{rest}" for i, rest in parts]
    if unknown:
        raise ValueError(f"{source}: diffusers Sana keys with no original equivalent: {sorted(unknown)[:8]}; "
                         f"expected only SanaTransformer2DModel parameters")
    return out


def _pe_settings(pos_embed: torch.Tensor | None, hidden: int, source: str) -> tuple[int | None, bool, float]:
    """(sample_size, use_pe, pe_interpolation) from a `pos_embed` buffer [1, side^2, C]: the shape gives the
    training grid, non-zero content means sin-cos PE, and token 1's width phase (1 / interpolation) the stretch."""
    if pos_embed is None:
        return None, False, 1.0
    side = math.isqrt(pos_embed.shape[-2])
    if side * side != pos_embed.shape[-2] or pos_embed.shape[-1] != hidden:
        raise ValueError(f"{source}: pos_embed has shape {tuple(pos_embed.shape)}, expected (1, side^2, {hidden})")
    pe = pos_embed.reshape(side * side, hidden).float()
    if not bool(pe.abs().max() > 0):
        return side, False, 1.0
    # Width channels come first: [sin(w * omega), cos(w * omega)], omega_0 = 1, so channels 0 and C/4 of token 1
    # hold sin and cos of its width coordinate 1 / interpolation.
    interpolation = 1.0 / math.atan2(float(pe[1, 0]), float(pe[1, hidden // 4]))
    interpolation = round(interpolation * PE_INTERPOLATION_STEPS) / PE_INTERPOLATION_STEPS
    expected = sincos_2d(hidden, side, side, side, interpolation)
    if not torch.allclose(pe, expected, atol=POS_EMBED_ATOL):
        raise ValueError(f"{source}: pos_embed is neither zeros nor Sana's sin-cos table (best fit: interpolation "
                         f"{interpolation}); expected a Sana checkpoint's position buffer")
    return side, True, interpolation


def config_from_state_dict(sd: dict, diffusers_config: dict | None = None, pos_embed: torch.Tensor | None = None,
                           source: str = "state dict", resolution=None, notices: list | None = None,
                           **overrides) -> SanaDiTConfig:
    """Detect the variant of an original-layout state dict (renamed first if it came from diffusers).

    Family from the weights: cfg embedder -> Sprint, qk-norm -> 1.5, else 1.0. Depth from the block indices.
    Training resolution and PE from `pos_embed` (original files) or `config.json` (diffusers); when neither exists,
    from `resolution` (512/1024/2048/4096, PE as the released variant of that resolution) or else 1024 px with a
    notice appended to `notices`.
    """
    weight = sd["x_embedder.proj.weight"]
    hidden, patch = weight.shape[0], weight.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    family = "Sprint" if "cfg_embedder.mlp.0.weight" in sd else "1.5" if "blocks.0.attn.q_norm.weight" in sd else "1.0"
    fields = {
        "in_channels": weight.shape[1], "patch_size": patch,
        "out_channels": sd["final_layer.linear.weight"].shape[0] // (patch * patch),
        "caption_channels": sd["y_embedder.y_proj.fc1.weight"].shape[1],
        "mlp_ratio": sd["blocks.0.mlp.point_conv.conv.weight"].shape[1] / hidden,
        "qk_norm": "blocks.0.attn.q_norm.weight" in sd, "cross_norm": "blocks.0.cross_attn.q_norm.weight" in sd,
    }
    sample_size, use_pe, interpolation = _pe_settings(pos_embed, hidden, source)
    if diffusers_config is not None:
        sample_size = diffusers_config.get("sample_size", sample_size)
        use_pe = diffusers_config.get("interpolation_scale") is not None
        interpolation = float(diffusers_config.get("interpolation_scale") or 1.0)
        fields["num_cross_heads"] = diffusers_config.get("num_cross_attention_heads")
    chosen = resolution_sample_size(resolution, source)
    fields = {k: v for k, v in fields.items() if v is not None}
    if sample_size is None and chosen is not None:  # the released variant of that resolution, PE included
        return variant_config(family, hidden, chosen, depth, **fields, **overrides)
    if sample_size is None:
        notice = assumed_resolution_notice(source)
        logger.warning(notice)
        if notices is not None:
            notices.append(notice)
        sample_size = DEFAULT_SAMPLE_SIZE
    elif chosen is not None and chosen != sample_size and notices is not None:
        notices.append(ignored_resolution_notice(source, resolution, sample_size))
    cfg = variant_config(family, hidden, sample_size, depth, **fields, **overrides)
    return cfg.replace(use_pe=use_pe, pe_interpolation=interpolation if use_pe else 1.0)


def load_state_dict_and_config(path, resolution=None, ema: bool = False, notices: list | None = None,
                               **overrides) -> tuple[dict, SanaDiTConfig]:
    """Read any supported DiT file/folder -> (state dict with original keys, detected config).

    resolution: "auto"/None or 512/1024/2048/4096, used only when the file cannot tell (diffusers file without
    config.json). ema: read `state_dict_ema` of an NVlabs trainer checkpoint. notices: a list that receives the
    messages the user should see (assumed resolution, ControlNet part not used). `overrides` set config fields (e.g.
    `reference="diffusers"`). Raises ValueError for files that are not a Sana DiT or whose tensors do not match the
    detected variant (missing/unexpected keys, wrong shapes), naming the file and the keys.
    """
    source = str(path)
    notices = [] if notices is None else notices
    overrides = {**read_pe_metadata(path), **overrides}
    raw, diffusers_config = read_checkpoint(path, wrapper=EMA_KEY if ema else None)
    sd = unwrap_state_dict(raw)
    refuse_diffusers_controlnet(sd, diffusers_config, source)
    sd = split_controlnet(sd, source, notices)
    layout = detect_layout(sd, source)
    if layout == "diffusers":
        sd = diffusers_to_original(sd, source)
    else:
        diffusers_config = None
    pos_embed = sd.get("pos_embed")
    cfg = config_from_state_dict(sd, diffusers_config, pos_embed, source, resolution, notices, **overrides)
    sd = {k: v for k, v in sd.items() if k not in DROPPED_KEYS}
    check_keys(sd, cfg, source)
    logger.info("Sana DiT %s: %s layout%s, detected %s", source, layout, " (EMA weights)" if ema else "",
                describe_config(cfg))
    return sd, cfg


def finish_state_dict(sd: dict, dtypes, source: str, check: bool = True) -> dict:
    """Cast to `dtypes` (one dtype or {key: dtype}) one tensor at a time, then (unless `check` is False: the caller
    checks later, e.g. on the GPU) refuse non-finite weights."""
    sd = convert_dtypes(sd, dtypes)
    if check:
        check_finite(sd, source)
    return sd


def read_pe_metadata(path) -> dict:
    """Config fields a RoPE checkpoint declares in its safetensors metadata ({"pos_encoding", "rope"}), else {}.

    An unknown encoding name or RopeConfig field raises ValueError naming the file, the value and what is known."""
    meta = read_metadata(path)
    encoding = meta.get(META_POS_ENCODING)
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"{path}: metadata '{META_POS_ENCODING}' is '{encoding}', expected one of {ENCODINGS}; the "
                         f"file was written by another tool or a newer version of this pack")
    if encoding != "rope":
        return {}
    try:
        rope = json.loads(meta.get(META_ROPE, "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata '{META_ROPE}' is not valid JSON ({e}); expected the RopeConfig fields "
                         f"written by save_dit") from e
    known = {f.name for f in dataclasses.fields(RopeConfig)}
    unknown = sorted(set(rope) - known) if isinstance(rope, dict) else ["(not a JSON object)"]
    if unknown:
        raise ValueError(f"{path}: metadata '{META_ROPE}' has unknown field(s) {unknown}; expected only "
                         f"{sorted(known)} (RopeConfig written by save_dit)")
    return {"pos_encoding": "rope", "rope": rope}


def save_dit(model: SanaDiT, path, dtype: torch.dtype | None = None) -> None:
    """Write a SanaDiT as an original-layout safetensors file that declares its position encoding.

    Tensors: the module's state dict (cast to `dtype` if given) plus `pos_embed` [1, base_size^2, C], the sin-cos
    table for sin-cos models and zeros otherwise, as NVlabs files carry (it also records the training grid).
    Metadata: `sana_pos_encoding` and, for RoPE, `sana_rope`; `load_dit` reads both back.
    """
    from safetensors.torch import save_file

    cfg = model.config
    sd = {k: v.detach().to(dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    side = cfg.base_size
    table = sincos_2d(cfg.hidden_size, side, side, side, cfg.pe_interpolation)
    pos_embed = table if cfg.use_pe else torch.zeros_like(table)
    sd["pos_embed"] = pos_embed[None].to(dtype or sd[ORIGINAL_SIGNATURE].dtype)
    meta = {META_POS_ENCODING: declared_encoding(cfg)}
    if meta[META_POS_ENCODING] == "rope":
        meta[META_ROPE] = json.dumps(dataclasses.asdict(cfg.rope))
    save_file(sd, str(path), metadata=meta)


def describe_config(cfg: SanaDiTConfig) -> str:
    """One log line: variant, depth, hidden size, norms, PE and shift."""
    pe = f"sin-cos PE (base {cfg.base_size}, interpolation {cfg.pe_interpolation})" if cfg.use_pe else "no PE"
    if cfg.pos_encoding == "rope":
        pe = f"2-D RoPE (theta {cfg.rope.theta}, training grid {cfg.rope.train_grid}, scaling {cfg.rope.scaling})"
    return (f"{cfg.variant}: depth {cfg.depth}, hidden {cfg.hidden_size}, cross heads {cfg.num_cross_heads}, "
            f"qk-norm {cfg.qk_norm}, cross-norm {cfg.cross_norm}, guidance embed {cfg.guidance_embeds}, {pe}, "
            f"training latent {cfg.sample_size}, flow shift {cfg.flow_shift}, reference {cfg.reference}")


def load_dit(path, dtype: torch.dtype = torch.float32, device="cpu", **overrides) -> SanaDiT:
    """Load any Sana DiT file or diffusers folder as a `SanaDiT` in eval mode (pure-PyTorch API, docs/ARCHITECTURE.md).

    dtype/device: storage and compute dtype and device. `overrides` set config fields (e.g. reference="diffusers").
    """
    sd, cfg = load_state_dict_and_config(path, **overrides)
    with torch.device("meta"):
        model = SanaDiT(cfg, dtype=dtype)
    sd = finish_state_dict(sd, dtype, str(path))
    sd = {k: v.to(device=device) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()
