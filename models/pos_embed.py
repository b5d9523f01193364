"""Position encodings of the Sana linear DiT: none (Sana 1.0/1.5/Sprint at 512/1024 px) and 2-D sin-cos (2K/4K).

Sources: NVlabs/Sana `diffusion/model/nets/sana.py` (`get_2d_sincos_pos_embed`, numpy, positions in float32 and
frequencies in float64) and `sana_multi_scale.py` (`_apply_positional_embedding`, recomputed per latent grid);
diffusers `models/embeddings.py` (`get_2d_sincos_pos_embed`, same formula in torch). See docs/ARCHITECTURE.md §8.4.

The DiT builds one `PositionEncoding` per forward call (`build_position_encoding`) and hands it to every block:
`add_to_tokens` runs once after the patch embedding, and `rotate` is the seam through which the 2-D RoPE variants
(models/rope.py) reach the linear self-attention (`dit_blocks.LinearSelfAttention`). Which encoding a call uses is the
checkpoint's declaration plus inference overrides (`rope.resolve_encoding`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .rope import build_rope, resolve_encoding

# NVlabs `get_1d_sincos_pos_embed_from_grid`: omega_i = 1 / 10000^(i / (D/4)).
SINCOS_MAX_PERIOD = 10000.0

# Rotation of ReLU kernels [B, heads, N, head_dim] -> same shape (see dit_blocks.LinearSelfAttention).
# The DiT's timesteps are sigma * 1000 (docs/ARCHITECTURE.md §2, ComfyUI ModelSamplingDiscreteFlow multiplier).
TIMESTEP_SCALE = 1000.0
Rotate = Callable[[torch.Tensor], torch.Tensor]


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos embedding [sin(p*omega), cos(p*omega)].

    positions: [M] (any float dtype; promoted to float64). Returns [M, dim] float64.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    omega = 1.0 / SINCOS_MAX_PERIOD**omega
    args = torch.outer(positions.reshape(-1).to(torch.float64), omega)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def sincos_2d(dim: int, height: int, width: int, base_size: int, interpolation: float,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Sana's 2-D sin-cos position embedding for an h x w token grid, flattened row-major.

    Each axis is stretched to span [0, base_size / interpolation) whatever its length (NVlabs `sana.py`): grid
    coordinate i maps to i / (len / base_size) / interpolation, computed in float32 as NVlabs and diffusers do. The
    first dim/2 channels encode the **width** coordinate, the second half the height (meshgrid puts w first).
    Returns [height * width, dim] float32.
    """
    grid_h = torch.arange(height, dtype=torch.float32, device=device) / (height / base_size) / interpolation
    grid_w = torch.arange(width, dtype=torch.float32, device=device) / (width / base_size) / interpolation
    w_coord = grid_w[None, :].expand(height, width)
    h_coord = grid_h[:, None].expand(height, width)
    emb = torch.cat([sincos_1d(dim // 2, w_coord), sincos_1d(dim // 2, h_coord)], dim=1)
    return emb.to(torch.float32)


@dataclass(frozen=True)
class PositionEncoding:
    """Position encoding of one forward call, for one latent grid.

    additive: [1, N, C] added to the patch tokens (sin-cos), or None.
    rotate: callable applied to the ReLU kernels q and k inside linear attention ([B, heads, N, 32] -> same), or None.
    """

    additive: torch.Tensor | None = None
    rotate: Rotate | None = None

    def add_to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, C] patch tokens -> x plus the additive embedding (unchanged when there is none)."""
        if self.additive is None:
            return x
        return x + self.additive.to(dtype=x.dtype, device=x.device)


def position_encoding_mode(config, overrides: dict | None = None) -> str:
    """The encoding a forward call uses: "none", "sincos" or "rope" (checkpoint declaration plus overrides)."""
    return resolve_encoding(config, overrides).kind


def build_position_encoding(config, height: int, width: int, *, device=None, dtype=torch.float32,
                            rope_options: dict | None = None, overrides: dict | None = None,
                            timesteps: torch.Tensor | None = None) -> PositionEncoding:
    """Build the per-call encoding for an h x w token grid from the DiT config (`pos_encoding`, `use_pe`,
    `pe_interpolation`, `base_size`, `hidden_size`, `rope`).

    rope_options: ComfyUI `transformer_options["rope_options"]` (ScaleROPE), applied to RoPE positions only.
    overrides: `transformer_options["sana_pos_encoding"]` (SanaPositionEncoding node; see rope.resolve_encoding).
    timesteps: [B] sigma * 1000, needed by time-aware RoPE. Raises ValueError for a mode this module does not know.
    """
    choice = resolve_encoding(config, overrides)
    if choice.kind == "none":
        return PositionEncoding()
    elif choice.kind == "sincos":
        pe = sincos_2d(config.hidden_size, height, width, choice.base_size, choice.pe_interpolation, device=device)
        return PositionEncoding(additive=pe.unsqueeze(0).to(dtype))
    elif choice.kind == "rope":
        sigma = None if timesteps is None else timesteps.reshape(-1).float() / TIMESTEP_SCALE
        return PositionEncoding(rotate=build_rope(choice.rope, (height, width), sigma, rope_options, device))
    else:
        raise ValueError(f"unknown position encoding mode '{choice.kind}'; expected 'none', 'sincos' or 'rope'")
