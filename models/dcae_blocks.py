"""Building blocks of the DC-AE f32c32 autoencoder (Sana's VAE): RMSNorm2d, conv layers, ResBlock, LiteMLA, GLUMBConv.

Source: mit-han-lab/efficientvit `efficientvit/models/nn/ops.py` (ConvLayer, ResBlock, LiteMLA, GLUMBConv,
EfficientViTBlock, ResidualBlock, OpSequential and the channel-averaging / channel-duplicating shortcuts) and the
diffusers port `src/diffusers/models/autoencoders/autoencoder_dc.py` used as the numerical reference (Apache-2.0).
This is an independent re-implementation. Attribute names reproduce the original mit-han-lab checkpoint keys
(`op_list.i.main.conv1.conv.weight`, `context_module.main.aggreg.0.0.weight`, ...) so that file loads with
`strict=True`; the diffusers layout is converted in `dcae_checkpoint.py`.

Every module computes in the dtype of its input. Normalisation statistics and the linear attention accumulate in
float32 whatever the weight dtype (bf16 / fp16 weights are supported).
"""

import torch
import torch.nn.functional as F
from torch import nn

# efficientvit `TritonRMSNorm2d` / diffusers `RMSNorm(eps=1e-5)` in the DC-AE blocks.
RMS_NORM_EPS = 1e-5
# efficientvit `LiteMLA(eps=1e-15)`; diffusers `SanaMultiscaleLinearAttention(eps=1e-15)`: linear-attention denominator.
LINEAR_ATTENTION_EPS = 1e-15
# GLUMBConv hidden width = expand_ratio * C (efficientvit `EfficientViTBlock(expand_ratio=4)`).
GLU_EXPAND_RATIO = 4
# Depthwise kernel of GLUMBConv (efficientvit `GLUMBConv(kernel_size=3)`).
GLU_DEPTH_KERNEL = 3
# Every spatial conv of the DC-AE trunk (ResBlock, down/upsample, project_in/out) is 3x3.
TRUNK_KERNEL = 3
# Each down/upsample changes the resolution by 2 (pixel_unshuffle / nearest x2 in efficientvit).
RESAMPLE_FACTOR = 2


def channel_average(x: torch.Tensor, out_channels: int, factor: int) -> torch.Tensor:
    """Averaging shortcut: pixel_unshuffle(factor) then the mean of contiguous channel groups.

    x: [B, C, H, W] -> [B, out_channels, H/factor, W/factor]; efficientvit
    `PixelUnshuffleChannelAveragingDownSampleLayer` (factor 2) and the encoder's `project_out` shortcut (factor 1).
    """
    if factor > 1:
        x = F.pixel_unshuffle(x, factor)
    return x.unflatten(1, (out_channels, -1)).mean(dim=2)


def channel_duplicate(x: torch.Tensor, out_channels: int, factor: int) -> torch.Tensor:
    """Duplicating shortcut: repeat every channel, then pixel_shuffle(factor).

    x: [B, C, H, W] -> [B, out_channels, H*factor, W*factor]; efficientvit
    `ChannelDuplicatingPixelUnshuffleUpSampleLayer` (factor 2) and the decoder's `project_in` shortcut (factor 1).
    """
    repeats = out_channels * factor * factor // x.shape[1]
    x = x.repeat_interleave(repeats, dim=1)
    return F.pixel_shuffle(x, factor) if factor > 1 else x


def relu_attention(qkv: torch.Tensor, head_dim: int) -> torch.Tensor:
    """ReLU linear attention of LiteMLA, accumulated in float32.

    qkv: [B, 3*D, H, W] where each group of 3*head_dim channels is [q | k | v] of one head.
    Returns [B, D, H, W] in the dtype of `qkv`. Linear form out = (v k^T) q / ((sum_n k)^T q + eps) when H*W > head_dim,
    else the quadratic form of efficientvit (k^T q normalised over keys), exactly as LiteMLA switches.
    """
    batch, _, height, width = qkv.shape
    tokens = qkv.float().reshape(batch, -1, 3 * head_dim, height * width)
    q, k, v = tokens.split(head_dim, dim=2)  # each [B, heads, d, N]
    q, k = F.relu(q), F.relu(k)
    if height * width > head_dim:
        kv = torch.matmul(v, k.transpose(-1, -2))  # [B, heads, d, d]
        numerator = torch.matmul(kv, q)  # [B, heads, d, N]
        denominator = torch.matmul(k.sum(dim=-1, keepdim=True).transpose(-1, -2), q)  # [B, heads, 1, N]
        out = numerator / (denominator + LINEAR_ATTENTION_EPS)
    else:
        scores = torch.matmul(k.transpose(-1, -2), q)  # [B, heads, N_keys, N_queries]
        scores = scores / (scores.sum(dim=2, keepdim=True) + LINEAR_ATTENTION_EPS)
        out = torch.matmul(v, scores)
    return out.reshape(batch, -1, height, width).to(qkv.dtype)


