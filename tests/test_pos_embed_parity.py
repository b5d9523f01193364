"""Sana's 2-D sin-cos position embedding with interpolation (models/pos_embed.py) against diffusers.

Reference: diffusers `models/embeddings.py` `get_2d_sincos_pos_embed` (used by `PatchEmbed` of SanaTransformer2DModel
with base_size = sample_size and interpolation_scale from the config), docs/ARCHITECTURE.md §8.4. The 2K setting is base
64 / interpolation 1.0, the 4K one base 128 / interpolation 2.0; grids are non-square so the width-first channel order
and the per-axis stretch are both checked.
"""

import pytest
import torch

from models.pos_embed import sincos_2d
from tests.assertions import assert_close

embeddings = pytest.importorskip("diffusers.models.embeddings")

PARITY_TOL = 1e-5  # both compute positions in float32; ours takes frequencies and sin/cos in float64
HIDDEN = 2240  # Sana 1.6B hidden size (the 2K/4K models)

SETTINGS = {"2K": (64, 1.0), "4K": (128, 2.0)}
GRIDS = [(48, 80), (80, 48), (72, 40), (33, 57)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_pos_embed_sincos_matches_diffusers(setting, grid):
    base_size, interpolation = SETTINGS[setting]
    height, width = grid
    ours = sincos_2d(HIDDEN, height, width, base_size, interpolation)
    ref = embeddings.get_2d_sincos_pos_embed(HIDDEN, (height, width), base_size=base_size,
                                             interpolation_scale=interpolation, output_type="pt")
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} vs diffusers {tuple(ref.shape)}"
    assert_close(ours, ref, PARITY_TOL, f"sin-cos {setting} grid {grid} vs diffusers")


def test_pos_embed_sincos_axes_are_width_first():
    emb = sincos_2d(HIDDEN, 3, 5, base_size=64, interpolation=1.0)
    first_row, first_col = emb.reshape(3, 5, HIDDEN)[0], emb.reshape(3, 5, HIDDEN)[:, 0]
    assert not torch.allclose(first_row[:, : HIDDEN // 2], first_row[:1, : HIDDEN // 2]), "first half must follow x"
    assert torch.allclose(first_col[:, : HIDDEN // 2], first_col[:1, : HIDDEN // 2]), "first half must ignore y"
