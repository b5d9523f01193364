"""ComfyUI adapter of the Sana DiT: the supported-model config, the BaseModel subclass and the loading recipe.

Follows comfy.sd.load_diffusion_model_state_dict (reference/comfyui.md §1.7): the state dict is read and converted to
original Sana names by models/dit_checkpoint.py, the unet dtype and manual-cast dtype come from
comfy.model_management, BaseModel builds the DiT with comfy.ops (fp8 weights, manual cast, low-VRAM offload and LoRA
patches), and the result is a ModelPatcher. ModelType.FLOW + multiplier 1000 feeds the DiT timesteps = sigma * 1000.
"""

import dataclasses
import logging

import comfy.conds
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models_base
import comfy.utils
import torch

from ..models.dit import DEFAULT_SPRINT_GUIDANCE, SanaDiT, SanaDiTConfig
from ..models.dit_checkpoint import describe_config, load_state_dict_and_config
from .latent_format import SanaLatentFormat

# ComfyUI budgets dtype_size * 0.01 MiB * factor per latent token (model_base.memory_required). The peak per token of
# a Sana 1.6B block is about 6h (GLU conv outputs, h = 5600) + 20 heads * 300 text tokens + 5C (C = 2240) elements,
# about 50.8k elements = 4.8 * 0.01 MiB; 5.0 keeps a small margin.
MEMORY_USAGE_FACTOR = 5.0
TIMESTEP_MULTIPLIER = 1000  # DESIGN.md §3: the DiT gets sigma * 1000


class SanaDiTComfy(SanaDiT):
    """SanaDiT whose forward runs through ComfyUI's DIFFUSION_MODEL wrappers, like core's Flux."""

    def forward(self, x, timesteps, context, attention_mask=None, guidance=None, transformer_options=None, **kwargs):
        options = transformer_options if transformer_options is not None else {}
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, options)
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(super().forward, self, wrappers).execute(
            x, timesteps, context, attention_mask, guidance, options, **kwargs)


class SanaModelConfig(comfy.supported_models_base.BASE):
    """Supported-model description of one detected Sana DiT (variant fields splat into the DiT constructor)."""

    unet_config = {"image_model": "sana"}
    unet_extra_config = {}
    sampling_settings = {"shift": 3.0, "multiplier": TIMESTEP_MULTIPLIER}
    latent_format = SanaLatentFormat
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    memory_usage_factor = MEMORY_USAGE_FACTOR

    def __init__(self, dit_config: SanaDiTConfig):
        super().__init__({"image_model": "sana", **dataclasses.asdict(dit_config)})
        self.sampling_settings["shift"] = dit_config.flow_shift

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.FLOW

    def get_model(self, state_dict, prefix="", device=None):
        return SanaModel(self, device=device)


class SanaModel(comfy.model_base.BaseModel):
    """Flow-matching BaseModel around SanaDiTComfy; conditioning keys become DiT forward arguments."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        super().__init__(model_config, model_type, device=device, unet_model=SanaDiTComfy)

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = comfy.conds.CONDRegular(cross_attn)
        attention_mask = kwargs.get("attention_mask", None)
        if attention_mask is not None:
            out["attention_mask"] = comfy.conds.CONDRegular(attention_mask)
        if self.diffusion_model.config.guidance_embeds:
            guidance = kwargs.get("guidance", DEFAULT_SPRINT_GUIDANCE)
            out["guidance"] = comfy.conds.CONDRegular(torch.FloatTensor([guidance]))
        return out


def load_sana_dit(path, weight_dtype: torch.dtype | None = None, reference: str = "nvlabs"):
    """Load a Sana DiT file/folder as a ComfyUI ModelPatcher (weight_dtype None = ComfyUI's choice)."""
    sd, dit_config = load_state_dict_and_config(path, reference=reference)
    model_config = SanaModelConfig(dit_config)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    unet_dtype = weight_dtype or mm.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                                               supported_dtypes=model_config.supported_inference_dtypes,
                                               weight_dtype=comfy.utils.weight_dtype(sd))
    manual_cast_dtype = mm.unet_manual_cast(unet_dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(unet_dtype, manual_cast_dtype)
    model = model_config.get_model(sd, "").to(offload_device)
    model.load_model_weights(sd, "")
    logging.info("Sana DiT %s: %s; weight dtype %s, compute dtype %s", path, describe_config(dit_config), unet_dtype,
                 manual_cast_dtype or unet_dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
