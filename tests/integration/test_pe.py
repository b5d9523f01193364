"""Integration (real ComfyUI): position encodings of Sana DiTs driven by core's ScaleROPE and by SanaPositionEncoding.

Checkpoints from tests/fixtures/rope.py: a 2-D RoPE DiT declared in safetensors metadata (training grid 8x8 tokens)
and its NoPE twin. Images are sampled at 512 px, a 16x16 latent grid, twice the training grid.
"""

import pytest
import torch

from tests.fixtures.rope import NOPE_FILE, ROPE_FILE
from tests.integration.graph import Graph

pytestmark = pytest.mark.integration

GEMMA = "gemma-2-2b-it/"  # text fixture folder (tests/fixtures/text.py)
SIDE_PX = 512  # 16x16 latent tokens: twice the fixtures' training grid
CHANGED = 1e-3  # a position-encoding change moves the 2-step latent far above this; rounding stays far below
PE_DEFAULTS = {"base_size": 0, "pe_interpolation": 0.0, "train_height": 0, "train_width": 0, "yarn_beta_fast": 32.0,
               "yarn_beta_slow": 1.0, "yarn_temperature": True, "time_schedule": "linear", "time_watershed": 0.3}


@pytest.fixture(scope="module")
def latent_node(comfy):
    """EmptySanaLatent when registered, else stock EmptyHunyuanImageLatent (/32; KSampler fixes the channels)."""
    info = comfy.object_info()
    if "SanaTextEncoderLoader" not in info:
        pytest.skip("SanaTextEncoderLoader is not registered: no way to build Sana conditioning in ComfyUI")
    if ROPE_FILE not in str(info["SanaDiTLoader"]["input"]["required"]["dit_name"]):
        pytest.skip(f"{ROPE_FILE} is not in the server's models tree: register tests.fixtures.rope in the harness")
    return "EmptySanaLatent" if "EmptySanaLatent" in info else "EmptyHunyuanImageLatent"


def sample_graph(latent_node: str, dit_name: str, patch=None) -> Graph:
    """Text-to-latent graph with stock KSampler; `patch(graph, model_link)` may insert model-patch nodes."""
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=dit_name, weight_dtype="default")[0]
    if patch is not None:
        model = patch(g, model)
    clip = g.node("SanaTextEncoderLoader", llm_name=GEMMA, byt5_name="none", projector_name="none", device="cpu")
    cond = g.node("CLIPTextEncode", clip=clip[0], text="a red fox in the snow")
    latent = g.node(latent_node, width=SIDE_PX, height=SIDE_PX, batch_size=1)
    sampled = g.node("KSampler", model=model, positive=cond[0], negative=cond[0], latent_image=latent[0], seed=0,
                     steps=2, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.node("SaveLatent", samples=sampled[0], filename_prefix="pe")
    return g


def scale_rope(scale: float, shift: float = 0.0):
    return lambda g, model: g.node("ScaleROPE", model=model, scale_x=scale, shift_x=shift, scale_y=scale,
                                   shift_y=shift, scale_t=1.0, shift_t=0.0)[0]


def position_encoding(mode: str):
    return lambda g, model: g.node("SanaPositionEncoding", model=model, mode=mode, **PE_DEFAULTS)[0]


def latent(comfy, latent_node: str, dit_name: str, patch=None) -> torch.Tensor:
    latents = comfy.run(sample_graph(latent_node, dit_name, patch)).latents
    assert len(latents) == 1 and torch.isfinite(latents[0]).all(), "expected one finite latent"
    return latents[0]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def test_pe_scale_rope_changes_a_rope_model(comfy, latent_node):
    base = latent(comfy, latent_node, ROPE_FILE)
    diff = max_diff(latent(comfy, latent_node, ROPE_FILE, scale_rope(0.5)), base)
    assert diff > CHANGED, f"ScaleROPE(scale 0.5) left the RoPE model's latent unchanged (max abs diff {diff})"


def test_pe_scale_rope_leaves_a_nope_model_unchanged(comfy, latent_node):
    base = latent(comfy, latent_node, NOPE_FILE)
    diff = max_diff(latent(comfy, latent_node, NOPE_FILE, scale_rope(0.5, shift=3.0)), base)
    assert diff == 0.0, f"ScaleROPE changed a model without RoPE (max abs diff {diff})"


@pytest.mark.parametrize("mode", ["scaled", "ntk", "yarn", "time_aware"])
def test_pe_node_scaled_modes_change_a_rope_model_above_its_grid(comfy, latent_node, mode):
    plain = latent(comfy, latent_node, ROPE_FILE, position_encoding("rope"))
    diff = max_diff(latent(comfy, latent_node, ROPE_FILE, position_encoding(mode)), plain)
    assert diff > CHANGED, f"mode {mode} at twice the training grid equals plain RoPE (max abs diff {diff})"


def test_pe_node_model_mode_keeps_the_checkpoint_encoding(comfy, latent_node):
    base = latent(comfy, latent_node, ROPE_FILE)
    diff = max_diff(latent(comfy, latent_node, ROPE_FILE, position_encoding("model")), base)
    assert diff == 0.0, f"mode 'model' changed the output (max abs diff {diff})"


def test_pe_node_rejects_an_encoding_the_checkpoint_lacks(comfy, latent_node):
    message = comfy.run_error(sample_graph(latent_node, ROPE_FILE, position_encoding("sincos")))
    assert "declares 'rope'" in message, f"unexpected error text: {message[:500]}"
