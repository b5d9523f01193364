"""The DC-AE decoder in bf16 and fp16 against float32 of the same weights.

The decoder has the f32c32 structure (6 stages: 3 ResBlock stages, 3 EfficientViT stages with LiteMLA, 32 latent
channels, head dim 32) at a quarter of the real widths and one block per stage, so a 512x512 decode takes seconds on a
CPU. Its seeded weights (matrices N(0, 1/fan_in)) let the residual stream grow as trained decoders do: per-pixel channel
norms reach ~950 at the RMSNorm2d inputs, past sqrt(65504) = 256, where squaring in fp16 overflows. So computing the
RMSNorm2d statistics in the input dtype breaks the fp16 decode (tests/mutations.py, mutation c). The last test checks
the analytic latent->RGB preview factors (models/dcae_preview.py) against the decoder they describe.
Each comparison rounds weights and latents to the low dtype first and runs float32 on those rounded values. Bounds are
measured on this CPU with a margin (figures in the docstrings; `pytest -s` prints them). fp16 decodes 256x256: this CPU
has no fp16 arithmetic and a 512x512 fp16 decode takes ~50 s.
"""

import pytest
import torch
from torch import nn

from models.dcae import DCAE, DCAEConfig
from models.dcae_blocks import RMSNorm2d
from models.tiling import TilingOptions
from tests.assertions import assert_close, assert_relative_close

NEVER = TilingOptions(mode="never")
WIDTHS = (16, 32, 64, 64, 128, 128)  # f32c32 widths (128, 256, 512, 512, 1024, 1024) / 8
LATENT_STD = 1 / 0.41407  # raw latents: std 1 / scaling_factor
SEED = 0
LATENT_SIDE = {torch.bfloat16: 16, torch.float16: 8}  # 512x512 and 256x256 images
# Relative L2 bounds. Measured: bf16 3.7e-3 (512 px), fp16 4.8e-4 (256 px); fp16 with the statistics in fp16: 1.1e-2.
DECODE_RTOL = {torch.bfloat16: 8e-3, torch.float16: 2e-3}
# RMSNorm2d alone, max |a - b| on outputs of magnitude ~4: measured bf16 1.6e-2, fp16 2.5e-3 (one rounding of y);
# statistics in the input dtype: bf16 3.3e-2, fp16 4.2 (the squares overflow).
NORM_ATOL = {torch.bfloat16: 2.4e-2, torch.float16: 4e-3}
NORM_CHANNELS = 1024
NORM_RMS = (1e-2, 1.0, 30.0)  # per-pixel RMS of the inputs: channel norms 0.3 .. 960
# Analytic preview factors on the shortcut decoder: relative MSE of the predicted patch colours (see the test).
PREVIEW_RELATIVE_MSE_MAX = 0.12  # measured 0.055; with the ReLU slope inverted (1 - P): 0.345


