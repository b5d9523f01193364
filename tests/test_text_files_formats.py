"""Text-encoder files users have (tests/fixtures/text_files.py): each loads and equals the reference, or is refused with
a message naming the file, what was detected and what to do.

Reference: transformers ``Gemma2Model`` / ``T5EncoderModel`` through their own ``from_pretrained`` and diffusers
``SanaPipeline.encode_prompt``, float32, on the same weights (bf16 values upcast; fp8 values times their scale).
"""

import logging
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.chi import chi_text
from models.glyph import load_byt5
from models.text_encoder import MAX_SEQUENCE_LENGTH, load_gemma, load_text_encoder, shorten
from models.text_files import SCALED_FP8_MARKER
from tests.fixtures.text_files import (
    BYT5_FOLDER,
    ELM_FILE,
    FP8_FILE,
    GEMMA_FOLDER,
    MERGED_DUPLICATE,
    PIPELINE,
    SPM_CORPUS_EXTRA,
)

PARITY_ATOL = 1e-5  # float32, same weights and ops as the reference
FP8_RTOL = 0.07  # e4m3 keeps 3 mantissa bits: 2^-4 relative rounding per weight, a little more through the model
PROMPT = "A cat holding a sign that says hello world"
RANDOM_PROMPTS = 200
RANDOM_ALPHABET = "abcXYZ 019 \n\t,.!?'\"“”「」ÜéçßøЖж一猫的字🐱👩‍👧\u00a0\u200b<>_▁"


def _max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def _link_folder(source, target, skip=()):
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name not in skip:
            (target / file.name).symlink_to(file)
    return target


@pytest.fixture(scope="module")
def elm(text_files):
    return load_text_encoder(text_files / ELM_FILE)


@pytest.fixture(scope="module")
def reference(text_files):
    from diffusers import SanaPipeline
    from transformers import AutoTokenizer, Gemma2Model

    folder = text_files / GEMMA_FOLDER
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = Gemma2Model.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return SanaPipeline(tokenizer=tokenizer, text_encoder=model, vae=None, transformer=None, scheduler=None)


def _reference_embeds(pipe, prompt=PROMPT):
    pipe_pre = pipe._text_preprocessing
    pipe._text_preprocessing = lambda text, clean_caption=False: [t.strip() for t in text]
    try:
        with torch.no_grad():
            embeds, mask, _, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                                    device=torch.device("cpu"),
                                                    complex_human_instruction=chi_text("nvlabs").split("\n"))
    finally:
        pipe._text_preprocessing = pipe_pre
    return embeds, mask


def _prompts() -> list[str]:
    rng = random.Random(0)
    fixed = [PROMPT, "", " ", "  two  spaces\tand a tab\n\nand newlines\n", "digits 12345 and 1024px, f/1.8",
             chi_text("nvlabs") + PROMPT, chi_text("diffusers") + "A red fox", "<start_of_turn>user hi<end_of_turn>",
             "<bos><pad> literal specials", "x" * 300, *SPM_CORPUS_EXTRA]
    return fixed + ["".join(rng.choice(RANDOM_ALPHABET) for _ in range(rng.randint(1, 60)))
                    for _ in range(RANDOM_PROMPTS)]


def test_spiece_model_gives_tokenizer_json_ids(elm, text_files):
    folder = load_text_encoder(text_files / GEMMA_FOLDER)  # tokenizer.json (HF), the file: spiece_model (spm)
    assert "tokenizer.json" not in elm.tokenizer.source and GEMMA_FOLDER in folder.tokenizer.source
    differ = [p for p in _prompts() if elm.tokenizer.encode(p) != folder.tokenizer.encode(p)]
    assert not differ, f"{len(differ)} prompts tokenise differently, e.g. {differ[:3]!r}"
    assert elm.tokenizer.pad_id == folder.tokenizer.pad_id == 0


def test_elm_file_matches_diffusers(elm, reference):
    ref, ref_mask = _reference_embeds(reference)
    embeds, mask = elm.encode(PROMPT)
    assert embeds.shape == (1, MAX_SEQUENCE_LENGTH, 2304) and torch.equal(mask, ref_mask)
    assert _max_diff(embeds, ref) <= PARITY_ATOL, f"max abs {_max_diff(embeds, ref)}"


def test_folder_reads_shards_not_the_merged_duplicate(elm, text_files):
    folder = text_files / GEMMA_FOLDER
    assert (folder / MERGED_DUPLICATE).is_file()
    expected = elm.encode(PROMPT)[0]
    for path in (folder, folder / "model-00002-of-00005.safetensors"):  # the folder, or any shard of the set
        assert torch.equal(load_text_encoder(path).encode(PROMPT)[0], expected), path


