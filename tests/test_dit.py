"""Unit tests of the Sana DiT (models/dit.py, dit_blocks.py, pos_embed.py): construction through injected operations,
the variant table, masks, timestep handling, the position-encoding seam and the sin-cos table (vs diffusers)."""

import pytest
import torch
from torch import nn

from models.dit import (PAG_LAYERS_KEY, VARIANTS, SanaDiT, SanaDiTConfig, pag_guidance, prepare_text_mask,
                        variant_config)
from models.dit_blocks import linear_attention
from models.pos_embed import build_position_encoding, sincos_2d

EXACT = 0.0
FP32_TOL = 1e-6  # float32 re-association of the same sums
BF16_REL_TOL = 2e-2  # bf16 forward vs fp32 forward, relative to the output scale (8-bit mantissa, 2 blocks)


class _Recorder:
    """An `operations` namespace that records every layer built through it (habit 1 check)."""

    def __init__(self):
        self.calls = []
        for name in ("Linear", "Conv2d", "LayerNorm", "RMSNorm"):
            setattr(self, name, self._wrap(name, getattr(nn, name)))

    def _wrap(self, name, cls):
        def build(*args, **kwargs):
            self.calls.append((name, kwargs.get("dtype"), kwargs.get("device")))
            return cls(*args, **kwargs)
        return build


def _tiny(**changes) -> SanaDiTConfig:
    base = {"hidden_size": 64, "depth": 2, "num_cross_heads": 4, "caption_channels": 48, "variant": "tiny"}
    return SanaDiTConfig(**{**base, **changes})


def _tiny_model(seed=0, **changes) -> SanaDiT:
    torch.manual_seed(seed)
    model = SanaDiT(_tiny(**changes))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2) if param.ndim > 1 else param.normal_(1.0, 0.1)
    return model.eval()


def _inputs(model, batch=2, h=3, w=4, tokens=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 32, h, w, generator=gen)
    context = torch.randn(batch, tokens, model.config.caption_channels, generator=gen)
    return x, context


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_dit_variant_table_builds_on_meta_through_operations(key):
    ops = _Recorder()
    cfg = variant_config(*key)
    model = SanaDiT(cfg, dtype=torch.bfloat16, device="meta", operations=ops)
    assert len(model.blocks) == cfg.depth
    assert ops.calls and all(d == torch.bfloat16 and dev == "meta" for _, d, dev in ops.calls), ops.calls[:3]
    nn_layers = [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.RMSNorm)]
    assert len(nn_layers) == len(ops.calls), "a layer was built without `operations`"
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in model.parameters())


def test_dit_variant_table_values():
    assert variant_config("1.0", 1152, 32).flow_shift == 4.0  # NVlabs 600M@1024 (diffusers writes 3.0)
    four_k = variant_config("1.0", 2240, 128)
    assert (four_k.flow_shift, four_k.use_pe, four_k.pe_interpolation, four_k.base_size) == (6.0, True, 2.0, 128)
    sprint = variant_config("Sprint", 2240, 32)
    assert sprint.guidance_embeds and sprint.qk_norm and sprint.timestep_norm_scale_factor == 1000.0
    assert variant_config("1.5", 2240, 32, depth=60).variant == "Sana 1.5 4.8B 1024px"
    assert variant_config("1.0", 2240, 32, depth=2).variant == "Sana 1.0 1024px, 1.6B-class (hidden 2240), 2 blocks"


def test_dit_config_validation_names_both_numbers():
    with pytest.raises(ValueError, match="100.*32"):
        SanaDiTConfig(hidden_size=100)
    with pytest.raises(ValueError, match="reference"):
        SanaDiTConfig(reference="other")


def test_dit_forward_shape_and_determinism():
    model = _tiny_model()
    x, context = _inputs(model)
    with torch.no_grad():
        a = model(x, torch.tensor([500.0, 20.0]), context)
        b = model(x, torch.tensor([500.0, 20.0]), context)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert (a - b).abs().max().item() == EXACT


@pytest.mark.parametrize("mask_len", [3, 7, 11])
def test_dit_mask_shorter_or_longer_than_context(mask_len):
    """A mask shorter than T is padded with ones, a longer one truncated; all-ones equals no mask."""
    model = _tiny_model()
    x, context = _inputs(model, tokens=7)
    mask = torch.ones(2, mask_len)
    mask[1, 2:] = 0
    full = torch.ones(2, 7)
    full[1, 2:min(mask_len, 7)] = 0
    t = torch.tensor([300.0, 300.0])
    with torch.no_grad():
        diff = (model(x, t, context, mask) - model(x, t, context, full)).abs().max().item()
        ones = (model(x, t, context, torch.ones(1, 7)) - model(x, t, context, None)).abs().max().item()
    assert diff == EXACT and ones == EXACT


def test_dit_mask_trimming_is_exact():
    """Dropping caption positions masked in every row equals attending to them with the -10000 bias."""
    model = _tiny_model()
    x, context = _inputs(model, tokens=7)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    t = torch.tensor([300.0, 300.0])
    with torch.no_grad():
        trimmed = model(x, t, context, mask)
        padded = model(x, t, torch.cat([context, torch.randn(2, 5, 48)], 1), torch.cat([mask, torch.zeros(2, 5)], 1))
    assert (trimmed - padded).abs().max().item() <= FP32_TOL


