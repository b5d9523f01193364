"""ComfyUI adapter of the DC-AE: a `comfy.sd.VAE` subclass that fills the VAE attribute contract, and preview fitting.

`comfy.sd.VAE.__init__` (ComfyUI `comfy/sd.py`) picks an architecture from state-dict keys, and a DC-AE state dict
would fall into its SD AutoencoderKL branch, so `SanaVAE.__init__` does not call it: it sets every attribute the
inherited methods read (the same names and defaults as core, DC-AE values where they differ) and keeps core's
`decode`, `encode`, `decode_tiled`, `encode_tiled` and out-of-memory fallback untouched. Stock VAEDecode, VAEEncode,
VAEDecodeTiled and VAEEncodeTiled therefore work unchanged. The DC-AE module itself tiles when its memory estimate
says a full pass would not fit (`models.tiling`), before any out-of-memory error, or always when asked to.
"""

import logging

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.utils
import torch

from ..models.dcae_checkpoint import load_dcae
from ..models.dcae_preview import analytic_latent_rgb, fit_latent_rgb, weights_fingerprint
from ..models.tiling import TilingOptions
from .latent_format import refresh_preview_factors, save_preview_factors

# diffusers' Sana docs: keep the DC-AE in bfloat16 or float32 (float16 overflows in its decoder).
VAE_WORKING_DTYPES = [torch.bfloat16, torch.float32]
PREVIEW_METHODS = {"fit": "lstsq", "analytic": "analytic"}


def report_tile_progress(done: int, total: int) -> None:
    """Tiled-pass callback: honour ComfyUI interrupts and advance the running node's progress bar."""
    mm.throw_exception_if_processing_interrupted()
    comfy.utils.ProgressBar(total).update_absolute(done, total)


class SanaVAE(comfy.sd.VAE):
    """A loaded DC-AE f32c32 as a native ComfyUI VAE (32x, 32 latent channels, raw latents, images in [0, 1])."""

    def __init__(self, model, device=None, dtype=None):
        # Deliberately no super().__init__(): see the module docstring. Attribute names follow comfy/sd.py VAE.
        config = model.config
        self.first_stage_model = model.eval()
        self.latent_channels = config.latent_channels
        self.latent_dim = 2
        self.output_channels = config.in_channels
        self.downscale_ratio = self.upscale_ratio = model.downsample_factor
        self.downscale_index_formula = self.upscale_index_formula = None
        self.pad_channel_value = None
        self.crop_input = True
        self.extra_1d_channel = None
        self.not_video = False
        self.working_dtypes = list(VAE_WORKING_DTYPES)
        self.disable_offload = False
        self.size = None
        self.device = mm.vae_device() if device is None else device
        self.vae_dtype = mm.vae_dtype(self.device, self.working_dtypes) if dtype is None else dtype
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = mm.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=mm.vae_offload_device())
        logging.info("Sana DC-AE load device: %s, dtype: %s, tiling: %s", self.device, self.vae_dtype,
                     model.tiling.mode)
        self.model_size()

    def process_input(self, image: torch.Tensor) -> torch.Tensor:
        """ComfyUI IMAGE values in [0, 1] -> the DC-AE's [-1, 1]."""
        return image * 2.0 - 1.0

    def process_output(self, image: torch.Tensor) -> torch.Tensor:
        """DC-AE output in about [-1, 1] -> ComfyUI IMAGE values clamped to [0, 1]."""
        return torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)

    def memory_used_decode(self, shape, dtype) -> int:
        """Bytes one latent of `shape` ([B, 32, h, w]) needs to decode; per sample, as core's estimators."""
        return self.first_stage_model.estimate_decode_bytes((1, *shape[1:]), dtype)

    def memory_used_encode(self, shape, dtype) -> int:
        """Bytes one image of `shape` ([B, 3, H, W]) needs to encode; per sample, as core's estimators."""
        return self.first_stage_model.estimate_encode_bytes((1, *shape[1:]), dtype)


def load_sana_vae(path, tiling_mode: str = "auto") -> SanaVAE:
    """Load a DC-AE file (either layout) as a SanaVAE on ComfyUI's VAE device and dtype."""
    device = mm.vae_device()
    dtype = mm.vae_dtype(device, VAE_WORKING_DTYPES)
    tiling = TilingOptions(mode=tiling_mode, progress=report_tile_progress)
    model = load_dcae(path, dtype=dtype, device=mm.vae_offload_device(), operations=comfy.ops.disable_weight_init,
                      tiling=tiling)
    return SanaVAE(model, device=device, dtype=dtype)


def write_preview_factors(vae: SanaVAE, method: str) -> None:
    """Make `vae`'s latent2rgb factors the ones SanaLatentFormat serves ('fit' or 'analytic'; cached per weights)."""
    if method not in PREVIEW_METHODS:
        raise ValueError(f"Preview factors '{method}' are unknown; expected one of {sorted(PREVIEW_METHODS)}.")
    model = vae.first_stage_model
    fingerprint = weights_fingerprint(model)
    if refresh_preview_factors(fingerprint, PREVIEW_METHODS[method]):
        return
    if method == "fit":
        mm.load_models_gpu([vae.patcher])
        try:
            result = fit_latent_rgb(model)
        except mm.OOM_EXCEPTION:
            logging.warning("Sana DC-AE: not enough memory to fit preview factors; using the analytic ones.")
            result = analytic_latent_rgb(model)
    else:
        result = analytic_latent_rgb(model)
    path = save_preview_factors(fingerprint, result.factors.tolist(), result.bias.tolist(), result.method, result.r2)
    logging.info("Sana DC-AE preview factors (%s, r2=%s) written to %s", result.method, result.r2, path)