@pytest.mark.parametrize("path", [PIPELINE, f"{PIPELINE}/text_encoder"])
def test_pipeline_folder_reads_default_precision_and_sibling_tokenizer(elm, text_files, path):
    encoder = load_text_encoder(text_files / path)
    assert encoder.tokenizer.source.endswith("tokenizer")
    assert torch.equal(encoder.encode(PROMPT)[0], elm.encode(PROMPT)[0]), "the fp16 variant shards were read"


def test_fp8_scaled_file_dequantises_weight_times_scale(text_files, elm):
    from transformers import Gemma2Model

    raw = load_file(str(text_files / FP8_FILE))
    assert raw[SCALED_FP8_MARKER].dtype == torch.float8_e4m3fn
    model, tokenizer, _, _ = load_gemma(text_files / FP8_FILE)
    q = "layers.1.self_attn.q_proj.weight"
    expected = raw[f"model.{q}"].float() * raw["model.layers.1.self_attn.q_proj.scale_weight"]
    assert torch.equal(model.state_dict()[q], expected)
    reference = Gemma2Model.from_pretrained(None, config=model.config, state_dict=model.state_dict(),
                                            attn_implementation="eager", dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    with torch.no_grad():
        ours, ref = model(input_ids=ids).last_hidden_state, reference(input_ids=ids).last_hidden_state
    assert _max_diff(ours, ref) <= PARITY_ATOL
    bf16_weight = elm.llm.state_dict()[q]
    assert _max_diff(expected, bf16_weight) <= FP8_RTOL * bf16_weight.abs().max().item()


def test_byt5_small_pytorch_bin_folder(text_files):
    from transformers import T5EncoderModel

    folder = text_files / BYT5_FOLDER
    model, projector = load_byt5(folder)
    reference = T5EncoderModel.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[byte + 3 for byte in 'Text "OPEN". '.encode()] + [1]])
    with torch.no_grad():
        ours, ref = model(input_ids=ids).last_hidden_state, reference(input_ids=ids).last_hidden_state
    assert projector is None and _max_diff(ours, ref) <= PARITY_ATOL


def test_base_gemma_name_warns(tmp_path, text_files, elm, caplog):
    (tmp_path / "gemma_2_2b_fp16.safetensors").symlink_to(text_files / ELM_FILE)
    with caplog.at_level(logging.WARNING):
        encoder = load_text_encoder(tmp_path / "gemma_2_2b_fp16.safetensors")
    assert len(encoder.load_notes) == 1 and "base Gemma-2" in encoder.load_notes[0]
    assert "gemma_2_2b_it_elm_bf16" in caplog.text
    assert elm.load_notes == ()


@pytest.mark.parametrize("broken", ["config.json", "tokenizer.json"])
def test_damaged_json_names_the_file(tmp_path, text_files, broken):
    folder = _link_folder(text_files / GEMMA_FOLDER, tmp_path / "gemma-2-2b-it", skip=(broken,))
    (folder / broken).write_text('{"version": "1.0", "model": {"type": ')
    with pytest.raises(ValueError, match=rf"{broken}: cannot read this .* Re-download {broken}"):
        load_text_encoder(folder)


def test_refuses_non_finite_unexpected_and_bad_tokenizer(tmp_path, text_files):
    sd = load_file(str(text_files / ELM_FILE))
    nan = dict(sd, **{"model.layers.0.mlp.up_proj.weight": sd["model.layers.0.mlp.up_proj.weight"].clone()})
    nan["model.layers.0.mlp.up_proj.weight"][3, 5] = float("nan")
    save_file(nan, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"nan.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' .* NaN"):
        load_text_encoder(tmp_path / "nan.safetensors")
    save_file(dict(sd, **{"model.layers.0.extra.weight": torch.zeros(2)}), str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match=r"extra.safetensors: detected Gemma-2 .* unexpected keys "
                                         r"\[layers.0.extra.weight\]"):
        load_text_encoder(tmp_path / "extra.safetensors")
    save_file(dict(sd, spiece_model=torch.zeros(16, dtype=torch.uint8)), str(tmp_path / "bad_spm.safetensors"))
    with pytest.raises(ValueError, match="bad_spm.safetensors: the embedded 'spiece_model' .* not a SentencePiece"):
        load_text_encoder(tmp_path / "bad_spm.safetensors")


def test_truncation_and_long_glyph_text_notes(elm):
    batch = elm.tokenize("A small red fox in a snowy forest, " * 60)
    assert len(batch.notes) == 1 and "truncated" in batch.notes[0]
    assert not elm.tokenize(PROMPT).notes
    long_text = "x" * 10_000
    shown = shorten(long_text)
    assert len(shown) < 300 and "10000 characters" in shown
