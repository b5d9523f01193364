"""Invariants of the 2-D axial RoPE and its scaled variants (models/rope.py).

References: RoFormer (arXiv 2104.09864) for the rotation and Eq. 19; YaRN (arXiv 2309.00071) for NTK / YaRN;
Seedream 2.0 and Lumina-Next for the scaled and time-aware variants. The O(N²) reference
builds scores from relative angles, an evaluation independent of the `rotate` path used by the DiT's O(N) form.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from models.dit_blocks import linear_attention
from models.rope import (
    SCALINGS,
    AxialRope,
    RopeConfig,
    area_scale,
    axis_frequencies,
    build_rope,
    grid_positions,
    ntk_theta,
    resolve_encoding,
    rope_linear_attention_reference,
    scaled_positions,
    time_aware_frequencies,
    yarn_frequencies,
    yarn_mscale,
)
from tests.assertions import assert_close, max_abs_diff

EXACT = 1e-12  # float64 closed forms
TABLE_TOL = 1e-6  # float32 angle tables against float64 closed forms (angles up to ~100 rad)
ATTN_TOL = 1e-5  # issue 8: linear attention with RoPE vs the explicit O(N²) evaluation
LINEAR_EPS = 1e-8  # Sana's denominator eps (docs/ARCHITECTURE.md §8.1, §9)
HEADS, DIM = 2, 32
TRAIN = (6, 8)  # non-square training grid keeps the two axes honest


def linear_rope_attention(q, k, v, rope, eps=LINEAR_EPS):
    """The DiT's O(N·d²) linear attention (models/dit_blocks.py) on ReLU kernels, with `rope` as its rotate seam."""
    return linear_attention(torch.relu(q), torch.relu(k), v, eps, rotate=rope)


def qkv(grid, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    return [torch.randn(batch, HEADS, n, DIM, generator=gen) for _ in range(3)]


def config(scaling, **kw):
    return RopeConfig(head_dim=DIM, train_grid=TRAIN, scaling=scaling, **kw)




def test_rope_rotate_equals_complex_multiplication():
    rope = build_rope(config("none"), (3, 5))
    x = qkv((3, 5))[0]
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.polar(
        torch.ones_like(rope.angles), rope.angles)).flatten(-2)
    assert_close(rope.rotate(x), expected, TABLE_TOL, "rotate vs complex multiplication")


