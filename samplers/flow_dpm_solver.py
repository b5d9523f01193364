"""Flow-DPM-Solver: multistep DPM-Solver++ for flow-matching models, as Sana samples with it.

Source: Lu et al., "DPM-Solver++" (arXiv 2211.01095), multistep data-prediction solver (Algorithm 2 / its 3rd-order
variant); Sana's use of it: NVlabs/Sana ``diffusion/model/dpm_solver.py`` (``NoiseScheduleFlow``, ``DPM_Solver.sample``
with ``algorithm_type="dpmsolver++"``, ``method="multistep"``, ``solver_type="dpmsolver"``, ``lower_order_final=True``);
diffusers ``DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")`` is the same for
order 2 (docs/ARCHITECTURE.md §12.2).

Contract (k-diffusion, docs/ARCHITECTURE.md §1): ``model(x, sigma, **extra_args)`` returns the data prediction
x0 = x − σ·v (ComfyUI CONST); ``sigmas`` strictly descend, usually ending at 0 (``schedules.sana_sigmas``); the flow
convention x_σ = (1 − σ)·x0 + σ·ε gives α = 1 − σ and the half-logSNR λ = log(α/σ) = log((1 − σ)/σ).
The reference starts from unscaled noise ε at σ0 = shift(0.999) < 1: pass x = ε for a reference-exact run.

Step orders (NVlabs rule): step i (0-based) of n uses order min(order, i + 1, n − i): first order to start, then
multistep, and lower order at the end, so the step to σ = 0 is first order and returns x0. diffusers uses the same
orders for order 2; for order 3 with n ≥ 15 it keeps third order on the second-to-last step where NVlabs uses second.
Scalars (λ, φ) are computed in float64 from the sigmas; tensors stay in x's dtype.
"""

import math

import torch
from tqdm.auto import trange

from .guards import check_flow_sigmas

SUPPORTED_ORDERS = (1, 2, 3)  # DPM-Solver++ multistep orders (NVlabs multistep_dpm_solver_update)
MIDPOINT_WEIGHT = 0.5  # "dpmsolver" (midpoint) 2nd-order weight on D1 (NVlabs multistep_dpm_solver_second_update)
PHI3_OFFSET = 0.5  # φ3 = φ2/h − 1/2!, the Taylor term of the 3rd-order update (DPM-Solver++ §3, NVlabs third_update)


def half_log_snr(sigma: float) -> float:
    """Flow half-logSNR λ(σ) = log((1 − σ)/σ); −inf for σ ≥ 1 (pure noise), +inf for σ = 0 (data)."""
    if sigma >= 1:
        return -math.inf
    if sigma <= 0:
        return math.inf
    return math.log1p(-sigma) - math.log(sigma)


def _dpm_update(x, x0_history, lambdas, sigma_s, sigma_t):
    """One multistep DPM-Solver++ step of order len(x0_history) from σ_s to σ_t.

    x: [B, ...] state at σ_s. x0_history: x0 predictions [..., m1, m0] (newest last), each like x.
    lambdas: λ at the matching times, then λ_t ([..., λ_s1, λ_s0, λ_t]). Returns x at σ_t.
    """
    order = len(x0_history)
    m0, lambda_s0, lambda_t = x0_history[-1], lambdas[-2], lambdas[-1]
    h = lambda_t - lambda_s0
    alpha_t = 1 - sigma_t
    phi_1 = math.expm1(-h)
    # DPM-Solver++(1): x_t = (σ_t/σ_s)·x − α_t·φ1·m0, φ1 = expm1(−h), h = λ_t − λ_s
    x_t = (sigma_t / sigma_s) * x - (alpha_t * phi_1) * m0
    if order == 1:
        return x_t
    m1, r0 = x0_history[-2], (lambda_s0 - lambdas[-3]) / h  # r0 = h_0 / h (inf after a σ = 1 start → D1 = 0)
    d1_0 = (1 / r0) * (m0 - m1)  # D1_0 = (m0 − m1)/r0
    if order == 2:
        # 2M (midpoint): x_t −= ½·α_t·φ1·D1
        return x_t - (MIDPOINT_WEIGHT * alpha_t * phi_1) * d1_0
    m2, r1 = x0_history[-3], (lambdas[-3] - lambdas[-4]) / h  # r1 = h_1 / h
    d1_1 = (1 / r1) * (m1 - m2)  # D1_1 = (m1 − m2)/r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)  # D1 = D1_0 + r0/(r0 + r1)·(D1_0 − D1_1)
    d2 = (1 / (r0 + r1)) * (d1_0 - d1_1)  # D2 = (D1_0 − D1_1)/(r0 + r1)
    phi_2 = phi_1 / h + 1  # φ2 = φ1/h + 1
    phi_3 = phi_2 / h - PHI3_OFFSET  # φ3 = φ2/h − ½
    # 3M: x_t = (σ_t/σ_s)·x − α_t·φ1·m0 + α_t·φ2·D1 − α_t·φ3·D2
    return x_t + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2


