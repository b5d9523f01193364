"""DiT nodes: SanaDiTLoader loads any Sana-family transformer from `diffusion_models` as a native MODEL; SanaPAG adds
the official app's perturbed-attention guidance (NVlabs/Sana app/sana_pipeline.py, PAG)."""

import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..models.dit import PAG_DEFAULT_LAYERS, PAG_LAYERS_KEY, REFERENCES, pag_guidance
from ..models.dit_files import RESOLUTIONS
from .common import CATEGORY, misplaced_note, notify_ui, resolve_model_file
from .dit_adapter import load_sana_dit

FOLDER = "diffusion_models"
WRONG_FOLDERS = ("checkpoints",)  # where users put DiT files by habit (models/unet is part of diffusion_models)
WEIGHT_DTYPES = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn}
RESOLUTION_OPTIONS = ["auto", *map(str, RESOLUTIONS)]
DESCRIPTION = ("Loads a Sana transformer (Sana 1.0 0.6B/1.6B at 512 px-4K, Sana 1.5 1.6B/4.8B, Sana-Sprint) from "
               "models/diffusion_models: an NVlabs .pth/.safetensors (also a trainer checkpoint or a ControlNet .pth, "
               "whose base model is loaded), a diffusers transformer file (pick any shard; config.json and the shard "
               "index are read from beside it) or a diffusers pipeline folder's transformer. Layout and variant are "
               "detected from the weights; the detected config is written to the log and notices to the node's text.")


class SanaDiTLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaDiTLoader",
            display_name="Load Sana DiT",
            category=CATEGORY + "/loaders",
            description=DESCRIPTION + "".join(misplaced_note(f, FOLDER) for f in WRONG_FOLDERS),
            inputs=[
                io.Combo.Input("dit_name", options=folder_paths.get_filename_list(FOLDER), tooltip="An original "
                               "NVlabs file (e.g. Sana_1600M_1024px_BF16.pth) or the weights file of a diffusers "
                               "'transformer' folder (its config.json is read from beside it)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", tooltip="Storage "
                               "dtype of the weights. 'default' lets ComfyUI choose among the dtypes the variant "
                               "supports (bf16/fp32 for bf16-trained models, fp16 too for Sana 1.0 512/1024 px); fp8 "
                               "stores weights in float8 and computes in bf16/fp16/fp32."),
                io.Combo.Input("numerics", options=list(REFERENCES), default="nvlabs", optional=True,
                               tooltip="'nvlabs' reproduces the official code (integer timesteps, eps 1e-8, "
                               "cross-norm eps 1e-6); 'diffusers' reproduces diffusers' SanaTransformer2DModel."),
                io.Combo.Input("resolution", options=RESOLUTION_OPTIONS, default="auto", optional=True,
                               tooltip="Training resolution, used only when the file cannot tell (a diffusers "
                               "transformer file without its config.json). 'auto' assumes 1024 px and says so in the "
                               "node's text; pick 2048 or 4096 for the 2K/4K models."),
                io.Boolean.Input("ema", default=False, optional=True, tooltip="For NVlabs trainer checkpoints "
                                 "(state_dict + state_dict_ema): load the EMA weights instead of state_dict."),
            ],
            outputs=[io.Model.Output(tooltip="The Sana DiT as a flow-matching MODEL with its default shift. For an "
                                     "NVlabs ControlNet .pth this is its base model; its ControlNet part is loaded by "
                                     "SanaControlNetLoader.")],
        )

    @classmethod
    def execute(cls, dit_name, weight_dtype, numerics="nvlabs", resolution="auto", ema=False) -> io.NodeOutput:
        path = resolve_model_file(FOLDER, dit_name, WRONG_FOLDERS)
        notices = []
        model = load_sana_dit(path, WEIGHT_DTYPES[weight_dtype], reference=numerics, resolution=resolution, ema=ema,
                              notices=notices)
        for notice in notices:
            notify_ui(f"Sana: {notice}")
        return io.NodeOutput(model, ui=ui.PreviewText("\n".join(notices)) if notices else None)


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
        found = f"blocks {', '.join(map(str, bad))} do not exist" if bad else "no block index given"
        raise ValueError(f"SanaPAG layers '{text}': {found}; this model has blocks 0..{config.depth - 1}. Use 'auto' "
                         f"or indices in that range, e.g. '{config.depth // 2}'.")
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