def _decoder(dtype: torch.dtype) -> tuple[DCAE, DCAE]:
    """(decoder in `dtype`, float32 decoder with the same dtype-rounded weights)."""
    config = DCAEConfig(encoder_widths=WIDTHS, decoder_widths=WIDTHS, encoder_depths=(1,) * 6, decoder_depths=(1,) * 6)
    generator = torch.Generator().manual_seed(SEED)
    source = DCAE(config, operations=nn)
    with torch.no_grad():
        for name, parameter in source.named_parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter[0].numel() ** 0.5)
            elif name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    weights = {key: value.to(dtype) for key, value in source.state_dict().items()}
    low, reference = DCAE(config, dtype=dtype, operations=nn), DCAE(config, operations=nn)
    low.load_state_dict(weights)
    reference.load_state_dict({key: value.float() for key, value in weights.items()})
    return low, reference


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@torch.no_grad()
def test_decode_low_precision_matches_fp32(dtype):
    low, reference = _decoder(dtype)
    side = LATENT_SIDE[dtype]
    latent = (torch.randn(1, 32, side, side, generator=torch.Generator().manual_seed(SEED + 1)) * LATENT_STD).to(dtype)
    image = low.decode(latent, tiling=NEVER)
    assert image.dtype == dtype and image.shape == (1, 3, 32 * side, 32 * side)
    expected = reference.decode(latent.float(), tiling=NEVER)
    assert_relative_close(image.float(), expected, DECODE_RTOL[dtype], f"DC-AE decode {32 * side} px {dtype}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@torch.no_grad()
def test_rms_norm2d_statistics_in_float32(dtype):
    """Channel norms from 0.3 to 960 (squares up to ~1e6, past the fp16 range): one rounding of the output only."""
    generator = torch.Generator().manual_seed(SEED + 2)
    norm = RMSNorm2d(NORM_CHANNELS, operations=nn)
    norm.weight.copy_(1 + torch.randn(NORM_CHANNELS, generator=generator) * 0.1)
    norm.bias.copy_(torch.randn(NORM_CHANNELS, generator=generator) * 0.1)
    scale = torch.tensor(NORM_RMS).view(1, 1, 1, -1)
    x = (torch.randn(2, NORM_CHANNELS, 4, len(NORM_RMS), generator=generator) * scale).to(dtype)
    low = RMSNorm2d(NORM_CHANNELS, dtype=dtype, operations=nn)
    low.load_state_dict({key: value.to(dtype) for key, value in norm.state_dict().items()})
    norm.load_state_dict({key: value.to(dtype).float() for key, value in norm.state_dict().items()})
    out = low(x)
    assert out.dtype == dtype
    assert_close(out.float(), norm(x.float()), NORM_ATOL[dtype], f"RMSNorm2d {dtype}")


def _shortcut_decoder() -> DCAE:
    """The narrow decoder reduced to its parameter-free shortcuts and the output head: every decoder weight is zero
    except `project_out` (RMSNorm2d with varied weight and shift, ReLU, conv to RGB). Each block's main branch ends in a
    zeroed norm or conv, so the decoder is exactly the linear path plus head that `analytic_latent_rgb` models."""
    generator = torch.Generator().manual_seed(SEED + 3)
    model = DCAE(DCAEConfig(encoder_widths=WIDTHS, decoder_widths=WIDTHS, encoder_depths=(1,) * 6,
                            decoder_depths=(1,) * 6), operations=nn)
    head = ("decoder.project_out.op_list.0.", "decoder.project_out.op_list.2.")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / max(1, parameter[0].numel()) ** 0.5)
            if name.startswith("decoder.") and not name.startswith(head):
                parameter.zero_()
        norm = model.decoder.project_out.op_list[0]
        norm.weight.copy_(1 + torch.randn(norm.weight.shape, generator=generator) * 0.5)
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator))
    return model


@torch.no_grad()
def test_analytic_preview_factors_are_the_best_linear_fit_of_the_head():
    """By Stein's lemma the least-squares slope of relu(w z + b) on z ~ N(0, 1) is w * P(w z + b > 0): the analytic
    factors must predict the decoded 32x32 patch colours of the shortcut decoder about as well as a linear map can.
    Measured relative MSE 0.055 (0.345 with the slope inverted to 1 - P); a constant predictor gives 1."""
    from models.dcae_preview import analytic_latent_rgb

    model = _shortcut_decoder()
    analytic = analytic_latent_rgb(model)
    latent = torch.randn(4, 32, 8, 8, generator=torch.Generator().manual_seed(SEED + 4)) * LATENT_STD
    colours = torch.nn.functional.avg_pool2d(model.decode(latent, tiling=NEVER), 32)
    predicted = torch.einsum("nchw,cr->nrhw", latent, analytic.factors) + analytic.bias[None, :, None, None]
    relative_mse = ((predicted - colours).square().mean() / colours.var()).item()
    print(f"analytic preview factors: relative MSE {relative_mse:.4f} on the shortcut decoder")
    assert relative_mse <= PREVIEW_RELATIVE_MSE_MAX, f"analytic factors: relative MSE {relative_mse:.4f}"