def flow_start_state(noise: torch.Tensor, latent_image, sigma0) -> torch.Tensor:
    """Initial sampler state: the unscaled noise ε when ``latent_image`` is None or all zeros (txt2img: the reference
    solvers start from ε at σ0 = shift(0.999) < 1), else the flow noising σ0·ε + (1 − σ0)·latent (img2img, as
    ComfyUI's CONST ``noise_scaling``). noise, latent_image: [B, C, H, W]; sigma0: the first sigma."""
    if latent_image is None or not bool(torch.any(latent_image)):
        return noise
    return sigma0 * noise + (1 - sigma0) * latent_image


def _check_sigmas(sigmas: list[float]) -> None:
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        if not s_next < s:
            raise ValueError(
                f"flow_dpm_solver: sigmas must strictly decrease (noise → data), but sigma[{i}]={s} and "
                f"sigma[{i + 1}]={s_next}. Use a descending schedule such as sana_flow (samplers.sana_sigmas)."
            )


@torch.no_grad()
def sample_flow_dpm_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, *, order=2):
    """Flow-DPM-Solver (multistep DPM-Solver++, arXiv 2211.01095; NVlabs/Sana ``diffusion/model/dpm_solver.py``).

    x: [B, C, H, W] state at sigmas[0] (for txt2img the unscaled noise ε, as the reference starts).
    sigmas: [n + 1] strictly descending flow times. order: 1, 2 (Sana default) or 3. Returns x at sigmas[-1]
    (the data estimate when sigmas[-1] = 0). n model evaluations.
    """
    if order not in SUPPORTED_ORDERS:
        raise ValueError(f"flow_dpm_solver: order must be one of {SUPPORTED_ORDERS}, got {order!r}.")
    extra_args = {} if extra_args is None else extra_args
    sigma_list = [float(s) for s in sigmas]
    check_flow_sigmas(sigma_list, "flow_dpm_solver")  # finite, within [0, 1] (guards.py)
    _check_sigmas(sigma_list)
    lambdas = [half_log_snr(s) for s in sigma_list]
    n, s_in = len(sigma_list) - 1, x.new_ones([x.shape[0]])
    x0_history = []
    for i in trange(n, disable=disable):
        x0 = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})
        x0_history = (x0_history + [x0])[-order:]
        if sigma_list[i + 1] == 0:
            x = x0  # denoising step: first order with λ_t = +inf, φ1 = −1, α_t = 1 gives x_t = x0
            continue
        step_order = min(order, i + 1, n - i)  # warm-up orders 1..order, lower order on the final steps
        x = _dpm_update(
            x, x0_history[-step_order:], lambdas[i - step_order + 1 : i + 2], sigma_list[i], sigma_list[i + 1]
        )
    return x
