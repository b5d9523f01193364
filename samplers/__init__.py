"""Pure-PyTorch samplers and sigma schedules for flow-matching Sana models (k-diffusion contract).

Contract: a sampler is ``sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, *, options)``
where ``model(x, sigma, **extra_args)`` returns the data prediction x0 = x − σ·v (ComfyUI CONST), ``sigmas`` are flow
times (x_σ = (1 − σ)·x0 + σ·ε) descending to 0, and the return value is the final x. Nothing here imports ComfyUI.

Exports (docs/ARCHITECTURE.md §3.2): ``flow_dpm_solver`` (= ``sample_flow_dpm_solver``), ``sample_flow_euler``,
``sample_sana_scm``, ``reference_noise_sampler``; schedules ``sana_sigmas``, ``flow_euler_sigmas``, ``sprint_sigmas``,
``trigflow_to_flow_time``; shift helpers ``time_snr_shift``, ``sd3_resolution_shift``, ``token_count_shift``,
``resolve_shift`` (``SHIFT_MODES``), ``image_size_of_latent``, ``half_log_snr``; ``flow_start_state`` (the
reference's unscaled-noise start); input checks ``check_flow_sigmas``, ``check_trigflow_angles`` (guards.py: every
sampler refuses non-finite sigmas or sigmas outside [0, 1]).
"""

from .flow_dpm_solver import flow_start_state, half_log_snr, sample_flow_dpm_solver
from .flow_euler import sample_flow_euler
from .guards import check_flow_sigmas, check_trigflow_angles
from .schedules import (
    SHIFT_MODES,
    flow_euler_sigmas,
    image_size_of_latent,
    resolve_shift,
    sana_sigmas,
    sd3_resolution_shift,
    sprint_sigmas,
    time_snr_shift,
    token_count_shift,
    trigflow_to_flow_time,
)
from .scm import reference_noise_sampler, sample_sana_scm

flow_dpm_solver = sample_flow_dpm_solver

__all__ = [
    "SHIFT_MODES",
    "check_flow_sigmas",
    "check_trigflow_angles",
    "flow_dpm_solver",
    "flow_start_state",
    "image_size_of_latent",
    "resolve_shift",
    "flow_euler_sigmas",
    "half_log_snr",
    "reference_noise_sampler",
    "sample_flow_dpm_solver",
    "sample_flow_euler",
    "sample_sana_scm",
    "sana_sigmas",
    "sd3_resolution_shift",
    "sprint_sigmas",
    "time_snr_shift",
    "token_count_shift",
    "trigflow_to_flow_time",
]
