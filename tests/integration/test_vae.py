"""The DC-AE as a native ComfyUI VAE in a real server: SanaVAELoader (both layouts), stock VAEEncode / VAEDecode /
VAEDecodeTiled / VAEEncodeTiled on non-square sizes, EmptySanaLatent's snapping note, and a latent2rgb preview
during a KSampler run. The VAE attribute contract is also checked statically against ComfyUI's comfy/sd.py.

Models come from tests/fixtures/dcae.py (real config, random weights), dit.py and text.py."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.assertions import assert_close, max_abs_diff
from tests.fixtures.dcae import DIFFUSERS_DIR, DIFFUSERS_FILE, FLAT_FILE, ORIGINAL_DIR, ORIGINAL_FILE
from tests.integration.graph import Graph
from tests.integration.server import find_comfyui

pytestmark = pytest.mark.integration

ORIGINAL = f"{ORIGINAL_DIR}/{ORIGINAL_FILE}"
DIFFUSERS = f"{DIFFUSERS_DIR}/{DIFFUSERS_FILE}"
WIDTH, HEIGHT = 96, 64  # non-square: latent 3 x 2
# VAEEncode in the server against load_dcae().encode in this process, same weights, float32 CPU.
ENCODE_ATOL = 1e-4
# Tiled (ComfyUI's 3-pass tiled_scale, 4-latent-pixel tiles) against full decode, on uint8 images of a random-weight
# decoder (global attention differs per tile; measured ~22 / 255 with 2-pixel tiles).
TILED_MEAN_ABS_MAX = 40.0
# VAEEncodeTiled with 128 px tiles on a 192 px wide textured image (2 tiles across) against VAEEncode, latents of max
# ~10: measured max |a - b| = 2.6 (the random-weight encoder's LiteMLA attention sees each tile alone); the lower
# bound, far above float noise, proves the image really was split.
TILE = 128
TILED_ENCODE_ATOL = 6.0
TILED_ENCODE_MIN_CHANGE = 1e-2
ADAPTER = Path(__file__).resolve().parents[2] / "nodes" / "vae_adapter.py"


def _vae(g: Graph, name: str = ORIGINAL):
    return g.node("SanaVAELoader", vae_name=name, tiling="auto")


def _image(g: Graph):
    return g.node("EmptyImage", width=WIDTH, height=HEIGHT, batch_size=1, color=0x3080C0)


def _saved_image(comfy, result, save_node) -> np.ndarray:
    """The image a given SaveImage node wrote (RunResult.images follows /history order, not graph order)."""
    (item,) = result.outputs[save_node.id]["images"]
    return comfy._load_image(item)


def test_vae_files_listed(comfy):
    spec = comfy.object_info()["SanaVAELoader"]["input"]["required"]["vae_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert {ORIGINAL, DIFFUSERS, FLAT_FILE} <= set(options), f"vae list: {options}"


def test_empty_latent_snaps_with_note(comfy):
    g = Graph()
    snapped = g.node("EmptySanaLatent", width=100, height=70, batch_size=2)
    preset = g.node("EmptySanaLatent", width=64, height=64, batch_size=1, aspect_ratio="1344x768 (h/w 0.57)")
    g.node("SaveLatent", samples=snapped[0], filename_prefix="snapped")
    g.node("SaveLatent", samples=preset[0], filename_prefix="preset")
    result = comfy.run(g)
    shapes = sorted(tuple(latent.shape) for latent in result.latents)
    assert shapes == [(1, 32, 24, 42), (2, 32, 2, 3)], shapes
    note = result.outputs[snapped.id]["text"][0]
    assert "100x70 snapped to multiples of 32: 96x64" in note, note


def test_vae_encode_decode_non_square(comfy, dcae_root):
    from models.dcae_checkpoint import load_dcae

    g = Graph()
    vae, image = _vae(g), _image(g)
    latent = g.node("VAEEncode", pixels=image[0], vae=vae[0])
    g.node("SaveLatent", samples=latent[0], filename_prefix="vae_encode")
    g.node("SaveImage", images=g.node("VAEDecode", samples=latent[0], vae=vae[0])[0], filename_prefix="vae_decode")
    result = comfy.run(g)
    assert result.images[0].shape == (HEIGHT, WIDTH, 3)
    served = result.latents[0]
    assert tuple(served.shape) == (1, 32, HEIGHT // 32, WIDTH // 32)
    color = torch.tensor([0x30, 0x80, 0xC0]) / 255.0
    pixels = (color[None, :, None, None] * 2 - 1).expand(1, 3, HEIGHT, WIDTH)
    expected = load_dcae(dcae_root / ORIGINAL_DIR / ORIGINAL_FILE).encode(pixels)
    assert_close(served, expected, ENCODE_ATOL, "VAEEncode vs load_dcae().encode")


def test_vae_layouts_and_tiled_decode(comfy):
    g = Graph()
    latent = g.node("EmptySanaLatent", width=WIDTH * 2, height=HEIGHT, batch_size=1)
    original_vae = _vae(g)
    saves = [g.node("SaveImage", images=g.node("VAEDecode", samples=latent[0], vae=vae[0])[0], filename_prefix=prefix)
             for vae, prefix in ((original_vae, "full_original"), (_vae(g, FLAT_FILE), "full_flat"))]
    tiled = g.node("VAEDecodeTiled", samples=latent[0], vae=original_vae[0], tile_size=128, overlap=32,
                   temporal_size=64, temporal_overlap=8)
    saves.append(g.node("SaveImage", images=tiled[0], filename_prefix="tiled"))
    result = comfy.run(g)
    original, flat, tiled_image = (_saved_image(comfy, result, save) for save in saves)
    assert original.shape == (HEIGHT, WIDTH * 2, 3)
    assert np.array_equal(original, flat), "the two layouts of the same weights decode differently"
    mean_abs = np.abs(tiled_image.astype(float) - original.astype(float)).mean()
    print(f"VAEDecodeTiled (128 px tiles) vs VAEDecode: mean abs {mean_abs:.2f} / 255")
    assert tiled_image.shape == original.shape and mean_abs <= TILED_MEAN_ABS_MAX


def _textured_input(comfy, name: str, width: int, height: int) -> str:
    """Write a seeded gradient-plus-noise PNG into the server's input folder (a flat colour hides tiling errors)."""
    from PIL import Image

    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([cols / width, rows / height, 0.5 + 0.5 * np.sin(cols / 7.0)], axis=-1) * 200
    noise = np.random.default_rng(0).integers(0, 55, size=(height, width, 3))
    Image.fromarray((base + noise).astype(np.uint8)).save(comfy.base / "input" / name)
    return name


