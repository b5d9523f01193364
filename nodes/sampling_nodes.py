"""Sana sampling in ComfyUI: KSampler sampler/scheduler names, SAMPLER and SIGMAS nodes and the shift patch.

Registers (``register_samplers``, idempotent): samplers ``flow_dpm_solver``, ``flow_euler``, ``sana_scm``; schedulers
``sana_flow`` (Sana's Flow-DPM-Solver grid at the MODEL's shift) and ``sana_sprint`` (Sana-Sprint's TrigFlow angles).
The maths lives in ``samplers/`` (issue 6; docs/ARCHITECTURE.md §12.2, §13).
"""

import logging

import comfy.k_diffusion.sampling
import comfy.model_sampling
import comfy.samplers
import torch
from comfy_api.latest import io

from ..samplers import (
    SHIFT_MODES,
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
from .sampling_guard import check_flow_model, guard_samplers, guard_schedulers

SUB_CATEGORY = CATEGORY + "/sampling"
SAMPLER_FUNCTIONS = {  # wrapped by guard_samplers below (issue 15: flow MODEL, sigmas in [0, 1], finite latents)
    "flow_dpm_solver": sample_flow_dpm_solver,
    "flow_euler": sample_flow_euler,
    "sana_scm": sample_sana_scm,
}
MODEL_SAMPLING_MODE = "model_sampling"  # SanaFlowScheduler only: the shift the MODEL samples with now
SCHEDULER_SHIFT_MODES = (MODEL_SAMPLING_MODE, *SHIFT_MODES)
NOISE_STARTS = ("reference", "comfy")  # unscaled ε as NVlabs/diffusers, or ComfyUI's σ0·ε noise scaling
TIMESTEP_MULTIPLIER = 1000  # the DiT takes σ·1000 (docs/ARCHITECTURE.md §2; ComfyUI ModelSamplingSD3 multiplier)
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


SCHEDULER_FUNCTIONS = guard_schedulers({"sana_flow": sana_flow_scheduler, "sana_sprint": sana_sprint_scheduler})
SAMPLER_FUNCTIONS = guard_samplers(SAMPLER_FUNCTIONS)


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
    """Core's KSAMPLER, except that txt2img starts from the unscaled noise ε as NVlabs/diffusers do.

    Core's ``KSAMPLER.sample`` scales the noise by σ0 (CONST ``noise_scaling``: σ0·ε + (1 − σ0)·latent); Sana's
    reference solvers start from ε itself at σ0 = shift(0.999) < 1. For an empty latent without a noise mask this
    hands core ε/σ0, so core's scaling yields ε. Everything else (img2img, inpainting with ``KSamplerX0Inpaint``,
    ``inpaint_options``, callbacks, inverse scaling) is core's own code, unchanged.
    """

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        if _is_text_to_image(latent_image, denoise_mask) and len(sigmas) > 1 and float(sigmas[0]) > 0:
            noise = noise / sigmas[0]  # core multiplies by σ0 (+ (1 − σ0)·0): the sampler starts from ε
        return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image=latent_image,
                              denoise_mask=denoise_mask, disable_pbar=disable_pbar)


def _is_text_to_image(latent_image, denoise_mask) -> bool:
    """An empty (all-zero) latent and no noise mask: what core's CFGGuider treats as "don't shift the latent"."""
    return denoise_mask is None and (latent_image is None or not bool(torch.any(latent_image)))


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
        check_flow_model(model.get_model_object("model_sampling"), "SanaFlowScheduler")
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
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="img2img strength as diffusers SanaSprintImg2ImgPipeline: keeps the last "
                                       "steps of the grid, skipping int(steps − steps·denoise) of them. 1 = "
                                       "text-to-image; with 2 steps, 0.5 starts at the 1.3 angle."),
            ],
            outputs=[io.Sigmas.Output(tooltip="steps + 1 flow sigmas t = sin θ/(sin θ + cos θ), ending at 0.")],
        )

    @classmethod
    def execute(cls, steps, intermediate_angle, custom_angles, denoise=1.0) -> io.NodeOutput:
        text = custom_angles.strip()
        try:
            angles = [float(a) for a in text.split(",")] if text else None
        except ValueError as e:
            raise ValueError(
                f"SanaSprintScheduler: custom_angles must be comma-separated numbers, got {text!r}."
            ) from e
        sigmas = sprint_sigmas(steps, intermediate_angle=intermediate_angle, angles=angles)
        return io.NodeOutput(sprint_strength_tail(sigmas, denoise))


def sprint_strength_tail(sigmas, strength: float):
    """The img2img part of a Sprint grid, as diffusers ``SanaSprintImg2ImgPipeline.get_timesteps``: of N steps it
    skips int(max(N − min(N·strength, N), 0)) and keeps the rest; the sampler then starts at the first kept sigma
    from σ0·ε + (1 − σ0)·latent (= the pipeline's cos θ·latent + sin θ·ε in TrigFlow units). sigmas: [N + 1]."""
    steps = len(sigmas) - 1
    skipped = int(max(steps - min(steps * strength, steps), 0))
    if skipped >= steps:
        raise ValueError(
            f"SanaSprintScheduler: denoise {strength} leaves no step of {steps} (diffusers keeps "
            f"{steps} − int({steps} − {steps}·denoise)); raise denoise or the step count."
        )
    return sigmas[skipped:]


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
        return io.NodeOutput(sampler_class(SAMPLER_FUNCTIONS["flow_dpm_solver"], extra_options={"order": order}))


NODES = [ModelSamplingSana, SanaFlowScheduler, SanaSprintScheduler, SanaFlowDPMSolverSampler]
