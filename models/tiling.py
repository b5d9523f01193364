"""Tiled encode/decode with overlap blending, and the activation-memory estimate that decides when to tile.

Pure PyTorch. Tiles are laid out on the latent grid (one latent pixel = 32 image pixels for DC-AE f32c32), spread
evenly so every overlap is at least `overlap` latent pixels, and blended with linear ramps that span exactly the
overlap with each neighbour, normalised by the summed weights (a partition of unity). DC-AE's linear attention is
global, so a tile never equals the matching crop of a full pass; the ramps hide the difference without a seam.

Reference for the idea: diffusers `AutoencoderDC.tiled_decode` (tile 512 px, stride 448, linear blend along the
previous tile only); ComfyUI `comfy.utils.tiled_scale` (feathered masks). This file is an independent implementation.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Default tile and overlap in latent pixels (16 -> 512 px tiles, 4 -> 128 px of blending). Larger overlaps than
# diffusers' 2 latent pixels (64 px) keep the global-attention difference between tiles below visibility.
DEFAULT_TILE = 16
DEFAULT_OVERLAP = 4
# Share of the currently available memory a full pass may use before "auto" switches to tiles; the rest is headroom
# for the allocator and for buffers the estimate does not count.
DEFAULT_MEMORY_FRACTION = 0.8
TILING_MODES = ("auto", "always", "never")

# Peak live activations per stage, in tensors of the stage's width at the stage's resolution. ResBlock stages: input,
# conv1, conv2 and norm outputs plus oneDNN's reordered input; measured with `tests/benchmarks/bench_dcae.py` on CPU
# float32 as 5.5 (decode peak 268 MiB at 256 px, 793 MiB at 512 px: 175 MiB per 65536 px of 128 channels; 2326 MiB
# at 1024 px against an estimate of 3072 MiB, so the estimate errs on the safe side).
# EViT stages: input + 8C inverted + 8C depthwise + 2 x 4C GLU gate (never the peak in f32c32). Upsample entry:
# 4 sub-pixel phases + pixel_shuffle + duplicated shortcut.
RES_STAGE_TENSORS = 6
EVIT_STAGE_TENSORS = 22
UPSAMPLE_TENSORS = 5
# Block-type name of ResBlock stages (the string of `models.dcae.RES_BLOCK`; dcae.py imports this module).
RES_BLOCK_NAME = "ResBlock"
# Bytes per element of the float32 statistics in RMSNorm / attention, which run in float32 for any dtype.
FLOAT32_BYTES = 4


@dataclass(frozen=True)
class TilingOptions:
    """When and how to tile.

    mode: "auto" (tile when the estimated peak exceeds `memory_fraction` of the available memory), "always" (tile
    whenever the latent is larger than one tile) or "never". tile / overlap: in latent pixels. progress: optional
    `progress(done, total)` called after each tile (ComfyUI's adapter reports progress and checks interrupts).
    """

    mode: str = "auto"
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    progress: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.mode not in TILING_MODES:
            raise ValueError(f"TilingOptions: mode '{self.mode}' is unknown; expected one of {TILING_MODES}.")
        if self.tile < 1 or not 0 <= self.overlap <= self.tile // 2:
            raise ValueError(f"TilingOptions: tile={self.tile}, overlap={self.overlap} latent pixels; expected "
                             f"tile >= 1 and 0 <= overlap <= tile / 2.")

    def should_tile(self, needed_bytes: int, available_bytes: int | None, height: int, width: int) -> bool:
        """Decide for a latent grid of height x width whose full pass needs `needed_bytes`."""
        larger_than_tile = height > self.tile or width > self.tile
        if self.mode == "never" or not larger_than_tile:
            return False
        elif self.mode == "always":
            return True
        elif self.mode == "auto":
            return available_bytes is not None and needed_bytes > self.memory_fraction * available_bytes
        else:
            raise ValueError(f"TilingOptions: mode '{self.mode}' is unknown; expected one of {TILING_MODES}.")


def available_memory(device: torch.device) -> int | None:
    """Bytes that a pass on `device` can still allocate, or None when unknown (then "auto" never tiles).

    CUDA: free device memory plus memory cached but unused by PyTorch's allocator. CPU: MemAvailable of Linux's
    /proc/meminfo.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    elif device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024  # the file gives kB
        except OSError:
            return None
        return None
    else:
        return None


def estimate_peak_bytes(widths, block_types, latent_shape, dtype: torch.dtype, upsample: bool) -> int:
    """Peak activation bytes of a full DC-AE encoder or decoder pass (weights not included).

    widths / block_types: per stage, stage 0 at full resolution; latent_shape: [B, C, h, w]; upsample: True for the
    decoder (each stage but the last starts with an upsample). The maximum over stages of tensors x width x pixels.
    """
    batch, _, height, width = latent_shape
    element = max(torch.empty((), dtype=dtype).element_size(), FLOAT32_BYTES)
    peak = 0
    for stage, (channels, kind) in enumerate(zip(widths, block_types, strict=True)):
        pixels = batch * height * width * (2 ** (len(widths) - 1 - stage)) ** 2
        tensors = RES_STAGE_TENSORS if kind == RES_BLOCK_NAME else EVIT_STAGE_TENSORS
        if upsample and stage < len(widths) - 1:
            tensors = max(tensors, UPSAMPLE_TENSORS)
        peak = max(peak, tensors * channels * pixels * element)
    return peak


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread tile origins covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def blend_ramp(size: int, before: int, after: int) -> torch.Tensor:
    """1-D weights of one tile: linear ramp up over its first `before` samples, down over its last `after`.

    Opposite ramps over the same overlap sum to one: (i + 0.5) / n and 1 - (i + 0.5) / n.
    """
    weights = torch.ones(size)
    if before > 0:
        weights[:before] = (torch.arange(before) + 0.5) / before
    if after > 0:
        weights[size - after:] = torch.minimum(weights[size - after:], (torch.arange(after, 0, -1) - 0.5) / after)
    return weights


def _axis_tiles(length: int, tile: int, overlap: int, scale: int) -> list[tuple[int, int, torch.Tensor]]:
    """(start, size, output-space ramp) of every tile along one axis of the latent grid."""
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    tiles = []
    for i, start in enumerate(starts):
        before = starts[i - 1] + size - start if i > 0 else 0
        after = start + size - starts[i + 1] if i + 1 < len(starts) else 0
        tiles.append((start, size, blend_ramp(size * scale, before * scale, after * scale)))
    return tiles


def tiled_apply(fn, x: torch.Tensor, options: TilingOptions, in_scale: int, out_scale: int,
                out_channels: int) -> torch.Tensor:
    """Apply `fn` tile by tile and blend; tiles are laid out on the latent grid.

    x: [B, C, h * in_scale, w * in_scale]; fn maps a tile [B, C, t * in_scale, t' * in_scale] to
    [B, out_channels, t * out_scale, t' * out_scale]. Returns [B, out_channels, h * out_scale, w * out_scale] in x's
    dtype, accumulated in float32.
    """
    batch, _, height, width = x.shape
    rows = _axis_tiles(height // in_scale, options.tile, options.overlap, out_scale)
    cols = _axis_tiles(width // in_scale, options.tile, options.overlap, out_scale)
    out_shape = (batch, out_channels, height // in_scale * out_scale, width // in_scale * out_scale)
    out = torch.zeros(out_shape, dtype=torch.float32, device=x.device)
    total = torch.zeros(out_shape[-2:], dtype=torch.float32, device=x.device)
    done = 0
    for row, rows_size, row_ramp in rows:
        for col, cols_size, col_ramp in cols:
            tile_in = x[..., row * in_scale:(row + rows_size) * in_scale, col * in_scale:(col + cols_size) * in_scale]
            weight = (row_ramp[:, None] * col_ramp[None, :]).to(x.device)
            window = (..., slice(row * out_scale, (row + rows_size) * out_scale),
                      slice(col * out_scale, (col + cols_size) * out_scale))
            out[window] += fn(tile_in).float() * weight
            total[window[1:]] += weight
            done += 1
            if options.progress is not None:
                options.progress(done, len(rows) * len(cols))
    return (out / total).to(x.dtype)


def tiled_decode(decode_fn, latent: torch.Tensor, options: TilingOptions, factor: int, out_channels: int):
    """Decode [B, C, h, w] tile by tile -> [B, out_channels, h * factor, w * factor]."""
    return tiled_apply(decode_fn, latent, options, 1, factor, out_channels)


def tiled_encode(encode_fn, image: torch.Tensor, options: TilingOptions, factor: int, latent_channels: int):
    """Encode [B, 3, H, W] (H, W multiples of `factor`) tile by tile -> [B, latent_channels, H / factor, W / factor]."""
    return tiled_apply(encode_fn, image, options, factor, 1, latent_channels)


def tile_borders(length: int, options: TilingOptions, scale: int) -> list[int]:
    """Output positions (in samples, scale per latent pixel) where a tile starts or ends inside [1, length*scale)."""
    starts = tile_starts(length, options.tile, options.overlap)
    size = min(options.tile, length)
    edges = {start * scale for start in starts} | {(start + size) * scale for start in starts}
    return sorted(edge for edge in edges if 0 < edge < length * scale)


def seam_ratio(image: torch.Tensor, rows: list[int], cols: list[int], period: int = 1) -> float:
    """Mean |gradient| across the given borders / mean |gradient| across every other position of the same phase.

    image: [B, C, H, W]; rows / cols: border positions p (the step between p - 1 and p). With period 1 the reference
    is every interior step; with period 32 only other latent-pixel boundaries, which a 32x decoder marks by itself.
    1.0 means the borders are as smooth as the rest of the image.
    """
    image = image.float()
    steps_y = (image[:, :, 1:] - image[:, :, :-1]).abs().mean(dim=(0, 1, 3))  # step p-1 -> p at index p-1
    steps_x = (image[..., 1:] - image[..., :-1]).abs().mean(dim=(0, 1, 2))
    border, reference = [], []
    for steps, borders in ((steps_y, set(rows)), (steps_x, set(cols))):
        for position in range(period, steps.numel() + 1, period):
            (border if position in borders else reference).append(steps[position - 1])
    if not border or not reference:
        raise ValueError("seam_ratio needs at least one border and one other position of the same phase.")
    return (torch.stack(border).mean() / torch.stack(reference).mean()).item()
