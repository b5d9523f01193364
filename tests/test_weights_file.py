"""The one weights reader (models/weights_file.py): safetensors, sharded and variant folders, pipeline folders, torch
files with weights_only (numpy RNG state allowed, code-executing pickles refused without running them), and the
messages for broken downloads (empty, HTML page, Git-LFS pointer, truncated) and broken JSON."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models import weights_file as wf

SHARDS = 2


def _tensors(seed: int = 0, dtype=torch.float32) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(8, 4, generator=gen).to(dtype), "b.bias": torch.randn(8, generator=gen).to(dtype),
            "c.index": torch.arange(3)}


def _save_sharded(sd: dict, folder, stem: str, variant: str | None = None, ext=".safetensors") -> list:
    """diffusers/transformers shard naming: `stem[.variant]-0000N-of-0000M.ext` + `stem.ext.index[.variant].json`."""
    folder.mkdir(parents=True, exist_ok=True)
    keys, names, weight_map = sorted(sd), [], {}
    for i in range(SHARDS):
        name = f"{stem}{'.' + variant if variant else ''}-{i + 1:05d}-of-{SHARDS:05d}{ext}"
        part = {k: sd[k] for k in keys[i::SHARDS]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
        names.append(name)
    index = f"{stem}{ext}.index{'.' + variant if variant else ''}.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return names


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _reads(monkeypatch) -> list:
    """Record every file the reader opens."""
    opened, original = [], wf.read_weights_file

    def spy(path, kind, wrapper=None):
        opened.append(os.path.basename(path))
        return original(path, kind, wrapper)
    monkeypatch.setattr(wf, "read_weights_file", spy)
    return opened


def test_safetensors_file_and_metadata(tmp_path):
    sd = _tensors()
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"k": "v"})
    assert _same(wf.read_weights(tmp_path / "m.safetensors", "test"), sd)
    assert wf.read_metadata(tmp_path / "m.safetensors") == {"k": "v"}


def test_default_precision_preferred_and_one_copy_read(tmp_path, monkeypatch):
    """fp32 shards + bf16 and fp16 variant shards side by side: the default set is read, and only it."""
    sd = _tensors()
    default = _save_sharded(sd, tmp_path, "model")
    _save_sharded(_tensors(1, torch.float16), tmp_path, "model", "fp16")
    _save_sharded(_tensors(2, torch.bfloat16), tmp_path, "model", "bf16")
    save_file(_tensors(3), str(tmp_path / "gemma-2-2b-it.safetensors"))  # a merged duplicate, as in the Gemma repo
    opened = _reads(monkeypatch)
    assert _same(wf.read_weights(tmp_path, "test"), sd)
    assert sorted(opened) == default
    opened.clear()
    assert _same(wf.read_weights(tmp_path, "test", variant="fp16"), _tensors(1, torch.float16))
    assert all(".fp16-" in name for name in opened) and len(opened) == SHARDS


def test_variant_shards_only(tmp_path):
    """Only `diffusion_pytorch_model.bf16-0000N-of-...` shards: the folder and any single shard read the whole set."""
    sd = _tensors(dtype=torch.bfloat16)
    names = _save_sharded(sd, tmp_path, "diffusion_pytorch_model", "bf16")
    assert _same(wf.read_weights(tmp_path, "test"), sd)
    assert _same(wf.read_weights(tmp_path / names[1], "test"), sd)
    (tmp_path / "diffusion_pytorch_model.safetensors.index.bf16.json").unlink()  # complete shards without an index
    assert _same(wf.read_weights(tmp_path / names[0], "test"), sd)
    (tmp_path / names[0]).unlink()
    with pytest.raises(wf.WeightsFileError, match=r"found 1 of 2 shards"):
        wf.read_weights(tmp_path, "test")


def test_missing_shard_named(tmp_path):
    names = _save_sharded(_tensors(), tmp_path, "model")
    (tmp_path / names[1]).unlink()
    with pytest.raises(wf.WeightsFileError, match=names[1]):
        wf.read_weights(tmp_path, "test")


def test_pipeline_component_folder(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    for component in ("transformer", "vae", "text_encoder", "tokenizer"):
        (tmp_path / component).mkdir()
        assert wf.component_folder(tmp_path, component) == tmp_path / component
    assert wf.component_folder(tmp_path / "vae", "vae") == tmp_path / "vae"
    assert wf.component_folder(tmp_path, "scheduler") == tmp_path


def test_trainer_checkpoint_with_numpy_rng_state(tmp_path):
    """NVlabs trainer checkpoints hold an optimizer and a numpy RNG state: read with weights_only, state_dict by
    default, state_dict_ema when asked."""
    sd, ema = _tensors(), _tensors(1)
    torch.save({"state_dict": sd, "state_dict_ema": ema, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "rng_state": np.random.get_state(), "epoch": 3, "step": 1000}, tmp_path / "epoch_3_step_1000.pth")
    assert _same(wf.read_weights(tmp_path / "epoch_3_step_1000.pth", "test"), sd)
    assert _same(wf.read_weights(tmp_path / "epoch_3_step_1000.pth", "test", wrapper="state_dict_ema"), ema)
    torch.save({"state_dict": sd}, tmp_path / "plain.pth")
    with pytest.raises(wf.WeightsFileError, match="no 'state_dict_ema' entry"):
        wf.read_weights(tmp_path / "plain.pth", "test", wrapper="state_dict_ema")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_executing_pickle_refused_and_never_run(tmp_path):
    marker = str(tmp_path / "code_ran")
    torch.save({"state_dict": _tensors(), "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(wf.WeightsFileError) as info:
        wf.read_weights(tmp_path / "evil.pth", "DiT")
    message = str(info.value)
    assert "evil.pth" in message and "run code" in message and "safetensors" in message
    assert "weights_only=False" not in message
    assert not os.path.exists(marker)


BROKEN = {  # file content -> what the message must say the bytes look like
    "empty": (b"", "empty (zero-byte)"),
    "html": (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>", "HTML page"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 6430000000\n", "Git-LFS pointer"),
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_downloads_explained(tmp_path, case, suffix):
    content, looks = BROKEN[case]
    path = tmp_path / f"Sana_600M_{case}{suffix}"
    path.write_bytes(content)
    with pytest.raises(wf.WeightsFileError) as info:
        wf.read_weights(path, "DiT")
    message = str(info.value)
    assert str(path) in message and looks in message and "Re-download" in message, message


def test_truncated_downloads_explained(tmp_path):
    save_file(_tensors(), str(tmp_path / "full.safetensors"))
    torch.save({"state_dict": _tensors()}, tmp_path / "full.pth")
    for name in ("full.safetensors", "full.pth"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / ("cut_" + name)
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(wf.WeightsFileError, match=r"cut_full.*truncated.*Re-download"):
            wf.read_weights(cut, "DiT")


def test_bad_json_names_file(tmp_path):
    (tmp_path / "config.json").write_text('{"sample_size": 32,')
    with pytest.raises(wf.WeightsFileError, match=r"config.json: cannot read this config file"):
        wf.read_json(tmp_path / "config.json")


def test_strip_prefix_and_unwrap():
    sd = {"model.diffusion_model.a": 1, "model.diffusion_model.b": 2}
    assert wf.strip_prefix(sd) == {"a": 1, "b": 2}
    assert wf.strip_prefix({"vae.x": 1}, ("vae.",)) == {"x": 1}
    assert wf.unwrap({"state_dict": {"a": 1}}) == {"a": 1}


def test_check_finite_names_tensor():
    sd = _tensors()
    wf.check_finite(sd, "ok.safetensors")
    sd["b.bias"][3] = float("nan")
    with pytest.raises(wf.WeightsFileError, match=r"bad.safetensors: tensor 'b.bias' .* 1 NaN/inf"):
        wf.check_finite(sd, "bad.safetensors")


@pytest.mark.skipif(sys.platform != "linux", reason="page release uses Linux madvise")
def test_convert_dtypes_keeps_values(tmp_path):
    sd = _tensors()
    save_file(sd, str(tmp_path / "m.safetensors"))
    converted = wf.convert_dtypes(wf.read_weights(tmp_path / "m.safetensors", "test"), torch.bfloat16)
    assert converted["a.weight"].dtype == torch.bfloat16 and converted["c.index"].dtype == torch.int64
    assert torch.equal(converted["a.weight"], sd["a.weight"].to(torch.bfloat16))


def test_misaligned_safetensors_tensor(tmp_path):
    """A writer that does not align (a 3-byte uint8 blob before an fp32 tensor) still reads correctly."""
    blob, weight = torch.arange(3, dtype=torch.uint8), torch.randn(2, 3)
    header = {"blob": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [3, 27]}}
    text = json.dumps(header).encode()
    data = blob.numpy().tobytes() + weight.numpy().tobytes()
    (tmp_path / "odd.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + data)
    sd = wf.read_weights(tmp_path / "odd.safetensors", "test")
    assert torch.equal(sd["blob"], blob) and torch.equal(sd["w"], weight)


def test_wrapper_on_safetensors_refused(tmp_path):
    save_file(_tensors(), str(tmp_path / "m.safetensors"))
    with pytest.raises(wf.WeightsFileError, match="m.safetensors: a safetensors file holds one set of weights"):
        wf.read_weights(tmp_path / "m.safetensors", "test", wrapper="state_dict_ema")
