"""Unit tests of ``samplers``: the k-diffusion contract, closed-form accuracy, the sigma grids and the shift rules.

References: the closed-form flow of a Gaussian target (exact x0 prediction and exact ODE solution); the grid values
quoted in docs/ARCHITECTURE.md §12.2/§12.3/§12.5; diffusers' Flux ``calculate_shift`` and
``FlowMatchEulerDiscreteScheduler.time_shift``
for the token rule.
"""

import inspect
import math

import pytest
import torch

import samplers

SAMPLERS = {
    "flow_dpm_solver": samplers.sample_flow_dpm_solver,
    "flow_euler": samplers.sample_flow_euler,
    "sana_scm": samplers.sample_sana_scm,
}
CONTRACT_PARAMS = ["model", "x", "sigmas", "extra_args", "callback", "disable"]  # docs/ARCHITECTURE.md §1
GRID_VALUE_ATOL = 1e-5  # docs/ARCHITECTURE.md §12 quotes grid values to 5–6 significant digits
SAME_SCHEME_ATOL = 1e-6  # two float32 routes to the same discrete update
EXACT_TOL = 1e-12  # float64 identities (closed forms, the same formula written twice)
GAUSS_MEAN, GAUSS_STD = 0.7, 0.3  # 1-D Gaussian target N(μ, s²), far enough from N(0, 1) to need a real flow
SHAPE = (2, 3, 4, 4)


def gaussian_denoiser(x, sigma, seed=None):
    """Exact x0 prediction E[x0 | x_t] = μ + (1 − t)s²/((1 − t)²s² + t²)·(x_t − (1 − t)μ) for x0 ~ N(μ, s²)."""
    t = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
    var = (1 - t) ** 2 * GAUSS_STD**2 + t**2
    return GAUSS_MEAN + (1 - t) * GAUSS_STD**2 / var * (x - (1 - t) * GAUSS_MEAN)


def gaussian_ode_solution(x, t0: float):
    """Exact probability-flow ODE map from x at flow time t0 to t = 0 (the standardised state is invariant)."""
    z = (x - (1 - t0) * GAUSS_MEAN) / math.sqrt((1 - t0) ** 2 * GAUSS_STD**2 + t0**2)
    return GAUSS_MEAN + GAUSS_STD * z


