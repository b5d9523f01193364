"""VAE and latent nodes: SanaVAELoader (DC-AE from models/vae as a native VAE) and EmptySanaLatentImage."""

import math

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..models.tiling import TILING_MODES
from .common import CATEGORY, resolve_model_file
from .latent_format import SANA_SPATIAL_FACTOR, SanaLatentFormat
from .vae_adapter import PREVIEW_METHODS, load_sana_vae, write_preview_factors

FOLDER = "vae"
PREVIEW_CHOICES = [*PREVIEW_METHODS, "off"]
MAX_SIZE = 16384  # ComfyUI nodes.MAX_RESOLUTION
DEFAULT_SIZE = 1024
WIDGET_STEP = 8  # like EmptyLatentImage, so typed sizes are accepted and then snapped to 32 with a note
CUSTOM = "custom"
# Sana's 1024-px aspect-ratio buckets, diffusers `pipelines/pixart_alpha/pipeline_pixart_alpha.py`
# ASPECT_RATIO_1024_BIN (stored there as ratio h/w: [h, w]); here as label -> (width, height).
_BINS_1024_HW = {
    "0.25": (512, 2048), "0.28": (512, 1856), "0.32": (576, 1792), "0.33": (576, 1728), "0.35": (576, 1664),
    "0.4": (640, 1600), "0.42": (640, 1536), "0.48": (704, 1472), "0.5": (704, 1408), "0.52": (704, 1344),
    "0.57": (768, 1344), "0.6": (768, 1280), "0.68": (832, 1216), "0.72": (832, 1152), "0.78": (896, 1152),
    "0.82": (896, 1088), "0.88": (960, 1088), "0.94": (960, 1024), "1.0": (1024, 1024), "1.07": (1024, 960),
    "1.13": (1088, 960), "1.21": (1088, 896), "1.29": (1152, 896), "1.38": (1152, 832), "1.46": (1216, 832),
    "1.67": (1280, 768), "1.75": (1344, 768), "2.0": (1408, 704), "2.09": (1472, 704), "2.4": (1536, 640),
    "2.5": (1600, 640), "3.0": (1728, 576), "4.0": (2048, 512),
}
ASPECT_PRESETS = {f"{w}x{h} (h/w {ratio})": (w, h) for ratio, (h, w) in _BINS_1024_HW.items()}


def snap(value: int) -> int:
    """Nearest multiple of SANA_SPATIAL_FACTOR, at least one latent pixel."""
    return max(SANA_SPATIAL_FACTOR, math.floor(value / SANA_SPATIAL_FACTOR + 0.5) * SANA_SPATIAL_FACTOR)


def latent_size(width: int, height: int, aspect_ratio: str) -> tuple[int, int, str]:
    """(width, height) actually used and the note shown on the node."""
    if aspect_ratio == CUSTOM:
        w, h = snap(width), snap(height)
        changed = (w, h) != (width, height)
        prefix = f"{width}x{height} snapped to multiples of {SANA_SPATIAL_FACTOR}: " if changed else ""
    elif aspect_ratio in ASPECT_PRESETS:
        w, h = ASPECT_PRESETS[aspect_ratio]
        prefix = f"preset {aspect_ratio} (width/height inputs ignored): "
    else:
        raise ValueError(f"aspect_ratio '{aspect_ratio}' is unknown; pick '{CUSTOM}' or a listed preset.")
    return w, h, f"{prefix}{w}x{h}, latent {w // SANA_SPATIAL_FACTOR}x{h // SANA_SPATIAL_FACTOR}"


def empty_latent(batch_size: int, width: int, height: int) -> dict:
    """LATENT dict of zeros [B, 32, height/32, width/32] on ComfyUI's intermediate device."""
    shape = (batch_size, SanaLatentFormat.latent_channels, height // SANA_SPATIAL_FACTOR, width // SANA_SPATIAL_FACTOR)
    return {"samples": torch.zeros(shape, device=mm.intermediate_device())}


class SanaVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaVAELoader",
            display_name="Load Sana VAE (DC-AE)",
            category=CATEGORY + "/loaders",
            description="Loads the DC-AE f32c32 autoencoder of Sana 1.0/1.1 from models/vae, in the original "
                        "mit-han-lab layout (model.safetensors, also when it lies directly in models/vae) or the "
                        "diffusers layout (diffusion_pytorch_model.safetensors, e.g. a pipeline's vae/ folder; an "
                        ".fp16 copy beside it is not read). SD1/SDXL/Flux VAEs are refused with a note: load those "
                        "with the stock Load VAE. Works with VAEDecode, VAEEncode and their tiled versions; also fits "
                        "the latent-preview colours of this VAE (once per VAE, cached).",
            inputs=[
                io.Combo.Input("vae_name", options=folder_paths.get_filename_list(FOLDER),
                               tooltip="A dc-ae-f32c32-sana file in either layout; widths and depths are read from "
                                       "the weights."),
                io.Combo.Input("tiling", options=list(TILING_MODES), default="auto",
                               tooltip="auto: decode/encode in 512 px tiles (128 px blended overlap) only when the "
                                       "memory estimate says a full pass would not fit; always: always tile large "
                                       "images (less memory, slower); never: always full passes."),
                io.Combo.Input("preview_colors", options=PREVIEW_CHOICES, default="fit", optional=True,
                               tooltip="Latent previews during sampling use colours from this VAE. fit: least "
                                       "squares on a few small encode/decodes (seconds on GPU, cached per VAE); "
                                       "analytic: from the decoder weights only, rougher; off: leave as is."),
            ],
            outputs=[io.Vae.Output(tooltip="The DC-AE as a native VAE (32x downscale, 32 latent channels).")],
        )

    @classmethod
    def execute(cls, vae_name, tiling, preview_colors="fit") -> io.NodeOutput:
        vae = load_sana_vae(resolve_model_file(FOLDER, vae_name), tiling)
        if preview_colors != "off":
            write_preview_factors(vae, preview_colors)
        return io.NodeOutput(vae)


class EmptySanaLatentImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmptySanaLatent",
            display_name="Empty Sana Latent",
            category=CATEGORY + "/latent",
            description="An empty 32-channel Sana latent (1/32 of the image size). Sizes snap to multiples of 32; "
                        "the node shows the size used. Presets are Sana's 1024 px aspect-ratio buckets.",
            inputs=[
                io.Int.Input("width", default=DEFAULT_SIZE, min=SANA_SPATIAL_FACTOR, max=MAX_SIZE, step=WIDGET_STEP,
                             tooltip="Image width in pixels; snapped to the nearest multiple of 32."),
                io.Int.Input("height", default=DEFAULT_SIZE, min=SANA_SPATIAL_FACTOR, max=MAX_SIZE, step=WIDGET_STEP,
                             tooltip="Image height in pixels; snapped to the nearest multiple of 32."),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Number of latents in the batch."),
                io.Combo.Input("aspect_ratio", options=[CUSTOM, *ASPECT_PRESETS], default=CUSTOM, optional=True,
                               tooltip="custom uses width and height; a preset (width x height, Sana 1024 px bins) "
                                       "overrides them."),
            ],
            outputs=[io.Latent.Output(tooltip="Zeros [batch, 32, height/32, width/32] (raw DC-AE latent space).")],
        )

    @classmethod
    def execute(cls, width, height, batch_size, aspect_ratio=CUSTOM) -> io.NodeOutput:
        width, height, note = latent_size(width, height, aspect_ratio)
        return io.NodeOutput(empty_latent(batch_size, width, height), ui=ui.PreviewText(note))


NODES = [SanaVAELoader, EmptySanaLatentImage]
