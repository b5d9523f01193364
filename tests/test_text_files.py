"""Loading the Sana text encoder from the file layouts users have (models/text_encoder.py, models/text_files.py).

Covers the embedded SentencePiece tokenizer of ComfyUI's repackaged files (``spiece_model``), a diffusers-style
``text_encoder/`` + ``tokenizer/`` pair, and the errors for wrong, incomplete or tokenizer-less files.
"""

import io
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.chi import CHI_NVLABS
from models.text_encoder import MAX_SEQUENCE_LENGTH, load_text_encoder

SPM_VOCAB = 400  # small SentencePiece vocabulary, below the fixture Gemma's embedding rows


def _gemma_weights(paths) -> dict:
    return {k: v for k, v in load_file(str(paths["gemma_file"])).items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def spiece_proto() -> bytes:
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    corpus = list(CHI_NVLABS) + ["A cat sleeping on a warm windowsill.", "A neon sign that says OPEN."] * 4
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=SPM_VOCAB, pad_id=0, eos_id=1, bos_id=2,
        unk_id=3, byte_fallback=True, add_dummy_prefix=False, hard_vocab_limit=False,
    )
    return model.getvalue()


def test_text_encoder_loads_embedded_sentencepiece(tmp_path, text_fixture_paths, spiece_proto):
    import sentencepiece

    sd = _gemma_weights(text_fixture_paths)
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece_proto), dtype=torch.uint8)
    save_file(sd, str(tmp_path / "gemma_2_2b_fp16.safetensors"))
    encoder = load_text_encoder(tmp_path / "gemma_2_2b_fp16.safetensors")
    sp = sentencepiece.SentencePieceProcessor(model_proto=spiece_proto)
    batch = encoder.tokenize("A cat", chi=None)
    expected = [sp.bos_id()] + sp.encode("A cat")
    assert batch.input_ids[0, : len(expected)].tolist() == expected and int(batch.attention_mask.sum()) == len(expected)
    embeds, mask = encoder.encode("A cat")
    assert embeds.shape == (1, MAX_SEQUENCE_LENGTH, 2304) and mask.shape == (1, MAX_SEQUENCE_LENGTH)


def test_text_encoder_loads_diffusers_layout(tmp_path, text_fixture_paths):
    folder = text_fixture_paths["gemma_folder"]
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, tmp_path / "text_encoder" / name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, tmp_path / "tokenizer" / name)
    encoder = load_text_encoder(tmp_path / "text_encoder" / "model.safetensors")  # a file inside the folder
    reference = load_text_encoder(folder)
    assert torch.equal(encoder.tokenize("A cat").input_ids, reference.tokenize("A cat").input_ids)


def test_byt5_loads_from_hf_folder(tmp_path, text_fixture_paths):
    from transformers import T5Config

    from tests.fixtures.text import BYT5_SMALL

    T5Config(**BYT5_SMALL).save_pretrained(tmp_path)
    shutil.copy(text_fixture_paths["byt5"], tmp_path / "model.safetensors")
    paths = text_fixture_paths
    from_folder = load_text_encoder(paths["gemma_folder"], tmp_path, projector_path=paths["projector"])
    from_file = load_text_encoder(paths["gemma_folder"], paths["byt5"], projector_path=paths["projector"])
    a, b = from_folder.encode('a sign "OPEN"'), from_file.encode('a sign "OPEN"')
    assert from_folder.glyph_enabled and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_text_encoder_rejects_wrong_files(tmp_path, text_fixture_paths):
    with pytest.raises(ValueError, match="not a Gemma-2 checkpoint"):
        load_text_encoder(text_fixture_paths["byt5"])
    sd = _gemma_weights(text_fixture_paths)
    save_file(sd, str(tmp_path / "no_tokenizer.safetensors"))
    with pytest.raises(ValueError, match="No Gemma tokenizer found"):
        load_text_encoder(tmp_path / "no_tokenizer.safetensors")
    sd = load_file(str(text_fixture_paths["gemma_file"]))
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \[layers.1.mlp.up_proj.weight\]"):
        load_text_encoder(tmp_path / "incomplete.safetensors")
    with pytest.raises(ValueError, match="absent.safetensors: not found"):
        load_text_encoder(tmp_path / "absent.safetensors")
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="unsupported text encoder file type"):
        load_text_encoder(tmp_path / "weights.gguf")
