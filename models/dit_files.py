"""What a Sana DiT file can hold beyond one plain transformer, and the checks that refuse a silently wrong load:
ControlNet checkpoints, the training resolution of a file that cannot tell it, the strict key/shape check, the EMA
weights of NVlabs trainer checkpoints, and the inference dtypes of each variant.

ControlNet layouts: NVlabs `sana_multi_scale_controlnet.py` (base model + `controlnet.{i}.copied_block.*`,
`controlnet.0.before_proj.*`, `controlnet.{i}.after_proj.*`) and diffusers `SanaControlNetModel`
(`controlnet_blocks.{i}.*`, `input_block.*`; diffusers scripts/convert_sana_controlnet_to_diffusers.py).
"""

import torch

from .dit import PIXELS_PER_LATENT, SanaDiT, SanaDiTConfig

NVLABS_CONTROLNET_PREFIX = "controlnet."
DIFFUSERS_CONTROLNET_PREFIXES = ("controlnet_blocks.", "input_block.")
DIFFUSERS_CONTROLNET_CLASS = "SanaControlNetModel"
CONTROLNET_LOADER = "the Sana ControlNet loader (SanaControlNetLoader)"
# NVlabs trainer checkpoints (NVlabs diffusion/utils/checkpoint.py save_checkpoint): the EMA copy of the weights.
EMA_KEY = "state_dict_ema"
RESOLUTIONS = (512, 1024, 2048, 4096)  # training resolutions of the released models (px)
ASSUMED_RESOLUTION = 1024
MAX_LISTED_KEYS = 5
# bf16-trained releases overflow in fp16 (NVlabs model zoo: `_BF16`, 2K/4K, Sana 1.5 and Sprint are bf16 models);
# the fp16-trained Sana 1.0 512/1024 px models run in fp16 in the official app.
BF16_ONLY_DTYPES = [torch.bfloat16, torch.float32]
FP16_OK_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
FP16_TRAINED_MAX_SAMPLE_SIZE = 32  # 1024 px: 2K and 4K models were trained in bf16
BF16_NAME_HINT = "bf16"


def split_controlnet(sd: dict, source: str, notices: list) -> dict:
    """The base model of an NVlabs ControlNet checkpoint (its `controlnet.*` tensors dropped, with a notice saying
    where they are used); any other state dict unchanged."""
    control = [k for k in sd if k.startswith(NVLABS_CONTROLNET_PREFIX)]
    if not control:
        return sd
    blocks = len({k.split(".")[1] for k in control})
    notices.append(f"{source} is an NVlabs ControlNet checkpoint: this loader uses its base Sana model; the ControlNet "
                   f"part ({blocks} copied blocks, {len(control)} tensors) is used by {CONTROLNET_LOADER}: load the "
                   f"same file there (from models/controlnet) and apply it with Apply ControlNet.")
    return {k: v for k, v in sd.items() if not k.startswith(NVLABS_CONTROLNET_PREFIX)}


def refuse_diffusers_controlnet(sd: dict, config: dict | None, source: str) -> None:
    """Raise ValueError for a diffusers SanaControlNetModel file or folder."""
    by_class = (config or {}).get("_class_name") == DIFFUSERS_CONTROLNET_CLASS
    if by_class or any(k.startswith(DIFFUSERS_CONTROLNET_PREFIXES) for k in sd):
        raise ValueError(f"{source}: this is a Sana ControlNet (diffusers {DIFFUSERS_CONTROLNET_CLASS}: "
                         f"controlnet_blocks.N, input_block), not a Sana DiT: load it with {CONTROLNET_LOADER} "
                         f"(put it in models/controlnet) and load its base Sana model here.")


def resolution_sample_size(resolution, source: str) -> int | None:
    """Latent side of a `resolution` choice ("auto"/None -> None, 512/1024/2048/4096 px -> 16/32/64/128)."""
    if resolution in (None, "auto"):
        return None
    try:
        value = int(resolution)
    except (TypeError, ValueError):
        value = None
    if value not in RESOLUTIONS:
        raise ValueError(f"{source}: resolution '{resolution}' is not one of 'auto', {list(RESOLUTIONS)}; pick the "
                         f"training resolution of the model")
    return value // PIXELS_PER_LATENT


def assumed_resolution_notice(source: str) -> str:
    """What the loader says when it had to assume the training resolution."""
    return (f"{source}: the file has no config.json beside it and no pos_embed, so it cannot tell its training "
            f"resolution; assumed {ASSUMED_RESOLUTION} px (no position encoding). If this is a 512, 2K or 4K model, "
            f"set the loader's 'resolution' input to 512, 2048 or 4096 (or put the diffusers config.json beside the "
            f"file).")


def ignored_resolution_notice(source: str, resolution, sample_size: int) -> str:
    """What the loader says when the `resolution` input is not needed."""
    return (f"{source}: 'resolution' {resolution} ignored: the file declares its training resolution "
            f"({sample_size * PIXELS_PER_LATENT} px).")


def _first(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
    return ", ".join(keys[:MAX_LISTED_KEYS]) + more


def check_keys(sd: dict, cfg: SanaDiTConfig, source: str) -> None:
    """Refuse a state dict whose keys or shapes differ from the detected variant's, naming the first ones, before any
    non-strict load could drop or leave them uninitialised."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in SanaDiT(cfg).state_dict().items()}
    missing, unexpected = expected.keys() - sd.keys(), sd.keys() - expected.keys()
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensor(s): {_first(missing)}"] if missing else []) + (
            [f"unexpected {len(unexpected)} tensor(s): {_first(unexpected)}"] if unexpected else [])
        raise ValueError(f"{source}: the weights do not match the detected {cfg.variant}: {'; '.join(parts)}. The "
                         f"file is incomplete, damaged or not a plain Sana DiT; re-download it (or convert it with "
                         f"the official scripts).")
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(shape)})" for k, shape in expected.items()
             if tuple(sd[k].shape) != tuple(shape)]
    if wrong:
        raise ValueError(f"{source}: tensor shapes do not match the detected {cfg.variant}: {_first(wrong)}. The "
                         f"file is damaged or from a different model; re-download it.")


def inference_dtypes(cfg: SanaDiTConfig, stored_dtype: torch.dtype | None, name: str = "") -> list:
    """Dtypes the variant may run in, best first. bf16-trained variants ([bf16, fp32]): Sana 1.5, Sprint, 2K/4K,
    and any file stored in bf16 or named `_BF16` (the name is the only hint that tells the 1.6B 1024 px `_BF16`
    release from the fp16-trained one: the weights and configs are identical). fp16 only for the Sana 1.0 512/1024 px
    models otherwise."""
    family_bf16 = cfg.qk_norm or cfg.guidance_embeds or cfg.sample_size > FP16_TRAINED_MAX_SAMPLE_SIZE
    hinted = stored_dtype == torch.bfloat16 or BF16_NAME_HINT in name.lower()
    return list(BF16_ONLY_DTYPES if family_bf16 or hinted else FP16_OK_DTYPES)
