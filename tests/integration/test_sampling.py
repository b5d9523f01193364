"""Sana sampling in a real ComfyUI: the registered KSampler names (flow_dpm_solver, flow_euler, sana_scm; schedulers
sana_flow, sana_sprint) and our SAMPLER / SIGMAS nodes run on our MODEL, and ModelSamplingSana sets the shift its
formula gives (checked against stock ModelSamplingSD3 at that shift, and through its FLOAT output).

Models come from the DiT and text fixtures (tests/fixtures/dit.py, text.py)."""

import math

import pytest
import torch

from tests.fixtures.dit import VARIANTS
from tests.fixtures.text import GEMMA_FOLDER
from tests.integration.graph import Graph

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 128, 96  # -> 4 x 3 latent
LATENT_SHAPE = (1, 32, HEIGHT // 32, WIDTH // 32)
DIT_16B = VARIANTS["1.0-1.6B"][1]  # flow_shift 3.0, trained at 1024 px
DIT_600M = VARIANTS["1.0"][1]  # flow_shift 4.0 (NVlabs Sana_600M_img1024.yaml)
DIT_SPRINT = VARIANTS["sprint"][1]
STEPS = 3
SAME_ATOL = 1e-5  # two graphs that run the same maths (float32 on the CPU)
MIN_CHANGE = 1e-4  # a different shift / start must move the latent by more than float noise
NEW_NODES = ("ModelSamplingSana", "SanaFlowScheduler", "SanaSprintScheduler", "SanaFlowDPMSolverSampler")


@pytest.fixture(scope="module")
def latent_node(comfy):
    info = comfy.object_info()
    for node in ("SanaDiTLoader", "SanaTextEncoderLoader", *NEW_NODES):
        if node not in info:
            pytest.skip(f"{node} is not registered in this ComfyUI")
    return "EmptySanaLatent" if "EmptySanaLatent" in info else "EmptyHunyuanImageLatent"


def _inputs(g: Graph, latent_node: str, dit: str, model_patch=None, guidance=None):
    """(model, positive, negative, latent) nodes; model_patch(g, model) may wrap the MODEL."""
    model = g.node("SanaDiTLoader", dit_name=dit, weight_dtype="default")
    if model_patch is not None:
        model = model_patch(g, model)
    clip = g.node("SanaTextEncoderLoader", llm_name=f"{GEMMA_FOLDER}/", byt5_name="none", projector_name="none",
                  device="cpu")
    positive = g.node("CLIPTextEncode", clip=clip[0], text="a red fox in the snow")
    negative = g.node("CLIPTextEncode", clip=clip[0], text="")
    if guidance is not None:
        positive = g.node("FluxGuidance", conditioning=positive[0], guidance=guidance)
    return model, positive, negative, g.node(latent_node, width=WIDTH, height=HEIGHT, batch_size=1)


def _ksampler(comfy, latent_node, dit=DIT_16B, sampler="flow_dpm_solver", scheduler="sana_flow", cfg=2.0,
              model_patch=None, guidance=None) -> torch.Tensor:
    g = Graph()
    model, positive, negative, latent = _inputs(g, latent_node, dit, model_patch, guidance)
    sampled = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=7, steps=STEPS, cfg=cfg, sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    g.node("SaveLatent", samples=sampled[0], filename_prefix="sampling")
    return _one_latent(comfy.run(g))


def _custom(comfy, latent_node, sampler_fn, sigmas_fn, dit=DIT_16B, cfg=2.0, guidance=None) -> torch.Tensor:
    """SamplerCustomAdvanced with SAMPLER = sampler_fn(g) and SIGMAS = sigmas_fn(g, model)."""
    g = Graph()
    model, positive, negative, latent = _inputs(g, latent_node, dit, guidance=guidance)
    guider = g.node("CFGGuider", model=model[0], positive=positive[0], negative=negative[0], cfg=cfg)
    sampled = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=7)[0], guider=guider[0],
                     sampler=sampler_fn(g)[0], sigmas=sigmas_fn(g, model)[0], latent_image=latent[0])
    g.node("SaveLatent", samples=sampled[0], filename_prefix="sampling_custom")
    return _one_latent(comfy.run(g))


def _one_latent(result) -> torch.Tensor:
    assert len(result.latents) == 1, f"expected one saved latent, got {len(result.latents)}"
    latent = result.latents[0]
    assert tuple(latent.shape) == LATENT_SHAPE and torch.isfinite(latent).all(), f"bad latent {tuple(latent.shape)}"
    return latent


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _shift_patch(mode: str, shift=3.0, width=1024, height=1024):
    return lambda g, model: g.node("ModelSamplingSana", model=model[0], shift_mode=mode, shift=shift, width=width,
                                   height=height)


def _sd3_patch(shift: float):
    return lambda g, model: g.node("ModelSamplingSD3", model=model[0], shift=shift)


def test_sampling_names_and_tooltips_registered(comfy, latent_node):
    info = comfy.object_info()
    ksampler = info["KSampler"]["input"]["required"]
    samplers, schedulers = ksampler["sampler_name"][0], ksampler["scheduler"][0]
    for name in ("flow_dpm_solver", "flow_euler", "sana_scm"):
        assert samplers.count(name) == 1, f"sampler {name} registered {samplers.count(name)} times"
    for name in ("sana_flow", "sana_sprint"):
        assert schedulers.count(name) == 1, f"scheduler {name} registered {schedulers.count(name)} times"
    for node in NEW_NODES:
        inputs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        missing = [k for k, spec in inputs.items() if not (len(spec) > 1 and spec[1].get("tooltip"))]
        assert not missing, f"{node}: inputs without tooltip: {missing}"
        assert all(info[node]["output_tooltips"]), f"{node}: an output has no tooltip"


