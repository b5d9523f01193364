"""DC-AE checkpoint formats: layout detection, the diffusers -> original rename table, config inference, `load_dcae`.

Layouts:
- original (mit-han-lab `dc-ae-f32c32-sana-1.x/model.safetensors`, efficientvit names, 339 tensors for f32c32):
  `encoder.stages.3.op_list.0.context_module.main.qkv.conv.weight`, ... Loaded unchanged (`strict=True`).
- diffusers (`dc-ae-f32c32-sana-1.x-diffusers/diffusion_pytorch_model.safetensors`, `AutoencoderDC`, 375 tensors):
  `encoder.down_blocks.3.0.attn.to_q.weight`, ... Converted by `DIFFUSERS_TO_ORIGINAL` plus two merges (to_q/to_k/to_v
  -> one 1x1 qkv conv, to_out -> 1x1 conv), the inverse of diffusers
  `loaders/single_file_utils.py::convert_autoencoder_dc_checkpoint_to_diffusers`.
Widths, depths, block types and multi-scale kernels are read from the tensors, never from config.json.

Files: one weights file (``model.safetensors`` straight in models/vae included), a Hugging Face folder, or a diffusers
pipeline folder (its ``vae/``); which copy of a folder is read (default precision before an ``.fp16`` variant) is
decided by the shared reader, models/weights_file.py. Other autoencoders (SD1/SDXL, SD3/Flux KL VAEs, in the original
or the diffusers layout) and other Sana files are recognised by their keys and refused with a message saying what they
are. Loading is strict: missing or unexpected tensors and non-finite values are refused, naming the file and keys.
"""

import re
from pathlib import Path

import torch

from .dcae import EVIT_BLOCK, RES_BLOCK, DCAE, DCAEConfig
from .tiling import TilingOptions
from .weights_file import WeightsFileError, check_finite, component_folder, read_weights

ORIGINAL_MARKER = "encoder.project_in.conv.weight"
DIFFUSERS_MARKER = "encoder.conv_in.weight"
# Prefixes some all-in-one files put before the autoencoder keys.
KNOWN_PREFIXES = ("vae.", "first_stage_model.", "model.")
KIND = "DC-AE"
PIPELINE_COMPONENT = "vae"
# The diffusers AutoencoderDC blocks are `{side}.{down|up}_blocks.{stage}.{index}.*`; AutoencoderKL (SD/SDXL/Flux VAEs,
# which also have encoder.conv_in) nests `down_blocks.{stage}.resnets.*`, the original KL layout `encoder.down.*`.
DCAE_DIFFUSERS_BLOCK = re.compile(r"(encoder|decoder)\.(down|up)_blocks\.\d+\.\d+\.")
KL_DECODER_IN = "decoder.conv_in.weight"  # [512, latent channels, 3, 3] in both KL layouts
# Latent channels -> the autoencoder family that uses them (ComfyUI comfy/sd.py VAE detection, latent_formats.py).
KL_FAMILIES = {4: "SD1/SD2/SDXL-family", 16: "SD3/Flux.1-family"}
# Key fragments of other files users put in models/vae by mistake -> what they are and where they belong.
OTHER_SANA_FILES = {
    "x_embedder.": "a Sana DiT (transformer) file: put it in models/diffusion_models and load it with the Sana DiT "
                   "loader",
    "transformer_blocks.": "a diffusers transformer file: put it in models/diffusion_models and load it with the Sana "
                           "DiT loader",
    "layers.0.post_feedforward_layernorm.": "a Gemma-2 text encoder: put it in models/text_encoders",
}
SANA_DCAE_HINT = ("Pick a dc-ae-f32c32-sana file (mit-han-lab model.safetensors or diffusers "
                  "diffusion_pytorch_model.safetensors, or a pipeline folder with vae/) in models/vae.")

