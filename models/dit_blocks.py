"""Building blocks of the Sana linear DiT, with the original NVlabs parameter names.

Sources: NVlabs/Sana `diffusion/model/nets/sana_blocks.py` (LiteLA, MultiHeadCrossAttention,
MultiHeadCrossVallinaAttention, T2IFinalLayer, TimestepEmbedder, CaptionEmbedder), `basic_modules.py` (GLUMBConv),
`sana_multi_scale.py` (SanaMSBlock); diffusers `models/transformers/sana_transformer.py` and
`attention_processor.py` (`SanaLinearAttnProcessor2_0`). Formulas: docs/ARCHITECTURE.md §8.

Every layer comes from the injected `operations` namespace (torch.nn or comfy.ops) with `dtype` and `device`
(docs/ARCHITECTURE.md §1); raw parameters (scale-shift tables) are `torch.empty` and are cast to the activation dtype
on use.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pos_embed import Rotate

# Block LayerNorms (norm1, norm2, norm_final): eps 1e-6, no affine (NVlabs SanaMSBlock / T2IFinalLayer).
LAYERNORM_EPS = 1e-6
# Caption RMSNorm and self-attention qk-norm: `norm_eps` 1e-5 (NVlabs configs/sana_base.yaml; diffusers default).
NORM_EPS = 1e-5
# Sinusoidal timestep embedding: 256 channels, max period 10000 (NVlabs TimestepEmbedder).
TIMESTEP_FREQ_DIM = 256
TIMESTEP_MAX_PERIOD = 10000
# Text-mask fill: additive bias (1 - mask) * -10000 (NVlabs MultiHeadCrossAttention SDPA path; diffusers).
MASK_FILL = -10000.0
# fp16 overflow clamp after the linear attention (NVlabs LiteLA.forward, diffusers SanaLinearAttnProcessor2_0).
FP16_MAX = 65504.0
# adaLN-single: t0 holds shift/scale/gate for attention and FFN (NVlabs `t_block`, SanaMSBlock.scale_shift_table).
MODULATION_CHUNKS = 6

# Numerics that differ between the two references (docs/ARCHITECTURE.md §9); see dit.SanaDiTConfig.reference.
REFERENCE_NUMERICS = {
    # linear_eps: LiteLA denominator eps (NVlabs SanaMSBlock passes 1e-8; diffusers processor uses 1e-15).
    # cross_norm_eps: cross-attention qk RMSNorm eps (NVlabs MultiHeadCrossAttention 1e-6; diffusers Attention 1e-5).
    # always_clip: NVlabs clips whenever the autocast GPU dtype is fp16 (its default), diffusers only for fp16 tensors.
    # fp32_cross_softmax: NVlabs "vanilla" cross-attention (Sprint) runs q, k, v in fp32; diffusers: model dtype.
    "nvlabs": {"linear_eps": 1e-8, "cross_norm_eps": 1e-6, "always_clip": True, "fp32_cross_softmax": True},
    "diffusers": {"linear_eps": 1e-15, "cross_norm_eps": 1e-5, "always_clip": False, "fp32_cross_softmax": False},
}


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN-single modulation x * (1 + scale) + shift; x [B, N, C], shift/scale [B, 1, C]. One fused pass."""
    return torch.addcmul(shift, x, 1 + scale)


