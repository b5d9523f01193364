"""Diffusers / PEFT / trainer Sana LoRAs through ComfyUI's stock LoRA loaders.

Core builds the LoRA key map in one function, `comfy.lora.model_lora_keys_unet(model, key_map)`, called by
`comfy.sd.load_lora_for_models` (LoraLoader, LoraLoaderModelOnly) and by the hooks-based LoRA path (comfy/hooks.py).
`install_lora_key_map` wraps that function once: for a Sana MODEL it adds the names of models/lora_keys.py (diffusers
module names, their trainer aliases, bare original names, q/k/v slices of the fused weights); for every other model it
returns core's map unchanged. Loading, strength, stacking and the "lora key not loaded" log stay core's.
"""

import comfy.lora

from ..models.lora_keys import MODEL_PREFIX, lora_key_map
from .dit_adapter import SanaModel

WRAPPED_MARKER = "sana_lora_keys"  # attribute set on the installed wrapper: install once, however often imported


def add_sana_lora_keys(model, key_map: dict) -> dict:
    """Add the Sana LoRA names of `model` (a SanaModel) to `key_map` without replacing core's entries."""
    shapes = {k[len(MODEL_PREFIX):]: v.shape for k, v in model.state_dict().items() if k.startswith(MODEL_PREFIX)}
    for name, target in lora_key_map(shapes).items():
        key_map.setdefault(name, target)
    return key_map


def install_lora_key_map() -> None:
    """Wrap `comfy.lora.model_lora_keys_unet` so Sana models get their LoRA names; safe to call more than once."""
    core = comfy.lora.model_lora_keys_unet
    if getattr(core, WRAPPED_MARKER, False):
        return

    def model_lora_keys_unet(model, key_map=None):
        key_map = core(model, {} if key_map is None else key_map)
        if isinstance(model, SanaModel):
            add_sana_lora_keys(model, key_map)
        return key_map

    setattr(model_lora_keys_unet, WRAPPED_MARKER, True)
    model_lora_keys_unet.__doc__ = core.__doc__
    comfy.lora.model_lora_keys_unet = model_lora_keys_unet
