"""Guards around the package's KSampler samplers and schedulers (issue 15): a clear error instead of a garbage or black
image when the MODEL does not sample flow, when sigmas leave [0, 1] or are not finite, or when the latent turns NaN/Inf
during sampling; a warning (log and the UI's progress text) when a sampler does not match the model (Sana-Sprint with
a non-sCM sampler, a non-Sprint model with ``sana_scm``).

The pure checks live in ``samplers/guards.py``; this module adds what needs ComfyUI: the MODEL's ``model_sampling``
(core's ``comfy.model_sampling.CONST`` marks flow matching, x0 = x − σ·v), its dtypes and the UI message channel
(``server.PromptServer.send_progress_text``, ComfyUI ≥ 0.3.4x; skipped where absent). ``nodes/sampling_nodes.py``
wraps its sampler and scheduler functions with :func:`guard_samplers` / :func:`guard_schedulers` at registration.
"""

import functools

import comfy.model_sampling

from ..samplers.guards import check_finite_latent, check_flow_sigmas
from .common import notify_ui

SCM_SAMPLERS = ("sana_scm",)  # samplers made for Sana-Sprint's consistency model
MAX_WRAP_DEPTH = 6  # KSamplerX0Inpaint -> guider -> BaseModel is 2; a few more for wrapper objects
INPUT_HINT = "the LATENT input or the noise is not finite: check the nodes that produce the latent (e.g. multipliers)"


def base_model_of(model):
    """The ComfyUI BaseModel behind a k-diffusion ``model`` (KSamplerX0Inpaint -> guider -> BaseModel), or None."""
    obj = model
    for _ in range(MAX_WRAP_DEPTH):
        if obj is None:
            return None
        if hasattr(obj, "model_sampling") and hasattr(obj, "diffusion_model"):
            return obj
        obj = getattr(obj, "inner_model", None)
    return None


def describe_model_sampling(model_sampling) -> str:
    """'ModelSamplingAdvanced (ModelSamplingDiscrete, EPS)': the class and its bases, which name the prediction."""
    cls = type(model_sampling)
    bases = ", ".join(b.__name__ for b in cls.__bases__ if b is not object)
    return f"{cls.__name__} ({bases})" if bases else cls.__name__


def check_flow_model(model_sampling, name: str) -> None:
    """ValueError unless ``model_sampling`` is flow matching (core's CONST), naming the type found and what to use."""
    if model_sampling is None or isinstance(model_sampling, comfy.model_sampling.CONST):
        return
    raise ValueError(
        f"{name}: the MODEL samples with {describe_model_sampling(model_sampling)}, not flow matching (ComfyUI CONST, "
        f"x0 = x - sigma*v). Sana's samplers and schedulers need a flow MODEL: connect SanaDiTLoader directly or "
        f"through ModelSamplingSana / ModelSamplingSD3, and remove ModelSamplingDiscrete-style patches."
    )


def model_dtype_names(base) -> tuple[str, ...]:
    """('bfloat16',) or ('float8_e4m3fn', 'bfloat16'): the weight dtype and the manual-cast compute dtype."""
    if base is None:
        return ()
    dtypes = [getattr(base, "get_dtype", lambda: None)(), getattr(base, "manual_cast_dtype", None)]
    return tuple(dict.fromkeys(str(d).removeprefix("torch.") for d in dtypes if d is not None))


def warn_mismatch(name: str, base) -> None:
    """Warn when a Sana-Sprint model (``guidance_embeds``) meets a non-sCM sampler, or another model ``sana_scm``."""
    config = getattr(getattr(base, "diffusion_model", None), "config", None)
    sprint = getattr(config, "guidance_embeds", None)
    if sprint is None:
        return
    if sprint and name not in SCM_SAMPLERS:
        notify_ui(f"Sana: this is a Sana-Sprint model but the sampler is {name}. Sprint is a 1-4 step consistency "
                  f"model: use sampler sana_scm with scheduler sana_sprint (or SanaSprintScheduler), 2 steps, CFG 1.")
    elif not sprint and name in SCM_SAMPLERS:
        notify_ui(f"Sana: sampler {name} is Sana-Sprint's consistency sampler but this model is not a Sprint model: "
                  f"use flow_dpm_solver with scheduler sana_flow (20 steps, CFG 4.5).")


class FiniteCheckedModel:
    """k-diffusion model wrapper: each call's output is checked for NaN/Inf (``check_finite_latent``)."""

    def __init__(self, model, steps: int, dtype_names: tuple, name: str):
        self.model, self.steps, self.dtype_names, self.name, self.calls = model, steps, dtype_names, name, 0

    def __call__(self, x, sigma, *args, **kwargs):
        out = self.model(x, sigma, *args, **kwargs)
        self.calls += 1
        sigma_value = sigma.flatten()[0] if hasattr(sigma, "flatten") else sigma
        check_finite_latent(out, min(self.calls, self.steps), self.steps, sigma_value, self.dtype_names, self.name)
        return out

    def __getattr__(self, attribute):
        return getattr(self.model, attribute)


def guard_sampler(name: str, function):
    """``function`` (k-diffusion contract) with the flow-model, sigma, finiteness and mismatch checks of this module."""

    @functools.wraps(function)
    def guarded(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        base = base_model_of(model)
        check_flow_model(getattr(base, "model_sampling", None), name)
        check_flow_sigmas(sigmas, name)
        warn_mismatch(name, base)
        steps, dtypes = len(sigmas) - 1, model_dtype_names(base)
        if not bool(x.isfinite().all()):
            raise RuntimeError(f"{name}: the latent entering the sampler holds NaN/Inf (before step 1 of {steps}); "
                               f"nothing was sampled. Likely fix: {INPUT_HINT}.")
        checked = FiniteCheckedModel(model, steps, dtypes, name)
        return function(checked, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)

    return guarded


def guard_scheduler(name: str, function):
    """Scheduler ``function(model_sampling, steps)`` that first requires a flow MODEL and checks the sigmas it made."""

    @functools.wraps(function)
    def guarded(model_sampling, steps):
        check_flow_model(model_sampling, f"scheduler {name}")
        sigmas = function(model_sampling, steps)
        check_flow_sigmas(sigmas, f"scheduler {name}")
        return sigmas

    return guarded


def guard_samplers(functions: dict) -> dict:
    """{name: guarded sampler function} for a {name: sampler function} table."""
    return {name: guard_sampler(name, function) for name, function in functions.items()}


def guard_schedulers(functions: dict) -> dict:
    """{name: guarded scheduler function} for a {name: scheduler function(model_sampling, steps)} table."""
    return {name: guard_scheduler(name, function) for name, function in functions.items()}
