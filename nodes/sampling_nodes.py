"""Sana sampling in ComfyUI: KSampler sampler/scheduler names, SAMPLER and SIGMAS nodes and the shift patch.

Registers (``register_samplers``, idempotent): samplers ``flow_dpm_solver``, ``flow_euler``, ``sana_scm``; schedulers
``sana_flow`` (Sana's Flow-DPM-Solver grid at the MODEL's shift) and ``sana_sprint`` (Sana-Sprint's TrigFlow angles).
The maths lives in ``samplers/`` (issue 6; reference/comfyui.md §4).
"""

import logging

import comfy.k_diffusion.sampling
import comfy.model_sampling
import comfy.samplers
from comfy_api.latest import io

from ..samplers import (
    SHIFT_MODES,
    flow_start_state,
    image_size_of_latent,
    resolve_shift,
    sample_flow_dpm_solver,
    sample_flow_euler,
    sample_sana_scm,
    sana_sigmas,
    sprint_sigmas,
)
from ..samplers.schedules import DC_AE_PIXELS_PER_TOKEN, SPRINT_INTERMEDIATE_ANGLE
from .common import CATEGORY

SUB_CATEGORY = CATEGORY + "/sampling"
SAMPLER_FUNCTIONS = {
    "flow_dpm_solver": sample_flow_dpm_solver,
    "flow_euler": sample_flow_euler,
    "sana_scm": sample_sana_scm,
}
MODEL_SAMPLING_MODE = "model_sampling"  # SanaFlowScheduler only: the shift the MODEL samples with now
SCHEDULER_SHIFT_MODES = (MODEL_SAMPLING_MODE, *SHIFT_MODES)
NOISE_STARTS = ("reference", "comfy")  # unscaled ε as NVlabs/diffusers, or ComfyUI's σ0·ε noise scaling
TIMESTEP_MULTIPLIER = 1000  # the DiT takes σ·1000 (DESIGN §3; ComfyUI ModelSamplingSD3 multiplier)
MAX_SHIFT = 100.0  # widget bound, as ComfyUI's ModelSamplingSD3
MAX_IMAGE_SIDE = 16384  # widget bound: 4K models (4096 px) with room for upscales
MAX_SPRINT_STEPS = 16  # widget bound; Sana-Sprint is trained for 1–4 steps


def _model_shift(model_sampling) -> float:
    shift = getattr(model_sampling, "shift", None)
    if shift is None:
        raise ValueError(
            f"Sana flow scheduler: the model samples with {type(model_sampling).__name__}, which has no flow shift. "
            f"Use a flow model (a Sana model, or one patched by ModelSamplingSana / ModelSamplingSD3)."
        )
    return float(shift)


def sana_flow_scheduler(model_sampling, steps: int):
    """Scheduler ``sana_flow``: Sana's grid shift(linspace(0.999, 0, steps + 1)) at the MODEL's flow shift."""
    return sana_sigmas(steps, _model_shift(model_sampling))


def sana_sprint_scheduler(model_sampling, steps: int):
    """Scheduler ``sana_sprint``: Sana-Sprint's TrigFlow angles as flow sigmas (2 steps: 1.5708, 1.3, 0)."""
    return sprint_sigmas(steps)


SCHEDULER_FUNCTIONS = {"sana_flow": sana_flow_scheduler, "sana_sprint": sana_sprint_scheduler}


def register_samplers() -> None:
    """Add the package's sampler and scheduler names to ComfyUI's KSampler lists; safe to call more than once."""
    for name, function in SAMPLER_FUNCTIONS.items():
        setattr(comfy.k_diffusion.sampling, f"sample_{name}", function)
        for names in (comfy.samplers.KSAMPLER_NAMES, comfy.samplers.SAMPLER_NAMES):
            if name not in names:
                names.append(name)
    for name, function in SCHEDULER_FUNCTIONS.items():
        comfy.samplers.SCHEDULER_HANDLERS[name] = comfy.samplers.SchedulerHandler(function, use_ms=True)
        if name not in comfy.samplers.SCHEDULER_NAMES:
            comfy.samplers.SCHEDULER_NAMES.append(name)