@pytest.mark.parametrize("sampler", ["flow_dpm_solver", "flow_euler"])
def test_ksampler_flow_samplers_with_sana_flow(comfy, latent_node, sampler):
    latent = _ksampler(comfy, latent_node, sampler=sampler)
    other = _ksampler(comfy, latent_node, sampler="euler", scheduler="simple")
    assert _diff(latent, other) > MIN_CHANGE, f"{sampler}+sana_flow gave the same latent as euler+simple"


def test_sampler_custom_advanced_matches_ksampler(comfy, latent_node):
    ksampler = _ksampler(comfy, latent_node)
    scheduler = lambda g, model: g.node("SanaFlowScheduler", model=model[0], steps=STEPS,  # noqa: E731
                                        shift_mode="model_sampling", shift=3.0, width=1024, height=1024)
    comfy_start = _custom(comfy, latent_node, lambda g: g.node("SanaFlowDPMSolverSampler", order=2,
                                                               noise_start="comfy"), scheduler)
    assert _diff(comfy_start, ksampler) <= SAME_ATOL, "SamplerCustomAdvanced(σ0-scaled start) != KSampler"
    reference = _custom(comfy, latent_node, lambda g: g.node("SanaFlowDPMSolverSampler", order=2,
                                                             noise_start="reference"), scheduler)
    change = _diff(reference, ksampler)
    assert 0 < change, "noise_start='reference' must start from the unscaled noise (σ0 = 0.99967 < 1)"
    basic = _custom(comfy, latent_node, lambda g: g.node("SanaFlowDPMSolverSampler", order=2, noise_start="comfy"),
                    lambda g, model: g.node("BasicScheduler", model=model[0], scheduler="sana_flow", steps=STEPS,
                                            denoise=1.0))
    assert _diff(basic, ksampler) <= SAME_ATOL, "BasicScheduler(sana_flow) != SanaFlowScheduler(model_sampling)"


def _shift_output(comfy, dit: str, mode: str, shift=3.0, width=1024, height=1024) -> float:
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=dit, weight_dtype="default")
    patched = g.node("ModelSamplingSana", model=model[0], shift_mode=mode, shift=shift, width=width, height=height)
    preview = g.node("PreviewAny", source=patched[1])
    return float(comfy.run(g).outputs[preview.id]["text"][0])


@pytest.mark.parametrize(
    "dit,mode,width,height,expected",
    [
        (DIT_600M, "model_default", 1024, 1024, 4.0),
        (DIT_16B, "fixed", 1024, 1024, 5.0),
        (DIT_16B, "sd3_resolution", 2048, 1024, 3.0 * math.sqrt(2)),  # 3 · √(2048·1024 / 1024²)
        (DIT_600M, "sd3_resolution", 512, 512, 2.0),  # 4 · √(512² / 1024²)
        (DIT_16B, "token_count", 1024, 1024, math.exp(1.15)),  # 1024 tokens = max_tokens → μ = max_shift
        (DIT_16B, "token_count", 512, 512, math.exp(0.5 + 0.65 / 960 * 192)),  # 256 tokens
    ],
)
def test_model_sampling_sana_shift_formula(comfy, latent_node, dit, mode, width, height, expected):
    value = _shift_output(comfy, dit, mode, shift=5.0, width=width, height=height)
    assert value == pytest.approx(expected, rel=1e-9), f"{mode} at {width}x{height}: shift {value}, expected {expected}"


@pytest.mark.parametrize("mode,width,height,expected", [("fixed", 1024, 1024, 5.0),
                                                       ("sd3_resolution", 2048, 2048, 6.0)])
def test_model_sampling_sana_changes_sampling(comfy, latent_node, mode, width, height, expected):
    ours = _ksampler(comfy, latent_node, model_patch=_shift_patch(mode, 5.0, width, height))
    stock = _ksampler(comfy, latent_node, model_patch=_sd3_patch(expected))
    assert _diff(ours, stock) <= SAME_ATOL, f"ModelSamplingSana({mode}) != ModelSamplingSD3({expected})"
    default = _ksampler(comfy, latent_node)
    assert _diff(ours, default) > MIN_CHANGE, f"ModelSamplingSana({mode}) did not change the sampling"


def test_sana_scm_sprint_ksampler_and_custom(comfy, latent_node):
    ksampler = _ksampler(comfy, latent_node, dit=DIT_SPRINT, sampler="sana_scm", scheduler="sana_sprint", cfg=1.0,
                         guidance=4.5)
    custom = _custom(comfy, latent_node, lambda g: g.node("KSamplerSelect", sampler_name="sana_scm"),
                     lambda g, model: g.node("SanaSprintScheduler", steps=STEPS, intermediate_angle=1.3,
                                             custom_angles=""), dit=DIT_SPRINT, cfg=1.0, guidance=4.5)
    assert _diff(ksampler, custom) <= SAME_ATOL, "KSampler(sana_scm, sana_sprint) != SamplerCustomAdvanced route"
    other_guidance = _ksampler(comfy, latent_node, dit=DIT_SPRINT, sampler="sana_scm", scheduler="sana_sprint",
                               cfg=1.0, guidance=1.0)
    assert _diff(ksampler, other_guidance) > MIN_CHANGE, "Sprint guidance did not reach the model"


def test_sana_flow_scheduler_rejects_bad_angles(comfy, latent_node):
    g = Graph()
    sigmas = g.node("SanaSprintScheduler", steps=2, intermediate_angle=1.3, custom_angles="1.0, 1.2, 0")
    g.node("PreviewAny", source=sigmas[0])
    message = comfy.run_error(g)
    assert "custom angles" in message and "descending" in message, message
