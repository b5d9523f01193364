"""SanaControlNetLoader: a Sana ControlNet (NVlabs .pth or diffusers SanaControlNetModel) as a stock CONTROL_NET.

The result is core's `comfy.controlnet.ControlNet` around models/controlnet.py's `SanaControlNet`: stock
ControlNetApply(Advanced) sets the hint, strength and start/end percent, chains several ControlNets, and core encodes
the hint image with the VAE given to the apply node (the DC-AE) and scales it by the latent format (0.41407), as
diffusers' SanaControlNetPipeline does. Core calls the ControlNet per batch chunk (CFG, batches) with the same noisy
latent, sigma * 1000 and caption as the DiT; its residuals reach the DiT as the `control` argument.
"""

import logging

import comfy.controlnet
import comfy.model_management as mm
import comfy.ops
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..models.controlnet import SanaControlNet, load_controlnet_state_dict
from ..models.dit import REFERENCES
from .common import CATEGORY, resolve_model_file
from .dit_adapter import SanaDiTComfy, SanaModelConfig
from .latent_format import SanaLatentFormat

FOLDER = "controlnet"
SUPPORTED_DTYPES = SanaModelConfig.supported_inference_dtypes  # the DiT's default list
EXTRA_CONDS = ["attention_mask"]  # model conds core hands to the ControlNet besides x, hint, timesteps, context


def load_sana_controlnet(path, reference: str = "nvlabs") -> comfy.controlnet.ControlNet:
    """Load a Sana ControlNet file/folder as core's ControlNet, with ComfyUI's dtype and operations choice."""
    sd, config = load_controlnet_state_dict(path, reference=reference)
    load_device = mm.get_torch_device()
    unet_dtype = mm.unet_dtype(model_params=-1, supported_dtypes=SUPPORTED_DTYPES,
                               weight_dtype=comfy.utils.weight_dtype(sd))
    manual_cast_dtype = mm.unet_manual_cast(unet_dtype, load_device)
    operations = comfy.ops.pick_operations(unet_dtype, manual_cast_dtype, disable_fast_fp8=True)
    model = SanaControlNet(config, dtype=unet_dtype, device=mm.unet_offload_device(), operations=operations)
    model.load_state_dict(sd, strict=True)
    for block in model.controlnet:  # the copied blocks' cross-attention through core's backend, as in the DiT
        block.copied_block.cross_attn.attention = SanaDiTComfy.comfy_attention
    logging.info("Sana ControlNet %s: %s; weight dtype %s, compute dtype %s", path, config.variant, unet_dtype,
                 manual_cast_dtype or unet_dtype)
    return comfy.controlnet.ControlNet(model.eval(), compression_ratio=1, latent_format=SanaLatentFormat(),
                                       load_device=load_device, manual_cast_dtype=manual_cast_dtype,
                                       extra_conds=list(EXTRA_CONDS))


class SanaControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaControlNetLoader",
            display_name="Load Sana ControlNet",
            category=CATEGORY + "/loaders",
            description="Loads a Sana ControlNet (e.g. Sana_600M_1024px_ControlNet_HED.pth or "
                        "Sana_1600M_1024px_BF16_ControlNet_HED.pth, or a diffusers SanaControlNetModel folder) from "
                        "the controlnet folder. Hidden size, copied blocks and position encoding are read from the "
                        "weights. Apply it with the stock Apply ControlNet node, with the Sana VAE connected.",
            inputs=[
                io.Combo.Input("control_net_name", options=folder_paths.get_filename_list(FOLDER), tooltip="The "
                               "NVlabs ControlNet .pth (it also holds a base model, which is not used here) or the "
                               "weights file of a diffusers SanaControlNetModel folder (config.json beside it)."),
                io.Combo.Input("numerics", options=list(REFERENCES), default="nvlabs", optional=True,
                               tooltip="Match the numerics chosen in Load Sana DiT: 'nvlabs' (official code) or "
                               "'diffusers' (SanaControlNetModel)."),
            ],
            outputs=[io.ControlNet.Output(tooltip="A CONTROL_NET for Apply ControlNet; connect the Sana VAE there so "
                                                  "the hint image is encoded with the DC-AE.")],
        )

    @classmethod
    def execute(cls, control_net_name, numerics="nvlabs") -> io.NodeOutput:
        path = resolve_model_file(FOLDER, control_net_name)
        return io.NodeOutput(load_sana_controlnet(path, reference=numerics))


NODES = [SanaControlNetLoader]
