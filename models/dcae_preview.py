"""Latent -> RGB preview factors derived from a loaded DC-AE's own weights (for ComfyUI's latent2rgb previews).

Two derivations, both pure PyTorch:
- `fit_latent_rgb`: least squares. A few deterministic probe images (HSV sweeps and flat colour blocks) are encoded,
  decoded, and the decoded 32x32 patch means are regressed on the latent pixels: rgb = z @ factors + bias, with a
  small ridge on the factors. This reflects the actual VAE (the same idea ComfyUI's core factors come from).
- `analytic_latent_rgb`: the decoder's linear shortcut path (channel duplication in `project_in` and every upsample),
  then `project_out`'s RMSNorm affine, a Gaussian linearisation of its ReLU and the summed 3x3 taps of its conv.
  The RMS gain is taken as `SANA_LATENT_SCALE` (1 / std of raw latents by definition of the scaling factor).
  Rougher, used only when the fit cannot run.
Factors act on raw latents [.., 32] -> RGB in [-1, 1]; the latent format divides them by 0.41407 for model space.
"""

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dcae import RESAMPLE_FACTOR, SANA_LATENT_SCALE, DCAE
from .tiling import TilingOptions

# Probe images: 3 images of 128 x 128 px (4 x 4 latent pixels each: 48 samples for 33 unknowns per colour, with the
# ridge below); small enough to fit in seconds on a CPU.
PROBE_SIZE = 128
# Flat colours of the third probe (r, g, b in [-1, 1]): the corners and the centre of the RGB cube plus half tones.
PROBE_LEVELS = (-1.0, 0.0, 1.0)
# Ridge weight on the factors relative to the mean squared latent value (keeps the solve well posed).
RIDGE = 1e-3
# Values sampled from each tensor for the weights fingerprint.
FINGERPRINT_SAMPLES = 256
# HSV -> RGB sector offsets (the standard "k = (n + 6h) mod 6" formula with n = 5, 3, 1 for r, g, b).
HSV_SECTORS = (5.0, 3.0, 1.0)
HSV_SIXTHS = 6.0
HSV_FLAT_TOP = 4.0


@dataclass(frozen=True)
class LatentRGB:
    """Preview factors: rgb = z @ factors + bias. factors [C, 3], bias [3]; r2 = fit quality (None if analytic)."""

    factors: torch.Tensor
    bias: torch.Tensor
    method: str
    r2: float | None = None


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """[H, W] maps in [0, 1] -> [3, H, W] RGB in [0, 1]."""
    channels = []
    for sector in HSV_SECTORS:
        k = (sector + HSV_SIXTHS * hue) % HSV_SIXTHS
        channels.append(value - value * saturation * torch.clamp(torch.minimum(k, HSV_FLAT_TOP - k), 0, 1))
    return torch.stack(channels)


def probe_images(size: int = PROBE_SIZE, factor: int = 32) -> torch.Tensor:
    """Three deterministic colour images [3, 3, size, size] in [-1, 1] (size a multiple of `factor`)."""
    ramp = (torch.arange(size) + 0.5) / size
    across, down = ramp[None, :].expand(size, size), ramp[:, None].expand(size, size)
    hue_value = _hsv_to_rgb(across, torch.ones(size, size), down)
    hue_saturation = _hsv_to_rgb(down, across, torch.ones(size, size))
    palette = torch.tensor([(r, g, b) for r in PROBE_LEVELS for g in PROBE_LEVELS for b in PROBE_LEVELS])
    cells = size // factor
    index = torch.arange(cells * cells) % len(palette)
    blocks = palette[index].T.reshape(3, cells, cells)
    blocks = blocks.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    return torch.stack([hue_value * 2 - 1, hue_saturation * 2 - 1, blocks])


@torch.no_grad()
def fit_latent_rgb(model: DCAE, images: torch.Tensor | None = None) -> LatentRGB:
    """Least-squares factors from encode -> decode of `images` ([N, 3, H, W] in [-1, 1]; default `probe_images`).

    Runs on the model's device and dtype; the solve is in float64.
    """
    parameter = next(model.parameters())
    images = probe_images(factor=model.downsample_factor) if images is None else images
    images = images.to(device=parameter.device, dtype=parameter.dtype)
    never = TilingOptions(mode="never")
    latents = model.encode(images, tiling=never)
    decoded = model.decode(latents, tiling=never)
    target = F.avg_pool2d(decoded.double(), model.downsample_factor)  # [N, 3, h, w]
    x = latents.double().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])
    design = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    penalty = torch.eye(design.shape[1], dtype=design.dtype, device=design.device) * RIDGE * x.square().mean()
    penalty[-1, -1] = 0  # no ridge on the bias
    solution = torch.linalg.solve(design.T @ design + penalty, design.T @ y)
    residual = (design @ solution - y).square().sum()
    r2 = 1 - (residual / (y - y.mean(0)).square().sum().clamp_min(torch.finfo(y.dtype).tiny)).item()
    return LatentRGB(solution[:-1].float().cpu(), solution[-1].float().cpu(), "lstsq", r2)


def _shortcut_map(in_channels: int, out_channels: int, factor: int) -> torch.Tensor:
    """[out, in] averaged linear map of `channel_duplicate` (repeat channels, then pixel_shuffle(factor))."""
    repeats = out_channels * factor * factor // in_channels
    source = torch.arange(out_channels * factor * factor) // repeats  # input channel of each duplicated channel
    mapping = torch.zeros(out_channels, in_channels, dtype=torch.float64)
    mapping.index_put_((torch.arange(out_channels).repeat_interleave(factor * factor), source),
                       torch.full((len(source),), 1.0 / (factor * factor), dtype=torch.float64), accumulate=True)
    return mapping


@torch.no_grad()
def analytic_latent_rgb(model: DCAE) -> LatentRGB:
    """Factors from the decoder's linear shortcut path and `project_out` (no forward pass)."""
    config = model.config
    widths = config.decoder_widths
    path = _shortcut_map(config.latent_channels, widths[-1], 1)
    for stage in range(len(widths) - 2, -1, -1):
        path = _shortcut_map(widths[stage + 1], widths[stage], RESAMPLE_FACTOR) @ path
    norm, conv = model.decoder.project_out.op_list[0], model.decoder.project_out.op_list[2].conv
    weight, shift = norm.weight.double().cpu(), norm.bias.double().cpu()
    spread = weight.abs().clamp_min(torch.finfo(torch.float64).tiny)
    ratio = shift / spread
    gauss_cdf = 0.5 * (1 + torch.erf(ratio / math.sqrt(2)))
    gauss_pdf = torch.exp(-0.5 * ratio.square()) / math.sqrt(2 * math.pi)
    relu_slope = gauss_cdf  # E[relu'(u)], u ~ N(shift, weight^2)
    relu_mean = shift * gauss_cdf + spread * gauss_pdf  # E[relu(u)]
    taps = conv.weight.double().cpu().sum(dim=(2, 3))  # [3, C0]
    factors = taps @ torch.diag(weight * relu_slope) @ path * SANA_LATENT_SCALE  # [3, latent]
    bias = taps @ relu_mean + conv.bias.double().cpu()
    return LatentRGB(factors.T.float(), bias.float(), "analytic")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Short hash of the weights: names, shapes and `FINGERPRINT_SAMPLES` evenly spaced values per tensor.

    Values are rounded to bfloat16 first, so one file loaded in float32, bfloat16 or float16 gives one fingerprint.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(flat[::step].to(torch.bfloat16).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
