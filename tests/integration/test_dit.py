"""SanaDiTLoader in a real ComfyUI: every fixture variant samples with stock KSampler, stock model nodes
(ModelSamplingSD3, SamplerCustomAdvanced, FluxGuidance, LoraLoaderModelOnly) work on it, and bad files give errors
naming what they are while the server keeps serving.

Conditioning comes from the text helper's SanaTextEncoderLoader on the text fixture (tests/fixtures/text.py)."""

import pytest
import torch

from tests.fixtures.dit import FOREIGN, LORA_NAME, VARIANTS
from tests.integration.graph import Graph

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 128, 96  # -> 4 x 3 latent
LATENT_SHAPE = (1, 32, HEIGHT // 32, WIDTH // 32)
DIFFUSERS_ENTRY = f"{VARIANTS['1.0-1.6B'][2]}/transformer/diffusion_pytorch_model.safetensors"
DIT_FILES = [original for _, original, _, _ in VARIANTS.values()] + [DIFFUSERS_ENTRY]
GEMMA = "gemma-2-2b-it/"
BASE_FILE = VARIANTS["1.0-1.6B"][1]
LORA_MIN_CHANGE = 1e-4  # a LoRA on blocks.0.cross_attn.q_linear must move the latent by more than float noise


@pytest.fixture(scope="module")
def latent_node(comfy):
    """EmptySanaLatent when registered, else stock EmptyHunyuanImageLatent (/32; KSampler fixes the channels)."""
    info = comfy.object_info()
    if "SanaTextEncoderLoader" not in info:
        pytest.skip("SanaTextEncoderLoader is not registered: no way to build Sana conditioning in ComfyUI")
    return "EmptySanaLatent" if "EmptySanaLatent" in info else "EmptyHunyuanImageLatent"


def _conditioning(g: Graph):
    clip = g.node("SanaTextEncoderLoader", llm_name=GEMMA, byt5_name="none", projector_name="none", device="cpu")
    positive = g.node("CLIPTextEncode", clip=clip[0], text="a red fox in the snow")
    negative = g.node("CLIPTextEncode", clip=clip[0], text="")
    return positive, negative


def _sample_graph(latent_node: str, dit_name: str, weight_dtype="default", lora_strength=None, guidance=None,
                  pag_layers=None):
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=dit_name, weight_dtype=weight_dtype)
    if pag_layers is not None:
        model = g.node("SanaPAG", model=model[0], scale=2.0, layers=pag_layers)
    if lora_strength is not None:
        model = g.node("LoraLoaderModelOnly", model=model[0], lora_name=LORA_NAME, strength_model=lora_strength)
    positive, negative = _conditioning(g)
    if guidance is not None:
        positive = g.node("FluxGuidance", conditioning=positive[0], guidance=guidance)
    latent = g.node(latent_node, width=WIDTH, height=HEIGHT, batch_size=1)
    sampled = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=0, steps=2, cfg=2.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.node("SaveLatent", samples=sampled[0], filename_prefix="dit")
    return g


def _latent(result) -> torch.Tensor:
    assert len(result.latents) == 1, f"expected one saved latent, got {len(result.latents)}"
    return result.latents[0]


@pytest.mark.parametrize("dit_name", DIT_FILES)
def test_dit_loader_ksampler_each_variant(comfy, latent_node, dit_name):
    latent = _latent(comfy.run(_sample_graph(latent_node, dit_name)))
    assert tuple(latent.shape) == LATENT_SHAPE and torch.isfinite(latent).all()
    assert "detected Sana" in comfy.log(), "the loader should log the detected config"


def test_dit_loader_fp8_weights_and_sprint_guidance(comfy, latent_node):
    latent = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE, weight_dtype="fp8_e4m3fn")))
    assert torch.isfinite(latent).all()
    sprint = VARIANTS["sprint"][1]
    low = _latent(comfy.run(_sample_graph(latent_node, sprint, guidance=1.5)))
    high = _latent(comfy.run(_sample_graph(latent_node, sprint, guidance=6.0)))
    assert (low - high).abs().max().item() > LORA_MIN_CHANGE, "FluxGuidance should reach Sprint's guidance embedding"


def test_dit_lora_changes_output(comfy, latent_node):
    base = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE, lora_strength=0.0)))
    patched = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE, lora_strength=1.0)))
    change = (patched - base).abs().max().item()
    assert change > LORA_MIN_CHANGE, f"LoRA on original parameter names changed the latent by only {change:.2e}"
    assert "lora key not loaded" not in comfy.log()


def test_dit_model_sampling_sd3_and_sampler_custom_advanced(comfy, latent_node):
    g = Graph()
    model = g.node("ModelSamplingSD3", model=g.node("SanaDiTLoader", dit_name=BASE_FILE, weight_dtype="default")[0],
                   shift=4.0)
    positive, negative = _conditioning(g)
    guider = g.node("CFGGuider", model=model[0], positive=positive[0], negative=negative[0], cfg=2.0)
    sigmas = g.node("BasicScheduler", model=model[0], scheduler="simple", steps=2, denoise=1.0)
    latent = g.node(latent_node, width=WIDTH, height=HEIGHT, batch_size=1)
    sampled = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=1)[0], guider=guider[0],
                     sampler=g.node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas[0],
                     latent_image=latent[0])
    g.node("SaveLatent", samples=sampled[0], filename_prefix="dit_custom")
    result = comfy.run(g)
    assert any(tuple(t.shape) == LATENT_SHAPE and torch.isfinite(t).all() for t in result.latents)


def test_dit_pag_changes_output_and_checks_layers(comfy, latent_node):
    plain = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE)))
    pag = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE, pag_layers="0")))
    assert (pag - plain).abs().max().item() > LORA_MIN_CHANGE, "SanaPAG should change the sampled latent"
    message = comfy.run_error(_sample_graph(latent_node, BASE_FILE, pag_layers="8"))
    assert "blocks 0..0" in message, message


@pytest.mark.parametrize("file_name", sorted(FOREIGN))
def test_dit_loader_bad_file_errors_and_server_survives(comfy, latent_node, file_name):
    message = comfy.run_error(_sample_graph(latent_node, file_name))
    assert FOREIGN[file_name][1] in message and "expected a Sana DiT" in message, message
    latent = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE)))
    assert torch.isfinite(latent).all()

