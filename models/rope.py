"""2-D axial rotary position encoding (RoPE) for Sana's ReLU linear attention, and its scaled variants.

Sources: RoPE, Su et al., RoFormer (arXiv 2104.09864), §3.2 (rotation) and §3.3 Eq. 19 (RoPE inside linear attention);
axial 2-D RoPE as in ComfyUI `comfy/ldm/flux/math.py` (`rope`, `apply_rope`); position interpolation (PI), Chen et
al. (arXiv 2306.15595); NTK-aware base scaling (bloc97, quoted in YaRN §3.1); YaRN, Peng et al. (arXiv 2309.00071)
§3.2–3.4; Seedream 2.0 "Scaled RoPE" (arXiv 2503.07703, no public code); Lumina-Next time-aware scaled RoPE (arXiv
2406.18583 §2.3, code: diffusers `pipelines/lumina/pipeline_lumina.py`, `scaling_watershed`).

Layout. A Sana linear-attention head has 32 channels. Channels [0, 16) rotate with the row coordinate (y, latent
height axis) and channels [16, 32) with the column coordinate (x, width axis); inside each half, channel pairs
(2j, 2j+1) rotate by the angle p·ω_j with ω_j = θ^(−2j/16), j = 0..7, θ = 10000 (Flux's `rope(pos, dim, theta)`
per axis).

Formulation in linear attention (RoFormer Eq. 19). With kernel φ = ReLU and rotation R_p,
    out_m = Σ_n (R_m φ(q_m))ᵀ (R_n φ(k_n)) v_n / (Σ_n φ(q_m)ᵀ φ(k_n) + ε).
The numerator rotates the kernelled q and k, so it depends on p_n − p_m only (R_mᵀ R_n = R_{n−m}) and can still be
evaluated in O(N·d²) as (R φ(q)) · [Σ_n (R_n φ(k_n)) v_nᵀ]. The denominator keeps the un-rotated kernels: a sum of
products of non-negative features, so it stays positive exactly as in the NoPE Sana model, whereas a rotated denominator
can cross zero and divide by ~0. Consequences: (1) only relative positions matter, so a uniform shift of all positions
(ComfyUI `shift_x`/`shift_y`) leaves the output unchanged; (2) a scale applied to q and k cancels between numerator and
denominator, so an attention temperature cannot be applied the softmax way. YaRN's temperature is therefore applied
where YaRN's reference code applies it, as a factor `mscale` on the cos/sin tables: in this formulation it multiplies
the rotated numerator by mscale² relative to the positive normaliser, compensating the extra cancellation of rotated
terms when the grid grows.

Scaling. s = sqrt(H·W / (H0·W0)) is one isotropic factor from the token area (Lumina-Next's `scale_factor`), so an
aspect ratio that keeps the training area is left alone (Sana trains multi-aspect buckets at one area). "scaled"
rescales positions for any s (also stretching grids smaller than the training one); NTK, YaRN and time-aware act only
for s > 1. Because only relative positions matter, "scaled" equals position interpolation (PI) with stride 1/s.
YaRN's ramp counts rotations over the training side: on Sana's 32-token grid the fastest pair makes 32/(2π) ≈ 5
turns, below the default β = 32, so default YaRN interpolates every pair, mostly fully, and adds the temperature.
"""

import dataclasses
import math
from dataclasses import dataclass

import torch

HEAD_DIM = 32  # Sana LiteLA head dim (docs/ARCHITECTURE.md §8.1, §9)
ROPE_THETA = 10000.0  # RoFormer §3.2 base; Flux uses the same per axis
NUM_AXES = 2  # (y, x) latent grid
YARN_BETA_FAST = 32.0  # YaRN §3.2: ramp upper bound, rotations per training length (LLaMA setting)
YARN_BETA_SLOW = 1.0  # YaRN §3.2: ramp lower bound
YARN_MSCALE_SLOPE = 0.1  # YaRN Eq. 22: sqrt(1/t) = 0.1·ln(s) + 1
PIXEL_CENTRE = 0.5  # token i covers [i, i+1): its centre sits at i + 0.5 (align_corners=False convention)
TRAIN_GRID = (32, 32)  # 1024 px / DC-AE f32 = 32 latent tokens per side (docs/ARCHITECTURE.md §6.2)

SCALINGS = ("none", "scaled", "ntk", "yarn", "time_aware")
PAIR_OUTER = "bhmj,bhnj->bhmnj"  # per channel pair j, every (query m, key n) product


