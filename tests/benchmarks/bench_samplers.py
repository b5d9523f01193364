"""Convergence benchmark of the flow samplers on 2-D Gaussian-mixture targets with their exact flow velocity.

Run: ``cd <repo> && ~/.cache/sana-dev/unit/bin/python tests/benchmarks/bench_samplers.py`` (CPU, float64, ~1 min).
Prints one JSON object per line: for each target, solver and NFE the RMS error of the final sample against a very
fine reference solution of the same ODE from the same start; then the "DPM at 20 NFE vs Euler at 50 NFE" figure,
diffusers' DPMSolverMultistepScheduler on the same problem in the same run (ratio ours / diffusers), and the error an
exact solver would still make on Sana's 20-step grid (exact state at σ_19, then the final x0 jump to 0).

Problem: x_t = (1 − t)·x0 + t·ε with x0 ~ Σ_k w_k N(μ_k, s²I) (8 equal components on a ring). The exact data
prediction is E[x0 | x_t] = Σ_k r_k(x_t)·(μ_k + (1 − t)s²/((1 − t)²s² + t²)·(x_t − (1 − t)μ_k)), with
r_k ∝ w_k N(x_t; (1 − t)μ_k, ((1 − t)²s² + t²)I). Start: x = ε at σ0 = shift(0.999) (Sana's grid, shift 3) for
Flow-DPM-Solver and Flow-Euler on ``sana_sigmas``; x = ε at σ = 1 for Flow-Euler on the official FlowEuler grid
``flow_euler_sigmas`` (its own reference). Reference: classical RK4 with REFERENCE_STEPS steps on a shifted
time-uniform grid down to t = shift(REFERENCE_T_END), then the exact x0 prediction there.
"""

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root: `import samplers` as in the tests

import samplers  # noqa: E402

SHIFT = 3.0  # Sana 1.6B / 1024 px flow_shift (docs/ARCHITECTURE.md §6.3)
NFES = (5, 10, 15, 20, 30, 50, 100)
COMPONENTS = 8  # Gaussian-mixture components on a ring
SAMPLES = 1024  # endpoints per run; error = RMS of the 2-D endpoint error over them
REFERENCE_STEPS = 2000  # RK4 steps of the reference solution (self-check below with 2× steps)
REFERENCE_T_START = 0.999  # Sana's first unshifted flow time (1 − 1/1000)
REFERENCE_T_END = 1e-4  # unshifted end of the RK4 grid; the x0-prediction jump from there errs by ~1e-7
TARGETS = {  # name -> component std s; ring radius from R²/2 + s² = 1 (unit variance per coordinate, like latents)
    "gmm8_s0.50": 0.5,
    "gmm8_s0.25": 0.25,
}
SEED = 0


class GaussianMixture:
    """Ring mixture of COMPONENTS isotropic Gaussians with per-coordinate variance 1; exact flow x0 prediction."""

    def __init__(self, std: float):
        radius = math.sqrt(2 * (1 - std**2))
        angles = torch.arange(COMPONENTS, dtype=torch.float64) * 2 * math.pi / COMPONENTS
        self.means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # [K, 2]
        self.std = std

    def denoiser(self, x, sigma, seed=None):
        """x: [B, 2] flow state, sigma: [B] flow time → E[x0 | x_t]: [B, 2] (k-diffusion model; ``seed`` ignored)."""
        t = sigma.reshape(-1, 1)
        var = (1 - t) ** 2 * self.std**2 + t**2  # [B, 1] per-component marginal variance
        offset = x[:, None, :] - (1 - t)[:, :, None] * self.means[None]  # [B, K, 2]
        log_r = -(offset**2).sum(-1) / (2 * var) - torch.log(var)  # 2-D Gaussian log density up to a constant
        responsibilities = torch.softmax(log_r, dim=-1)  # equal weights cancel
        x0_k = self.means[None] + ((1 - t) * self.std**2 / var)[..., None] * offset
        return (responsibilities[..., None] * x0_k).sum(1)

    def velocity(self, x, t: float):
        """Flow velocity v = (x − x0)/t at the scalar time t; x: [B, 2]."""
        return (x - self.denoiser(x, torch.full((x.shape[0],), t, dtype=x.dtype))) / t


