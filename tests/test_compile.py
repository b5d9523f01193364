"""torch.compile readiness of the Sana DiT block (models/dit_blocks.py): the block forward traces into one graph with
no graph break for every released block flavour (base, 1.5 qk-norm, Sprint fp32 cross-attention, RoPE); the
compiled block (aot_eager: dynamo plus AOT decompositions) matches eager; the cross-attention goes through its
injected attention callable and Sprint hands it fp32 q, k, v.

CPU inductor runs in tests/integration/test_compile.py (ComfyUI's stock TorchCompileModel on a loaded Sana MODEL)
and tests/benchmarks/bench_pipeline.py (compiled vs eager speed)."""

import pytest
import torch

from models.dit import SanaDiTConfig
from models.dit_blocks import MASK_FILL, SanaBlock, sdpa_attention
from models.pos_embed import build_position_encoding

# Decomposed float32 ops (LayerNorm, RMSNorm, SDPA) re-associate sums: a few ulps of the activations (inductor
# measured below 1e-6 relative on these sizes); 1e-5 is the project's fp32 parity bound.
COMPILED_REL_TOL = 1e-5
FLAVOURS = {
    "base": {},
    "1.5": {"qk_norm": True, "cross_norm": True},
    "sprint": {"qk_norm": True, "cross_norm": True, "cross_attn_type": "vanilla"},
    "rope": {"pos_encoding": "rope"},
}
GRID = (4, 6)
TEXT_TOKENS = 5


def _block(**changes) -> tuple[SanaBlock, SanaDiTConfig]:
    cfg = SanaDiTConfig(**{"hidden_size": 64, "depth": 1, "num_cross_heads": 4, "variant": "tiny", **changes})
    torch.manual_seed(0)
    block = SanaBlock(cfg, operations=torch.nn)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0.0, 0.2) if param.ndim > 1 else param.normal_(1.0, 0.1)
    return block.eval(), cfg


def _inputs(cfg: SanaDiTConfig) -> tuple:
    gen = torch.Generator().manual_seed(1)
    batch, tokens, hidden = 2, GRID[0] * GRID[1], cfg.hidden_size
    x = torch.randn(batch, tokens, hidden, generator=gen)
    y = torch.randn(batch, TEXT_TOKENS, hidden, generator=gen)
    t0 = torch.randn(batch, 6 * hidden, generator=gen)
    bias = torch.zeros(batch, 1, 1, TEXT_TOKENS)
    bias[1, ..., 3:] = MASK_FILL  # the second prompt keeps 3 of 5 caption tokens
    pe = build_position_encoding(cfg, *GRID, timesteps=torch.full((batch,), 500.0))
    return (x, y, t0, bias, GRID), {"rotate": pe.rotate}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_block_forward_has_no_graph_breaks(flavour):
    block, cfg = _block(**FLAVOURS[flavour])
    args, kwargs = _inputs(cfg)
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(block)(*args, **kwargs)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_compiled_block_matches_eager():
    block, cfg = _block(**FLAVOURS["sprint"])
    args, kwargs = _inputs(cfg)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = block(*args, **kwargs)
        compiled = torch.compile(block, backend="aot_eager", fullgraph=True)(*args, **kwargs)
    error = ((compiled - eager).abs().max() / eager.abs().max()).item()
    assert error <= COMPILED_REL_TOL, f"compiled block differs from eager by {error:.2e} (relative)"


def test_cross_attention_uses_the_injected_callable():
    block, cfg = _block()
    args, kwargs = _inputs(cfg)
    calls = []

    def recording(q, k, v, heads, **options):
        calls.append((tuple(q.shape), heads, options["mask"] is not None, options["transformer_options"]))
        return sdpa_attention(q, k, v, heads, **options)

    with torch.no_grad():
        reference = block(*args, **kwargs)
        block.cross_attn.attention = recording
        routed = block(*args, **kwargs, transformer_options={"marker": 1})
    assert calls == [((2, 4, GRID[0] * GRID[1], 16), 4, True, {"marker": 1})]
    assert torch.equal(routed, reference)


def test_sprint_cross_attention_hands_fp32_to_the_backend():
    block, cfg = _block(**FLAVOURS["sprint"])
    block = block.to(torch.bfloat16)
    args, kwargs = _inputs(cfg)
    args = tuple(a.to(torch.bfloat16) if torch.is_tensor(a) else a for a in args)
    seen = []

    def recording(q, k, v, heads, **options):
        seen.append((q.dtype, k.dtype, v.dtype, options["mask"].dtype, options["attn_precision"]))
        return sdpa_attention(q, k, v, heads, **options)

    block.cross_attn.attention = recording
    with torch.no_grad():
        out = block(*args, **kwargs)
    assert seen == [(torch.float32,) * 4 + (torch.float32,)] and out.dtype == torch.bfloat16