@dataclass(frozen=True)
class RopeConfig:
    """Parameters of the 2-D axial RoPE of one checkpoint plus the scaling chosen at inference.

    head_dim: channels per attention head (32 in Sana), split in halves between the y and x axes.
    theta: RoPE base θ. train_grid: (H0, W0) latent tokens the model was trained on.
    scaling: "none" (plain RoPE, extrapolates), "scaled" (Seedream-style rescale to the training grid),
    "ntk" (NTK-aware base), "yarn" (YaRN ramp + temperature), "time_aware" (Lumina-Next, PI early → NTK late).
    yarn_beta_fast / yarn_beta_slow: YaRN ramp bounds β, α in rotations per training length.
    yarn_temperature: apply YaRN's mscale = 0.1·ln(s) + 1. time_watershed: None for a linear blend in σ, or
    Lumina-Next's hard switch (interpolate while 1 − σ < watershed).
    """

    head_dim: int = HEAD_DIM
    theta: float = ROPE_THETA
    train_grid: tuple[int, int] = TRAIN_GRID
    scaling: str = "none"
    yarn_beta_fast: float = YARN_BETA_FAST
    yarn_beta_slow: float = YARN_BETA_SLOW
    yarn_temperature: bool = True
    time_watershed: float | None = None

    def __post_init__(self):
        if self.head_dim % (2 * NUM_AXES) != 0:
            raise ValueError(f"RopeConfig.head_dim={self.head_dim}: expected a multiple of 4 (two axes of pairs).")
        if self.scaling not in SCALINGS:
            raise ValueError(f"RopeConfig.scaling={self.scaling!r}: expected one of {SCALINGS}.")
        if len(self.train_grid) != NUM_AXES or min(self.train_grid) < 1:
            raise ValueError(f"RopeConfig.train_grid={self.train_grid}: expected two positive token counts (H0, W0).")
        if self.theta <= 1:
            raise ValueError(f"RopeConfig.theta={self.theta}: expected a base > 1 (10000 is the usual value).")
        if not self.yarn_beta_fast > self.yarn_beta_slow:
            raise ValueError(
                f"RopeConfig: yarn_beta_fast={self.yarn_beta_fast} must exceed yarn_beta_slow={self.yarn_beta_slow}."
            )
        if self.time_watershed is not None and not 0 <= self.time_watershed <= 1:
            raise ValueError(f"RopeConfig.time_watershed={self.time_watershed}: expected None or a value in [0, 1].")


def axis_frequencies(dim_axis: int, theta: float) -> torch.Tensor:
    """RoPE angular frequencies of one axis, ω_j = θ^(−2j/dim_axis), j = 0..dim_axis/2 − 1 (RoFormer §3.2).

    Returns [dim_axis/2] float64, highest frequency (ω_0 = 1) first.
    """
    return theta ** (-torch.arange(0, dim_axis, 2, dtype=torch.float64) / dim_axis)


def area_scale(grid: tuple[int, int], train_grid: tuple[int, int]) -> float:
    """Isotropic scale factor s = sqrt(H·W / (H0·W0)) of a latent grid relative to the training grid."""
    return math.sqrt(grid[0] * grid[1] / (train_grid[0] * train_grid[1]))


def scaled_positions(length: int, train_length: int, s: float) -> torch.Tensor:
    """Seedream-style scaled positions: stride 1/s, centre of the grid mapped onto the centre of the training grid.

    p_i = (i + ½ − L/2)/s + L0/2 − ½. For L = s·L0 the token cells cover exactly the training cells [−½, L0 − ½]; at
    s = 1 and L = L0 this is p_i = i. Returns [length] float64.
    """
    i = torch.arange(length, dtype=torch.float64)
    return (i + PIXEL_CENTRE - length / 2) / s + train_length / 2 - PIXEL_CENTRE


def ntk_theta(theta: float, s: float, dim_axis: int) -> float:
    """NTK-aware base, θ' = θ·s^(d/(d−2)) with d the rotary channels of the axis (YaRN §3.1).

    The lowest frequency ω_{d/2−1} = θ^(−(d−2)/d) is then divided by exactly s, while ω_0 = 1 is kept.
    """
    return theta * s ** (dim_axis / (dim_axis - 2))


