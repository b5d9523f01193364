"""ComfyUI adapter of the Sana DiT: the supported-model config, the BaseModel subclass and the loading recipe.

Follows ComfyUI comfy/sd.py load_diffusion_model_state_dict: the state dict is read and converted to
original Sana names by models/dit_checkpoint.py, the unet dtype and manual-cast dtype come from
comfy.model_management, BaseModel builds the DiT with comfy.ops (fp8 weights, manual cast, low-VRAM offload and LoRA
patches), and the result is a ModelPatcher. ModelType.FLOW + multiplier 1000 feeds the DiT timesteps = sigma * 1000.
"""

import dataclasses
import logging

import comfy.conds
import comfy.ldm.modules.attention
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import comfy.supported_models_base
import comfy.utils
import torch

from ..models.dit import DEFAULT_SPRINT_GUIDANCE, SanaDiT, SanaDiTConfig
from ..models.dit_checkpoint import describe_config, finish_state_dict, load_state_dict_and_config
from ..models.dit_files import inference_dtypes
from ..models.weights_file import check_finite
from .latent_format import SanaLatentFormat

# ComfyUI budgets dtype_size * 0.01 MiB * factor per latent token (model_base.memory_required). The peak per token of
# a Sana 1.6B block is about 6h (GLU conv outputs, h = 5600) + 20 heads * 300 text tokens + 5C (C = 2240) elements,
# about 50.8k elements = 4.8 * 0.01 MiB; 5.0 keeps a small margin.
MEMORY_USAGE_FACTOR = 5.0
TIMESTEP_MULTIPLIER = 1000  # the DiT gets sigma * 1000 (models/dit.py SanaDiT.forward)


class SanaDiTComfy(SanaDiT):
    """SanaDiT whose forward runs through ComfyUI's DIFFUSION_MODEL wrappers, like core's Flux, and whose softmax
    cross-attention runs through core's `optimized_attention` (the backend chosen by --use-sage-attention,
    --use-flash-attention, xformers, ...; `transformer_options["optimized_attention_override"]` is honoured)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for block in self.blocks:
            block.cross_attn.attention = self.comfy_attention

    @staticmethod
    def comfy_attention(q, k, v, heads, **kwargs):
        """models/dit_blocks.sdpa_attention's contract served by core's backend, looked up per call so that a backend
        switched after loading (comfy.ldm.modules.attention.optimized_attention) is used."""
        return comfy.ldm.modules.attention.optimized_attention(q, k, v, heads, **kwargs)

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

    def __init__(self, dit_config: SanaDiTConfig, inference_dtypes: list | None = None):
        super().__init__({"image_model": "sana", **dataclasses.asdict(dit_config)})
        self.sampling_settings["shift"] = dit_config.flow_shift
        if inference_dtypes is not None:  # per variant (models/dit_files.inference_dtypes)
            self.supported_inference_dtypes = list(inference_dtypes)

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


def _pick_dtypes(sd: dict, model_config, load_device, weight_dtype, model_options: dict):
    """(unet dtype, manual-cast dtype) as core's load_diffusion_model_state_dict chooses them."""
    unet_dtype = model_options.get("dtype") or weight_dtype or mm.unet_dtype(
        model_params=comfy.utils.calculate_parameters(sd), supported_dtypes=model_config.supported_inference_dtypes,
        weight_dtype=comfy.utils.weight_dtype(sd))
    return unet_dtype, mm.unet_manual_cast(unet_dtype, load_device, model_config.supported_inference_dtypes)


def _build_and_load(model_config, sd: dict, source: str, check: bool):
    """BaseModel with the weights in. Default operations: the DiT is built on the meta device and the (already cast)
    tensors are assigned, so host RAM holds one copy of the weights. Custom operations (GGUF, quantised files) get
    core's path: build on the host, then `load_model_weights` (the keys were already checked strictly)."""
    if model_config.custom_operations is not None:
        model = model_config.get_model(sd, "")
        model.load_model_weights(finish_state_dict(sd, None, source, check), "")
        return model
    model = model_config.get_model(sd, "", device="meta")
    targets = {k: v.dtype for k, v in model.diffusion_model.state_dict().items()}
    model.diffusion_model.load_state_dict(finish_state_dict(sd, targets, source, check), strict=True, assign=True)
    return model


def finite_check_on_load(source: str):
    """ModelPatcher ON_LOAD callback refusing non-finite weights once, on the device they were loaded to: on a GPU
    this pass costs milliseconds, while on the host it is a full pass over the weights (done at load instead)."""
    state = {"done": False}

    def check(patcher, *args):
        if not state["done"]:
            patched = " (with its patches, e.g. LoRAs, applied)" if patcher.patches else ""
            check_finite(patcher.model.diffusion_model.state_dict(), f"{source}{patched}")
            state["done"] = True
    return check


def load_sana_dit(path, weight_dtype: torch.dtype | None = None, reference: str = "nvlabs",
                  model_options: dict | None = None, resolution="auto", ema: bool = False,
                  notices: list | None = None):
    """Load a Sana DiT file/folder as a ComfyUI ModelPatcher (weight_dtype None = ComfyUI's choice).

    model_options: core's options (`dtype`, `custom_operations`, `fp8_optimizations`), as for
    comfy.sd.load_diffusion_model. resolution / ema / notices: see models/dit_checkpoint.load_state_dict_and_config
    (`notices` receives the messages to show the user). Non-finite weights are refused after the cast.
    """
    model_options = model_options or {}
    sd, dit_config = load_state_dict_and_config(path, resolution=resolution, ema=ema, notices=notices,
                                                reference=reference)
    stored = comfy.utils.weight_dtype(sd)
    model_config = SanaModelConfig(dit_config, inference_dtypes(dit_config, stored, str(path)))
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    unet_dtype, manual_cast_dtype = _pick_dtypes(sd, model_config, load_device, weight_dtype, model_options)
    model_config.set_inference_dtype(unet_dtype, manual_cast_dtype)
    model_config.custom_operations = model_options.get("custom_operations")
    if model_options.get("fp8_optimizations", False):
        model_config.optimizations["fp8"] = True
    check_now = load_device.type == "cpu"  # else on the GPU when ComfyUI first loads the weights there
    model = _build_and_load(model_config, sd, str(path), check_now).to(offload_device)
    logging.info("Sana DiT %s: %s; weight dtype %s, compute dtype %s (supported: %s)", path,
                 describe_config(dit_config), unet_dtype, manual_cast_dtype or unet_dtype,
                 model_config.supported_inference_dtypes)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    if not check_now:
        patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, finite_check_on_load(str(path)))
    return patcher
