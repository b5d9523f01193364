"""Sigma grids and timestep-shift rules for Sana's flow-matching models.

Contract: a sigma is the flow time σ = t ∈ [0, 1] of x_σ = (1 − σ)·x0 + σ·ε (t = 1 is pure noise); every grid is a
descending 1-D float32 tensor of length steps + 1 ending at exactly 0, ready for a k-diffusion sampler.

Exports
- ``time_snr_shift(shift, t)``: the SD3 / Sana static shift σ' = s·t / (1 + (s − 1)·t).
- ``sd3_resolution_shift``, ``token_count_shift``: resolution-dependent shift values (formulas below).
- ``sana_sigmas(steps, shift)``: Flow-DPM-Solver grid, NVlabs/Sana ``diffusion/model/dpm_solver.py``
  ``get_time_steps(skip_type="time_uniform_flow")`` = diffusers ``DPMSolverMultistepScheduler(use_flow_sigmas=True)``.
- ``flow_euler_sigmas(steps, shift)``: the doubled-shift grid of diffusers ``FlowMatchEulerDiscreteScheduler``, which
  NVlabs/Sana ``diffusion/scheduler/flow_euler_sampler.py`` (FlowEuler) uses.
- ``trigflow_to_flow_time(theta)``, ``sprint_sigmas(steps, ...)``: Sana-Sprint's TrigFlow angles
  (NVlabs/Sana ``diffusion/scheduler/scm_scheduler.py``, diffusers ``SCMScheduler``) as flow sigmas.

Shift rules (all return the static shift s of ``time_snr_shift``; shifts compose multiplicatively,
time_snr_shift(a, time_snr_shift(b, t)) = time_snr_shift(a·b, t)):
- SD3 resolution rule (Esser et al. 2024, arXiv 2403.03206 §5.3.2): moving from n to m pixels multiplies the shift by
  √(m / n). Applied on top of the model's own shift at its training resolution:
  s' = s_model · √(W·H / base²), base = the training resolution (``sample_size`` latent pixels × 32).
- Token-count rule (Flux, diffusers ``pipelines/flux/pipeline_flux.py calculate_shift``): μ = m·L + b with
  m = (max_shift − base_shift) / (max_tokens − base_tokens), b = base_shift − m·base_tokens, s = e^μ
  (``flux_time_shift(μ, 1, t)`` equals ``time_snr_shift(e^μ, t)``). L = W·H / 32² latent tokens (DC-AE f32, patch 1),
  not Flux's 16-px tokens. The defaults keep Flux's pixel areas: 256² px → 64 tokens, 1024² px → 1024 tokens, with
  Flux's base/max shifts 0.5 / 1.15, so a 1024² image gets s = e^1.15 ≈ 3.16, close to Sana's released 3.0 at 1024 px.
  Like Flux, μ is extrapolated linearly beyond max_tokens (2048² → s ≈ 25).
"""

import math

import torch

from .guards import check_shift, check_trigflow_angles

NUM_TRAIN_TIMESTEPS = 1000  # NVlabs NoiseScheduleFlow.total_N; diffusers num_train_timesteps; t_end = 1/1000
DC_AE_PIXELS_PER_TOKEN = 32  # DC-AE f32c32 downsampling × DiT patch size 1 (docs/ARCHITECTURE.md §6.2)
TOKEN_RULE_BASE_TOKENS = 64  # Flux base_image_seq_len 256 at 16 px/token = 256² px → 256²/32² tokens
TOKEN_RULE_MAX_TOKENS = 1024  # Flux max_image_seq_len 4096 at 16 px/token = 1024² px → 1024²/32² tokens
TOKEN_RULE_BASE_SHIFT = 0.5  # Flux scheduler config base_shift (diffusers FlowMatchEulerDiscreteScheduler default)
TOKEN_RULE_MAX_SHIFT = 1.15  # Flux scheduler config max_shift (same source)
SPRINT_MAX_ANGLE = 1.57080  # diffusers SCMScheduler.set_timesteps max_timesteps (π/2 rounded up; NVlabs app value)
SPRINT_INTERMEDIATE_ANGLE = 1.3  # 2-step intermediate TrigFlow angle, diffusers SCMScheduler / NVlabs Sprint pipeline
SHIFT_MODES = ("model_default", "fixed", "sd3_resolution", "token_count")  # resolve_shift modes (issue 6)