class RMSNorm2d(nn.Module):
    """RMS normalisation over channels of a [B, C, H, W] map with affine weight and bias (efficientvit `trms2d`).

    y = x / sqrt(mean_c(x^2) + eps) * weight + bias; the statistics are computed in float32, the output has x's dtype.
    """

    def __init__(self, channels: int, eps: float = RMS_NORM_EPS, dtype=None, device=None, operations=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(channels, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(channels, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean(x^2) = |x|^2 / C from one float32 norm reduction (no full-size temporary), then the affine in place.
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)
        inverse_rms = torch.rsqrt(norm.square_().div_(x.shape[1]).add_(self.eps))
        y = (x * inverse_rms).to(x.dtype)
        weight = self.weight.to(dtype=x.dtype, device=x.device)[:, None, None]
        bias = self.bias.to(dtype=x.dtype, device=x.device)[:, None, None]
        if torch.is_grad_enabled():  # `out=` cannot record autograd history
            return y.mul_(weight).add_(bias)
        return torch.addcmul(bias, y, weight, out=y)  # one pass instead of two


class ConvLayer(nn.Module):
    """Conv2d ('same' padding) with an optional RMSNorm2d and SiLU after it (efficientvit `ConvLayer`).

    Keys: `conv.weight`, `conv.bias` (if bias), `norm.weight`, `norm.bias` (if norm).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 bias: bool = True, norm: bool = False, act: bool = False, dtype=None, device=None, operations=None):
        super().__init__()
        self.conv = operations.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                                      groups=groups, bias=bias, dtype=dtype, device=device)
        self.norm = RMSNorm2d(out_channels, dtype=dtype, device=device, operations=operations) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.silu(x, inplace=True) if self.act else x


class OpSequential(nn.Module):
    """Runs `op_list` in order (efficientvit `OpSequential`; the container behind `stages.s.op_list.i` keys)."""

    def __init__(self, op_list: list[nn.Module]):
        super().__init__()
        self.op_list = nn.ModuleList(op_list)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """y = main(x) + shortcut(x) (efficientvit `ResidualBlock`).

    shortcut: "identity", "average" (`channel_average`) or "duplicate" (`channel_duplicate`), with `factor` the
    resolution change of `main` (1 or 2) and `out_channels` its output width.
    """

    def __init__(self, main: nn.Module, shortcut: str = "identity", out_channels: int = 0, factor: int = 1):
        super().__init__()
        if shortcut not in ("identity", "average", "duplicate"):
            raise ValueError(f"ResidualBlock: shortcut '{shortcut}' is unknown; expected identity/average/duplicate.")
        self.main = main
        self.shortcut = shortcut
        self.out_channels = out_channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)  # always a fresh tensor, so the in-place add below never touches x
        if self.shortcut == "identity":
            return out.add_(x)
        elif self.shortcut == "average":
            return out.add_(channel_average(x, self.out_channels, self.factor))
        else:
            return out.add_(channel_duplicate(x, self.out_channels, self.factor))


class ResBlockMain(nn.Module):
    """ResBlock body: conv1 3x3 (bias) -> SiLU -> conv2 3x3 (no bias) -> RMSNorm2d. x: [B, C, H, W] -> same shape."""

    def __init__(self, channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        layer = dict(dtype=dtype, device=device, operations=operations)
        self.conv1 = ConvLayer(channels, channels, TRUNK_KERNEL, bias=True, act=True, **layer)
        self.conv2 = ConvLayer(channels, channels, TRUNK_KERNEL, bias=False, norm=True, **layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (efficientvit `LiteMLA`, diffusers `SanaMultiscaleLinearAttention`).

    qkv 1x1 (C -> 3C), one aggregation branch per kernel in `scales` (depthwise kxk then grouped 1x1 with 3*heads
    groups), attention over the [qkv, aggregated qkv] heads, proj 1x1 ((1+len(scales))*C -> C) with RMSNorm2d.
    x: [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, channels: int, head_dim: int, scales: tuple[int, ...], dtype=None, device=None,
                 operations=None):
        super().__init__()
        layer = dict(dtype=dtype, device=device)
        heads = channels // head_dim
        qkv_channels = 3 * channels
        self.head_dim = head_dim
        self.qkv = ConvLayer(channels, qkv_channels, 1, bias=False, operations=operations, **layer)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                operations.Conv2d(qkv_channels, qkv_channels, k, padding=k // 2, groups=qkv_channels, bias=False,
                                  **layer),
                operations.Conv2d(qkv_channels, qkv_channels, 1, groups=3 * heads, bias=False, **layer),
            )
            for k in scales
        )
        self.proj = ConvLayer(channels * (1 + len(scales)), channels, 1, bias=False, norm=True, operations=operations,
                              **layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        multi_scale = torch.cat([qkv] + [branch(qkv) for branch in self.aggreg], dim=1)
        return self.proj(relu_attention(multi_scale, self.head_dim))


class GLUMBConv(nn.Module):
    """Gated MBConv: 1x1 (C -> 2h) + SiLU, depthwise 3x3, x * SiLU(gate), 1x1 (h -> C) + RMSNorm2d; h = 4C.

    efficientvit `GLUMBConv`, diffusers `GLUMBConv(norm_type="rms_norm")`. x: [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        layer = dict(dtype=dtype, device=device, operations=operations)
        hidden = GLU_EXPAND_RATIO * channels
        self.inverted_conv = ConvLayer(channels, 2 * hidden, 1, bias=True, act=True, **layer)
        self.depth_conv = ConvLayer(2 * hidden, 2 * hidden, GLU_DEPTH_KERNEL, groups=2 * hidden, bias=True, **layer)
        self.point_conv = ConvLayer(hidden, channels, 1, bias=False, norm=True, **layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(x * F.silu(gate))


class EfficientViTBlock(nn.Module):
    """EViT block: x + LiteMLA(x), then + GLUMBConv (keys `context_module.main.*`, `local_module.main.*`)."""

    def __init__(self, channels: int, head_dim: int, scales: tuple[int, ...], dtype=None, device=None,
                 operations=None):
        super().__init__()
        layer = dict(dtype=dtype, device=device, operations=operations)
        self.context_module = ResidualBlock(LiteMLA(channels, head_dim, scales, **layer))
        self.local_module = ResidualBlock(GLUMBConv(channels, **layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))
