"""Pure helpers of the node layer (nodes/*.py), imported in-process with the found ComfyUI on sys.path, no server.

The package is loaded under its own name (`sana_native_under_test`) so the relative imports of nodes/ resolve, with
ComfyUI appended to sys.path (after the repository, so neither its `tests` nor its `models` folder shadows ours),
`--cpu` set and its base directory in a temporary folder. ComfyUI is found as the integration suite finds it
(tests/integration/server.py: $COMFYUI_PATH, ~/comfy/ComfyUI, ../shared/ComfyUI); without one these tests skip, and fail
with SANA_REQUIRE_COMFYUI=1 (set by .ci/run when it found ComfyUI), like the integration suite.
"""

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from samplers.schedules import sd3_resolution_shift, token_count_shift
from tests.integration.server import find_comfyui

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sana_native_under_test"


def _load_package(base: Path):
    comfy_root, reason = find_comfyui()
    if comfy_root is None:
        if os.environ.get("SANA_REQUIRE_COMFYUI") == "1":
            pytest.fail(f"node-layer tests need ComfyUI under CI: {reason}")
        pytest.skip(reason)
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    if str(comfy_root) not in sys.path:
        sys.path.append(str(comfy_root))
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # the checkout may be read-only
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        comfy.cli_args.args.base_directory = str(base)
        init = ROOT / "__init__.py"
        spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(ROOT)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return package


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """The package's nodes sub-package, imported with ComfyUI."""
    _load_package(tmp_path_factory.mktemp("comfyui-base"))
    return importlib.import_module(f"{PACKAGE}.nodes")


@pytest.fixture(scope="module")
def vae_nodes(nodes):
    return importlib.import_module(f"{PACKAGE}.nodes.vae_nodes")


@pytest.mark.parametrize(("value", "snapped"), [(1000, 992), (1008, 1024), (1024, 1024), (1, 32), (47, 32), (48, 64)])
def test_snap_to_latent_pixels(vae_nodes, value, snapped):
    assert vae_nodes.snap(value) == snapped


def test_latent_size_custom_preset_and_unknown(vae_nodes):
    assert vae_nodes.latent_size(1024, 768, vae_nodes.CUSTOM) == (1024, 768, "1024x768, latent 32x24")
    w, h, note = vae_nodes.latent_size(1000, 770, vae_nodes.CUSTOM)
    assert (w, h) == (992, 768) and note.startswith("1000x770 snapped to multiples of 32")
    w, h, note = vae_nodes.latent_size(1, 1, "2048x512 (h/w 0.25)")
    assert (w, h) == (2048, 512) and "inputs ignored" in note and note.endswith("latent 64x16")
    with pytest.raises(ValueError, match="aspect_ratio '3:2' is unknown"):
        vae_nodes.latent_size(1024, 1024, "3:2")
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in vae_nodes.ASPECT_PRESETS.values())


@pytest.mark.parametrize(("text", "hidden", "depth", "layers"), [
    ("auto", 2240, 20, {8}), ("auto", 1152, 28, {14}), ("auto", 640, 6, {3}),
    ("7,8", 2240, 20, {7, 8}), (" 0 , 19 ,", 2240, 20, {0, 19}),
])
def test_pag_layers(nodes, text, hidden, depth, layers):
    dit_nodes = importlib.import_module(f"{PACKAGE}.nodes.dit_nodes")
    assert dit_nodes.pag_layers(text, SimpleNamespace(hidden_size=hidden, depth=depth)) == frozenset(layers)


@pytest.mark.parametrize(("text", "match"), [
    ("eight", "expected 'auto' or block indices"), ("20", "blocks 20 do not exist"), ("-1", "blocks -1 do not exist"),
    (" , ", "no block index given"),
])
def test_pag_layers_errors(nodes, text, match):
    dit_nodes = importlib.import_module(f"{PACKAGE}.nodes.dit_nodes")
    with pytest.raises(ValueError, match=match):
        dit_nodes.pag_layers(text, SimpleNamespace(hidden_size=2240, depth=20))


def test_tokenizer_options(nodes):
    text_nodes = importlib.import_module(f"{PACKAGE}.nodes.text_nodes")
    clip = importlib.import_module(f"{PACKAGE}.nodes.clip_adapter")
    keys = (clip.CHI_OPTION, clip.GLYPH_TEXT_OPTION, clip.LOWERCASE_OPTION)
    options = text_nodes.tokenizer_options("auto", "", "quoted text", "ignored", False)
    assert [options[k] for k in keys] == ["auto", None, False]
    options = text_nodes.tokenizer_options("custom", "Describe:", "glyph_text input", "SALE\n50%", True)
    assert [options[k] for k in keys] == [["Describe:"], "SALE\n50%", True]
    assert text_nodes.tokenizer_options("none", "x", "off", "SALE", False)[clip.GLYPH_TEXT_OPTION] == ""
    with pytest.raises(ValueError, match="custom_chi is empty"):
        text_nodes.tokenizer_options("custom", "  ", "off", "", False)


@pytest.mark.parametrize(("prompt", "chi", "expected"), [
    ("a cat", "auto", "nvlabs"), ("", "auto", None), ("  \n", "auto", None), ("a cat", "diffusers", "diffusers"),
    ("", "nvlabs", "nvlabs"), ("a cat", ["line"], ["line"]),
])
def test_chi_for_prompt(nodes, prompt, chi, expected):
    clip = importlib.import_module(f"{PACKAGE}.nodes.clip_adapter")
    assert clip.chi_for_prompt(prompt, chi) == expected


class _Model:
    """A MODEL stand-in: get_model_object("model_sampling" | "diffusion_model")."""

    def __init__(self, shift=None, config=None):
        self.objects = {"model_sampling": SimpleNamespace(shift=shift) if shift is not None else object(),
                        "diffusion_model": SimpleNamespace(config=config)}

    def get_model_object(self, name):
        return self.objects[name]


def test_shift_resolution_per_mode(nodes):
    sampling = importlib.import_module(f"{PACKAGE}.nodes.sampling_nodes")
    model = _Model(shift=2.5, config=SimpleNamespace(flow_shift=6.0, sample_size=128))
    assert sampling._resolve(model, "model_sampling", 1.0, 1024, 1024) == 2.5
    assert sampling._resolve(model, "fixed", 1.7, 1024, 1024) == 1.7
    assert sampling._resolve(model, "model_default", 1.0, 1024, 1024) == 6.0
    assert sampling._resolve(model, "token_count", 1.0, 2048, 1024) == token_count_shift(2048, 1024)
    # base size from the config: 128 latent pixels x 32 = the 4K model's 4096 px training grid
    assert sampling._resolve(model, "sd3_resolution", 1.0, 2048, 2048) == sd3_resolution_shift(6.0, 2048, 2048, 4096)
    assert sampling._resolve(model, "sd3_resolution", 1.0, 4096, 4096) == pytest.approx(6.0)


def test_shift_resolution_errors(nodes):
    sampling = importlib.import_module(f"{PACKAGE}.nodes.sampling_nodes")
    not_sana = _Model(shift=None, config=None)
    with pytest.raises(ValueError, match="not a Sana DiT"):
        sampling._resolve(not_sana, "model_default", 1.0, 1024, 1024)
    with pytest.raises(ValueError, match="has no flow shift"):
        sampling._resolve(not_sana, "model_sampling", 1.0, 1024, 1024)
    assert sampling._resolve(not_sana, "token_count", 1.0, 1024, 1024) == token_count_shift(1024, 1024)
