"""DC-AE f32c32 (Sana's autoencoder): typed config, encoder, decoder and the top-level model with tiled encode/decode.

Source: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models" (arXiv 2410.10733);
mit-han-lab/efficientvit `efficientvit/models/efficientvit/dc_ae.py` (the `dc-ae-f32c32-sana-1.0` / `-1.1` config:
widths 128-256-512-512-1024-1024, encoder depths 2-2-2-3-3-3, decoder depths 3-3-3-3-3-3, ResBlock x3 then
EViT-S5-GLU x3) and diffusers `AutoencoderDC` (numerical reference). Both Sana 1.0 and 1.1 VAEs use this architecture.
Module names reproduce the original checkpoint keys (339 tensors); see `dcae_checkpoint.py` for the diffusers layout.

The latent is the raw encoder output: the 0.41407 scaling (`SANA_LATENT_SCALE`) belongs to the latent format, never
to `encode`/`decode`. Images are [B, 3, H, W] in [-1, 1] with H, W multiples of 32.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dcae_blocks import RESAMPLE_FACTOR, TRUNK_KERNEL, ConvLayer, EfficientViTBlock, OpSequential, ResBlockMain
from .dcae_blocks import ResidualBlock, RMSNorm2d, channel_duplicate
from .tiling import TilingOptions, available_memory, estimate_peak_bytes, tiled_decode, tiled_encode

# diffusers `dc-ae-f32c32-sana-1.0-diffusers` config.json `scaling_factor`; applied by the latent format only.
SANA_LATENT_SCALE = 0.41407
# Block type names of the efficientvit config strings ("ResBlock", "EViTS5_GLU").
RES_BLOCK = "ResBlock"
EVIT_BLOCK = "EViT_GLU"
# Linear-attention head width of LiteMLA in every released DC-AE (efficientvit `dim=32`).
DEFAULT_HEAD_DIM = 32
# Nearest x2 then 3x3 conv as 2x2 convs: SUBPIXEL_TAPS[phase][tap][k] = 1 when 3x3 tap k lands on 2x2 tap `tap` of
# output phase `phase` (phase 0 reads input rows i-1, i: [w0, w1 + w2]; phase 1 reads rows i, i+1: [w0 + w1, w2]).
SUBPIXEL_TAPS = (((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1)))
# Multi-scale aggregation kernel of the EViT-S5 stages (efficientvit "EViTS5_GLU": scales=(5,)).
S5_KERNEL = 5

_SANA_WIDTHS = (128, 256, 512, 512, 1024, 1024)
_SANA_BLOCKS = (RES_BLOCK,) * 3 + (EVIT_BLOCK,) * 3
_SANA_SCALES = ((), (), (), (S5_KERNEL,), (S5_KERNEL,), (S5_KERNEL,))


@dataclass
class DCAEConfig:
    """Architecture of a DC-AE whose stages all hold at least one block; defaults are `dc-ae-f32c32-sana-1.x`.

    Args:
        in_channels: image channels (3).
        latent_channels: latent channels (32).
        encoder_widths / decoder_widths: channel width of each stage, stage 0 = full resolution.
        encoder_depths / decoder_depths: number of blocks per stage (without the down/upsample).
        encoder_block_types / decoder_block_types: "ResBlock" or "EViT_GLU" per stage.
        encoder_scales / decoder_scales: LiteMLA multi-scale kernels per stage (empty for ResBlock stages).
        head_dim: LiteMLA head width.
    """

    in_channels: int = 3
    latent_channels: int = 32
    encoder_widths: tuple[int, ...] = _SANA_WIDTHS
    decoder_widths: tuple[int, ...] = _SANA_WIDTHS
    encoder_depths: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_depths: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    encoder_block_types: tuple[str, ...] = _SANA_BLOCKS
    decoder_block_types: tuple[str, ...] = _SANA_BLOCKS
    encoder_scales: tuple[tuple[int, ...], ...] = _SANA_SCALES
    decoder_scales: tuple[tuple[int, ...], ...] = _SANA_SCALES
    head_dim: int = DEFAULT_HEAD_DIM

    def __post_init__(self):
        for side in ("encoder", "decoder"):
            widths = tuple(getattr(self, f"{side}_widths"))
            fields = {name: tuple(getattr(self, f"{side}_{name}")) for name in ("depths", "block_types", "scales")}
            for name, values in fields.items():
                if len(values) != len(widths):
                    raise ValueError(f"DCAEConfig: {side}_{name} has {len(values)} entries but {side}_widths has "
                                     f"{len(widths)}; give one entry per stage.")
            for stage, width in enumerate(widths):
                self._check_stage(side, stage, width, fields["depths"][stage], fields["block_types"][stage])
        if self.encoder_widths[-1] % self.latent_channels or self.decoder_widths[-1] % self.latent_channels:
            raise ValueError(f"DCAEConfig: the last stage widths ({self.encoder_widths[-1]}, {self.decoder_widths[-1]})"
                             f" must be multiples of latent_channels={self.latent_channels}.")

    def _check_stage(self, side: str, stage: int, width: int, depth: int, kind: str) -> None:
        if depth < 1:
            raise ValueError(f"DCAEConfig: {side} stage {stage} has depth {depth}; only DC-AE variants whose stages "
                             f"all hold blocks (the f32c32-sana family) are supported, not the in/mix variants.")
        if kind not in (RES_BLOCK, EVIT_BLOCK):
            raise ValueError(f"DCAEConfig: {side} stage {stage} block type '{kind}' is unknown; expected "
                             f"'{RES_BLOCK}' or '{EVIT_BLOCK}'.")
        if kind == EVIT_BLOCK and width % self.head_dim:
            raise ValueError(f"DCAEConfig: {side} stage {stage} width {width} is not a multiple of head_dim "
                             f"{self.head_dim}.")

    @property
    def downsample_factor(self) -> int:
        """Spatial compression: 2 ** (number of stages - 1) (32 for f32c32)."""
        return RESAMPLE_FACTOR ** (len(self.encoder_widths) - 1)


def _layout(x: torch.Tensor, kind: str) -> torch.Tensor:
    """x in the memory layout its stage runs fastest in (a no-op when it already is): channels-last for ResBlock
    stages (oneDNN 3x3 convolutions and RMSNorm2d's channel reductions are markedly faster on NHWC, measured on CPU),
    contiguous NCHW for EViT stages (their 1x1 convolutions take the GEMM path, which returns NCHW anyway)."""
    return x.contiguous(memory_format=torch.channels_last if kind == RES_BLOCK else torch.contiguous_format)


def _make_block(kind: str, width: int, head_dim: int, scales: tuple[int, ...], layer: dict) -> nn.Module:
    if kind == RES_BLOCK:
        return ResidualBlock(ResBlockMain(width, **layer))
    elif kind == EVIT_BLOCK:
        return EfficientViTBlock(width, head_dim, tuple(scales), **layer)
    else:
        raise ValueError(f"DC-AE block type '{kind}' is unknown; expected '{RES_BLOCK}' or '{EVIT_BLOCK}'.")


class InterpolateConvUp(nn.Module):
    """Nearest x2 upsample followed by a 3x3 conv (efficientvit `InterpolateConvUpSampleLayer`; key `conv.conv.*`).

    Computed in the exactly equivalent sub-pixel form: output phase (a, b) at (i, j) is a 2x2 conv of the padded
    low-resolution input at (i + a, j + b), whose taps are sums of the 3x3 taps (`SUBPIXEL_TAPS`). One conv with
    4 x C_out outputs does all phases: no 4x larger interpolated input, and 16 instead of 36 multiply-adds per input
    pixel and channel pair. With `fuse_shortcut` the block's channel-duplicating shortcut (`channel_duplicate`, which
    copies input channel k // repeats into sub-pixel (a, b) of output channel c, k = 4c + 2a + b) is added to the tap
    that reads x[i, j], so the shortcut costs no extra pass. x: [B, C_in, H, W] -> [B, C_out, 2H, 2W].
    """

    def __init__(self, in_channels: int, out_channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.conv = ConvLayer(in_channels, out_channels, TRUNK_KERNEL, bias=True, dtype=dtype, device=device,
                              operations=operations)

    def _phase_kernels(self, dtype: torch.dtype, device: torch.device, fuse_shortcut: bool):
        """(weight [4*C_out, C_in, 2, 2], bias [4*C_out]) with output channels ordered (phase a, phase b, c)."""
        weight = self.conv.conv.weight.to(device=device, dtype=torch.float32)  # [O, I, 3, 3]
        out_channels, in_channels = weight.shape[:2]
        taps = torch.tensor(SUBPIXEL_TAPS, dtype=torch.float32, device=device)  # [phase, 2x2 tap, 3x3 tap]
        combine = torch.einsum("apr,bqc->abpqrc", taps, taps).flatten(0, 3).flatten(1)  # [(a, b, p, q), (r, c)]
        kernels = (weight.flatten(2).flatten(0, 1) @ combine.T).view(out_channels, in_channels, 2, 2, 2, 2)
        kernels = kernels.permute(2, 3, 0, 1, 4, 5).contiguous()  # [a, b, O, I, p, q]
        if fuse_shortcut:
            phases = RESAMPLE_FACTOR ** 2
            repeats = out_channels * phases // in_channels
            channel = torch.arange(out_channels, device=device)
            for a in range(RESAMPLE_FACTOR):
                for b in range(RESAMPLE_FACTOR):
                    source = (phases * channel + RESAMPLE_FACTOR * a + b) // repeats
                    kernels[a, b, channel, source, 1 - a, 1 - b] += 1  # tap (1 - a, 1 - b) reads x[i, j]
        bias = self.conv.conv.bias.to(device=device, dtype=dtype).repeat(RESAMPLE_FACTOR ** 2)
        return kernels.reshape(-1, in_channels, 2, 2).to(dtype), bias

    def forward(self, x: torch.Tensor, fuse_shortcut: bool = False) -> torch.Tensor:
        batch, _, height, width = x.shape
        kernels, bias = self._phase_kernels(x.dtype, x.device, fuse_shortcut)
        phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels, bias)  # [B, 4*C_out, H+1, W+1]
        channels = phases.shape[1] // RESAMPLE_FACTOR ** 2
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((batch, channels, RESAMPLE_FACTOR * height, RESAMPLE_FACTOR * width), dtype=x.dtype,
                          device=x.device, memory_format=layout)
        grid = out.unflatten(3, (width, RESAMPLE_FACTOR)).unflatten(2, (height, RESAMPLE_FACTOR))  # [B,C,H,2,W,2]
        for a in range(RESAMPLE_FACTOR):
            for b in range(RESAMPLE_FACTOR):
                phase = (a * RESAMPLE_FACTOR + b) * channels
                grid[:, :, :, a, :, b] = phases[:, phase:phase + channels, a:a + height, b:b + width]
        return out


class UpsampleBlock(nn.Module):
    """Decoder stage entry: InterpolateConvUp + channel-duplicating shortcut (key `main.conv.conv.*`).

    In float32 the shortcut is folded into the conv taps (exact: the added 1.0 perturbs a tap by at most float32
    rounding of ~1e-7). In bf16 / fp16 a weight of ~1e-2 next to 1.0 would lose most of its bits, so the shortcut is
    added separately there, in the activation dtype as efficientvit does.
    """

    def __init__(self, in_channels: int, out_channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.main = InterpolateConvUp(in_channels, out_channels, dtype=dtype, device=device, operations=operations)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return self.main(x, fuse_shortcut=True)
        return self.main(x).add_(channel_duplicate(x, self.out_channels, RESAMPLE_FACTOR))


class DCAEEncoder(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] -> raw latent [B, latent_channels, H/32, W/32] (keys `encoder.*`)."""

    def __init__(self, config: DCAEConfig, dtype=None, device=None, operations=None):
        super().__init__()
        layer = dict(dtype=dtype, device=device, operations=operations)
        self.config = config
        widths = config.encoder_widths
        self.project_in = ConvLayer(config.in_channels, widths[0], TRUNK_KERNEL, bias=True, **layer)
        stages = []
        for s, (width, depth) in enumerate(zip(widths, config.encoder_depths, strict=True)):
            ops = [_make_block(config.encoder_block_types[s], width, config.head_dim, config.encoder_scales[s], layer)
                   for _ in range(depth)]
            if s < len(widths) - 1:
                down = ConvLayer(width, widths[s + 1], TRUNK_KERNEL, stride=RESAMPLE_FACTOR, bias=True, **layer)
                ops.append(ResidualBlock(down, "average", widths[s + 1], RESAMPLE_FACTOR))
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)
        out = ConvLayer(widths[-1], config.latent_channels, TRUNK_KERNEL, bias=True, **layer)
        self.project_out = ResidualBlock(OpSequential([out]), "average", config.latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kinds = self.config.encoder_block_types
        x = self.project_in(_layout(x, kinds[0]))
        for stage, kind in zip(self.stages, kinds, strict=True):
            x = stage(_layout(x, kind))
        return self.project_out(x)


class DCAEDecoder(nn.Module):
    """Raw latent [B, latent_channels, h, w] -> image [B, 3, 32h, 32w] in about [-1, 1] (keys `decoder.*`)."""

    def __init__(self, config: DCAEConfig, dtype=None, device=None, operations=None):
        super().__init__()
        layer = dict(dtype=dtype, device=device, operations=operations)
        self.config = config
        widths = config.decoder_widths
        project_in = ConvLayer(config.latent_channels, widths[-1], TRUNK_KERNEL, bias=True, **layer)
        self.project_in = ResidualBlock(project_in, "duplicate", widths[-1], 1)
        stages = []
        for s, (width, depth) in enumerate(zip(widths, config.decoder_depths, strict=True)):
            ops = []
            if s < len(widths) - 1:
                ops.append(UpsampleBlock(widths[s + 1], width, **layer))
            ops += [_make_block(config.decoder_block_types[s], width, config.head_dim, config.decoder_scales[s], layer)
                    for _ in range(depth)]
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)
        self.project_out = OpSequential([
            RMSNorm2d(widths[0], **layer),
            nn.ReLU(inplace=True),
            ConvLayer(widths[0], config.in_channels, TRUNK_KERNEL, bias=True, **layer),
        ])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        kinds = self.config.decoder_block_types
        x = self.project_in(z)
        for stage, kind in zip(reversed(self.stages), reversed(kinds), strict=True):
            x = stage(_layout(x, kind))
        return self.project_out(_layout(x, kinds[0]))


