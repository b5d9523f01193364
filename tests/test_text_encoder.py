"""Sana Gemma-2 text encoding (models/text_encoder.py, models/chi.py) against diffusers SanaPipeline.encode_prompt.

The reference runs on the same generated Gemma-2 folder (tests/fixtures/text.py) through transformers' own loaders.
NVlabs encoding (no lower-casing, double-quoted CHI) is checked against the same diffusers code with its
``_text_preprocessing`` reduced to ``strip()``, the only difference between the two procedures (docs/ARCHITECTURE.md
§11).
"""

import inspect
import logging

import pytest
import torch

from models.chi import CHI_DIFFUSERS, CHI_NVLABS, CHI_PRESETS, chi_text
from models.text_encoder import MAX_SEQUENCE_LENGTH, load_text_encoder, null_prompt_mask
from tests.assertions import assert_close, max_abs_diff

PARITY_ATOL = 1e-5  # float32, same weights and ops as the reference: differences are only summation order
PROMPTS = {
    "short": "  A Cat sleeping on a warm windowsill ",  # capitals and outer spaces: lower() and strip() matter
    "long": "A small red fox in a snowy forest, soft light, " * 40,  # far over 300 tokens
}
NEGATIVE = "Blurry, low quality"




@pytest.fixture(scope="module")
def encoder(text_fixture_paths):
    return load_text_encoder(text_fixture_paths["gemma_folder"])


@pytest.fixture(scope="module")
def reference(text_fixture_paths):
    pytest.importorskip("diffusers")
    from diffusers import SanaPipeline
    from transformers import AutoTokenizer, Gemma2Model

    folder = text_fixture_paths["gemma_folder"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text_encoder = Gemma2Model.from_pretrained(folder, dtype=torch.float32).eval()
    return SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, transformer=None, scheduler=None)


def _reference_encode(pipe, prompt, chi, lowercase, negative=None):
    """diffusers encode_prompt → (embeds, mask, negative embeds, negative mask); negative None: no CFG branch."""
    original = pipe._text_preprocessing
    if not lowercase:  # NVlabs: prompt.strip() only
        pipe._text_preprocessing = lambda text, clean_caption=False: [t.strip() for t in text]
    try:
        with torch.no_grad():
            return pipe.encode_prompt(prompt, do_classifier_free_guidance=negative is not None,
                                      negative_prompt=negative or "", device=torch.device("cpu"),
                                      complex_human_instruction=list(CHI_PRESETS[chi]))
    finally:
        pipe._text_preprocessing = original


def test_chi_texts_match_the_sources():
    from diffusers import SanaPipeline

    default = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    assert list(CHI_DIFFUSERS) == default, "CHI_DIFFUSERS differs from diffusers' default complex_human_instruction"
    assert CHI_NVLABS[0].count('"Enhanced prompt"') == 1 and CHI_NVLABS[1:] == CHI_DIFFUSERS[1:]
    assert chi_text("nvlabs").endswith("User Prompt: ") and chi_text(None) is None and chi_text([]) is None
    with pytest.raises(ValueError, match="not a CHI choice"):
        chi_text("official")