def time_snr_shift(shift, t):
    """SD3 static shift σ' = s·t / (1 + (s − 1)·t) (ComfyUI ``time_snr_shift``); t: float or tensor in [0, 1]."""
    return shift * t / (1 + (shift - 1) * t)


def sd3_resolution_shift(shift: float, width: int, height: int, base_size: int) -> float:
    """SD3 resolution rule s' = s·√(W·H / base²): the model's shift ``shift`` rescaled from its square training
    resolution ``base_size`` (pixels) to a ``width`` × ``height`` image (pixels)."""
    if min(shift, width, height, base_size) <= 0:
        raise ValueError(
            f"sd3_resolution_shift: shift, width, height and base_size must be positive, got shift={shift}, "
            f"width={width}, height={height}, base_size={base_size}."
        )
    return shift * math.sqrt(width * height / base_size**2)


def token_count_shift(
    width: int,
    height: int,
    base_shift: float = TOKEN_RULE_BASE_SHIFT,
    max_shift: float = TOKEN_RULE_MAX_SHIFT,
    base_tokens: int = TOKEN_RULE_BASE_TOKENS,
    max_tokens: int = TOKEN_RULE_MAX_TOKENS,
) -> float:
    """Flux-style token rule s = e^μ, μ = m·L + b, for a ``width`` × ``height`` image (pixels), L = W·H / 32² tokens
    (see the module docstring for m, b and the defaults)."""
    if width <= 0 or height <= 0 or max_tokens <= base_tokens:
        raise ValueError(
            f"token_count_shift: width/height must be positive and max_tokens > base_tokens, got width={width}, "
            f"height={height}, base_tokens={base_tokens}, max_tokens={max_tokens}."
        )
    tokens = width * height / DC_AE_PIXELS_PER_TOKEN**2
    m = (max_shift - base_shift) / (max_tokens - base_tokens)
    mu = m * tokens + (base_shift - m * base_tokens)
    return math.exp(mu)


def resolve_shift(mode: str, *, shift: float, width: int, height: int, default_shift: float, base_size: int) -> float:
    """The static shift for one of SHIFT_MODES.

    model_default: ``default_shift`` (the variant's NVlabs flow_shift); fixed: ``shift``;
    sd3_resolution: ``sd3_resolution_shift(default_shift, width, height, base_size)``;
    token_count: ``token_count_shift(width, height)``.
    width, height: target image size in pixels; base_size: the model's square training resolution in pixels.
    """
    if mode == "model_default":
        return float(default_shift)
    elif mode == "fixed":
        check_shift(shift, "resolve_shift")  # finite and > 0: inf/NaN give NaN sigmas
        return float(shift)
    elif mode == "sd3_resolution":
        return sd3_resolution_shift(default_shift, width, height, base_size)
    elif mode == "token_count":
        return token_count_shift(width, height)
    else:
        raise ValueError(f"resolve_shift: unknown shift_mode {mode!r}; expected one of {SHIFT_MODES}.")


def image_size_of_latent(latent: torch.Tensor) -> tuple[int, int]:
    """(width, height) in pixels of a [B, C, h, w] DC-AE latent: 32 pixels per latent pixel."""
    return latent.shape[-1] * DC_AE_PIXELS_PER_TOKEN, latent.shape[-2] * DC_AE_PIXELS_PER_TOKEN


