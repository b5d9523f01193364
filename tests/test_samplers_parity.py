"""Parity of ``samplers`` with diffusers' schedulers driven by the same deterministic velocity model.

References: diffusers ``DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
flow_shift=s)`` (Flow-DPM-Solver, docs/ARCHITECTURE.md §12.2), ``FlowMatchEulerDiscreteScheduler(shift=s)`` (official
FlowEuler,
§6.4) and ``SCMScheduler`` with the ``SanaSprintPipeline`` TrigFlow wrapping (§6.6). Our samplers get the k-diffusion
model x0 = x − σ·v; diffusers gets v. Everything runs in float32 on the CPU.
"""

import pytest
import torch

import samplers
from tests.assertions import max_abs_diff

diffusers = pytest.importorskip("diffusers")

GRID_ATOL = 1e-7  # issue 6: sigma grids agree to ≤ 1e-7 (both round the float64 grid to float32)
SAMPLE_ATOL = 1e-6  # issue 6: final samples agree to ≤ 1e-6 (float32 coefficient round-off only)
SHIFTS = (3.0, 4.0, 6.0)  # released Sana flow_shift values (docs/ARCHITECTURE.md §6.3)
STEP_COUNTS = (2, 5, 20)  # issue 6
SHAPE = (2, 4, 8, 8)  # [B, C, H, W]: batch of 2 to catch per-sample σ broadcasting
SIGMA_DATA = 0.5  # SCMScheduler sigma_data (docs/ARCHITECTURE.md §12.5)
SEED = 1234


class LinearVelocity:
    """Deterministic velocity v(x, t) = A·x (channel mixing) + t·b + (1 − t)·c, seeded; x: [B, C, H, W], t: [B]."""

    def __init__(self, channels: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.a = 0.3 * torch.randn(channels, channels, generator=g) / channels**0.5
        self.b = torch.randn(1, channels, 1, 1, generator=g)
        self.c = torch.randn(1, channels, 1, 1, generator=g)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return torch.einsum("oc,bchw->bohw", self.a, x) + t * self.b + (1 - t) * self.c

    def denoiser(self):
        """k-diffusion model: x0 = x − σ·v(x, σ) (ComfyUI CONST); accepts and ignores ``seed``."""

        def model(x, sigma, seed=None):
            return x - sigma.reshape(-1, 1, 1, 1) * self(x, sigma)

        return model


def _noise(seed: int = SEED) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))




def _diffusers_dpm(shift: float, steps: int, order: int, velocity, noise):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, solver_order=order
    )
    scheduler.set_timesteps(steps)
    x = noise.clone()
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i].expand(x.shape[0])
        x = scheduler.step(velocity(x, sigma), t, x).prev_sample
    return scheduler.sigmas, x


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_sana_sigmas_parity_diffusers_grid(shift, steps):
    reference, _ = _diffusers_dpm(shift, steps, 2, LinearVelocity(SHAPE[1]), _noise())
    ours = samplers.sana_sigmas(steps, shift)
    assert ours.shape == reference.shape, f"expected {tuple(reference.shape)}, got {tuple(ours.shape)}"
    diff = max_abs_diff(ours, reference)
    assert diff <= GRID_ATOL, f"sana_sigmas(s={shift}, N={steps}) max abs diff {diff:.3e} > {GRID_ATOL}"


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_flow_dpm_solver_parity_diffusers_order2(shift, steps):
    velocity, noise = LinearVelocity(SHAPE[1]), _noise()
    _, reference = _diffusers_dpm(shift, steps, 2, velocity, noise)
    sigmas = samplers.sana_sigmas(steps, shift)
    ours = samplers.flow_dpm_solver(velocity.denoiser(), noise.clone(), sigmas, disable=True)
    diff = max_abs_diff(ours, reference)
    assert diff <= SAMPLE_ATOL, f"order 2, s={shift}, N={steps}: max abs diff {diff:.3e} > {SAMPLE_ATOL}"


# diffusers keeps 3rd order on the second-to-last step when N >= 15 (NVlabs drops to 2nd), so compare N < 15 only.
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", (2, 3, 5, 14))
def test_flow_dpm_solver_parity_diffusers_order3(shift, steps):
    velocity, noise = LinearVelocity(SHAPE[1]), _noise()
    _, reference = _diffusers_dpm(shift, steps, 3, velocity, noise)
    sigmas = samplers.sana_sigmas(steps, shift)
    ours = samplers.flow_dpm_solver(velocity.denoiser(), noise.clone(), sigmas, disable=True, order=3)
    diff = max_abs_diff(ours, reference)
    assert diff <= SAMPLE_ATOL, f"order 3, s={shift}, N={steps}: max abs diff {diff:.3e} > {SAMPLE_ATOL}"