class DCAE(nn.Module):
    """DC-AE autoencoder with `encode`/`decode` that tile automatically when a full pass would not fit in memory.

    Build with a `DCAEConfig` or its fields as keyword arguments (ComfyUI-style `**config` splat). `tiling` holds
    the default `TilingOptions` (mode "auto" / "always" / "never", tile and overlap sizes in latent pixels).
    """

    def __init__(self, config: DCAEConfig | None = None, *, tiling: TilingOptions | None = None, dtype=None,
                 device=None, operations=None, **config_fields):
        super().__init__()
        if config is None:
            config = DCAEConfig(**config_fields)
        elif config_fields:
            raise ValueError(f"DCAE: pass either a DCAEConfig or config fields, not both (got {sorted(config_fields)})")
        operations = nn if operations is None else operations
        self.config = config
        self.tiling = TilingOptions() if tiling is None else tiling
        self.encoder = DCAEEncoder(config, dtype=dtype, device=device, operations=operations)
        self.decoder = DCAEDecoder(config, dtype=dtype, device=device, operations=operations)

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent pixel along each side (32)."""
        return self.config.downsample_factor

    def _full_encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image).contiguous()

    def _full_decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent).contiguous()

    @torch.no_grad()
    def encode(self, image: torch.Tensor, tiling: TilingOptions | None = None) -> torch.Tensor:
        """image: [B, 3, H, W] in [-1, 1], H and W multiples of 32 -> raw latent [B, 32, H/32, W/32] (not scaled)."""
        factor = self.downsample_factor
        wrong_channels = image.ndim != 4 or image.shape[1] != self.config.in_channels
        if wrong_channels or image.shape[-2] % factor or image.shape[-1] % factor:
            raise ValueError(f"DCAE.encode: expected an image [B, {self.config.in_channels}, H, W] with H and W "
                             f"multiples of {factor}, got shape {tuple(image.shape)}; crop or pad the image first.")
        options = self.tiling if tiling is None else tiling
        if options.should_tile(self.estimate_encode_bytes(image.shape, image.dtype), available_memory(image.device),
                               image.shape[-2] // factor, image.shape[-1] // factor):
            return tiled_encode(self._full_encode, image, options, factor, self.config.latent_channels)
        return self._full_encode(image)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tiling: TilingOptions | None = None) -> torch.Tensor:
        """latent: raw [B, 32, h, w] (not scaled) -> image [B, 3, 32h, 32w], about [-1, 1] (not clamped)."""
        if latent.ndim != 4 or latent.shape[1] != self.config.latent_channels:
            raise ValueError(f"DCAE.decode: expected a latent [B, {self.config.latent_channels}, h, w], got shape "
                             f"{tuple(latent.shape)}.")
        options = self.tiling if tiling is None else tiling
        if options.should_tile(self.estimate_decode_bytes(latent.shape, latent.dtype), available_memory(latent.device),
                               latent.shape[-2], latent.shape[-1]):
            return tiled_decode(self._full_decode, latent, options, self.downsample_factor, self.config.in_channels)
        return self._full_decode(latent)

    def estimate_decode_bytes(self, latent_shape, dtype: torch.dtype) -> int:
        """Peak activation bytes of one full decode of a latent of `latent_shape` ([B, C, h, w])."""
        config = self.config
        return estimate_peak_bytes(config.decoder_widths, config.decoder_block_types, latent_shape, dtype, True)

    def estimate_encode_bytes(self, image_shape, dtype: torch.dtype) -> int:
        """Peak activation bytes of one full encode of an image of `image_shape` ([B, 3, H, W])."""
        config, factor = self.config, self.downsample_factor
        latent_shape = (image_shape[0], config.latent_channels, image_shape[-2] // factor, image_shape[-1] // factor)
        return estimate_peak_bytes(config.encoder_widths, config.encoder_block_types, latent_shape, dtype, False)