def yarn_ramp(omega: torch.Tensor, train_length: int, beta_fast: float, beta_slow: float) -> torch.Tensor:
    """YaRN ramp γ(r) ∈ [0, 1] per frequency, r = L0/λ = L0·ω/(2π) rotations over the training length (YaRN §3.2).

    γ = 0 (r < α = beta_slow): interpolate; γ = 1 (r > β = beta_fast): keep; linear in r between.
    """
    r = train_length * omega / (2 * math.pi)
    return ((r - beta_slow) / (beta_fast - beta_slow)).clamp(0, 1)


def yarn_frequencies(omega: torch.Tensor, s: float, train_length: int, beta_fast: float, beta_slow: float):
    """YaRN "NTK-by-parts" frequencies ω' = (1 − γ)·ω/s + γ·ω (YaRN Eq. 18–20). omega: [k] → [k]."""
    gamma = yarn_ramp(omega, train_length, beta_fast, beta_slow)
    return (1 - gamma) * omega / s + gamma * omega


def yarn_mscale(s: float) -> float:
    """YaRN attention factor sqrt(1/t) = 0.1·ln(s) + 1 (YaRN Eq. 22); 1 for s ≤ 1."""
    return YARN_MSCALE_SLOPE * math.log(s) + 1 if s > 1 else 1.0


def time_aware_weight(sigma: torch.Tensor, watershed: float | None) -> torch.Tensor:
    """Interpolation weight λ(σ) ∈ [0, 1] of Lumina-Next's time-aware scaling (1 = PI, 0 = NTK).

    sigma: [B] flow noise level (1 = pure noise, the start of sampling). watershed None: λ = σ, a linear blend along the
    trajectory; watershed w: Lumina-Next's hard switch in its time t = 1 − σ, λ = 1 while t < w else 0.
    """
    sigma = sigma.detach().to("cpu", torch.float64).clamp(0, 1)  # tables are built on the CPU (build_rope)
    if watershed is None:
        return sigma
    return ((1 - sigma) < watershed).to(torch.float64)


def time_aware_frequencies(omega: torch.Tensor, s: float, dim_axis: int, lam: torch.Tensor) -> torch.Tensor:
    """Geometric blend of PI and NTK frequencies: ω(λ) = (ω/s)^λ · ω_NTK^(1−λ). omega: [k], lam: [B] → [B, k].

    With ω_NTK,j = ω_j·s^(−2j/(d−2)) this is ω_j·s^(−λ − (1−λ)·2j/(d−2)): λ = 1 interpolates every frequency (global
    layout early in sampling), λ = 0 keeps the high frequencies (local detail late in sampling).
    """
    j = torch.arange(omega.shape[0], dtype=torch.float64)
    exponent = lam[:, None] + (1 - lam[:, None]) * (2 * j / (dim_axis - 2))
    return omega * s ** (-exponent)


def grid_positions(config: RopeConfig, grid: tuple[int, int], rope_options: dict | None = None):
    """Token positions (y [H], x [W], float64) before any frequency scaling, with ComfyUI's `rope_options` applied.

    scaling "scaled" rescales to the training grid (`scaled_positions`); every other mode uses integer positions.
    ComfyUI `rope_options` (ScaleROPE node, `ModelPatcher.set_model_rope_options`) then map p → p·scale + shift per
    axis, as `comfy/ldm/lumina/model.py` does: scale_y/shift_y for rows, scale_x/shift_x for columns.
    scale_t/shift_t have no axis in an image DiT and are ignored. Shifts cancel in relative attention (see module).
    """
    height, width = grid
    if config.scaling == "scaled":
        s = area_scale(grid, config.train_grid)
        pos_y = scaled_positions(height, config.train_grid[0], s)
        pos_x = scaled_positions(width, config.train_grid[1], s)
    else:
        pos_y = torch.arange(height, dtype=torch.float64)
        pos_x = torch.arange(width, dtype=torch.float64)
    if rope_options:
        pos_y = pos_y * rope_options.get("scale_y", 1.0) + rope_options.get("shift_y", 0.0)
        pos_x = pos_x * rope_options.get("scale_x", 1.0) + rope_options.get("shift_x", 0.0)
    return pos_y, pos_x


