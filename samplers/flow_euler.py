"""Flow-Euler: the explicit Euler step of the flow ODE dx/dσ = v, in the k-diffusion contract.

Source: NVlabs/Sana ``diffusion/scheduler/flow_euler_sampler.py`` (``FlowEuler``), which steps with diffusers
``FlowMatchEulerDiscreteScheduler.step``: x ← x + (σ_next − σ)·v (docs/ARCHITECTURE.md §12.3).

Contract: ``model(x, sigma, **extra_args)`` returns x0 = x − σ·v (ComfyUI CONST), so v = (x − x0)/σ; flow convention
x_σ = (1 − σ)·x0 + σ·ε. Any descending grid works. To reproduce the official FlowEuler, pair it with
``schedules.flow_euler_sigmas(steps, shift)`` (diffusers' doubled-shift grid starting at σ = 1, from the noise ε)
and the official shift 3.0 (the app never passes another, docs/ARCHITECTURE.md §12.3). With ``sana_sigmas`` it is the
first-order
member of Flow-DPM-Solver: DPM-Solver++(1) in flow variables is exactly this Euler step.
"""

import torch
from tqdm.auto import trange

from .guards import check_flow_sigmas


@torch.no_grad()
def sample_flow_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Flow-Euler (NVlabs/Sana FlowEuler; diffusers FlowMatchEulerDiscreteScheduler.step).

    x: [B, C, H, W] state at sigmas[0]; sigmas: [n + 1] flow times (descending for sampling). Returns x at sigmas[-1].
    n model evaluations.
    """
    extra_args = {} if extra_args is None else extra_args
    check_flow_sigmas(sigmas, "flow_euler")  # finite, within [0, 1] (guards.py)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x0})
        if sigma_next == 0:
            x = x0  # Euler step to σ = 0: x + (0 − σ)·v = x − σ·v = x0
        else:
            v = (x - x0) / sigma  # velocity from the data prediction x0 = x − σ·v
            x = x + (sigma_next - sigma) * v  # Euler: x_{σ'} = x_σ + (σ' − σ)·v
    return x