# diffusers module path -> original module path (the parameter name, weight or bias, is kept).
DIFFUSERS_TOP_LEVEL = {
    "encoder.conv_in": "encoder.project_in.conv",
    "encoder.conv_out": "encoder.project_out.main.op_list.0.conv",
    "decoder.conv_in": "decoder.project_in.main.conv",
    "decoder.norm_out": "decoder.project_out.op_list.0",
    "decoder.conv_out": "decoder.project_out.op_list.2.conv",
}
# `{side}.{down|up}_blocks.{stage}.{index}.{inner}` -> `{side}.stages.{stage}.op_list.{index}.{inner'}`.
BLOCK_MODULE = re.compile(r"(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\.(\d+)\.(.+)")
DIFFUSERS_BLOCK_MODULES = {
    "conv1": "main.conv1.conv",
    "conv2": "main.conv2.conv",
    "norm": "main.conv2.norm",
    "attn.to_out": "context_module.main.proj.conv",
    "attn.norm_out": "context_module.main.proj.norm",
    "conv_out.conv_inverted": "local_module.main.inverted_conv.conv",
    "conv_out.conv_depth": "local_module.main.depth_conv.conv",
    "conv_out.conv_point": "local_module.main.point_conv.conv",
    "conv_out.norm": "local_module.main.point_conv.norm",
}
# The encoder's downsample (last op of a stage) and the decoder's upsample (first op) are a bare `conv` in diffusers.
DIFFUSERS_RESAMPLE = {"encoder": "main.conv", "decoder": "main.conv.conv"}
MULTISCALE_MODULE = re.compile(r"attn\.to_qkv_multiscale\.(\d+)\.proj_(in|out)")
MULTISCALE_INDEX = {"in": 0, "out": 1}
# diffusers splits the head-interleaved qkv 1x1 conv into three Linear chunks; they are concatenated back in order.
QKV_MODULE = re.compile(r"(.+)\.attn\.to_(q|k|v)")
QKV_ORDER = ("q", "k", "v")


def other_model(state_dict: dict) -> str | None:
    """What a non-DC-AE state dict is ("an SDXL-family VAE (4 latent channels, ...)", "a Sana DiT ..."), else None."""
    if KL_DECODER_IN in state_dict and not any(DCAE_DIFFUSERS_BLOCK.match(k) for k in state_dict):
        channels = state_dict[KL_DECODER_IN].shape[1]
        layout = "diffusers AutoencoderKL" if any(".resnets." in k for k in state_dict) else "original KL"
        family = KL_FAMILIES.get(channels, "KL")
        return (f"an {family} VAE ({channels} latent channels, {layout} layout), not Sana's DC-AE (32 latent "
                "channels, 32x downscale). Load it with the stock Load VAE node")
    for fragment, what in OTHER_SANA_FILES.items():
        if any(fragment in k for k in state_dict):
            return what
    return None


def detect_layout(state_dict: dict, source="state dict") -> str:
    """'original' or 'diffusers' for a DC-AE state dict, else ValueError saying what the file is and what to pick."""
    other = other_model(state_dict)
    if other is not None:
        raise WeightsFileError(f"Not a DC-AE checkpoint: {source} is {other}. {SANA_DCAE_HINT}")
    if ORIGINAL_MARKER in state_dict:
        return "original"
    elif DIFFUSERS_MARKER in state_dict:
        return "diffusers"
    else:
        sample = ", ".join(sorted(state_dict)[:5])
        raise WeightsFileError(f"Not a DC-AE checkpoint: {source} has neither '{ORIGINAL_MARKER}' (mit-han-lab "
                               f"layout) nor '{DIFFUSERS_MARKER}' (diffusers AutoencoderDC); first keys: {sample}. "
                               f"{SANA_DCAE_HINT}")


def _rename_block_module(side: str, inner: str) -> str | None:
    if inner == "conv":
        return DIFFUSERS_RESAMPLE[side]
    elif inner in DIFFUSERS_BLOCK_MODULES:
        return DIFFUSERS_BLOCK_MODULES[inner]
    elif MULTISCALE_MODULE.fullmatch(inner):
        branch, part = MULTISCALE_MODULE.fullmatch(inner).groups()
        return f"context_module.main.aggreg.{branch}.{MULTISCALE_INDEX[part]}"
    else:
        return None


