"""Input and state checks for the flow samplers: bad sigmas, TrigFlow angles, shifts and non-finite latents become
clear errors instead of garbage or black images (issue 15).

Flow convention (``samplers/__init__.py``): x_σ = (1 − σ)·x0 + σ·ε with σ ∈ [0, 1]; a sigma above 1 or below 0 has
no flow meaning (a DPM-Solver step at σ > 1 takes log of a negative number, an Euler step extrapolates). TrigFlow
angles θ ∈ [0, π/2] map to flow times t = sin θ/(sin θ + cos θ) ∈ [0, 1]; past π/2 the map leaves [0, 1]
(θ = 2.5 gives t = −2.9). Sana-Sprint starts at 1.57080, π/2 rounded up (``schedules.SPRINT_MAX_ANGLE``), which is
t = 1.0000037, so both bounds carry a small tolerance. Nothing here imports ComfyUI.
"""

import math

import torch

# Largest flow sigma accepted: Sprint's first angle 1.57080 maps to t = 1.0000037 (module docstring); 1e-5 covers it
# and float32 rounding of a σ = 1 start (ComfyUI "simple"/"normal" flow schedules start at exactly 1).
FLOW_SIGMA_TOLERANCE = 1e-5
# Largest TrigFlow angle accepted: π/2 plus the rounding of Sprint's 1.57080 (diffusers SCMScheduler max_timesteps).
TRIGFLOW_ANGLE_TOLERANCE = 1e-5
HALF_PRECISION_HINT = "fp16 overflow: use bf16 or fp32 for this model (SanaDiTLoader weight_dtype 'bf16' or 'fp32')"
FULL_PRECISION_HINT = (
    "the weights, a LoRA/patch or the conditioning contain NaN/Inf, or a widget value is not finite: re-download the "
    "checkpoint, check LoRA strengths and widget values"
)


def _values(name: str, what: str, values) -> list[float]:
    try:
        flat = torch.as_tensor(values, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: {what} must be numbers, got {values!r}.") from e
    return flat.tolist()


def check_flow_sigmas(sigmas, name: str = "sampler") -> None:
    """Raise ValueError unless every sigma is finite and within [0, 1] (flow times; ``FLOW_SIGMA_TOLERANCE`` above 1).

    sigmas: 1-D tensor or sequence [n + 1]. The message names the first bad index and value and what to use.
    """
    values = _values(name, "sigmas", sigmas)
    for i, s in enumerate(values):
        if not math.isfinite(s):
            raise ValueError(
                f"{name}: sigma[{i}] is {s} (not finite). Flow sigmas must be finite numbers in [0, 1]; check the "
                f"shift (a finite value > 0, e.g. 3.0) and use the sana_flow or sana_sprint scheduler."
            )
        if not 0 <= s <= 1 + FLOW_SIGMA_TOLERANCE:
            raise ValueError(
                f"{name}: sigma[{i}] = {s:.6g} is outside [0, 1]. Sana samples flow matching, where sigmas are flow "
                f"times in [0, 1]: use the sana_flow scheduler (or sana_sprint for Sana-Sprint) and a flow MODEL "
                f"(SanaDiTLoader, optionally ModelSamplingSana / ModelSamplingSD3), not a schedule for an "
                f"eps/v-prediction model."
            )


def check_trigflow_angles(angles, name: str = "sprint_sigmas") -> None:
    """Raise ValueError unless every TrigFlow angle is finite and within [0, π/2] (``TRIGFLOW_ANGLE_TOLERANCE``)."""
    limit = math.pi / 2 + TRIGFLOW_ANGLE_TOLERANCE
    for i, theta in enumerate(_values(name, "TrigFlow angles", angles)):
        if not (math.isfinite(theta) and 0 <= theta <= limit):
            raise ValueError(
                f"{name}: TrigFlow angle[{i}] = {theta:.6g} is outside [0, π/2 = 1.5708]. Sana-Sprint angles run "
                f"from 1.5708 (pure noise) down to 0 (e.g. '1.5708, 1.3, 0' for 2 steps); larger angles give "
                f"negative or > 1 flow times."
            )


def check_shift(shift, name: str = "shift") -> float:
    """The shift as a float, or ValueError unless it is finite and > 0 (Sana's released models use 3.0–6.0)."""
    try:
        value = float(shift)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: shift must be a number, got {shift!r}.") from e
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name}: shift must be a finite number > 0, got {value!r}. Sana's released models use 3.0 (4.0 for "
            f"600M at 1024 px, 6.0 for 4K); shift_mode 'model_default' picks the model's own."
        )
    return value


def nonfinite_hint(dtype_names) -> str:
    """The likely fix for a non-finite model output computed with the given dtype names (e.g. ('float16',))."""
    return HALF_PRECISION_HINT if any("float16" in d and "bfloat16" not in d for d in dtype_names) else (
        FULL_PRECISION_HINT)


def check_finite_latent(x: torch.Tensor, step: int, steps: int, sigma: float, dtype_names=(), name: str = "sampler",
                        what: str = "model output") -> None:
    """Raise RuntimeError when ``x`` (any shape) holds NaN/Inf, naming the step (1-based of ``steps``), the sigma,
    the dtypes the model computes in (``dtype_names``, e.g. ('float16',)) and the likely fix; stops the run instead
    of decoding a black image."""
    if bool(torch.isfinite(x).all()):
        return
    bad = int((~torch.isfinite(x)).sum())
    dtypes = ", ".join(dtype_names) if dtype_names else str(x.dtype).removeprefix("torch.")
    raise RuntimeError(
        f"{name}: the {what} at step {step}/{steps} (sigma {float(sigma):.4g}) has {bad} of {x.numel()} values NaN "
        f"or Inf (model dtype {dtypes}); sampling stopped so no black image is produced. Likely fix: "
        f"{nonfinite_hint(dtype_names)}."
    )