def test_flow_dpm_solver_order3_differs_from_order2():
    velocity, noise, sigmas = LinearVelocity(SHAPE[1]), _noise(), samplers.sana_sigmas(20, 3.0)
    second = samplers.flow_dpm_solver(velocity.denoiser(), noise.clone(), sigmas, disable=True, order=2)
    third = samplers.flow_dpm_solver(velocity.denoiser(), noise.clone(), sigmas, disable=True, order=3)
    assert max_abs_diff(second, third) > 100 * SAMPLE_ATOL, "order=3 had no effect"


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_flow_euler_parity_diffusers(shift, steps):
    velocity, noise = LinearVelocity(SHAPE[1]), _noise()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    reference = noise.clone()
    for i, t in enumerate(scheduler.timesteps):
        reference = scheduler.step(velocity(reference, scheduler.sigmas[i]), t, reference).prev_sample
    sigmas = samplers.flow_euler_sigmas(steps, shift)
    grid_diff = max_abs_diff(sigmas, scheduler.sigmas)
    assert grid_diff <= GRID_ATOL, f"flow_euler_sigmas(s={shift}, N={steps}) max abs diff {grid_diff:.3e}"
    ours = samplers.sample_flow_euler(velocity.denoiser(), noise.clone(), sigmas, disable=True)
    diff = max_abs_diff(ours, reference)
    assert diff <= SAMPLE_ATOL, f"flow_euler s={shift}, N={steps}: max abs diff {diff:.3e} > {SAMPLE_ATOL}"


def _diffusers_sprint(steps: int, angles, velocity, seed: int):
    """The SanaSprintPipeline denoising loop (pipeline_sana_sprint.py) around diffusers' SCMScheduler."""
    scheduler = diffusers.SCMScheduler(sigma_data=SIGMA_DATA)
    if angles is not None:
        scheduler.set_timesteps(steps, timesteps=list(angles), max_timesteps=None, intermediate_timesteps=None)
    else:
        scheduler.set_timesteps(steps, intermediate_timesteps=1.3 if steps == 2 else None)
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn(SHAPE, generator=generator) * SIGMA_DATA
    for theta in scheduler.timesteps[:-1]:
        t = (torch.sin(theta) / (torch.cos(theta) + torch.sin(theta))).expand(SHAPE[0]).reshape(-1, 1, 1, 1)
        norm = torch.sqrt(t**2 + (1 - t) ** 2)
        x_in = latents / SIGMA_DATA * norm
        v = velocity(x_in, t.flatten())
        trig = ((1 - 2 * t) * x_in + (1 - 2 * t + 2 * t**2) * v) / norm * SIGMA_DATA
        latents, denoised = scheduler.step(trig, theta, latents, generator=generator, return_dict=False)
    return denoised / SIGMA_DATA


@pytest.mark.parametrize(
    "steps,angles", [(1, None), (2, None), (4, None), (4, (1.5708, 1.4, 1.0, 0.5, 0.0))], ids=["1", "2", "4", "custom"]
)
def test_sana_scm_parity_diffusers(steps, angles):
    velocity = LinearVelocity(SHAPE[1])
    reference = _diffusers_sprint(steps, angles, velocity, SEED)
    sigmas = samplers.sprint_sigmas(steps, angles=angles)
    x = sigmas[0] * torch.randn(SHAPE, generator=torch.Generator().manual_seed(SEED))  # ComfyUI's σ0·ε start
    ours = samplers.sample_sana_scm(velocity.denoiser(), x, sigmas, extra_args={"seed": SEED}, disable=True)
    diff = max_abs_diff(ours, reference)
    assert diff <= SAMPLE_ATOL, f"sana_scm N={steps}, angles={angles}: max abs diff {diff:.3e} > {SAMPLE_ATOL}"


def test_sana_scm_fresh_noise_matters():
    velocity, sigmas = LinearVelocity(SHAPE[1]), samplers.sprint_sigmas(2)
    x = sigmas[0] * _noise()
    a = samplers.sample_sana_scm(velocity.denoiser(), x, sigmas, extra_args={"seed": 1}, disable=True)
    b = samplers.sample_sana_scm(velocity.denoiser(), x, sigmas, extra_args={"seed": 2}, disable=True)
    assert max_abs_diff(a, b) > 100 * SAMPLE_ATOL, "the re-noising step ignored the seed"
