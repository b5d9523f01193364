"""Sana-Sprint's sCM (TrigFlow consistency) sampler, written in flow variables for the k-diffusion contract.

Sources: Lu & Song, "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models" (sCM, arXiv 2410.11081);
Sana-Sprint (arXiv 2503.09641); NVlabs/Sana ``diffusion/scheduler/scm_scheduler.py`` and
``app/sana_sprint_pipeline.py``; diffusers ``SCMScheduler`` + ``SanaSprintPipeline`` (docs/ARCHITECTURE.md §12.5).

Reference step at angle θ_s with σ_d = 0.5: x̂0 = cos θ_s·x − sin θ_s·σ_d·F (F from the flow model,
docs/ARCHITECTURE.md §12.5),
then x ← cos θ_t·x̂0 + sin θ_t·σ_d·z with fresh z ~ N(0, I); the run starts from x = σ_d·ε and returns x̂0/σ_d.
Flow form (this file): with t = sin θ/(sin θ + cos θ) (``schedules.trigflow_to_flow_time``) the TrigFlow state is
x_θ = σ_d·(sin θ + cos θ)·x_t, where x_t = (1 − t)·x0 + t·ε is the flow state. Substituting F gives
x̂0/σ_d = x_t − t·v exactly, the flow model's data prediction (ComfyUI CONST), and the re-noised state maps to
x_t' = (1 − t')·x̂0 + t'·z. So one sCM step is "x0 = model(x, t); x = (1 − t')·x0 + t'·z", and σ_d cancels. The
start σ_d·ε at θ0 = 1.57080 is the flow state ε/(sin θ0 + cos θ0) = (t0/sin θ0)·ε at t0 = 1.0000037, i.e. σ0·ε to
7e-12 relative, which is what ComfyUI's noise scaling (σ0·ε for an empty latent) feeds the sampler.

Guidance: Sprint is guidance-distilled; the guidance scale reaches the DiT through its guidance embedding (the
``guidance`` conditioning value, FluxGuidance node), never through CFG: sample with CFG 1.
"""

import torch
from tqdm.auto import trange

from .guards import check_flow_sigmas


def reference_noise_sampler(x: torch.Tensor, seed=None):
    """Fresh-noise source for the sCM re-noising steps: ``noise_sampler(sigma, sigma_next) -> [B, ...] like x``.

    With a seed, the draws continue the CPU stream that ComfyUI's initial noise comes from
    (``comfy.sample.prepare_noise``: ``torch.randn(shape, generator=manual_seed(seed))``): the first draw of that shape
    is skipped, then each call draws the next. diffusers ``SanaSprintPipeline`` with a CPU generator draws its initial
    latents and then its step noise from one generator, so a seeded run reproduces it. Without a seed: ``randn_like``.
    """
    if seed is None:
        return lambda sigma, sigma_next: torch.randn_like(x)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    torch.randn(x.shape, generator=generator, dtype=torch.float32)  # the initial noise ε (drawn by the caller)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)


@torch.no_grad()
def sample_sana_scm(model, x, sigmas, extra_args=None, callback=None, disable=None, *, noise_sampler=None):
    """sCM / TrigFlow multistep consistency sampler of Sana-Sprint (arXiv 2410.11081), in flow variables.

    x: [B, C, H, W] flow state at sigmas[0] (σ0·ε for pure noise). sigmas: [n + 1] flow times from
    ``schedules.sprint_sigmas`` (any descending grid ending at 0 works). noise_sampler: callable
    (sigma, sigma_next) -> fresh N(0, I) like x; default ``reference_noise_sampler(x, extra_args.get("seed"))``.
    Returns the data estimate x0 [B, C, H, W]. n model evaluations, 1–4 in practice.
    """
    extra_args = {} if extra_args is None else extra_args
    check_flow_sigmas(sigmas, "sana_scm")  # finite, within [0, 1] (guards.py)
    if noise_sampler is None:
        noise_sampler = reference_noise_sampler(x, extra_args.get("seed"))
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x0 = model(x, sigmas[i] * s_in, **extra_args)  # x̂0 = cos θ·x − sin θ·σ_d·F, in flow units (module doc)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})
        x = x0
        if sigmas[i + 1] > 0:
            t_next = sigmas[i + 1]
            # re-noise at the next angle: x_θ' = cos θ'·x̂0 + sin θ'·σ_d·z ⇔ x_t' = (1 − t')·x̂0 + t'·z
            x = (1 - t_next) * x0 + t_next * noise_sampler(sigmas[i], t_next)
    return x
