"""Sana ControlNet (models/controlnet.py) and the DiT's residual hook against diffusers, in float32.

Reference: diffusers `SanaControlNetModel` producing `controlnet_block_samples` for `SanaTransformer2DModel`, called as
`SanaControlNetPipeline` calls them (same latent, timestep, caption and mask; conditioning scale applied by the
ControlNet). Ours: `load_controlnet` on both fixture layouts, residuals times the scale (ComfyUI's
`control_merge` does that), fed to `SanaDiT.forward(control=...)`.
"""

import pytest
import torch

from models.controlnet import load_controlnet
from models.dit import CONTROL_KEY
from models.dit_checkpoint import load_dit
from tests.assertions import assert_close

diffusers = pytest.importorskip("diffusers")

PARITY_TOL = 1e-5  # float32, as the DiT parity tests
MIN_CONTROL_CHANGE = 1e-3  # the ControlNet must move the output well above the parity tolerance
BATCH, HEIGHT, WIDTH, TOKENS, VALID = 2, 3, 5, 12, (12, 7)
TIMESTEPS = (999.0, 300.0)
SCALE = 0.8  # conditioning scale (ControlNetApplyAdvanced strength)


def _inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 32, HEIGHT, WIDTH, generator=gen)
    hint = torch.randn(BATCH, 32, HEIGHT, WIDTH, generator=gen)
    context = torch.randn(BATCH, TOKENS, 2304, generator=gen)
    mask = torch.zeros(BATCH, TOKENS)
    for row, valid in enumerate(VALID):
        mask[row, :valid] = 1
    return x, hint, context, mask


@pytest.fixture(scope="module")
def reference(sana_controlnet_files):
    x, hint, context, mask = _inputs()
    t = torch.tensor(TIMESTEPS)
    dit = diffusers.SanaTransformer2DModel.from_pretrained(sana_controlnet_files["base"], torch_dtype=torch.float32)
    control = diffusers.SanaControlNetModel.from_pretrained(sana_controlnet_files["diffusers"],
                                                            torch_dtype=torch.float32)
    with torch.no_grad():
        samples = control(x, encoder_hidden_states=context, timestep=t, controlnet_cond=hint, conditioning_scale=SCALE,
                          encoder_attention_mask=mask, return_dict=False)[0]
        plain = dit.eval()(x, encoder_hidden_states=context, timestep=t, encoder_attention_mask=mask).sample
        controlled = dit(x, encoder_hidden_states=context, timestep=t, encoder_attention_mask=mask,
                         controlnet_block_samples=tuple(samples)).sample
    return plain, controlled


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_controlnet_residuals_match_diffusers(sana_controlnet_files, reference, layout):
    plain, controlled = reference
    x, hint, context, mask = _inputs()
    t = torch.tensor(TIMESTEPS)
    dit = load_dit(sana_controlnet_files["base"], reference="diffusers")
    control = load_controlnet(sana_controlnet_files[layout], reference="diffusers")
    with torch.no_grad():
        residuals = control(x, hint, t, context, attention_mask=mask)[CONTROL_KEY]
        ours = dit(x, t, context, attention_mask=mask, control={CONTROL_KEY: [r * SCALE for r in residuals]})
    change = (controlled - plain).abs().max().item()
    assert change > MIN_CONTROL_CHANGE, f"the fixture ControlNet changes the output by only {change:.2e}"
    assert_close(ours, controlled, PARITY_TOL, f"{layout} ControlNet residuals in the DiT vs diffusers (effect "
                 f"{change:.2e})")


def test_controlnet_detects_config(sana_controlnet_files):
    for layout in ("original", "diffusers"):
        cfg = load_controlnet(sana_controlnet_files[layout]).config
        assert (cfg.hidden_size, cfg.depth, cfg.num_cross_heads, cfg.use_pe) == (1152, 1, 16, False), cfg


def test_controlnet_rejects_a_plain_dit(dit_checkpoints):
    with pytest.raises(ValueError, match="no ControlNet keys"):
        load_controlnet(dit_checkpoints["1.0"]["original"])