def _rename_diffusers_module(module: str) -> str:
    if module in DIFFUSERS_TOP_LEVEL:
        return DIFFUSERS_TOP_LEVEL[module]
    block = BLOCK_MODULE.fullmatch(module)
    inner = _rename_block_module(block.group(1), block.group(4)) if block else None
    if inner is None:
        raise ValueError(f"DC-AE diffusers module '{module}' has no original-layout equivalent; the file is not a "
                         f"dc-ae-f32c32-sana AutoencoderDC (the in/mix variants are not supported).")
    side, stage, index = block.group(1, 2, 3)
    return f"{side}.stages.{stage}.op_list.{index}.{inner}"


def diffusers_to_original(state_dict: dict) -> dict:
    """Convert a diffusers `AutoencoderDC` state dict to original mit-han-lab names (new dict; tensors are shared)."""
    converted, qkv_parts = {}, {}
    for key, tensor in state_dict.items():
        module, _, param = key.rpartition(".")
        qkv = QKV_MODULE.fullmatch(module)
        if qkv:
            qkv_parts.setdefault(qkv.group(1), {})[qkv.group(2)] = tensor
            continue
        new_module = _rename_diffusers_module(module)
        # diffusers stores the 1x1 output projection of LiteMLA as a Linear weight [C, 2C]; the original as a conv.
        converted[f"{new_module}.{param}"] = tensor[..., None, None] if module.endswith("attn.to_out") else tensor
    for parent, parts in qkv_parts.items():
        if set(parts) != set(QKV_ORDER):
            raise ValueError(f"DC-AE diffusers block '{parent}.attn' has {sorted(parts)} of to_q/to_k/to_v; "
                             f"the checkpoint is incomplete.")
        attention = _rename_diffusers_module(f"{parent}.attn.to_out").removesuffix(".proj.conv")
        converted[f"{attention}.qkv.conv.weight"] = torch.cat([parts[p] for p in QKV_ORDER])[..., None, None]
    return converted


def _strip_prefix(state_dict: dict) -> dict:
    for prefix in KNOWN_PREFIXES:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


def to_original_layout(state_dict: dict, source="state dict") -> dict:
    """Any supported DC-AE state dict (optionally prefixed by 'vae.' etc.) in original mit-han-lab names."""
    state_dict = _strip_prefix(state_dict)
    layout = detect_layout(state_dict, source)
    if layout == "original":  # detect_layout raises for anything but the two layouts
        return dict(state_dict)
    try:
        return diffusers_to_original(state_dict)
    except ValueError as e:
        raise WeightsFileError(f"{source}: {e}") from e


def _aggreg_kernels(state_dict: dict, block: str) -> tuple[int, ...]:
    kernels = []
    while f"{block}.context_module.main.aggreg.{len(kernels)}.0.weight" in state_dict:
        kernels.append(state_dict[f"{block}.context_module.main.aggreg.{len(kernels)}.0.weight"].shape[-1])
    return tuple(kernels)


def _block_info(state_dict: dict, block: str) -> tuple[str, int, tuple[int, ...]] | None:
    """(block type, width, multi-scale kernels) of the block at `block`, None when there is no block there."""
    if f"{block}.main.conv1.conv.weight" in state_dict:
        return RES_BLOCK, state_dict[f"{block}.main.conv1.conv.weight"].shape[0], ()
    elif f"{block}.context_module.main.qkv.conv.weight" in state_dict:
        width = state_dict[f"{block}.context_module.main.qkv.conv.weight"].shape[1]
        return EVIT_BLOCK, width, _aggreg_kernels(state_dict, block)
    else:
        return None