def _check_steps(name: str, steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: steps must be an integer ≥ 1, got {steps!r}.")


def sana_sigmas(steps: int, shift: float, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Sana's Flow-DPM-Solver grid σ = shift(linspace(1 − 1/1000, 0, steps + 1)), first value shift(0.999), last 0.

    Computed in float64 and rounded to float32 as diffusers ``DPMSolverMultistepScheduler(use_flow_sigmas=True)``
    does (NVlabs computes in float32; the two agree to ≤ 1.2e-7, docs/ARCHITECTURE.md §12.2). Returns [steps + 1] in
    ``dtype``.
    """
    _check_steps("sana_sigmas", steps)
    check_shift(shift, "sana_sigmas")  # finite and > 0: inf/NaN give NaN sigmas
    t = 1 - torch.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, steps + 1, dtype=torch.float64)
    sigmas = time_snr_shift(shift, t).flip(0)
    sigmas[-1] = 0  # shift(0) is exactly 0 already; written to make the contract explicit
    return sigmas.to(device=device, dtype=dtype)


def flow_euler_sigmas(steps: int, shift: float, device="cpu") -> torch.Tensor:
    """Grid of the official FlowEuler sampler (diffusers ``FlowMatchEulerDiscreteScheduler(shift=s)``,
    docs/ARCHITECTURE.md §12.3).

    The scheduler's training table is shift(i/1000), i = 1..1000, so σ_max = 1 and σ_min = shift(1/1000);
    ``set_timesteps`` spaces ``steps`` values linearly in [σ_min, σ_max], shifts them a second time and appends 0.
    For s = 3, steps = 20: 1.0, 0.98187, …, 0.14979, 0.00893, 0. Returns [steps + 1] float32.
    """
    _check_steps("flow_euler_sigmas", steps)
    check_shift(shift, "flow_euler_sigmas")  # finite and > 0: inf/NaN give NaN sigmas
    sigma_min = time_snr_shift(shift, 1 / NUM_TRAIN_TIMESTEPS)
    t = torch.linspace(1, sigma_min, steps, dtype=torch.float64)
    sigmas = torch.cat([time_snr_shift(shift, t), t.new_zeros(1)])
    return sigmas.to(device=device, dtype=torch.float32)


def trigflow_to_flow_time(theta: torch.Tensor) -> torch.Tensor:
    """TrigFlow angle θ → flow time t = sin θ / (sin θ + cos θ) (docs/ARCHITECTURE.md §12.5); θ = 0 → 0, θ = π/2 → 1.

    Derivation: x_θ = σ_d·(cos θ·x0 + sin θ·ε) = σ_d·(sin θ + cos θ)·((1 − t)·x0 + t·ε).
    """
    return torch.sin(theta) / (torch.sin(theta) + torch.cos(theta))


def sprint_sigmas(
    steps: int,
    intermediate_angle: float | None = SPRINT_INTERMEDIATE_ANGLE,
    angles=None,
    max_angle: float = SPRINT_MAX_ANGLE,
    device="cpu",
) -> torch.Tensor:
    """Sana-Sprint's TrigFlow angles as flow sigmas (for ``sample_sana_scm``).

    Angles: ``angles`` if given (steps + 1 values, descending, last 0); else [max_angle, intermediate_angle, 0] when
    steps = 2 and ``intermediate_angle`` is set (diffusers ``SCMScheduler``); else linspace(max_angle, 0, steps + 1)
    (for steps ≠ 2 the intermediate angle is ignored, as the NVlabs scheduler does). Each angle maps through
    ``trigflow_to_flow_time``; max_angle 1.57080 > π/2 gives a first sigma of 1.0000037. Returns [steps + 1] float32.
    """
    _check_steps("sprint_sigmas", steps)
    if angles is not None:
        theta = torch.as_tensor(angles, dtype=torch.float64).flatten()
        if theta.numel() != steps + 1 or theta[-1] != 0 or bool((theta[1:] >= theta[:-1]).any()):
            raise ValueError(
                f"sprint_sigmas: custom angles must be {steps + 1} strictly descending TrigFlow angles ending at 0 "
                f"(e.g. 1.5708, 1.3, 0 for 2 steps), got {theta.tolist()}."
            )
        check_trigflow_angles(theta, "sprint_sigmas")
    elif steps == 2 and intermediate_angle is not None:
        if not 0 < intermediate_angle < max_angle:
            raise ValueError(
                f"sprint_sigmas: intermediate_angle must lie in (0, {max_angle}), got {intermediate_angle} "
                f"(Sana-Sprint uses {SPRINT_INTERMEDIATE_ANGLE})."
            )
        theta = torch.tensor([max_angle, intermediate_angle, 0], dtype=torch.float64)
    else:
        theta = torch.linspace(max_angle, 0, steps + 1, dtype=torch.float64)
    return trigflow_to_flow_time(theta).to(device=device, dtype=torch.float32)