def timestep_embedding(t: torch.Tensor, dim: int = TIMESTEP_FREQ_DIM) -> torch.Tensor:
    """Sinusoidal embedding [cos(t * f), sin(t * f)], f_i = exp(-ln(10000) * i / (dim/2)).

    t: [B] float times (fractional allowed). Returns [B, dim] float32 (NVlabs TimestepEmbedder.timestep_embedding).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(TIMESTEP_MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float,
                     rotate: Rotate | None = None) -> torch.Tensor:
    """ReLU linear attention out_n = sum_m (q_n . k_m) v_m / (sum_m q_n . k_m + eps).

    q, k: ReLU kernels [B, heads, N, d]; v: [B, heads, N, d]; all float32. Without `rotate`, one matmul with q
    yields numerator and normaliser together: NVlabs LiteLA.attn_matmul pads v with a column of ones, here the small
    [d, d] matrix k^T v gets the column sum_m k_m instead (the same sums, without copying the [N, d] v), and the
    division runs in place on the numerator. With `rotate`, the numerator uses rotate(q), rotate(k) and the
    normaliser the un-rotated kernels, which keeps it positive. Returns [B, heads, N, d] float32.
    """
    if rotate is None:
        kv_pad = torch.cat([k.transpose(-1, -2) @ v, k.sum(dim=2).unsqueeze(-1)], dim=-1)  # [B, heads, d, d + 1]
        out = q @ kv_pad
        return out[..., :-1].div_(out[..., -1:] + eps)
    numerator = rotate(q) @ (rotate(k).transpose(-1, -2) @ v)
    normaliser = q @ k.sum(dim=2).unsqueeze(-1)
    return numerator / (normaliser + eps)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
                   skip_reshape: bool = True, **kwargs) -> torch.Tensor:
    """Softmax attention with the contract of ComfyUI's `comfy.ldm.modules.attention.optimized_attention`.

    q: [B, heads, N, d]; k, v: [B, heads, T, d] (skip_reshape=True, the only layout used here); mask: additive bias
    broadcastable to [B, heads, N, T] or None. Returns [B, N, heads * d]. The pure-PyTorch default of
    `CrossAttention.attention`; inside ComfyUI the adapter injects core's backend (sage, flash, xformers, ...).
    """
    if not skip_reshape:
        raise ValueError(f"sdpa_attention got skip_reshape={skip_reshape}; expected q, k, v as [B, heads, N, d]")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], heads * q.shape[3])


def qk_rms_norms(enabled: bool, hidden_size: int, eps: float, dtype, device, operations) -> tuple:
    """(q_norm, k_norm): learned RMSNorms over all C channels ("across heads", NVlabs `RMSNorm(d_model)`), or
    (None, None) when the variant has no qk-norm."""
    if not enabled:
        return None, None
    return tuple(operations.RMSNorm(hidden_size, eps=eps, elementwise_affine=True, dtype=dtype, device=device)
                 for _ in range(2))


class TimestepEmbedder(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear; keys `mlp.0`, `mlp.2` (NVlabs TimestepEmbedder).

    Used for the timestep (`t_embedder`) and for Sprint's guidance (`cfg_embedder`).
    """

    def __init__(self, hidden_size: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.mlp = nn.Sequential(
            operations.Linear(TIMESTEP_FREQ_DIM, hidden_size, bias=True, dtype=dtype, device=device),
            nn.SiLU(),
            operations.Linear(hidden_size, hidden_size, bias=True, dtype=dtype, device=device),
        )

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """t: [B] float32 times -> [B, C] in `dtype` (the sinusoid is computed in fp32, then cast)."""
        return self.mlp(timestep_embedding(t).to(dtype))


class CaptionEmbedder(nn.Module):
    """Caption projection y_proj = fc1 -> GELU(tanh) -> fc2, 2304 -> C -> C (NVlabs CaptionEmbedder, timm Mlp).

    The checkpoint buffer `y_embedder.y_embedding` (training-time null caption) is not part of the module.
    """

    def __init__(self, caption_channels: int, hidden_size: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.y_proj = nn.ModuleDict({
            "fc1": operations.Linear(caption_channels, hidden_size, bias=True, dtype=dtype, device=device),
            "fc2": operations.Linear(hidden_size, hidden_size, bias=True, dtype=dtype, device=device),
        })

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: [B, T, 2304] text-encoder states -> [B, T, C]."""
        return self.y_proj["fc2"](F.gelu(self.y_proj["fc1"](y), approximate="tanh"))


class LinearSelfAttention(nn.Module):
    """Sana's linear self-attention (LiteLA): qkv -> [qk RMSNorm across heads] -> ReLU kernels -> fp32 linear
    attention -> proj. Keys `qkv` (no bias), `q_norm`/`k_norm` (1.5, Sprint), `proj`.
    """

    def __init__(self, hidden_size: int, head_dim: int, qk_norm: bool, linear_eps: float, always_clip: bool,
                 dtype=None, device=None, operations=None):
        super().__init__()
        if hidden_size % head_dim:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the linear head dim {head_dim}")
        self.head_dim = head_dim
        self.eps = linear_eps
        self.always_clip = always_clip
        self.qkv = operations.Linear(hidden_size, 3 * hidden_size, bias=False, dtype=dtype, device=device)
        self.q_norm, self.k_norm = qk_rms_norms(qk_norm, hidden_size, NORM_EPS, dtype, device, operations)
        self.proj = operations.Linear(hidden_size, hidden_size, bias=True, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, rotate: Rotate | None = None, identity: bool = False) -> torch.Tensor:
        """x: [B, N, C] modulated tokens -> [B, N, C]. `rotate`: position-encoding seam (pos_embed.PositionEncoding).
        `identity`: PAG's perturbed branch, attention replaced by the identity: proj(v) (NVlabs
        PAGCFGIdentitySelfAttnProcessorLiteLA)."""
        batch, tokens, channels = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if identity:
            return self._clip(self.proj(v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        heads = channels // self.head_dim
        # [B, N, C] -> [B, heads, N, d]; head i owns channels [d*i, d*i + d) (NVlabs reshape(B, C//d, d, N)).
        q, k, v = (t.view(batch, tokens, heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        # ReLU kernel, then fp32 accumulation whatever the weight dtype (NVlabs fp32_attention; diffusers always).
        out = linear_attention(F.relu(q).float(), F.relu(k).float(), v.float(), self.eps, rotate)
        return self._clip(self.proj(out.transpose(1, 2).reshape(batch, tokens, channels).to(x.dtype)))

    def _clip(self, out: torch.Tensor) -> torch.Tensor:
        if self.always_clip or out.dtype == torch.float16:
            out = out.clip(-FP16_MAX, FP16_MAX)
        return out


class CrossAttention(nn.Module):
    """Softmax cross-attention from image tokens to caption tokens, honouring the text mask.

    Keys `q_linear`, `kv_linear` (rows [0:C] = k, [C:2C] = v), `q_norm`/`k_norm` (RMSNorm over all C; 1.5, Sprint),
    `proj` (NVlabs MultiHeadCrossAttention / MultiHeadCrossVallinaAttention).
    """

    def __init__(self, hidden_size: int, num_heads: int, cross_norm: bool, cross_norm_eps: float, fp32_softmax: bool,
                 dtype=None, device=None, operations=None):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of the cross-attention heads {num_heads}")
        self.num_heads = num_heads
        self.fp32_softmax = fp32_softmax
        # Softmax backend (sdpa_attention's contract); nodes/dit_adapter.py SanaDiTComfy installs ComfyUI's.
        self.attention = sdpa_attention
        self.q_linear = operations.Linear(hidden_size, hidden_size, bias=True, dtype=dtype, device=device)
        self.kv_linear = operations.Linear(hidden_size, 2 * hidden_size, bias=True, dtype=dtype, device=device)
        self.q_norm, self.k_norm = qk_rms_norms(cross_norm, hidden_size, cross_norm_eps, dtype, device, operations)
        self.proj = operations.Linear(hidden_size, hidden_size, bias=True, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, y: torch.Tensor, text_bias: torch.Tensor | None,
                transformer_options: dict | None = None) -> torch.Tensor:
        """x: [B, N, C] image tokens (un-normalised); y: [B, T, C] projected captions; text_bias: [B, 1, 1, T]
        additive mask bias (0 keep, -10000 drop) or None; transformer_options: ComfyUI's per-call options, handed to
        the attention backend (its `optimized_attention_override`). Returns [B, N, C]."""
        batch, _, channels = x.shape
        q = self.q_linear(x)
        k, v = self.kv_linear(y).chunk(2, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        head_dim = channels // self.num_heads
        q, k, v = (t.view(batch, -1, self.num_heads, head_dim).transpose(1, 2) for t in (q, k, v))
        dtype = q.dtype
        precision = None
        if self.fp32_softmax:  # Sprint's "vanilla" cross-attention: q, k, v and the softmax in fp32 (NVlabs)
            q, k, v = q.float(), k.float(), v.float()
            precision = torch.float32
        bias = None if text_bias is None else text_bias.to(q.dtype)
        out = self.attention(q, k, v, self.num_heads, mask=bias, skip_reshape=True, attn_precision=precision,
                             transformer_options=transformer_options)
        return self.proj(out.to(dtype))


class GLUMBConv(nn.Module):
    """Mix-FFN: 1x1 conv C -> 2h + SiLU, 3x3 depthwise conv, x * SiLU(gate), 1x1 conv h -> C (no bias).

    Keys `inverted_conv.conv`, `depth_conv.conv`, `point_conv.conv` (NVlabs basic_modules.GLUMBConv).
    """

    def __init__(self, hidden_size: int, mlp_hidden: int, dtype=None, device=None, operations=None):
        super().__init__()
        wide = 2 * mlp_hidden
        self.inverted_conv = nn.ModuleDict({"conv": operations.Conv2d(
            hidden_size, wide, 1, bias=True, dtype=dtype, device=device)})
        self.depth_conv = nn.ModuleDict({"conv": operations.Conv2d(
            wide, wide, 3, padding=1, groups=wide, bias=True, dtype=dtype, device=device)})
        self.point_conv = nn.ModuleDict({"conv": operations.Conv2d(
            mlp_hidden, hidden_size, 1, bias=False, dtype=dtype, device=device)})

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: [B, N, C] tokens of an h x w grid (row-major) -> [B, N, C]."""
        batch, tokens, channels = x.shape
        # Row-major tokens are an NHWC tensor: the NCHW view is channels-last, so no copy is made on the way in or out.
        x = x.view(batch, height, width, channels).permute(0, 3, 1, 2)
        x = F.silu(self.inverted_conv["conv"](x), inplace=True)  # the conv output is a fresh tensor
        value, gate = self.depth_conv["conv"](x).chunk(2, dim=1)
        # GLU gating value * SiLU(gate): SiLU in place on the fresh conv output, one product pass, no extra buffer.
        x = self.point_conv["conv"](value * F.silu(gate, inplace=True))
        return x.permute(0, 2, 3, 1).reshape(batch, tokens, -1)


class SanaBlock(nn.Module):
    """One Sana block (NVlabs SanaMSBlock): adaLN-single-modulated linear self-attention, un-modulated
    cross-attention, modulated Mix-FFN. Keys `scale_shift_table` (6, C), `attn`, `cross_attn`, `mlp`.
    """

    def __init__(self, cfg, dtype=None, device=None, operations=None):
        super().__init__()
        numerics = REFERENCE_NUMERICS[cfg.reference]
        hidden = cfg.hidden_size
        self.norm1 = operations.LayerNorm(hidden, elementwise_affine=False, eps=LAYERNORM_EPS, dtype=dtype,
                                          device=device)
        self.attn = LinearSelfAttention(hidden, cfg.linear_head_dim, cfg.qk_norm, numerics["linear_eps"],
                                        numerics["always_clip"], dtype=dtype, device=device, operations=operations)
        fp32_softmax = cfg.cross_attn_type == "vanilla" and numerics["fp32_cross_softmax"]
        self.cross_attn = CrossAttention(hidden, cfg.num_cross_heads, cfg.cross_norm, numerics["cross_norm_eps"],
                                         fp32_softmax, dtype=dtype, device=device, operations=operations)
        self.norm2 = operations.LayerNorm(hidden, elementwise_affine=False, eps=LAYERNORM_EPS, dtype=dtype,
                                          device=device)
        self.mlp = GLUMBConv(hidden, int(hidden * cfg.mlp_ratio), dtype=dtype, device=device, operations=operations)
        self.scale_shift_table = nn.Parameter(torch.empty(MODULATION_CHUNKS, hidden, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, y: torch.Tensor, t0: torch.Tensor, text_bias: torch.Tensor | None,
                hw: tuple[int, int], rotate: Rotate | None = None, identity_attention: bool = False,
                transformer_options: dict | None = None) -> torch.Tensor:
        """x: [B, N, C]; y: [B, T, C]; t0: [B, 6C] shared modulation; text_bias: [B, 1, 1, T] or None;
        hw: token grid (h, w); rotate: position-encoding seam for the self-attention; identity_attention: PAG's
        perturbed branch; transformer_options: ComfyUI's per-call options for the cross-attention backend.
        Returns [B, N, C]."""
        table = self.scale_shift_table.to(dtype=t0.dtype, device=t0.device)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            table[None] + t0.reshape(x.shape[0], MODULATION_CHUNKS, -1)).chunk(MODULATION_CHUNKS, dim=1)
        attn = self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa), rotate=rotate, identity=identity_attention)
        x = torch.addcmul(x, gate_msa, attn)  # x + gate * attn in one pass
        x = x + self.cross_attn(x, y, text_bias, transformer_options)
        return torch.addcmul(x, gate_mlp, self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp), *hw))


class FinalLayer(nn.Module):
    """T2IFinalLayer: LayerNorm, modulation by the timestep embedding t (not t0), Linear C -> p*p*out.

    Keys `scale_shift_table` (2, C), `linear`.
    """

    def __init__(self, hidden_size: int, out_features: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.norm_final = operations.LayerNorm(hidden_size, elementwise_affine=False, eps=LAYERNORM_EPS, dtype=dtype,
                                               device=device)
        self.linear = operations.Linear(hidden_size, out_features, bias=True, dtype=dtype, device=device)
        self.scale_shift_table = nn.Parameter(torch.empty(2, hidden_size, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C]; t: [B, C] timestep (+ guidance) embedding -> [B, N, p*p*out]."""
        table = self.scale_shift_table.to(dtype=t.dtype, device=t.device)
        shift, scale = (table[None] + t[:, None]).chunk(2, dim=1)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale))
