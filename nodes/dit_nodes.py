"""DiT nodes: SanaDiTLoader loads any Sana-family transformer from `diffusion_models` as a native MODEL; SanaPAG adds
the official app's perturbed-attention guidance (reference/sana.md §6.7)."""

import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io

from ..models.dit import PAG_DEFAULT_LAYERS, PAG_LAYERS_KEY, REFERENCES, pag_guidance
from .common import CATEGORY, resolve_model_file
from .dit_adapter import load_sana_dit

FOLDER = "diffusion_models"
WEIGHT_DTYPES = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn}


class SanaDiTLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaDiTLoader",
            display_name="Load Sana DiT",
            category=CATEGORY + "/loaders",
            description="Loads a Sana transformer (Sana 1.0 0.6B/1.6B at 512 px-4K, Sana 1.5 1.6B/4.8B, Sana-Sprint) "
                        "from diffusion_models. Layout (original .pth/.safetensors or a diffusers folder) and variant "
                        "are detected from the weights; the detected config is written to the log.",
            inputs=[
                io.Combo.Input("dit_name", options=folder_paths.get_filename_list(FOLDER), tooltip="An original "
                               "NVlabs file (e.g. Sana_1600M_1024px_BF16.pth) or the weights file of a diffusers "
                               "'transformer' folder (its config.json is read from beside it)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", tooltip="Storage "
                               "dtype of the weights. 'default' lets ComfyUI choose for the device; fp8 stores "
                               "weights in float8 and computes in bf16/fp16/fp32."),
                io.Combo.Input("numerics", options=list(REFERENCES), default="nvlabs", optional=True,
                               tooltip="'nvlabs' reproduces the official code (integer timesteps, eps 1e-8, "
                               "cross-norm eps 1e-6); 'diffusers' reproduces diffusers' SanaTransformer2DModel."),
            ],
            outputs=[io.Model.Output(tooltip="The Sana DiT as a flow-matching MODEL with its default shift.")],
        )

    @classmethod
    def execute(cls, dit_name, weight_dtype, numerics="nvlabs") -> io.NodeOutput:
        path = resolve_model_file(FOLDER, dit_name)
        return io.NodeOutput(load_sana_dit(path, WEIGHT_DTYPES[weight_dtype], reference=numerics))


def pag_layers(text: str, config) -> frozenset:
    """Block indices from "auto" (the official config's layers for this size) or a comma-separated list."""
    if text.strip() == "auto":
        layers = PAG_DEFAULT_LAYERS.get(config.hidden_size, (config.depth // 2,))
    else:
        try:
            layers = tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError as e:
            raise ValueError(f"SanaPAG layers '{text}': expected 'auto' or block indices like '8' or '7,8'") from e
    bad = [i for i in layers if not 0 <= i < config.depth]
    if bad or not layers:
        raise ValueError(f"SanaPAG layers {list(layers)}: this model has blocks 0..{config.depth - 1}; pick indices in "
                         f"that range")
    return frozenset(layers)


def pag_post_cfg(scale: float, layers: frozenset):
    """ComfyUI post-CFG function: one extra cond pass with identity self-attention in `layers`, then CFG + PAG."""
    def post_cfg(args):
        options = args["model_options"].copy()
        options["transformer_options"] = {**options.get("transformer_options", {}), PAG_LAYERS_KEY: layers}
        (perturbed,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"],
                                                      options)
        return pag_guidance(args["denoised"], args["cond_denoised"], perturbed, scale)
    return post_cfg


class SanaPAG(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaPAG",
            display_name="Sana PAG",
            category=CATEGORY + "/model_patches",
            description="Perturbed-attention guidance as in the official Sana app (CFG 5.0 + PAG 2.0 on block 8): an "
                        "extra pass with identity self-attention in the chosen blocks pushes the result away from it.",
            inputs=[
                io.Model.Input("model", tooltip="A Sana MODEL from Load Sana DiT."),
                io.Float.Input("scale", default=2.0, min=0.0, max=20.0, step=0.1, tooltip="PAG scale (official "
                               "app: 2.0); 0 turns PAG off. Costs one extra model pass per step."),
                io.String.Input("layers", default="auto", tooltip="'auto' = the official layers (block 8 for "
                                "1.6B/4.8B, 14 for 600M) or comma-separated block indices."),
            ],
            outputs=[io.Model.Output(tooltip="The MODEL with PAG applied after CFG.")],
        )

    @classmethod
    def execute(cls, model, scale, layers) -> io.NodeOutput:
        layer_set = pag_layers(layers, model.get_model_object("diffusion_model").config)
        patched = model.clone()
        if scale > 0:
            patched.set_model_sampler_post_cfg_function(pag_post_cfg(scale, layer_set))
        return io.NodeOutput(patched)


NODES = [SanaDiTLoader, SanaPAG]