class ReferenceStartSampler(comfy.samplers.KSAMPLER):
    """KSAMPLER that starts txt2img from the unscaled noise ε (``samplers.flow_start_state``) instead of σ0·ε."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        extra_args = {**extra_args, "denoise_mask": denoise_mask}  # a copy: the guider owns its dict
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image, model_k.noise = latent_image, noise
        x = flow_start_state(noise, latent_image, sigmas[0])
        k_callback = None
        if callback is not None:
            k_callback = lambda d: callback(d["i"], d["denoised"], d["x"], len(sigmas) - 1)  # noqa: E731
        samples = self.sampler_function(model_k, x, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return model_wrap.inner_model.model_sampling.inverse_noise_scaling(sigmas[-1], samples)


class SanaModelSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """Flow sampling with x0 = x − σ·v and timesteps σ·1000 (ComfyUI ModelSamplingSD3's class, named)."""


def _dit_defaults(model) -> tuple[float, int]:
    """(flow_shift, training resolution in pixels) from the Sana DiT config of a MODEL."""
    config = getattr(model.get_model_object("diffusion_model"), "config", None)
    if config is None or not hasattr(config, "flow_shift") or not hasattr(config, "sample_size"):
        raise ValueError(
            "Sana shift: this MODEL is not a Sana DiT (no config with flow_shift / sample_size). Load it with "
            "SanaDiTLoader, or use shift_mode 'fixed' / 'token_count', which need no model defaults."
        )
    return float(config.flow_shift), int(config.sample_size) * DC_AE_PIXELS_PER_TOKEN


def _resolve(model, mode: str, shift: float, width: int, height: int) -> float:
    if mode == MODEL_SAMPLING_MODE:
        return _model_shift(model.get_model_object("model_sampling"))
    default_shift, base_size = (None, None) if mode in ("fixed", "token_count") else _dit_defaults(model)
    return resolve_shift(mode, shift=shift, width=width, height=height, default_shift=default_shift,
                         base_size=base_size)


def _shift_inputs() -> list:
    return [
        io.Float.Input("shift", default=3.0, min=0.01, max=MAX_SHIFT, step=0.01,
                       tooltip="The shift for shift_mode 'fixed' (ignored by the other modes). Sana's released "
                               "models use 3.0 (4.0 for 600M at 1024 px, 6.0 for 4K)."),
        io.Int.Input("width", default=1024, min=DC_AE_PIXELS_PER_TOKEN, max=MAX_IMAGE_SIDE,
                     step=DC_AE_PIXELS_PER_TOKEN,
                     tooltip="Image width in pixels for the resolution-based modes (sd3_resolution, token_count)."),
        io.Int.Input("height", default=1024, min=DC_AE_PIXELS_PER_TOKEN, max=MAX_IMAGE_SIDE,
                     step=DC_AE_PIXELS_PER_TOKEN,
                     tooltip="Image height in pixels for the resolution-based modes (sd3_resolution, token_count)."),
    ]


SHIFT_MODE_TOOLTIP = (
    "model_default: the variant's NVlabs flow_shift. fixed: the shift input. sd3_resolution: model shift × "
    "√(W·H / training pixels) (SD3 rule). token_count: e^μ, μ linear in W·H/32² latent tokens (Flux rule at "
    "32-px tokens: 0.5 at 256², 1.15 at 1024²)."
)


class ModelSamplingSana(io.ComfyNode):
    """Patch a Sana MODEL's flow shift (model default, fixed, or resolution-based), keeping timesteps σ·1000."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelSamplingSana", display_name="Model Sampling (Sana shift)", category=SUB_CATEGORY,
            description="Sets the timestep shift the MODEL samples with: the model's default, a fixed value, or "
                        "one computed from the image size (SD3 or token-count rule). Multiplier stays 1000.",
            inputs=[
                io.Model.Input("model", tooltip="A Sana MODEL (SanaDiTLoader)."),
                io.Combo.Input("shift_mode", options=list(SHIFT_MODES), default="model_default",
                               tooltip=SHIFT_MODE_TOOLTIP),
                *_shift_inputs(),
            ],
            outputs=[
                io.Model.Output(tooltip="A clone of the MODEL that samples with the computed shift."),
                io.Float.Output(display_name="shift", tooltip="The shift the MODEL now samples with."),
            ],
        )

    @classmethod
    def execute(cls, model, shift_mode, shift, width, height) -> io.NodeOutput:
        value = _resolve(model, shift_mode, shift, width, height)
        patched = model.clone()
        model_sampling = SanaModelSampling(model.model.model_config)
        model_sampling.set_parameters(shift=value, multiplier=TIMESTEP_MULTIPLIER)
        patched.add_object_patch("model_sampling", model_sampling)
        logging.info("ModelSamplingSana: shift_mode=%s, %dx%d -> shift %.6g", shift_mode, width, height, value)
        return io.NodeOutput(patched, value)


class SanaFlowScheduler(io.ComfyNode):
    """Sana's Flow-DPM-Solver sigma grid shift(linspace(0.999, 0, N + 1)) with a chosen shift rule."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaFlowScheduler", display_name="Sana Flow Scheduler", category=SUB_CATEGORY,
            description="Sana's exact timestep grid (NVlabs time_uniform_flow = diffusers use_flow_sigmas), from "
                        "shift(0.999) down to 0. Size comes from the latent when one is connected.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL to read the shift or the model defaults from."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Number of steps (model evaluations)."),
                io.Combo.Input("shift_mode", options=list(SCHEDULER_SHIFT_MODES), default=MODEL_SAMPLING_MODE,
                               tooltip="model_sampling: the shift the MODEL samples with now (e.g. set by "
                                       "ModelSamplingSana). " + SHIFT_MODE_TOOLTIP),
                *_shift_inputs(),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional: take width and height from this latent (32 px per latent pixel)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="steps + 1 descending flow sigmas ending at 0.")],
        )

    @classmethod
    def execute(cls, model, steps, shift_mode, shift, width, height, latent=None) -> io.NodeOutput:
        if latent is not None:
            width, height = image_size_of_latent(latent["samples"])
        value = _resolve(model, shift_mode, shift, width, height)
        logging.info("SanaFlowScheduler: shift_mode=%s, %dx%d -> shift %.6g", shift_mode, width, height, value)
        return io.NodeOutput(sana_sigmas(steps, value))