@pytest.mark.parametrize("lowercase", [True, False], ids=["diffusers-lowercase", "nvlabs-no-lowercase"])
@pytest.mark.parametrize("chi", ["nvlabs", "diffusers"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_text_encoder_parity_with_diffusers(encoder, reference, prompt, chi, lowercase):
    ref_embeds, ref_mask, _, _ = _reference_encode(reference, PROMPTS[prompt], chi, lowercase)
    embeds, mask = encoder.encode(PROMPTS[prompt], chi=chi, lowercase=lowercase)
    assert embeds.shape == ref_embeds.shape == (1, MAX_SEQUENCE_LENGTH, 2304)
    assert_close(embeds, ref_embeds, PARITY_ATOL, "prompt embeds")
    assert torch.equal(mask, ref_mask), f"prompt mask differs: {mask.sum()} vs {ref_mask.sum()} valid tokens"


@pytest.mark.parametrize("negative", ["", NEGATIVE], ids=["empty", "non-empty"])
def test_text_encoder_negative_parity_without_chi(encoder, reference, negative):
    _, _, ref_neg, ref_neg_mask = _reference_encode(reference, "a cat", "nvlabs", True, negative=negative)
    neg, neg_mask = encoder.encode(negative, chi=None, lowercase=True)
    assert neg.shape == (1, MAX_SEQUENCE_LENGTH, 2304) and torch.equal(neg_mask, ref_neg_mask)
    assert_close(neg, ref_neg, PARITY_ATOL, f"negative {negative!r}")
    if negative == "":
        assert int(neg_mask.sum()) == 1, "the empty negative keeps only BOS"


def test_text_encoder_defaults_are_nvlabs(encoder):
    default = encoder.tokenize(PROMPTS["short"])
    explicit = encoder.tokenize(PROMPTS["short"], chi="nvlabs", lowercase=False)
    lowered = encoder.tokenize(PROMPTS["short"], chi="nvlabs", lowercase=True)
    assert torch.equal(default.input_ids, explicit.input_ids) and default.select_chi
    assert not torch.equal(default.input_ids, lowered.input_ids), "lower-casing must change a prompt with capitals"


def test_text_encoder_truncation_warns(encoder, caplog):
    with caplog.at_level(logging.WARNING):
        batch = encoder.tokenize(PROMPTS["long"])
    assert int(batch.attention_mask.sum()) == batch.input_ids.shape[1], "a truncated prompt fills every position"
    assert "truncated" in caplog.text and "ignored" in caplog.text, f"no truncation warning: {caplog.text!r}"
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        encoder.tokenize(PROMPTS["short"])
    assert "truncated" not in caplog.text


def test_text_encoder_batch_equals_single(encoder):
    prompts = [PROMPTS["short"], "A lighthouse at dusk"]
    batch, batch_mask = encoder.encode(prompts)
    for i, prompt in enumerate(prompts):
        single, single_mask = encoder.encode(prompt)
        assert max_abs_diff(batch[i : i + 1], single) <= PARITY_ATOL and torch.equal(batch_mask[i : i + 1], single_mask)


def test_text_encoder_custom_chi_list(encoder, reference):
    custom = ["Describe the image in detail.", "User Prompt: "]
    with torch.no_grad():
        ref, ref_mask, _, _ = reference.encode_prompt(PROMPTS["short"], do_classifier_free_guidance=False,
                                                      device=torch.device("cpu"), complex_human_instruction=custom)
    embeds, mask = encoder.encode(PROMPTS["short"], chi=custom, lowercase=True)
    assert max_abs_diff(embeds, ref) <= PARITY_ATOL and torch.equal(mask, ref_mask)


def test_text_encoder_single_file_matches_folder(encoder, text_fixture_paths):
    single = load_text_encoder(text_fixture_paths["gemma_file"])
    rounded = load_text_encoder(text_fixture_paths["gemma_folder"])
    for p in rounded.parameters():  # the single file stores the same weights in fp16
        p.data = p.data.half().float()
    for prompt in (PROMPTS["short"], PROMPTS["long"], ""):
        ours, ref = single.tokenize(prompt), encoder.tokenize(prompt)
        assert torch.equal(ours.input_ids, ref.input_ids) and torch.equal(ours.attention_mask, ref.attention_mask)
    (a, a_mask), (b, b_mask) = single.encode(PROMPTS["short"]), rounded.encode(PROMPTS["short"])
    assert_close(a, b, PARITY_ATOL, "single file vs folder")
    assert torch.equal(a_mask, b_mask)


def test_null_prompt_mask_policies():
    negative = torch.tensor([[1, 0, 0, 0]])
    positive = torch.tensor([[1, 1, 1, 0, 1, 1]])  # e.g. 300 LLM tokens + glyph tokens
    assert torch.equal(null_prompt_mask(negative, positive, "diffusers"), negative)
    assert torch.equal(null_prompt_mask(negative, positive, "nvlabs"), torch.tensor([[1, 1, 1, 0]]))
    longer = torch.tensor([[1, 0, 0, 0, 1, 1, 1]])
    assert torch.equal(null_prompt_mask(longer, positive, "nvlabs"), torch.tensor([[1, 1, 1, 0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="unknown"):
        null_prompt_mask(negative, positive, "official")
