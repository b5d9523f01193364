"""SanaDiTLoader in a real ComfyUI: every fixture variant samples with stock KSampler, stock model nodes
(ModelSamplingSD3, SamplerCustomAdvanced, FluxGuidance, LoraLoaderModelOnly) work on it, and bad files give errors
naming what they are while the server keeps serving.

Conditioning comes from the text helper's SanaTextEncoderLoader on the text fixture (tests/fixtures/text.py)."""

import pytest
import torch

from tests.assertions import max_abs_diff
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
# fp8_e4m3fn weights (3 mantissa bits) vs fp32, same seed, 2 euler steps on the 1.6B fixture: measured
# max |a - b| = 0.33 on latents of max ~9; the lower bound proves the weights really were stored in fp8.
FP8_ATOL = 0.8
FP8_MIN_CHANGE = 1e-2


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


def _expected_description(dit_name: str) -> str:
    """The part of the loader's "detected ..." log line fixed by the fixture's config for `dit_name`."""
    fields = next(config for config, original, folder, _ in VARIANTS.values()
                  if dit_name in (original, f"{folder}/transformer/diffusion_pytorch_model.safetensors"))
    hidden = fields["num_cross_attention_heads"] * fields["cross_attention_head_dim"]
    return (f"depth {fields['num_layers']}, hidden {hidden}, cross heads {fields['num_cross_attention_heads']}, "
            f"qk-norm {'qk_norm' in fields}, cross-norm {'qk_norm' in fields}, "
            f"guidance embed {fields.get('guidance_embeds', False)}")


@pytest.mark.parametrize("dit_name", DIT_FILES)
def test_dit_loader_ksampler_each_variant(comfy, latent_node, dit_name):
    since = comfy.log_offset()  # the server log accumulates over the session: read only what this run prints
    latent = _latent(comfy.run(_sample_graph(latent_node, dit_name)))
    assert tuple(latent.shape) == LATENT_SHAPE and torch.isfinite(latent).all()
    detected = [line for line in comfy.log(since).splitlines() if "Sana DiT" in line and ", detected " in line]
    assert len(detected) == 1, f"the loader should log one detected config for {dit_name}, got {detected}"
    assert _expected_description(dit_name) in detected[0], f"{dit_name}: {detected[0]}"


def test_dit_loader_fp8_weights_and_sprint_guidance(comfy, latent_node):
    fp8 = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE, weight_dtype="fp8_e4m3fn")))
    fp32 = _latent(comfy.run(_sample_graph(latent_node, BASE_FILE, weight_dtype="fp32")))
    error = max_abs_diff(fp8, fp32)
    print(f"fp8_e4m3fn vs fp32 weights: max |a - b| = {error:.3e} (latent max {fp32.abs().max():.3g})")
    assert FP8_MIN_CHANGE < error <= FP8_ATOL, f"fp8 weights vs fp32: max |a - b| = {error:.3e}, expected in " \
        f"({FP8_MIN_CHANGE}, {FP8_ATOL}] (0: the weights were not stored in fp8)"
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