class SanaSprintScheduler(io.ComfyNode):
    """Sana-Sprint's TrigFlow angles as flow sigmas for the sana_scm sampler."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaSprintScheduler", display_name="Sana Sprint Scheduler", category=SUB_CATEGORY,
            description="Sigmas for Sana-Sprint (use with the sana_scm sampler and CFG 1): angles 1.5708 → 0, with "
                        "the 1.3 intermediate angle for 2 steps, or a custom angle list.",
            inputs=[
                io.Int.Input("steps", default=2, min=1, max=MAX_SPRINT_STEPS, tooltip="Number of steps (1–4)."),
                io.Float.Input("intermediate_angle", default=SPRINT_INTERMEDIATE_ANGLE, min=0.01, max=1.57, step=0.01,
                               tooltip="TrigFlow angle of the middle step when steps = 2 (ignored otherwise)."),
                io.String.Input("custom_angles", default="",
                                tooltip="Optional comma-separated TrigFlow angles, steps + 1 of them, descending to "
                                        "0 (e.g. '1.5708, 1.3, 0'); overrides the two inputs above."),
            ],
            outputs=[io.Sigmas.Output(tooltip="steps + 1 flow sigmas t = sin θ/(sin θ + cos θ), ending at 0.")],
        )

    @classmethod
    def execute(cls, steps, intermediate_angle, custom_angles) -> io.NodeOutput:
        text = custom_angles.strip()
        try:
            angles = [float(a) for a in text.split(",")] if text else None
        except ValueError as e:
            raise ValueError(
                f"SanaSprintScheduler: custom_angles must be comma-separated numbers, got {text!r}."
            ) from e
        return io.NodeOutput(sprint_sigmas(steps, intermediate_angle=intermediate_angle, angles=angles))


class SanaFlowDPMSolverSampler(io.ComfyNode):
    """The Flow-DPM-Solver as a SAMPLER for SamplerCustomAdvanced."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SanaFlowDPMSolverSampler", display_name="Sana Flow-DPM-Solver", category=SUB_CATEGORY,
            description="Sana's Flow-DPM-Solver (multistep DPM-Solver++ in flow variables, first step first order, "
                        "final step to σ = 0 first order). Pair with SanaFlowScheduler.",
            inputs=[
                io.Int.Input("order", default=2, min=1, max=3,
                             tooltip="Solver order: 2 as Sana samples, 3 for smoother high-step runs, 1 = Euler."),
                io.Combo.Input("noise_start", options=list(NOISE_STARTS), default="reference",
                               tooltip="reference: txt2img starts from the unscaled noise as NVlabs/diffusers do. "
                                       "comfy: ComfyUI's σ0-scaled noise. Img2img always uses σ0·ε + (1 − σ0)·latent."),
            ],
            outputs=[io.Sampler.Output(tooltip="A SAMPLER for SamplerCustomAdvanced / SamplerCustom.")],
        )

    @classmethod
    def execute(cls, order, noise_start) -> io.NodeOutput:
        if noise_start == "reference":
            sampler_class = ReferenceStartSampler
        elif noise_start == "comfy":
            sampler_class = comfy.samplers.KSAMPLER
        else:
            raise ValueError(
                f"SanaFlowDPMSolverSampler: noise_start must be one of {NOISE_STARTS}, got {noise_start!r}."
            )
        return io.NodeOutput(sampler_class(sample_flow_dpm_solver, extra_options={"order": order}))


NODES = [ModelSamplingSana, SanaFlowScheduler, SanaSprintScheduler, SanaFlowDPMSolverSampler]