def axis_frequency_table(config: RopeConfig, grid: tuple[int, int], axis: int, sigma: torch.Tensor | None):
    """Frequencies of one axis (0 = y, 1 = x) after the configured scaling: [B or 1, head_dim/4] float64."""
    dim_axis = config.head_dim // NUM_AXES
    omega = axis_frequencies(dim_axis, config.theta)
    s_up = max(area_scale(grid, config.train_grid), 1.0)  # NTK / YaRN / time-aware only act on larger grids
    if config.scaling in ("none", "scaled"):
        return omega[None]
    elif config.scaling == "ntk":
        return axis_frequencies(dim_axis, ntk_theta(config.theta, s_up, dim_axis))[None]
    elif config.scaling == "yarn":
        train_length = config.train_grid[axis]
        return yarn_frequencies(omega, s_up, train_length, config.yarn_beta_fast, config.yarn_beta_slow)[None]
    elif config.scaling == "time_aware":
        if sigma is None:
            raise ValueError("RoPE scaling 'time_aware' needs the noise level sigma of the call; none was given.")
        lam = time_aware_weight(sigma.reshape(-1), config.time_watershed)
        return time_aware_frequencies(omega, s_up, dim_axis, lam)
    else:
        raise ValueError(f"RoPE scaling {config.scaling!r}: expected one of {SCALINGS}.")


class AxialRope:
    """Per-call 2-D RoPE of one latent grid: rotation angles and the YaRN gain, ready to rotate q and k.

    angles: [B or 1, 1, N, head_dim/2] float32 rotation angle of every channel pair (N = H·W tokens, row-major).
    gain: factor on the cos/sin tables (YaRN mscale; 1 otherwise); multiplies the rotated numerator by gain².
    """

    def __init__(self, angles: torch.Tensor, gain: float = 1.0):
        self.angles = angles
        self.gain = gain
        self.cos = torch.cos(angles) * gain
        self.sin = torch.sin(angles) * gain

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate channel pairs (2j, 2j+1) of x: [B, heads, N, head_dim] → same shape and dtype (maths in float32)."""
        pairs = x.float().unflatten(-1, (-1, 2))
        x0, x1 = pairs[..., 0], pairs[..., 1]
        # RoFormer §3.2: (x0, x1) → (x0·cos − x1·sin, x0·sin + x1·cos)
        rotated = torch.stack((x0 * self.cos - x1 * self.sin, x0 * self.sin + x1 * self.cos), dim=-1)
        return rotated.flatten(-2).to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of `rotate`, so the object can be passed wherever a `rotate` callable is expected."""
        return self.rotate(x)


def build_rope(config: RopeConfig, grid: tuple[int, int], sigma: torch.Tensor | None = None,
               rope_options: dict | None = None, device=None) -> AxialRope:
    """Build the per-call RoPE of an (H, W) latent grid.

    sigma: [B] flow noise level per sample (needed by "time_aware" only). rope_options: ComfyUI's
    `transformer_options["rope_options"]` (may be None). Tables are computed in float64 on the CPU and moved to device
    as float32. Returns an `AxialRope` whose angles are [B or 1, 1, H·W, head_dim/2].
    """
    pos_y, pos_x = grid_positions(config, grid, rope_options)
    omega_y = axis_frequency_table(config, grid, 0, sigma)
    omega_x = axis_frequency_table(config, grid, 1, sigma)
    height, width = grid
    # angle of pair j at token n = (y, x): p_y·ω_y,j for the first half of the pairs, p_x·ω_x,j for the second
    ang_y = (pos_y[None, :, None] * omega_y[:, None, :]).unsqueeze(2).expand(-1, height, width, -1)
    ang_x = (pos_x[None, :, None] * omega_x[:, None, :]).unsqueeze(1).expand(-1, height, width, -1)
    angles = torch.cat((ang_y, ang_x), dim=-1).flatten(1, 2).unsqueeze(1)
    gain = 1.0
    if config.scaling == "yarn" and config.yarn_temperature:
        gain = yarn_mscale(area_scale(grid, config.train_grid))
    return AxialRope(angles.to(device=device, dtype=torch.float32), gain)


