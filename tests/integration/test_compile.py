"""ComfyUI's stock TorchCompileModel (comfy_extras/nodes_torch_compile.py, CPU inductor) on a Sana MODEL: the
compiled model samples with stock KSampler and gives the eager image, decoded by the DC-AE fixture.

Models: tests/fixtures/dit.py (1.6B-class, tiny depth), dcae.py, text.py; all random weights, float32 CPU."""

import numpy as np
import pytest
import torch

from tests.fixtures.dcae import ORIGINAL_DIR, ORIGINAL_FILE
from tests.fixtures.dit import VARIANTS
from tests.integration.graph import Graph

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 96, 64  # -> 3 x 2 latent
GEMMA = "gemma-2-2b-it/"
# Compiled vs eager after 2 Euler steps with CFG, float32: inductor re-associates reductions (LayerNorm, linear
# attention sums), a few ulps per op; measured 6.6e-7 of the latent's scale. 1e-4 leaves room for other CPUs.
LATENT_REL_TOL = 1e-4
# uint8 images decoded from those latents: rounding can flip a level where a value sits on a boundary (measured 1).
IMAGE_MAX_ABS = 1


def _graph(compiled: bool) -> Graph:
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=VARIANTS["1.0-1.6B"][1], weight_dtype="default")
    if compiled:
        model = g.node("TorchCompileModel", model=model[0], backend="inductor")
    clip = g.node("SanaTextEncoderLoader", llm_name=GEMMA, byt5_name="none", projector_name="none", device="cpu")
    sampled = g.node("KSampler", model=model[0], positive=g.node("CLIPTextEncode", clip=clip[0], text="a fox")[0],
                     negative=g.node("CLIPTextEncode", clip=clip[0], text="")[0], seed=3, steps=2, cfg=3.0,
                     sampler_name="euler", scheduler="simple", denoise=1.0,
                     latent_image=g.node("EmptySanaLatent", width=WIDTH, height=HEIGHT, batch_size=1)[0])
    g.node("SaveLatent", samples=sampled[0], filename_prefix="compiled" if compiled else "eager")
    vae = g.node("SanaVAELoader", vae_name=f"{ORIGINAL_DIR}/{ORIGINAL_FILE}", tiling="auto")
    g.node("SaveImage", images=g.node("VAEDecode", samples=sampled[0], vae=vae[0])[0],
           filename_prefix="compiled" if compiled else "eager")
    return g


def test_torch_compile_model_node_gives_the_eager_image(comfy):
    info = comfy.object_info()
    missing = [n for n in ("TorchCompileModel", "SanaTextEncoderLoader", "EmptySanaLatent") if n not in info]
    if missing:
        pytest.skip(f"nodes not registered: {missing}")
    eager = comfy.run(_graph(compiled=False))
    compiled = comfy.run(_graph(compiled=True))
    (latent_e,), (latent_c,) = eager.latents, compiled.latents
    error = ((latent_c - latent_e).abs().max() / latent_e.abs().max()).item()
    print(f"compiled vs eager: latent max rel diff {error:.3e}")
    assert torch.isfinite(latent_c).all() and error <= LATENT_REL_TOL, f"compiled latent differs by {error:.2e}"
    (image_e,), (image_c,) = eager.images, compiled.images
    diff = np.abs(image_c.astype(np.int16) - image_e.astype(np.int16)).max()
    print(f"compiled vs eager: image max abs diff {diff} / 255")
    assert diff <= IMAGE_MAX_ABS, f"compiled image differs from eager by {diff} levels of 255"
