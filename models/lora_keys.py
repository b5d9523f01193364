"""LoRA key names of the Sana DiT: which LoRA module name patches which original-layout weight (or slice of one).

Our DiT keeps the original NVlabs names (`blocks.N.attn.qkv`, `cross_attn.kv_linear`, `mlp.inverted_conv.conv`, ...;
see models/dit.py). LoRAs come in three naming families:
- diffusers / PEFT (diffusers `SanaLoraLoaderMixin`, `examples/dreambooth/train_dreambooth_lora_sana.py`):
  `transformer.transformer_blocks.N.attn1.to_q.lora_A.weight`, with or without the `transformer.` prefix;
- trainer aliases of those diffusers names (OneTrainer `lora_transformer_…`, SimpleTuner `lycoris_…`, kohya-style
  `lora_unet_…` over diffusers names, PEFT's `base_model.model.…`);
- original names (`blocks.N.attn.qkv.lora_…`, `diffusion_model.blocks.N…`, kohya `lora_unet_blocks_N_attn_qkv`).
ComfyUI core already maps `diffusion_model.<name>` and `lora_unet_<name_with_underscores>` for original names
(comfy/lora.py `model_lora_keys_unet`); this module adds the rest. diffusers' separate q/k/v (and k/v) projections
land on the fused `attn.qkv` / `cross_attn.kv_linear` weights as row slices `(key, (dim, offset, size))`, the target
form ComfyUI's `ModelPatcher.add_patches` takes (as core maps diffusers Flux LoRAs, comfy/utils.py
`flux_to_diffusers`). The diffusers <-> original names come from the rename tables in models/dit_checkpoint.py.
"""

from collections.abc import Mapping

from .dit_checkpoint import DIFFUSERS_BLOCK, DIFFUSERS_BLOCK_PREFIX, DIFFUSERS_FUSED, DIFFUSERS_TOP_LEVEL

WEIGHT_SUFFIX = ".weight"
MODEL_PREFIX = "diffusion_model."  # ComfyUI BaseModel state-dict prefix of the DiT
ORIGINAL_BLOCK_PREFIX = "blocks."
FUSED_DIM = 0  # the fused q/k/v (k/v) weights concatenate their parts along the output rows
# Prefixes under which trainers write diffusers module names (dotted), and those that flatten dots to underscores.
DOTTED_PREFIXES = ("", "transformer.", "base_model.model.", "transformer.base_model.model.")
UNDERSCORE_PREFIXES = ("lora_transformer_", "lycoris_", "lora_unet_")
# Original names without ComfyUI's prefix (`blocks.0.attn.qkv`) and the older `transformer.<original>` form.
ORIGINAL_PREFIXES = ("", "transformer.")

Target = str | tuple[str, tuple[int, int, int]]


def _diffusers_block_names(index: int, rest: str, shape) -> dict[str, Target]:
    """diffusers module names of one original block weight `blocks.{index}.{rest}` (rest ends with `.weight`)."""
    key = f"{ORIGINAL_BLOCK_PREFIX}{index}.{rest}"
    block = f"{DIFFUSERS_BLOCK_PREFIX}{index}."
    if rest in DIFFUSERS_FUSED:
        parts = DIFFUSERS_FUSED[rest]
        size = shape[FUSED_DIM] // len(parts)
        return {block + part[:-len(WEIGHT_SUFFIX)]: (key, (FUSED_DIM, i * size, size)) for i, part in enumerate(parts)}
    return {block + name: key for name in _renamed(rest, DIFFUSERS_BLOCK)}


def _renamed(key: str, table: dict) -> list[str]:
    """diffusers module names of original weight `key` under a diffusers -> original prefix table (`a.b.` -> `c.`)."""
    module = key[:-len(WEIGHT_SUFFIX)] + "."  # "attn.proj." matches the table's "attn.proj." prefix
    return [(diffusers + module[len(original):])[:-1] for diffusers, original in table.items()
            if original.endswith(".") and module.startswith(original)]


def diffusers_module_targets(shapes: Mapping[str, tuple]) -> dict[str, Target]:
    """diffusers SanaTransformer2DModel module name -> original weight key, or (key, (dim, offset, size)) for a row
    slice of a fused weight.

    shapes: original-layout weight keys (no ComfyUI prefix) -> shape; only `*.weight` entries are used.
    """
    out: dict[str, Target] = {}
    for key, shape in shapes.items():
        if not key.endswith(WEIGHT_SUFFIX):
            continue
        if key.startswith(ORIGINAL_BLOCK_PREFIX):
            index, rest = key[len(ORIGINAL_BLOCK_PREFIX):].split(".", 1)
            out.update(_diffusers_block_names(int(index), rest, shape))
            continue
        out.update({name: key for name in _renamed(key, DIFFUSERS_TOP_LEVEL)})
    return out


def _prefixed(target: Target, prefix: str) -> Target:
    return prefix + target if isinstance(target, str) else (prefix + target[0], target[1])


def lora_key_map(shapes: Mapping[str, tuple], prefix: str = MODEL_PREFIX) -> dict[str, Target]:
    """Every LoRA module name a Sana LoRA may use -> the model key it patches (with `prefix`), or a fused slice.

    shapes: the DiT's original-layout weight keys (no prefix) -> shape. Returned names are LoRA key stems: the part
    before `.lora_A.weight`, `.lora_down.weight`, `.alpha`, ... (what comfy/lora.py `load_lora` looks up).
    """
    out: dict[str, Target] = {}
    for name, target in diffusers_module_targets(shapes).items():
        target = _prefixed(target, prefix)
        for dotted in DOTTED_PREFIXES:
            out[dotted + name] = target
        for flat in UNDERSCORE_PREFIXES:
            out[flat + name.replace(".", "_")] = target
    for key in shapes:
        if key.endswith(WEIGHT_SUFFIX):
            for dotted in ORIGINAL_PREFIXES:
                out[dotted + key[:-len(WEIGHT_SUFFIX)]] = prefix + key
    return out