def rope_linear_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: AxialRope | None,
                                    eps: float) -> torch.Tensor:
    """Explicit O(N²) evaluation of RoPE ReLU linear attention, for tests (RoFormer Eq. 19, our denominator choice).

    q, k, v: [B, heads, N, d] projections before the kernel. Builds every pair's score from the relative angle
    Δ = angle_n − angle_m without the `rotate` code path: per channel pair, (R_m a)ᵀ(R_n b) =
    (a0·b0 + a1·b1)·cos Δ + (a1·b0 − a0·b1)·sin Δ. Returns [B, heads, N, d] float64.
    """
    fq, fk, v = torch.relu(q).double(), torch.relu(k).double(), v.double()
    den = (fq @ fk.transpose(-1, -2)).sum(-1, keepdim=True)  # Σ_n φ(q_m)ᵀφ(k_n), un-rotated
    if rope is None:
        scores = fq @ fk.transpose(-1, -2)
    else:
        a, b = fq.unflatten(-1, (-1, 2)), fk.unflatten(-1, (-1, 2))
        delta = rope.angles.double()[..., None, :, :] - rope.angles.double()[..., :, None, :]  # [B, 1, m, n, pairs]
        a0, a1, b0, b1 = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
        dot = torch.einsum(PAIR_OUTER, a0, b0) + torch.einsum(PAIR_OUTER, a1, b1)
        cross = torch.einsum(PAIR_OUTER, a1, b0) - torch.einsum(PAIR_OUTER, a0, b1)
        scores = (dot * torch.cos(delta) + cross * torch.sin(delta)).sum(-1) * rope.gain**2
    return (scores @ v) / (den + eps)


ENCODINGS = ("none", "sincos", "rope")  # what a checkpoint declares (SanaDiTConfig.pos_encoding)
MODES = ("model", "none", "sincos", "rope") + SCALINGS[1:]  # what an inference override may ask for
OVERRIDE_KEY = "sana_pos_encoding"  # transformer_options key written by the SanaPositionEncoding node
ROPE_OVERRIDES = ("yarn_beta_fast", "yarn_beta_slow", "yarn_temperature", "time_watershed")


@dataclass(frozen=True)
class EncodingChoice:
    """The position encoding one forward call uses, after inference overrides.

    kind: "none", "sincos" (additive, `base_size` / `pe_interpolation` as in docs/ARCHITECTURE.md §8.4) or "rope"
    (`rope` holds the RoPE parameters and the scaling to apply).
    """

    kind: str
    base_size: int
    pe_interpolation: float
    rope: RopeConfig | None = None


def _mode_kind(mode: str) -> str:
    if mode in ("none", "sincos"):
        return mode
    elif mode == "rope" or mode in SCALINGS:
        return "rope"
    else:
        raise ValueError(f"position-encoding override mode {mode!r}: expected one of {MODES}.")


def declared_encoding(config) -> str:
    """The encoding a DiT config declares: "rope" if `pos_encoding` says so, else "sincos" / "none" from `use_pe`."""
    if config.pos_encoding == "rope":
        return "rope"
    return "sincos" if config.use_pe else "none"


def resolve_encoding(config, overrides: dict | None = None) -> EncodingChoice:
    """Apply inference overrides (`transformer_options["sana_pos_encoding"]`) to a DiT config's declared encoding.

    config: needs `pos_encoding`, `use_pe`, `base_size`, `pe_interpolation` and `rope` (a RopeConfig or None).
    overrides: {"mode": one of MODES, "base_size" / "pe_interpolation" (sin-cos; 0 or None keeps the model's),
    "train_grid" (RoPE; None keeps the model's), and any of ROPE_OVERRIDES}. "model" keeps the checkpoint's encoding
    and settings and ignores the other keys; "rope" is plain RoPE; the scaled modes imply RoPE. "none" is always
    allowed; switching a model to an encoding it was not trained with raises ValueError.
    """
    declared, mode = declared_encoding(config), (overrides or {}).get("mode", "model")
    if mode == "model":
        return EncodingChoice(declared, config.base_size, config.pe_interpolation, config.rope)
    over, kind = overrides, _mode_kind(mode)
    if kind not in ("none", declared):
        raise ValueError(
            f"Position-encoding override mode {mode!r} needs a '{kind}' model, but this checkpoint declares "
            f"'{declared}'. Choose 'model', 'none' or a mode of the checkpoint's own encoding."
        )
    base_size = over.get("base_size") or config.base_size
    pe_interpolation = over.get("pe_interpolation") or config.pe_interpolation
    rope = None
    if kind == "rope":
        changes = {key: over[key] for key in ROPE_OVERRIDES if key in over}
        if over.get("train_grid"):
            changes["train_grid"] = tuple(over["train_grid"])
        changes["scaling"] = "none" if mode == "rope" else mode
        rope = dataclasses.replace(config.rope, **changes)
    return EncodingChoice(kind, int(base_size), float(pe_interpolation), rope)
