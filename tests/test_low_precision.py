"""The DiT in bf16 and fp16 against float32 of the same weights, at real widths and 4096 tokens (a 64x64 latent).

Each comparison rounds the seeded float32 weights and inputs to the low dtype first and runs the float32 reference on
those rounded values, so the figure measures only the arithmetic. Bounds are measured on this CPU (figures in the
comments; `pytest -s` prints them) with a margin, and chosen so that removing a guard fails a test (tests/mutations.py):
- the fp32 upcast of q, k, v in the linear self-attention: at 4096 tokens the normaliser q . sum_m k_m exceeds the
  fp16 range (65504) once q and k have an RMS of about 2.5, so without the upcast fp16 returns inf / NaN;
- the fp32 q, k, v of Sprint's "vanilla" cross-attention (NVlabs MultiHeadCrossVallinaAttention): checked on the dtype
  the attention kernel receives, since CPU kernels accumulate in fp32 anyway and hide the difference in the output.
fp16 runs only the attention modules: this CPU has no fp16 arithmetic, so the Mix-FFN convolutions take ~30 s in fp16
and hold no fp16-specific code.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.dit import CROSS_HEADS_BY_HIDDEN, SanaDiTConfig
from models.dit_blocks import FP16_MAX, CrossAttention, LinearSelfAttention, SanaBlock
from tests.assertions import assert_relative_close

LATENT_SIDE = 64  # 64x64 latent = 4096 tokens (a 2048 px image)
CAPTION_TOKENS = 300  # Gemma-2 prompt length of the released pipelines
KEPT_CAPTION_TOKENS = 200  # the rest is padding, masked out
# q/k RMS after the qk RMSNorm (weights filled with this gain): makes q . sum_m k_m ~2x FP16_MAX at 4096 tokens.
QK_GAIN = 2.5
SEED = 0
# Relative L2 error bounds (measured: see each test).
BLOCK_BF16_RTOL = {2240: 1.3e-2, 1152: 6e-3}  # measured 6.4e-3, 2.9e-3
SELF_ATTENTION_FP16_RTOL = 1e-3  # measured 2.5e-4; without the fp32 upcast 0.45
CROSS_ATTENTION_RTOL = {torch.bfloat16: 1.8e-2, torch.float16: 2.5e-3}  # measured 8.7e-3, 1.1e-3
# The two widths of the released models: Sprint-style block (qk-norm, vanilla cross-attention) at 2240, Sana 1.0 at
# 1152 (no qk-norm: the qkv weights carry the gain instead).
FAMILIES = {2240: "sprint", 1152: "1.0"}


def _config(width: int) -> SanaDiTConfig:
    fields = dict(hidden_size=width, num_cross_heads=CROSS_HEADS_BY_HIDDEN[width], depth=1)
    if FAMILIES[width] == "sprint":
        fields.update(qk_norm=True, cross_norm=True, cross_attn_type="vanilla")
    return SanaDiTConfig(**fields)


def _fill(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Seeded weights: matrices N(0, 1/fan_in), qk-norm weights QK_GAIN, other vectors N(0, 0.1^2)."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name:
                parameter.fill_(QK_GAIN)
            elif parameter.ndim >= 2 and "scale_shift_table" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter[0].numel() ** 0.5)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        if hasattr(module, "q_norm") and module.q_norm is None and hasattr(module, "qkv"):
            module.qkv.weight.mul_(QK_GAIN)  # no qk-norm: give q and k the same RMS through the projection
    return module


def _inputs(width: int, generator: torch.Generator) -> dict:
    tokens = LATENT_SIDE * LATENT_SIDE
    mask = torch.ones(1, CAPTION_TOKENS)
    mask[:, KEPT_CAPTION_TOKENS:] = 0
    return dict(x=torch.randn(1, tokens, width, generator=generator),
                y=torch.randn(1, CAPTION_TOKENS, width, generator=generator),
                t0=torch.randn(1, 6 * width, generator=generator) * 0.1,
                bias=((1 - mask) * -10000.0)[:, None, None, :])


def _pair(build, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """(module in `dtype`, float32 module holding the same dtype-rounded weights), both from `build(dtype)`."""
    generator = torch.Generator().manual_seed(SEED)
    weights = {k: v.to(dtype) for k, v in _fill(build(torch.float32), generator).state_dict().items()}
    low, reference = build(dtype), build(torch.float32)
    low.load_state_dict(weights)
    reference.load_state_dict({k: v.float() for k, v in weights.items()})
    return low, reference


def _rounded(tensor: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    low = tensor.to(dtype)
    return low, low.float()


@pytest.mark.parametrize("width", [2240, 1152])
@torch.no_grad()
def test_block_bf16_matches_fp32(width):
    """One SanaBlock (self-attention, cross-attention, Mix-FFN) in bf16 at 4096 tokens."""
    config = _config(width)
    low, reference = _pair(lambda dtype: SanaBlock(config, dtype=dtype, operations=nn), torch.bfloat16)
    data = _inputs(width, torch.Generator().manual_seed(SEED + 1))
    (x, x32), (y, y32), (t0, t032) = (_rounded(data[k], torch.bfloat16) for k in ("x", "y", "t0"))
    hw = (LATENT_SIDE, LATENT_SIDE)
    out = low(x, y, t0, data["bias"], hw)
    expected = reference(x32, y32, t032, data["bias"], hw)
    assert out.dtype == torch.bfloat16
    assert_relative_close(out.float(), expected, BLOCK_BF16_RTOL[width], f"SanaBlock {width} bf16 vs fp32")


@torch.no_grad()
def test_self_attention_fp16_4096_tokens():
    """Linear self-attention (width 1152) at 4096 tokens where q . sum_m k_m exceeds the fp16 range: the fp32
    accumulation keeps the result close (bf16 is covered by the block test; fp16 at 2240 costs ~20 s more here)."""
    width, dtype = 1152, torch.float16
    config = _config(width)
    low, reference = _pair(lambda d: LinearSelfAttention(width, config.linear_head_dim, config.qk_norm, 1e-8, False,
                                                         dtype=d, operations=nn), dtype)
    x, x32 = _rounded(torch.randn(1, LATENT_SIDE ** 2, width, generator=torch.Generator().manual_seed(SEED + 2)), dtype)
    q, k, _ = reference.qkv(x32).chunk(3, dim=-1)
    if reference.q_norm is not None:
        q, k = reference.q_norm(q), reference.k_norm(k)
    heads = width // config.linear_head_dim
    q, k = (F.relu(t.view(1, -1, heads, config.linear_head_dim)) for t in (q, k))
    normaliser = torch.einsum("bnhd,bhd->bnh", q, k.sum(dim=1)).max().item()
    assert normaliser > FP16_MAX, f"premise: q . sum k = {normaliser:.3g} should exceed the fp16 range {FP16_MAX}"
    out = low(x)
    assert out.dtype == dtype
    assert_relative_close(out.float(), reference(x32), SELF_ATTENTION_FP16_RTOL, f"self-attention {width} {dtype}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@torch.no_grad()
def test_vanilla_cross_attention_low_precision(dtype, monkeypatch):
    """Sprint's cross-attention (2240, 20 heads, qk-norm, 300 caption tokens, padding masked) in bf16 / fp16: the
    attention kernel receives float32 q, k, v and mask, and the output is close to float32 (1024 query tokens)."""
    width = 2240
    config = _config(width)
    low, reference = _pair(lambda d: CrossAttention(width, config.num_cross_heads, True, 1e-6, True, dtype=d,
                                                    operations=nn), dtype)
    data = _inputs(width, torch.Generator().manual_seed(SEED + 3))
    (x, x32), (y, y32) = _rounded(data["x"][:, :1024], dtype), _rounded(data["y"], dtype)
    seen, sdpa = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype, None if attn_mask is None else attn_mask.dtype))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    out = low(x, y, data["bias"])
    assert seen, "CrossAttention no longer calls F.scaled_dot_product_attention: adapt this test to its backend"
    assert seen == [(torch.float32,) * 4], f"vanilla cross-attention in {dtype} ran its softmax on {seen}, not float32"
    assert out.dtype == dtype
    expected = reference(x32, y32, data["bias"])
    assert_relative_close(out.float(), expected, CROSS_ATTENTION_RTOL[dtype], f"vanilla cross-attention {dtype}")