def test_dit_prepare_text_mask_repeats_batch():
    mask = prepare_text_mask(torch.tensor([[1, 1, 0]]), batch=4, tokens=3, device="cpu")
    assert mask.shape == (4, 3) and mask[:, 2].sum() == 0
    with pytest.raises(ValueError, match="batch 3"):
        prepare_text_mask(torch.ones(3, 2), batch=4, tokens=2, device="cpu")


def test_dit_timestep_truncation_follows_reference():
    nvlabs, diff_mode = _tiny_model(), _tiny_model(reference="diffusers")
    x, context = _inputs(nvlabs)
    with torch.no_grad():
        same = (nvlabs(x, torch.tensor([500.7, 20.2]), context) - nvlabs(x, torch.tensor([500.0, 20.0]), context))
        moved = diff_mode(x, torch.tensor([500.7, 20.2]), context) - diff_mode(x, torch.tensor([500.0, 20.0]), context)
    assert same.abs().max().item() == EXACT
    assert moved.abs().max().item() > FP32_TOL


def test_dit_sprint_time_is_fractional_and_guidance_defaults():
    model = _tiny_model(guidance_embeds=True, timestep_norm_scale_factor=1000.0, qk_norm=True, cross_norm=True)
    x, context = _inputs(model)
    with torch.no_grad():
        moved = model(x, torch.tensor([500.3, 20.0]), context) - model(x, torch.tensor([500.0, 20.0]), context)
        default = model(x, torch.tensor([500.0, 20.0]), context) - model(x, torch.tensor([500.0, 20.0]), context,
                                                                           guidance=4.5)
    assert moved.abs().max().item() > FP32_TOL
    assert default.abs().max().item() == EXACT


def test_dit_bf16_forward_close_to_fp32():
    model = _tiny_model()
    x, context = _inputs(model)
    t = torch.tensor([400.0, 100.0])
    with torch.no_grad():
        ref = model(x, t, context)
        model16 = SanaDiT(model.config, dtype=torch.bfloat16)
        model16.load_state_dict(model.state_dict())
        out = model16.eval()(x, t, context)
    assert out.dtype == torch.bfloat16
    rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
    assert rel <= BF16_REL_TOL, f"bf16 forward differs from fp32 by {rel:.3e} of the output scale"


def test_dit_linear_attention_rotate_seam():
    """Identity rotation equals the padded-ones path; a rotation changes only the numerator."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 32, generator=gen) for _ in range(3))
    q, k = q.relu(), k.relu()
    padded = linear_attention(q, k, v, 1e-8)
    identity = linear_attention(q, k, v, 1e-8, rotate=lambda t: t)
    assert (padded - identity).abs().max().item() <= FP32_TOL
    flip = linear_attention(q, k, v, 1e-8, rotate=lambda t: -t)
    assert (flip - padded).abs().max().item() <= FP32_TOL  # (-q)(-k)^T = q k^T
    denominator = q @ k.sum(2).unsqueeze(-1)
    swapped = linear_attention(q, k, v, 1e-8, rotate=lambda t: t.roll(1, dims=-1))
    assert torch.allclose(swapped * denominator, (q.roll(1, -1) @ (k.roll(1, -1).transpose(-1, -2) @ v)), atol=1e-4)


def test_dit_position_encoding_object():
    pe = build_position_encoding(_tiny(use_pe=True, base_size=16, pe_interpolation=2.0), 3, 5)
    assert pe.additive.shape == (1, 15, 64) and pe.rotate is None
    assert torch.allclose(pe.additive[0], sincos_2d(64, 3, 5, 16, 2.0))
    assert build_position_encoding(_tiny(), 3, 5).additive is None


@pytest.mark.parametrize("grid,base,interp", [((3, 5), 128, 2.0), ((64, 32), 64, 1.0), ((6, 6), 16, 1.0)])
def test_dit_sincos_matches_diffusers(grid, base, interp):
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    expected = embeddings.get_2d_sincos_pos_embed(96, grid, base_size=base, interpolation_scale=interp).float()
    diff = (sincos_2d(96, grid[0], grid[1], base, interp) - expected).abs().max().item()
    assert diff <= FP32_TOL, f"sin-cos table differs from diffusers by {diff:.3e}"


def test_dit_pag_identity_attention_layers():
    """`sana_pag_layers` replaces self-attention by proj(v) in the listed blocks only (NVlabs PAG processor)."""
    model = _tiny_model()
    x, context = _inputs(model)
    t = torch.tensor([400.0, 100.0])
    attn = model.blocks[1].attn
    tokens = torch.randn(2, 12, 64)
    expected = attn.proj(tokens @ attn.qkv.weight[128:].T)
    with torch.no_grad():
        assert (attn(tokens, identity=True) - expected).abs().max().item() <= FP32_TOL
        plain = model(x, t, context)
        none = model(x, t, context, transformer_options={PAG_LAYERS_KEY: frozenset()})
        perturbed = model(x, t, context, transformer_options={PAG_LAYERS_KEY: frozenset({1})})
    assert (plain - none).abs().max().item() == EXACT
    assert (plain - perturbed).abs().max().item() > FP32_TOL


def test_dit_pag_guidance_formula():
    cfg, cond, perturbed = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([2.5])
    assert pag_guidance(cfg, cond, perturbed, 2.0).item() == 2.0  # 1 + 2 * (3 - 2.5)
