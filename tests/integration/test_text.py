"""The Sana text encoder in a real ComfyUI: stock CLIPTextEncode with our CLIP feeds KSampler on our MODEL; quoted text
adds glyph tokens when ByT5 and a projector are loaded; SanaTextEncodeAdvanced's options reach the conditioning."""

import pytest
import torch

from tests.fixtures.dit import VARIANTS
from tests.fixtures.text import BYT5_FILE, GEMMA_FILE, GEMMA_FOLDER, PROJECTOR_FILE
from tests.integration.graph import Graph

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 128, 96  # -> 4 x 3 latent
DIT = VARIANTS["1.0"][1]  # the smallest fixture DiT
GEMMA = f"{GEMMA_FOLDER}/"
GLYPH_PROMPT = 'a neon sign that says "OPEN" above a cafe'
MIN_CHANGE = 1e-4  # glyph tokens must move the sampled latent by more than float noise


@pytest.fixture(scope="module")
def latent_node(comfy):
    info = comfy.object_info()
    for node in ("SanaTextEncoderLoader", "SanaTextEncodeAdvanced", "SanaDiTLoader"):
        if node not in info:
            pytest.skip(f"{node} is not registered in this ComfyUI")
    return "EmptySanaLatent" if "EmptySanaLatent" in info else "EmptyHunyuanImageLatent"


def _loader(g: Graph, glyph: bool, llm=GEMMA):
    byt5, projector = (BYT5_FILE, PROJECTOR_FILE) if glyph else ("none", "none")
    return g.node("SanaTextEncoderLoader", llm_name=llm, byt5_name=byt5, projector_name=projector, device="cpu")


def _sample(g: Graph, latent_node: str, positive, negative) -> None:
    model = g.node("SanaDiTLoader", dit_name=DIT, weight_dtype="default")
    latent = g.node(latent_node, width=WIDTH, height=HEIGHT, batch_size=1)
    sampled = g.node("KSampler", model=model[0], positive=positive[0], negative=negative[0], latent_image=latent[0],
                     seed=0, steps=2, cfg=2.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.node("SaveLatent", samples=sampled[0], filename_prefix="text")


def _encode(g, clip, text, **options):
    defaults = {"chi": "auto", "custom_chi": "", "glyph_source": "quoted text", "glyph_text": "", "lowercase": False,
                "mask_policy": "diffusers"}
    return g.node("SanaTextEncodeAdvanced", clip=clip[0], text=text, **{**defaults, **options})


def _run_stock(comfy, latent_node, glyph: bool, llm=GEMMA) -> torch.Tensor:
    g = Graph()
    clip = _loader(g, glyph, llm)
    positive = g.node("CLIPTextEncode", clip=clip[0], text=GLYPH_PROMPT)
    negative = g.node("CLIPTextEncode", clip=clip[0], text="")
    _sample(g, latent_node, positive, negative)
    result = comfy.run(g)
    assert len(result.latents) == 1
    return result.latents[0]


def _options(spec) -> list:
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def test_text_nodes_schema(comfy, latent_node):
    info = comfy.object_info()
    loader = info["SanaTextEncoderLoader"]["input"]["required"]
    assert GEMMA in _options(loader["llm_name"]) and GEMMA_FILE in _options(loader["llm_name"])
    assert "none" in _options(loader["byt5_name"]) and BYT5_FILE in _options(loader["byt5_name"])
    for node in ("SanaTextEncoderLoader", "SanaTextEncodeAdvanced"):
        inputs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        missing = [name for name, spec in inputs.items() if not (len(spec) > 1 and spec[1].get("tooltip"))]
        assert not missing, f"{node} inputs without tooltip: {missing}"


def test_stock_clip_text_encode_feeds_ksampler_with_glyph_tokens(comfy, latent_node):
    plain = _run_stock(comfy, latent_node, glyph=False)
    assert torch.isfinite(plain).all() and tuple(plain.shape) == (1, 32, HEIGHT // 32, WIDTH // 32)
    glyph = _run_stock(comfy, latent_node, glyph=True)
    log = comfy.log()
    assert "Sana glyph text: 'Text \"OPEN\". '" in log, "the extracted glyph text should be logged"
    assert "glyph branch on" in log
    assert (glyph - plain).abs().max().item() > MIN_CHANGE, "glyph tokens did not reach the model"
    single_file = _run_stock(comfy, latent_node, glyph=False, llm=GEMMA_FILE)
    assert torch.isfinite(single_file).all()


def test_sana_text_encode_options(comfy, latent_node):
    g = Graph()
    clip = _loader(g, glyph=True)
    positive = _encode(g, clip, GLYPH_PROMPT)
    negative = _encode(g, clip, "", chi="none", mask_policy="nvlabs", positive=positive[0])
    _sample(g, latent_node, positive, negative)
    result = comfy.run(g)
    texts = [str(out.get("text")) for out in result.outputs.values() if "text" in out]
    assert any('Text \\"OPEN\\". ' in t or 'Text "OPEN". ' in t for t in texts), f"glyph text not shown: {texts}"
    assert any("glyph branch on" in t for t in texts), f"loader status not shown: {texts}"
    stock = _run_stock(comfy, latent_node, glyph=True)
    g = Graph()
    clip = _loader(g, glyph=True)
    _sample(g, latent_node, _encode(g, clip, GLYPH_PROMPT), _encode(g, clip, "", chi="none"))
    explicit = comfy.run(g).latents[0]
    assert torch.equal(stock, explicit), "SanaTextEncodeAdvanced defaults must equal CLIPTextEncode (auto CHI)"
    assert (result.latents[0] - explicit).abs().max().item() > MIN_CHANGE, "the nvlabs mask policy had no effect"


def test_sana_text_encode_errors(comfy, latent_node):
    g = Graph()
    clip = _loader(g, glyph=False)
    _sample(g, latent_node, _encode(g, clip, "a cat", chi="custom"), _encode(g, clip, ""))
    assert "custom_chi is empty" in comfy.run_error(g)
    g = Graph()
    clip = _loader(g, glyph=False)
    _sample(g, latent_node, _encode(g, clip, "a cat"), _encode(g, clip, "", mask_policy="nvlabs"))
    assert "needs the positive CONDITIONING" in comfy.run_error(g)