def test_vae_encode_tiled(comfy):
    g = Graph()
    image = g.node("LoadImage", image=_textured_input(comfy, "tiled_encode.png", WIDTH * 2, HEIGHT))
    vae = _vae(g)
    tiled = g.node("VAEEncodeTiled", pixels=image[0], vae=vae[0], tile_size=TILE, overlap=32, temporal_size=64,
                   temporal_overlap=8)
    full = g.node("VAEEncode", pixels=image[0], vae=vae[0])
    saves = [g.node("SaveLatent", samples=latent[0], filename_prefix=prefix)
             for latent, prefix in ((tiled, "encode_tiled"), (full, "encode_full"))]
    result = comfy.run(g)
    tiled_latent, full = (comfy._load_latent(result.outputs[save.id]["latents"][0]) for save in saves)
    assert tuple(tiled_latent.shape) == tuple(full.shape) == (1, 32, HEIGHT // 32, WIDTH * 2 // 32)
    error = max_abs_diff(tiled_latent, full)
    print(f"VAEEncodeTiled ({TILE} px tiles over {WIDTH * 2} px) vs VAEEncode: max |a - b| = {error:.3e} "
          f"(latent max {full.abs().max():.3g})")
    assert TILED_ENCODE_MIN_CHANGE < error <= TILED_ENCODE_ATOL, (
        f"tiled vs full encode: max |a - b| = {error:.3e}, expected in ({TILED_ENCODE_MIN_CHANGE}, "
        f"{TILED_ENCODE_ATOL}] (0 would mean the {WIDTH * 2} px image was not split into {TILE} px tiles)")


def test_preview_during_ksampler(comfy):
    from tests.fixtures.dit import VARIANTS
    from tests.fixtures.text import GEMMA_FOLDER

    if "SanaDiTLoader" not in comfy.object_info() or "SanaTextEncoderLoader" not in comfy.object_info():
        pytest.skip("the DiT or text-encoder nodes are not registered")
    g = Graph()  # the VAE loader writes this VAE's preview factors before the sampler runs
    g.node("SaveLatent", samples=g.node("VAEEncode", pixels=_image(g)[0], vae=_vae(g)[0])[0], filename_prefix="fit")
    comfy.run(g)
    g = Graph()
    model = g.node("SanaDiTLoader", dit_name=VARIANTS["1.0-1.6B"][1], weight_dtype="default")
    clip = g.node("SanaTextEncoderLoader", llm_name=f"{GEMMA_FOLDER}/", byt5_name="none", projector_name="none",
                  device="cpu")
    sampled = g.node("KSampler", model=model[0], positive=g.node("CLIPTextEncode", clip=clip[0], text="a fox")[0],
                     negative=g.node("CLIPTextEncode", clip=clip[0], text="")[0], seed=1, steps=2, cfg=1.0,
                     sampler_name="euler", scheduler="simple", denoise=1.0,
                     latent_image=g.node("EmptySanaLatent", width=WIDTH, height=HEIGHT, batch_size=1)[0])
    g.node("SaveLatent", samples=sampled[0], filename_prefix="preview")
    result = comfy.run(g, extra_data={"preview_method": "latent2rgb"})
    assert result.previews >= 1, "no latent2rgb preview frame arrived during sampling"


def _self_attributes(tree: ast.AST, class_name: str, kind: type) -> set[str]:
    """Names of `self.<name>` loads (kind ast.Load) or stores (ast.Store) inside one class."""
    cls = next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == class_name)
    return {node.attr for node in ast.walk(cls) if isinstance(node, ast.Attribute) and isinstance(node.ctx, kind)
            and isinstance(node.value, ast.Name) and node.value.id == "self"}


def test_vae_attribute_contract_is_complete():
    """Every attribute core's VAE methods read is set or defined by SanaVAE (catches new ones in a ComfyUI update)."""
    root, reason = find_comfyui()
    if root is None:
        pytest.skip(reason)
    core = ast.parse((root / "comfy" / "sd.py").read_text())
    ours = ast.parse(ADAPTER.read_text())
    core_methods = {node.name for node in ast.walk(core) if isinstance(node, ast.FunctionDef)}
    read_by_core = _self_attributes(core, "VAE", ast.Load) - core_methods
    sana = next(node for node in ast.walk(ours) if isinstance(node, ast.ClassDef) and node.name == "SanaVAE")
    provided = _self_attributes(ours, "SanaVAE", ast.Store) | {
        node.name for node in sana.body if isinstance(node, ast.FunctionDef)}
    missing = sorted(read_by_core - provided)
    assert not missing, f"comfy.sd.VAE reads attributes SanaVAE does not set: {missing}"