def integrate(target: GaussianMixture, x, t_start: float, t_stop: float, steps: int = REFERENCE_STEPS):
    """Classical RK4 of dx/dt = v from (x, t_start) to t_stop on a shifted time-uniform grid; returns x at t_stop."""
    unshift = lambda t: t / (SHIFT - (SHIFT - 1) * t)  # noqa: E731  inverse of time_snr_shift
    grid = samplers.time_snr_shift(SHIFT, torch.linspace(unshift(t_start), unshift(t_stop), steps + 1).double())
    grid[0], grid[-1] = t_start, t_stop
    y = x.clone()
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        h = b - a
        k1 = target.velocity(y, a)
        k2 = target.velocity(y + h / 2 * k1, a + h / 2)
        k3 = target.velocity(y + h / 2 * k2, a + h / 2)
        k4 = target.velocity(y + h * k3, b)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def reference_solution(target: GaussianMixture, x, t_start: float, steps: int = REFERENCE_STEPS):
    """RK4 from (x, t_start) to shift(REFERENCE_T_END), then the exact x0 prediction there (the jump to t = 0)."""
    t_end = samplers.time_snr_shift(SHIFT, REFERENCE_T_END)
    y = integrate(target, x, t_start, t_end, steps)
    return target.denoiser(y, torch.full((y.shape[0],), t_end, dtype=y.dtype))


def grid_floor(target: GaussianMixture, x, sigma0: float, reference, nfe: int) -> float:
    """RMS error of an exact solver on Sana's nfe-step grid: the exact state at σ_{N−1}, then the x0 jump to 0."""
    sigma_last = float(_grid(nfe)[-2])
    y = integrate(target, x, sigma0, sigma_last)
    return rms_error(target.denoiser(y, torch.full((y.shape[0],), sigma_last, dtype=y.dtype)), reference)


def rms_error(sample, reference) -> float:
    """RMS over samples of the Euclidean endpoint error."""
    return (sample - reference).pow(2).sum(-1).mean().sqrt().item()


def diffusers_dpm(target: GaussianMixture, x, steps: int):
    """diffusers DPMSolverMultistepScheduler (Sana's Flow-DPM-Solver config) on the same problem, or None."""
    try:
        from diffusers import DPMSolverMultistepScheduler
    except ImportError:
        return None
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=SHIFT)
    scheduler.set_timesteps(steps)
    y = x.float()
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i].double().expand(y.shape[0])
        v = (y.double() - target.denoiser(y.double(), sigma)) / sigma[:, None]
        y = scheduler.step(v.float(), t, y).prev_sample
    return y.double()


def run_target(name: str, std: float) -> dict:
    """Print one JSON line per (solver, NFE) for one target; return the errors keyed by (solver, NFE)."""
    target = GaussianMixture(std)
    noise = torch.randn(SAMPLES, 2, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    sigma0 = samplers.time_snr_shift(SHIFT, REFERENCE_T_START)
    reference = reference_solution(target, noise, sigma0)
    reference_check = rms_error(reference, reference_solution(target, noise, sigma0, 2 * REFERENCE_STEPS))
    reference_from_one = reference_solution(target, noise, 1.0)
    _emit(target=name, figure="reference_self_error", rms=reference_check)
    solvers = {
        "flow_dpm_solver_o2": lambda n: samplers.flow_dpm_solver(target.denoiser, noise, _grid(n), disable=True),
        "flow_dpm_solver_o3": lambda n: samplers.flow_dpm_solver(
            target.denoiser, noise, _grid(n), disable=True, order=3
        ),
        "flow_euler_sana_grid": lambda n: samplers.sample_flow_euler(target.denoiser, noise, _grid(n), disable=True),
        "flow_euler_official_grid": lambda n: samplers.sample_flow_euler(
            target.denoiser, noise, samplers.flow_euler_sigmas(n, SHIFT).double(), disable=True
        ),
    }
    errors = {}
    for solver, run in solvers.items():
        ref = reference_from_one if solver == "flow_euler_official_grid" else reference
        for nfe in NFES:
            errors[solver, nfe] = rms_error(run(nfe), ref)
            _emit(target=name, solver=solver, nfe=nfe, rms_error=errors[solver, nfe])
    theirs = diffusers_dpm(target, noise, 20)
    if theirs is not None:
        ratio = errors["flow_dpm_solver_o2", 20] / rms_error(theirs, reference)
        _emit(target=name, figure="ours_over_diffusers_dpm2_error_at_20", ratio=ratio)
    floor = grid_floor(target, noise, sigma0, reference, 20)
    _emit(target=name, figure="exact_solver_error_on_20_step_sana_grid", rms=floor)
    return errors


def _emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def _grid(nfe: int):
    return samplers.sana_sigmas(nfe, SHIFT, dtype=torch.float64)


def main() -> None:
    """Run every target and print the DPM-20 vs Euler-50 summary."""
    torch.set_num_threads(1)  # [1024, 8, 2] tensors: threading only adds overhead
    for name, std in TARGETS.items():
        errors = run_target(name, std)
        summary = {"target": name, "figure": "dpm20_vs_euler50"}
        for solver in ("flow_dpm_solver_o2", "flow_dpm_solver_o3"):
            for euler in ("flow_euler_sana_grid", "flow_euler_official_grid"):
                summary[f"{solver}@20 / {euler}@50"] = errors[solver, 20] / errors[euler, 50]
        _emit(**summary)


if __name__ == "__main__":
    main()