def _stage_info(state_dict: dict, side: str, stage: int) -> tuple[int, int, str, tuple[int, ...]]:
    """(width, depth, block type, scales) of one stage; decoder stages below the last start with their upsample."""
    prefix = f"{side}.stages.{stage}.op_list"
    first = 1 if f"{prefix}.0.main.conv.conv.weight" in state_dict else 0
    infos = []
    while (info := _block_info(state_dict, f"{prefix}.{first + len(infos)}")) is not None:
        infos.append(info)
    if not infos:
        raise ValueError(f"DC-AE checkpoint: '{prefix}.{first}' is neither a ResBlock nor an EViT block; only the "
                         f"f32c32-sana family (every stage holds blocks) is supported.")
    kind, width, scales = infos[0]
    if any(info != infos[0] for info in infos):
        raise ValueError(f"DC-AE checkpoint: the blocks of '{prefix}' differ in type or width: {infos}.")
    return width, len(infos), kind, scales


def config_from_state_dict(state_dict: dict) -> DCAEConfig:
    """DCAEConfig read from an original-layout state dict: stage count, widths, depths, block types and kernels."""
    fields = {}
    for side in ("encoder", "decoder"):
        stages = sorted({int(k.split(".")[2]) for k in state_dict if k.startswith(f"{side}.stages.")})
        if stages != list(range(len(stages))) or not stages:
            raise ValueError(f"DC-AE checkpoint: {side} stages {stages} are not numbered 0..n-1.")
        infos = [_stage_info(state_dict, side, stage) for stage in stages]
        for position, name in enumerate(("widths", "depths", "block_types", "scales")):
            fields[f"{side}_{name}"] = tuple(info[position] for info in infos)
    project_in = state_dict["encoder.project_in.conv.weight"]
    head_dims = {v.shape[1] for k, v in state_dict.items() if k.endswith("context_module.main.aggreg.0.1.weight")}
    return DCAEConfig(
        in_channels=project_in.shape[1],
        latent_channels=state_dict["encoder.project_out.main.op_list.0.conv.weight"].shape[0],
        head_dim=head_dims.pop() if len(head_dims) == 1 else DCAEConfig.head_dim,
        **fields,
    )


def read_dcae_weights(path) -> dict:
    """Tensors of a DC-AE file, Hugging Face folder or pipeline folder (its vae/), through the shared reader."""
    return read_weights(component_folder(Path(path), PIPELINE_COMPONENT), KIND)


def _check_keys(model: DCAE, state_dict: dict, source) -> None:
    """Refuse missing/unexpected tensors and wrong shapes before loading, naming the first keys."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise WeightsFileError(f"{source}: detected a DC-AE ({len(state_dict)} tensors), but {len(missing)} expected "
                               f"tensors are missing {missing[:5]} and {len(unexpected)} are unexpected "
                               f"{unexpected[:5]}. The file is incomplete or another variant: re-download it.")
    wrong = [k for k, v in expected.items() if tuple(v.shape) != tuple(state_dict[k].shape)]
    if wrong:
        k = wrong[0]
        raise WeightsFileError(f"{source}: tensor '{k}' has shape {tuple(state_dict[k].shape)}, expected "
                               f"{tuple(expected[k].shape)} ({len(wrong)} tensors differ); re-download the file.")


def load_dcae(path, dtype: torch.dtype = torch.float32, device="cpu", operations=None,
              tiling: TilingOptions | None = None) -> DCAE:
    """Load a DC-AE (either layout, file or folder) as `DCAE` in eval mode, weights cast to `dtype` on `device`.

    The module is built on the meta device and takes the file's tensors directly (`strict=True`), so no random init
    runs. `operations` is the layer namespace (default torch.nn; ComfyUI passes comfy.ops). Returns a module whose
    `encode(image [B,3,H,W] in [-1,1])` gives the raw latent [B,32,H/32,W/32] and `decode(latent)` the image.
    """
    state_dict = to_original_layout(read_dcae_weights(path), path)
    try:
        config = config_from_state_dict(state_dict)
    except (ValueError, KeyError) as e:
        raise WeightsFileError(f"{path}: the DC-AE architecture cannot be read from its tensors ({e}); "
                               f"{SANA_DCAE_HINT}") from e
    model = DCAE(config, tiling=tiling, device="meta", operations=operations)
    _check_keys(model, state_dict, path)
    check_finite(state_dict, path)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
