"""DiT nodes: SanaDiTLoader loads any Sana-family transformer from `diffusion_models` as a native MODEL."""

import folder_paths
import torch
from comfy_api.latest import io

from ..models.dit import REFERENCES
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


NODES = [SanaDiTLoader]