def test_rope_axis_split():
    rope = build_rope(config("none"), (3, 5))
    angles = rope.angles[0, 0].reshape(3, 5, DIM // 2)
    omega = axis_frequencies(DIM // 2, 10000.0).float()
    for y in range(3):
        for x in range(5):
            expected = torch.cat((y * omega, x * omega))
            assert max_abs_diff(angles[y, x], expected) < TABLE_TOL, f"token ({y},{x})"


@pytest.mark.parametrize("scaling", SCALINGS)
def test_rope_variants_equal_plain_at_training_grid(scaling):
    plain = build_rope(config("none"), TRAIN)
    sigma = torch.tensor([0.9, 0.2])
    scaled = build_rope(config(scaling), TRAIN, sigma=sigma)
    # broadcasts time-aware's per-sample tables over plain's single one
    diff = max_abs_diff(scaled.angles, plain.angles)
    assert diff < TABLE_TOL, f"{scaling}: angles differ from plain RoPE by {diff}"
    assert scaled.gain == 1.0, f"{scaling}: gain {scaled.gain} at the training grid"


@pytest.mark.parametrize("factor", [2, 4])
def test_rope_scaled_positions_span_training_range_centre_aligned(factor):
    grid = (TRAIN[0] * factor, TRAIN[1] * factor)
    pos_y, pos_x = grid_positions(config("scaled"), grid)
    for pos, length in ((pos_y, TRAIN[0]), (pos_x, TRAIN[1])):
        half_cell = 0.5 / factor
        assert abs(pos.min().item() - half_cell - (-0.5)) < EXACT, f"first cell starts at {pos.min() - half_cell}"
        assert abs(pos.max().item() + half_cell - (length - 0.5)) < EXACT, f"last cell ends at {pos.max() + half_cell}"
        assert abs(pos.mean().item() - (length - 1) / 2) < EXACT, f"centre {pos.mean()} vs {(length - 1) / 2}"
        assert torch.allclose(pos.diff(), torch.full_like(pos.diff(), 1 / factor)), "stride is not 1/s"


def test_rope_scaled_positions_identity_at_training_length():
    assert max_abs_diff(scaled_positions(7, 7, 1.0), torch.arange(7.0)) < EXACT


def test_rope_ntk_base_formula():
    s, d, theta = 3.0, DIM // 2, 10000.0
    assert abs(ntk_theta(theta, s, d) - theta * s ** (d / (d - 2))) < EXACT * theta
    omega, omega_ntk = axis_frequencies(d, theta), axis_frequencies(d, ntk_theta(theta, s, d))
    assert abs(omega_ntk[0] - omega[0]) < EXACT, "NTK must keep the highest frequency"
    assert abs(omega_ntk[-1] - omega[-1] / s) < EXACT, "NTK must interpolate the lowest frequency by exactly s"
    grid = (TRAIN[0] * 3, TRAIN[1] * 3)
    rope = build_rope(config("ntk"), grid)
    x_angles = rope.angles[0, 0, : grid[1], DIM // 4:]  # first row: x = 0..W−1
    expected = torch.arange(grid[1], dtype=torch.float64)[:, None] * omega_ntk[None]
    assert max_abs_diff(x_angles, expected) < TABLE_TOL


def test_rope_yarn_limits():
    s, d, length = 2.0, DIM // 2, TRAIN[1]
    omega = axis_frequencies(d, 10000.0)
    pi = yarn_frequencies(omega, s, length, beta_fast=1e9, beta_slow=1e8)  # every r < α: γ = 0
    assert max_abs_diff(pi, omega / s) < EXACT, "YaRN with γ ≡ 0 must be position interpolation"
    kept = yarn_frequencies(omega, s, length, beta_fast=-1e8, beta_slow=-1e9)  # every r > β: γ = 1
    assert max_abs_diff(kept, omega) < EXACT, "YaRN with γ ≡ 1 must be plain RoPE"
    r = length * omega / (2 * math.pi)
    band = yarn_frequencies(omega, s, length, beta_fast=r[0].item(), beta_slow=r[-1].item())
    ntk = axis_frequencies(d, ntk_theta(10000.0, s, d))
    assert abs(band[0] - ntk[0]) < EXACT and abs(band[-1] - ntk[-1]) < EXACT, "ramp over the band: NTK's endpoints"
    assert bool(((band >= omega / s - EXACT) & (band <= omega + EXACT)).all()), "YaRN leaves the [PI, plain] band"
    assert abs(yarn_mscale(4.0) - (0.1 * math.log(4.0) + 1)) < EXACT and yarn_mscale(0.5) == 1.0


def test_rope_yarn_pi_limit_equals_scaled_attention():
    grid = (TRAIN[0] * 2, TRAIN[1] * 2)
    q, k, v = qkv(grid)
    pi_cfg = config("yarn", yarn_beta_fast=1e9, yarn_beta_slow=1e8, yarn_temperature=False)
    out_pi = linear_rope_attention(q, k, v, build_rope(pi_cfg, grid))
    out_scaled = linear_rope_attention(q, k, v, build_rope(config("scaled"), grid))
    assert_close(out_pi, out_scaled, ATTN_TOL, "position interpolation vs scaled positions")


def test_rope_yarn_gain_is_mscale():
    grid = (TRAIN[0] * 2, TRAIN[1] * 2)
    rope = build_rope(config("yarn"), grid)
    assert abs(rope.gain - yarn_mscale(area_scale(grid, TRAIN))) < EXACT
    assert abs(rope.gain - (0.1 * math.log(2.0) + 1)) < EXACT


def test_rope_time_aware_endpoints_and_watershed():
    s, d = 2.0, DIM // 2
    omega = axis_frequencies(d, 10000.0)
    ntk = axis_frequencies(d, ntk_theta(10000.0, s, d))
    blend = time_aware_frequencies(omega, s, d, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert max_abs_diff(blend[0], omega / s) < EXACT, "σ = 1 (start of sampling) must interpolate"
    assert max_abs_diff(blend[1], ntk) < EXACT, "σ = 0 (end of sampling) must be NTK"
    grid = (TRAIN[0] * 2, TRAIN[1] * 2)
    rope = build_rope(config("time_aware", time_watershed=0.3), grid, sigma=torch.tensor([0.8, 0.6]))
    y_angles = rope.angles[:, 0, grid[1], : DIM // 4]  # token (y = 1, x = 0): angle = ω_y
    assert max_abs_diff(y_angles[0], omega / s) < TABLE_TOL, "t = 0.2 < watershed 0.3 must interpolate"
    assert max_abs_diff(y_angles[1], ntk) < TABLE_TOL, "t = 0.4 ≥ watershed 0.3 must be NTK"


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("grid", [TRAIN, (9, 14)])
def test_rope_linear_attention_matches_quadratic(scaling, grid):
    q, k, v = qkv(grid, seed=1)
    rope = build_rope(config(scaling), grid, sigma=torch.tensor([0.7, 0.1]))
    fast = linear_rope_attention(q, k, v, rope)
    slow = rope_linear_attention_reference(q, k, v, rope, LINEAR_EPS)
    assert_close(fast, slow, ATTN_TOL, f"{scaling} {grid}: fast vs reference attention")


def test_rope_reference_without_rope_is_plain_linear_attention():
    q, k, v = qkv(TRAIN)
    slow = rope_linear_attention_reference(q, k, v, None, LINEAR_EPS)
    assert max_abs_diff(linear_rope_attention(q, k, v, None), slow) < ATTN_TOL


def test_rope_options_scale_and_shift():
    cfg, grid = config("none"), (4, 6)
    opts = {"scale_x": 0.5, "shift_x": 3.0, "scale_y": 2.0, "shift_y": -1.0, "scale_t": 9.0, "shift_t": 9.0}
    pos_y, pos_x = grid_positions(cfg, grid, opts)
    assert max_abs_diff(pos_y, torch.arange(4.0) * 2 - 1) < EXACT
    assert max_abs_diff(pos_x, torch.arange(6.0) * 0.5 + 3) < EXACT
    q, k, v = qkv(grid)
    base = linear_rope_attention(q, k, v, build_rope(cfg, grid))
    shifted = linear_rope_attention(q, k, v, build_rope(cfg, grid, rope_options={"shift_x": 5.0, "shift_y": -2.0}))
    scaled = linear_rope_attention(q, k, v, build_rope(cfg, grid, rope_options={"scale_x": 0.5}))
    assert max_abs_diff(base, shifted) < ATTN_TOL, f"a uniform shift must cancel: {max_abs_diff(base, shifted)}"
    assert max_abs_diff(base, scaled) > 1e-3, "scale_x must change the output"


def test_rope_errors():
    with pytest.raises(ValueError, match="scaling"):
        RopeConfig(scaling="dynamic")
    with pytest.raises(ValueError, match="head_dim"):
        RopeConfig(head_dim=30)
    with pytest.raises(ValueError, match="sigma"):
        build_rope(config("time_aware"), (12, 16))
    with pytest.raises(ValueError, match="yarn_beta_fast"):
        RopeConfig(yarn_beta_fast=1.0, yarn_beta_slow=2.0)
    assert isinstance(build_rope(config("none"), (2, 2)), AxialRope)


def dit_config(pos_encoding):
    rope = config("none") if pos_encoding == "rope" else None
    return SimpleNamespace(pos_encoding=pos_encoding, use_pe=pos_encoding == "sincos", base_size=64,
                           pe_interpolation=1.0, rope=rope)


def test_rope_resolve_encoding_overrides():
    ignored = {"mode": "model", "base_size": 128, "yarn_beta_fast": 3.0}
    for kind in ("none", "sincos", "rope"):
        assert resolve_encoding(dit_config(kind), ignored).kind == kind
        assert resolve_encoding(dit_config(kind), {"mode": "none"}).kind == "none"
    sincos = resolve_encoding(dit_config("sincos"), {"mode": "sincos", "base_size": 128, "pe_interpolation": 2.0})
    assert (sincos.base_size, sincos.pe_interpolation) == (128, 2.0)
    kept = resolve_encoding(dit_config("sincos"), {"mode": "sincos", "base_size": 0, "pe_interpolation": 0.0})
    assert (kept.base_size, kept.pe_interpolation) == (64, 1.0)
    yarn = resolve_encoding(dit_config("rope"), {"mode": "yarn", "yarn_beta_fast": 8.0, "train_grid": (4, 4),
                                                 "time_watershed": None})
    assert (yarn.rope.scaling, yarn.rope.yarn_beta_fast, yarn.rope.train_grid) == ("yarn", 8.0, (4, 4))
    assert resolve_encoding(dit_config("rope"), {"mode": "rope"}).rope.scaling == "none"


@pytest.mark.parametrize("declared, mode", [("none", "rope"), ("none", "sincos"), ("rope", "sincos"),
                                            ("sincos", "yarn"), ("rope", "dynamic")])
def test_rope_resolve_encoding_rejects_foreign_modes(declared, mode):
    with pytest.raises(ValueError, match="mode"):
        resolve_encoding(dit_config(declared), {"mode": mode})
