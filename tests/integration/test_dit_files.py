"""SanaDiTLoader through a real ComfyUI on files that cannot load as they are: a DiT with a tensor missing is refused
with the key named (not loaded non-strictly), and a diffusers file without config.json says which resolution it
assumed (log, progress text and the node's UI text) and follows the `resolution` input."""

import pytest
import torch

from tests.fixtures.dit_files import MISSING_KEY, MISSING_TENSOR_FILE, NO_CONFIG_FILE
from tests.integration.graph import Graph

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 64, 64  # -> 2 x 2 latent
GEMMA = "gemma-2-2b-it/"


def _graph(dit_name: str, resolution: str = "auto") -> Graph:
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=dit_name, weight_dtype="default", resolution=resolution)
    clip = g.node("SanaTextEncoderLoader", llm_name=GEMMA, byt5_name="none", projector_name="none", device="cpu")
    positive = g.node("CLIPTextEncode", clip=clip[0], text="a fox")
    latent = g.node("EmptySanaLatent", width=WIDTH, height=HEIGHT, batch_size=1)
    sampled = g.node("KSampler", model=model[0], positive=positive[0], negative=positive[0], latent_image=latent[0],
                     seed=0, steps=1, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.node("SaveLatent", samples=sampled[0], filename_prefix="dit_files")
    return g


def _require_nodes(comfy):
    info = comfy.object_info()
    missing = [n for n in ("SanaTextEncoderLoader", "EmptySanaLatent") if n not in info]
    if missing:
        pytest.skip(f"{missing} not registered")
    return info


def test_missing_tensor_refused_with_key(comfy):
    _require_nodes(comfy)
    message = comfy.run_error(_graph(MISSING_TENSOR_FILE))
    assert MISSING_TENSOR_FILE in message and MISSING_KEY in message and "missing" in message, message


def test_resolution_input_for_file_without_config(comfy):
    info = _require_nodes(comfy)
    assert "resolution" in str(info["SanaDiTLoader"]["input"]), "SanaDiTLoader should offer a resolution input"
    offset = comfy.log_offset()
    auto = comfy.run(_graph(NO_CONFIG_FILE))
    texts = [t for out in auto.outputs.values() for t in out.get("text", [])]
    assert any("assumed 1024 px" in t and "resolution" in t for t in texts), auto.outputs
    assert "assumed 1024 px" in comfy.log(offset)
    chosen = comfy.run(_graph(NO_CONFIG_FILE, "4096"))
    assert not any("assumed" in t for out in chosen.outputs.values() for t in out.get("text", []))
    assert "sin-cos PE (base 128, interpolation 2.0)" in comfy.log(offset)
    assert all(torch.isfinite(t).all() for t in auto.latents + chosen.latents)