def _noise(dtype=torch.float64):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _error(sampler, steps: int, **options) -> float:
    sigmas, x = samplers.sana_sigmas(steps, 3.0, dtype=torch.float64), _noise()
    out = sampler(gaussian_denoiser, x, sigmas, disable=True, **options)
    return (out - gaussian_ode_solution(x, float(sigmas[0]))).abs().max().item()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_signature_contract(name):
    params = list(inspect.signature(SAMPLERS[name]).parameters.values())
    assert [p.name for p in params[:6]] == CONTRACT_PARAMS, f"{name}: expected {CONTRACT_PARAMS} first"
    assert all(p.default is None for p in params[3:6]), f"{name}: extra_args/callback/disable must default to None"
    assert all(p.kind is p.KEYWORD_ONLY for p in params[6:]), f"{name}: options must be keyword-only"


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_callback_and_final_denoise(name):
    calls, sigmas = [], samplers.sana_sigmas(4, 3.0)
    out = SAMPLERS[name](gaussian_denoiser, _noise(torch.float32), sigmas, callback=calls.append, disable=True)
    assert [c["i"] for c in calls] == list(range(4)), f"{name}: one callback per step expected"
    assert set(calls[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}, f"{name}: callback keys {set(calls[0])}"
    assert torch.equal(out, calls[-1]["denoised"]), f"{name}: the step to σ = 0 must return the last x0"


def test_flow_dpm_solver_order1_is_flow_euler():
    sigmas, x = samplers.sana_sigmas(10, 3.0), _noise(torch.float32)
    dpm1 = samplers.flow_dpm_solver(gaussian_denoiser, x, sigmas, disable=True, order=1)
    euler = samplers.sample_flow_euler(gaussian_denoiser, x, sigmas, disable=True)
    diff = (dpm1 - euler).abs().max().item()
    assert diff <= SAME_SCHEME_ATOL, f"DPM-Solver++(1) and Flow-Euler differ by {diff:.3e}"


# Asymptotic regime only: below ~100 steps the error is dominated by Sana's last jump σ_{N−1} → 0 (x0 prediction).
# Order 2 approaches rate 2 slowly (1.57, 1.69 here): on Sana's time-uniform grid the λ-steps near t = 0 stay ~log 2.
@pytest.mark.parametrize("order,min_rate,steps", [(1, 0.9, 64), (2, 1.5, 256), (3, 2.7, 128)])
def test_flow_dpm_solver_convergence_order(order, min_rate, steps):
    errors = [_error(samplers.flow_dpm_solver, n, order=order) for n in (steps, 2 * steps, 4 * steps)]
    rates = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert min(rates) >= min_rate, f"order {order}: errors {errors}, observed rates {rates} < {min_rate}"


def test_flow_dpm_solver_beats_euler_at_equal_nfe():
    dpm, euler = _error(samplers.flow_dpm_solver, 40), _error(samplers.sample_flow_euler, 40)
    assert dpm < euler / 4, f"DPM-Solver 40 NFE error {dpm:.3e} not below a quarter of Euler's {euler:.3e}"


def test_flow_dpm_solver_starts_at_sigma_one():
    sigmas = torch.cat([torch.ones(1), samplers.sana_sigmas(20, 3.0)[1:]]).double()  # ComfyUI "simple" starts at 1
    out = samplers.flow_dpm_solver(gaussian_denoiser, _noise(), sigmas, disable=True)
    euler = samplers.sample_flow_euler(gaussian_denoiser, _noise(), sigmas, disable=True)
    reference = gaussian_ode_solution(_noise(), 1.0)
    assert torch.isfinite(out).all(), "σ0 = 1 (λ = −inf) produced non-finite values"
    dpm_error, euler_error = (out - reference).abs().max().item(), (euler - reference).abs().max().item()
    assert dpm_error < euler_error, f"σ0 = 1 start: DPM error {dpm_error:.3e} not below Euler's {euler_error:.3e}"


def test_sana_scm_one_step_is_x0_prediction():
    sigmas, x = samplers.sprint_sigmas(1), _noise(torch.float32)
    out = samplers.sample_sana_scm(gaussian_denoiser, x, sigmas, disable=True)
    assert torch.equal(out, gaussian_denoiser(x, sigmas[0] * x.new_ones(x.shape[0]))), "1-step sCM must return x̂0"


def test_sana_sigmas_official_values():
    sigmas = samplers.sana_sigmas(20, 3.0)
    assert abs(sigmas[0].item() - 0.999666) < GRID_VALUE_ATOL, f"first sigma {sigmas[0].item()}, expected 0.999666"
    model_times = (sigmas[:-1] * 1000).long().tolist()  # the official model truncates t·1000
    assert model_times[:3] == [999, 982, 963] and model_times[-2:] == [249, 136], f"got {model_times}"
    assert sigmas[-1].item() == 0 and sigmas.dtype == torch.float32 and sigmas.shape == (21,)


@pytest.mark.parametrize("steps", [1, 2, 7, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_sana_sigmas_shape_and_order(steps, shift):
    sigmas = samplers.sana_sigmas(steps, shift)
    assert sigmas.shape == (steps + 1,) and sigmas[-1].item() == 0, f"got {sigmas.tolist()}"
    assert bool((sigmas[1:] < sigmas[:-1]).all()), f"not strictly descending: {sigmas.tolist()}"
    expected_first = shift * 0.999 / (1 + (shift - 1) * 0.999)
    assert abs(sigmas[0].item() - expected_first) < GRID_VALUE_ATOL, f"first {sigmas[0].item()} vs {expected_first}"


def test_flow_euler_sigmas_official_values():
    sigmas = samplers.flow_euler_sigmas(20, 3.0)
    expected = {0: 1.0, 1: 0.98187, 18: 0.14979, 19: 0.00893, 20: 0.0}  # docs/ARCHITECTURE.md §12.3
    for index, value in expected.items():
        assert abs(sigmas[index].item() - value) < GRID_VALUE_ATOL, f"sigma[{index}] {sigmas[index].item()} != {value}"


def test_sprint_sigmas_angles():
    two = samplers.sprint_sigmas(2)
    expected = [math.sin(a) / (math.sin(a) + math.cos(a)) for a in (1.5708, 1.3)] + [0.0]
    assert max(abs(a - b) for a, b in zip(two.tolist(), expected, strict=True)) < GRID_VALUE_ATOL, f"got {two.tolist()}"
    assert abs(samplers.trigflow_to_flow_time(torch.tensor(math.pi / 2, dtype=torch.float64)).item() - 1) < EXACT_TOL
    four = samplers.sprint_sigmas(4, intermediate_angle=1.3)  # ignored for steps != 2, as NVlabs does
    angles = torch.linspace(1.5708, 0, 5, dtype=torch.float64)
    assert torch.allclose(four.double(), samplers.trigflow_to_flow_time(angles), atol=GRID_VALUE_ATOL)


def test_shift_rules_formulas():
    assert samplers.sd3_resolution_shift(3.0, 1024, 1024, 1024) == pytest.approx(3.0)
    assert samplers.sd3_resolution_shift(3.0, 2048, 2048, 1024) == pytest.approx(6.0)
    assert samplers.sd3_resolution_shift(3.0, 512, 2048, 1024) == pytest.approx(3.0)  # same pixel count
    assert samplers.token_count_shift(1024, 1024) == pytest.approx(math.exp(1.15))
    assert samplers.token_count_shift(256, 256) == pytest.approx(math.exp(0.5))
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    composed = samplers.time_snr_shift(2.0, samplers.time_snr_shift(3.0, t))
    assert torch.allclose(composed, samplers.time_snr_shift(6.0, t)), "static shifts must compose multiplicatively"


@pytest.mark.parametrize("width,height", [(512, 512), (1024, 768), (2048, 2048)])
def test_token_count_shift_matches_diffusers_flux_rule(width, height):
    flux = pytest.importorskip("diffusers.pipelines.flux.pipeline_flux")
    scheduler_module = pytest.importorskip("diffusers")
    tokens = width * height // 32**2
    mu = flux.calculate_shift(tokens, base_seq_len=64, max_seq_len=1024, base_shift=0.5, max_shift=1.15)
    assert samplers.token_count_shift(width, height) == pytest.approx(math.exp(mu), rel=EXACT_TOL)
    t = torch.linspace(0.01, 1, 7, dtype=torch.float64)
    flux_sigmas = scheduler_module.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).time_shift(mu, 1.0, t)
    assert torch.allclose(flux_sigmas, samplers.time_snr_shift(math.exp(mu), t)), "e^μ static shift != Flux time_shift"


@pytest.mark.parametrize(
    "mode,expected",
    [("model_default", 4.0), ("fixed", 5.0), ("sd3_resolution", 4.0 * math.sqrt(2)), ("token_count", None)],
)
def test_resolve_shift_modes(mode, expected):
    value = samplers.resolve_shift(mode, shift=5.0, width=2048, height=1024, default_shift=4.0, base_size=1024)
    expected = samplers.token_count_shift(2048, 1024) if expected is None else expected
    assert value == pytest.approx(expected, rel=EXACT_TOL), f"{mode}: got {value}, expected {expected}"
    assert set(samplers.SHIFT_MODES) == {"model_default", "fixed", "sd3_resolution", "token_count"}


def test_flow_start_state_and_latent_size():
    noise, latent = _noise(torch.float32), torch.full(SHAPE, 0.5)
    assert samplers.flow_start_state(noise, torch.zeros(SHAPE), 0.9) is noise, "txt2img must start from ε"
    assert samplers.flow_start_state(noise, None, 0.9) is noise
    mixed = samplers.flow_start_state(noise, latent, 0.9)
    assert torch.allclose(mixed, 0.9 * noise + 0.1 * latent), "img2img must use σ0·ε + (1 − σ0)·latent"
    assert samplers.image_size_of_latent(torch.zeros(1, 32, 3, 4)) == (128, 96)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: samplers.flow_dpm_solver(gaussian_denoiser, _noise(), samplers.sana_sigmas(4, 3.0), order=4), "order"),
        (lambda: samplers.flow_dpm_solver(gaussian_denoiser, _noise(), torch.tensor([0.5, 0.5, 0.0])), "decrease"),
        (lambda: samplers.sana_sigmas(0, 3.0), "steps"),
        (lambda: samplers.sana_sigmas(4, 0.0), "shift"),
        (lambda: samplers.sprint_sigmas(2, angles=[1.5, 1.6, 0.0]), "angles"),
        (lambda: samplers.sprint_sigmas(3, angles=[1.5, 0.0]), "angles"),
        (lambda: samplers.sd3_resolution_shift(3.0, 0, 1024, 1024), "positive"),
        (lambda: samplers.sprint_sigmas(2, intermediate_angle=1.6), "intermediate_angle"),
        (lambda: samplers.resolve_shift("auto", shift=3, width=1, height=1, default_shift=3, base_size=1), "mode"),
    ],
    ids=["order", "descending", "steps", "shift", "angles-order", "angles-length", "resolution", "intermediate",
         "mode"],
)
def test_samplers_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
