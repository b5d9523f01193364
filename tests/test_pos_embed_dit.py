"""Position encodings inside the DiT (models/dit.py, pos_embed.py, rope.py, dit_checkpoint.py): checkpoint declaration
and round trip, inference overrides (`transformer_options["sana_pos_encoding"]`) and ComfyUI's `rope_options`.

Tiny DiTs with the real linear-attention head (32 channels) and seeded weights; the expected values are closed-form
equivalences (modes that must coincide), not re-typed models.
"""

import pytest
import torch

from models.dit import SanaDiT, SanaDiTConfig
from models.dit_checkpoint import load_dit, read_pe_metadata, save_dit
from models.rope import OVERRIDE_KEY, SCALINGS

SAME = 2e-6  # relative to the output's max: float32 forward through 2 blocks, equal up to rounding
CHANGED = 1e-4  # relative: a real change in the output is far above rounding
WEIGHT_STD = 0.3  # large enough that self-attention visibly moves the output
TRAIN = (6, 8)
TINY = {"hidden_size": 64, "depth": 2, "num_cross_heads": 2, "caption_channels": 8, "in_channels": 4,
        "out_channels": 4, "sample_size": 8, "base_size": 8, "reference": "diffusers"}


def build(seed=0, **fields) -> SanaDiT:
    model = SanaDiT(SanaDiTConfig(**{**TINY, **fields}))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * WEIGHT_STD)
    return model.eval()


@pytest.fixture(scope="module")
def rope_model():
    return build(pos_encoding="rope", rope={"train_grid": TRAIN, "theta": 500.0})


@pytest.fixture(scope="module")
def nope_model():
    return build()


@pytest.fixture(scope="module")
def sincos_model():
    return build(use_pe=True, pe_interpolation=2.0)


def run(model, grid, options=None, sigma=0.6, batch=2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, *grid, generator=gen)
    context = torch.randn(batch, 3, 8, generator=gen)
    with torch.no_grad():
        return model(x, torch.full((batch,), sigma * 1000), context, transformer_options=options)


def maxdiff(a, b):
    """Max abs difference relative to the max abs of b (outputs reach ~10 with these weights)."""
    return ((a - b).abs().max() / b.abs().max()).item()


def test_pos_embed_rope_checkpoint_round_trip(tmp_path, rope_model):
    path = tmp_path / "sana_rope_tiny.safetensors"
    save_dit(rope_model, path)
    assert read_pe_metadata(path)["pos_encoding"] == "rope"
    loaded = load_dit(path, num_cross_heads=2, reference="diffusers")
    assert loaded.config.pos_encoding == "rope", f"declared encoding lost: {loaded.config.pos_encoding}"
    assert loaded.config.rope == rope_model.config.rope, f"{loaded.config.rope} != {rope_model.config.rope}"
    diff = maxdiff(run(loaded, (12, 16)), run(rope_model, (12, 16)))
    assert diff < SAME, f"reloaded RoPE model differs by {diff}"


def test_pos_embed_sincos_and_nope_checkpoint_round_trip(tmp_path, sincos_model, nope_model):
    for name, model in (("sincos", sincos_model), ("nope", nope_model)):
        save_dit(model, tmp_path / f"{name}.safetensors")
        loaded = load_dit(tmp_path / f"{name}.safetensors", num_cross_heads=2, reference="diffusers")
        cfg = loaded.config
        assert (cfg.use_pe, cfg.pe_interpolation, cfg.base_size, cfg.pos_encoding) == (
            model.config.use_pe, model.config.pe_interpolation, model.config.base_size, None), f"{name}: {cfg}"
        assert maxdiff(run(loaded, (5, 7)), run(model, (5, 7))) < SAME, name


@pytest.mark.parametrize("mode", SCALINGS[1:])
def test_pos_embed_rope_modes_equal_plain_at_training_grid(rope_model, mode):
    plain = run(rope_model, TRAIN, {OVERRIDE_KEY: {"mode": "rope"}})
    scaled = run(rope_model, TRAIN, {OVERRIDE_KEY: {"mode": mode}})
    assert maxdiff(plain, scaled) < SAME, f"{mode} differs from plain RoPE at the training grid"
    larger = run(rope_model, (12, 16), {OVERRIDE_KEY: {"mode": mode}})
    assert maxdiff(larger, run(rope_model, (12, 16), {OVERRIDE_KEY: {"mode": "rope"}})) > CHANGED, mode


def test_pos_embed_rope_time_aware_follows_sigma(rope_model):
    grid = (12, 16)
    for sigma, same_as in ((1.0, "scaled"), (0.0, "ntk")):
        timed = run(rope_model, grid, {OVERRIDE_KEY: {"mode": "time_aware", "time_watershed": None}}, sigma=sigma)
        fixed = run(rope_model, grid, {OVERRIDE_KEY: {"mode": same_as}}, sigma=sigma)
        assert maxdiff(timed, fixed) < SAME, f"time_aware at sigma {sigma} should equal {same_as}"


def test_pos_embed_rope_options_move_rope_models_only(rope_model, nope_model, sincos_model):
    rope_options = {"scale_x": 0.5, "shift_x": 0.0, "scale_y": 0.5, "shift_y": 0.0, "scale_t": 1.0, "shift_t": 0.0}
    grid = (12, 16)
    diff = maxdiff(run(rope_model, grid, {"rope_options": rope_options}), run(rope_model, grid))
    assert diff > CHANGED, f"ScaleROPE options left the RoPE model unchanged ({diff})"
    shifted = {**rope_options, "scale_x": 1.0, "scale_y": 1.0, "shift_x": 7.0, "shift_y": -3.0}
    diff = maxdiff(run(rope_model, grid, {"rope_options": shifted}), run(rope_model, grid))
    assert diff < SAME, f"a uniform shift must cancel in relative attention ({diff})"
    for model in (nope_model, sincos_model):
        diff = maxdiff(run(model, grid, {"rope_options": rope_options}), run(model, grid))
        assert diff == 0.0, f"rope_options changed a model without RoPE ({diff})"


def test_pos_embed_sincos_override_equals_model_settings(sincos_model):
    grid = (10, 6)
    override = run(sincos_model, grid, {OVERRIDE_KEY: {"mode": "sincos", "base_size": 16, "pe_interpolation": 1.0}})
    twin = SanaDiT(sincos_model.config.replace(base_size=16, pe_interpolation=1.0))
    twin.load_state_dict(sincos_model.state_dict())
    assert maxdiff(override, run(twin.eval(), grid)) < SAME
    assert maxdiff(override, run(sincos_model, grid)) > CHANGED, "the override did not change the embedding"
    off = run(sincos_model, grid, {OVERRIDE_KEY: {"mode": "none"}})
    twin = SanaDiT(sincos_model.config.replace(use_pe=False))
    twin.load_state_dict(sincos_model.state_dict())
    assert maxdiff(off, run(twin.eval(), grid)) < SAME


def test_pos_embed_override_rejects_foreign_mode(nope_model, rope_model):
    with pytest.raises(ValueError, match="declares 'none'"):
        run(nope_model, TRAIN, {OVERRIDE_KEY: {"mode": "yarn"}})
    with pytest.raises(ValueError, match="declares 'rope'"):
        run(rope_model, TRAIN, {OVERRIDE_KEY: {"mode": "sincos"}})
    with pytest.raises(ValueError, match="pos_encoding"):
        SanaDiTConfig(**TINY, pos_encoding="rope", use_pe=True)
