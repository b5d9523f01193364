"""Every DiT file layout users have (models/dit_checkpoint.py + models/dit_files.py on the one reader): each loads
the same tensors as the NVlabs .pth, or is refused with a message naming the file, what was found and what to do.

Layouts are derived from the session's cached DiT fixtures (tests/fixtures/dit.py) by linking or rewriting files.
"""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models import weights_file
from models.dit_checkpoint import load_dit, load_state_dict_and_config, read_checkpoint
from models.dit_files import BF16_ONLY_DTYPES, FP16_OK_DTYPES, inference_dtypes

INDEX = "diffusion_pytorch_model.safetensors.index.json"


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())[:6]
    bad = [k for k in a if not torch.equal(a[k].float(), b[k].float())]
    assert not bad, bad[:6]


@pytest.fixture(scope="module")
def sana600(dit_checkpoints):
    """(original .pth, diffusers transformer folder, reference state dict) of the 2-block 600M fixture."""
    paths = dit_checkpoints["1.0"]
    return paths["original"], paths["diffusers"], load_state_dict_and_config(paths["original"])[0]


def _link_folder(src, dst, rename=lambda name: name):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        os.symlink(f, dst / rename(f.name))
    return dst


def _bf16_variant(name: str) -> str:
    return name.replace("diffusion_pytorch_model-", "diffusion_pytorch_model.bf16-")


def test_variant_shards_only_folder_and_shard(sana600, tmp_path):
    _, folder, reference = sana600
    dst = _link_folder(folder, tmp_path / "transformer",
                       lambda n: n.replace(".index.json", ".index.bf16.json") if n == INDEX else _bf16_variant(n))
    index = dst / "diffusion_pytorch_model.safetensors.index.bf16.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    index.unlink()
    index.write_text(json.dumps({"weight_map": {k: _bf16_variant(v) for k, v in weight_map.items()}}))
    _same(load_state_dict_and_config(dst)[0], reference)
    shard = sorted(dst.glob("*.bf16-*.safetensors"))[1]
    _same(load_state_dict_and_config(shard)[0], reference)


def test_default_and_variant_side_by_side_reads_one(sana600, tmp_path, monkeypatch):
    """A folder with the default shards and a (different) fp16 copy: the default is loaded, the copy never read."""
    _, folder, reference = sana600
    dst = _link_folder(folder, tmp_path / "transformer")
    save_file({"patch_embed.proj.weight": torch.zeros(1)}, str(dst / "diffusion_pytorch_model.fp16.safetensors"))
    opened, original = [], weights_file.read_weights_file
    monkeypatch.setattr(weights_file, "read_weights_file",
                        lambda path, kind, wrapper=None: opened.append(path.name) or original(path, kind, wrapper))
    _same(load_state_dict_and_config(dst)[0], reference)
    assert opened and not any("fp16" in name for name in opened), opened


def test_pipeline_folder(sana600, tmp_path):
    _, folder, reference = sana600
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "SanaPipeline"}))
    _link_folder(folder, tmp_path / "transformer")
    for other in ("vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / other).mkdir()
    _same(load_state_dict_and_config(tmp_path)[0], reference)


def test_trainer_checkpoint_state_dict_and_ema(sana600, tmp_path):
    original, _, reference = sana600
    sd = torch.load(original, weights_only=True)["state_dict"]
    ema = {k: v * 0.5 for k, v in sd.items()}
    path = tmp_path / "epoch_10_step_5000.pth"
    torch.save({"state_dict": sd, "state_dict_ema": ema, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "scheduler": {"last_epoch": 10}, "rng_state": np.random.get_state(), "epoch": 10, "step": 5000}, path)
    _same(load_state_dict_and_config(path)[0], reference)
    loaded_ema = load_state_dict_and_config(path, ema=True)[0]
    _same(loaded_ema, {k: v * 0.5 for k, v in reference.items()})


def test_nvlabs_controlnet_loads_base_with_notice(sana600, tmp_path):
    original, _, reference = sana600
    sd = torch.load(original, weights_only=True)["state_dict"]
    control = {f"controlnet.0.copied_block.{k[len('blocks.0.'):]}": v for k, v in sd.items()
               if k.startswith("blocks.0.")}
    control.update({"controlnet.0.before_proj.weight": torch.zeros(1152, 1152), "controlnet.0.before_proj.bias":
                    torch.zeros(1152), "controlnet.0.after_proj.weight": torch.zeros(1152, 1152),
                    "controlnet.0.after_proj.bias": torch.zeros(1152)})
    path = tmp_path / "Sana_600M_1024px_ControlNet_HED.pth"
    torch.save({"state_dict": {**sd, **control}}, path)
    notices = []
    _same(load_state_dict_and_config(path, notices=notices)[0], reference)
    assert len(notices) == 1 and "ControlNet" in notices[0] and "SanaControlNetLoader" in notices[0]
    assert str(path) in notices[0]


def test_diffusers_controlnet_refused(sana600, tmp_path):
    _, folder, _ = sana600
    sd = weights_file.read_weights(folder, "test")
    sd = {k: v for k, v in sd.items() if not k.startswith("proj_out")}
    sd.update({"input_block.weight": torch.zeros(1152, 1152), "controlnet_blocks.0.weight": torch.zeros(1152, 1152)})
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "_class_name": "SanaControlNetModel"}))
    with pytest.raises(ValueError, match=r"test_diffusers_controlnet.*: this is a Sana ControlNet.*"
                                         r"SanaControlNetLoader"):
        load_state_dict_and_config(tmp_path)


def test_diffusers_file_without_config_resolution(dit_checkpoints, tmp_path):
    """A 4K diffusers file copied without config.json: 'auto' assumes 1024 px and says how to change it; resolution
    4096 gives the same config as with its config.json."""
    folder = dit_checkpoints["4k"]["diffusers"]
    lone = tmp_path / "sana_4k_transformer.safetensors"
    os.symlink(next(folder.glob("*.safetensors")), lone)
    with_config = load_state_dict_and_config(folder)[1]
    notices = []
    _, auto = load_state_dict_and_config(lone, notices=notices)
    assert auto.sample_size == 32 and not auto.use_pe
    assert len(notices) == 1 and "assumed 1024 px" in notices[0] and "'resolution'" in notices[0]
    chosen = load_state_dict_and_config(lone, resolution="4096")[1]
    assert chosen == with_config and (chosen.use_pe, chosen.pe_interpolation) == (True, 2.0)
    notices = []
    assert load_state_dict_and_config(folder, resolution=512, notices=notices)[1] == with_config
    assert "ignored" in notices[0]
    with pytest.raises(ValueError, match="resolution '300'"):
        load_state_dict_and_config(lone, resolution=300)


def _rewritten(original, tmp_path, edit) -> str:
    sd = {k: v.clone() for k, v in torch.load(original, weights_only=True)["state_dict"].items()}
    edit(sd)
    path = tmp_path / "Sana_600M_edited.safetensors"
    save_file(sd, str(path))
    return path


def test_missing_and_unexpected_tensor_refused(sana600, tmp_path):
    original, _, _ = sana600
    missing = _rewritten(original, tmp_path, lambda sd: sd.pop("blocks.1.cross_attn.proj.weight"))
    with pytest.raises(ValueError, match=r"Sana_600M_edited.safetensors: .*missing 1 tensor\(s\): "
                                         r"blocks.1.cross_attn.proj.weight.*re-download"):
        load_state_dict_and_config(missing)
    extra = _rewritten(original, tmp_path, lambda sd: sd.update({"blocks.0.attn.extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"unexpected 1 tensor\(s\): blocks.0.attn.extra.weight"):
        load_state_dict_and_config(extra)


def test_nan_tensor_refused(sana600, tmp_path):
    original, _, _ = sana600
    path = _rewritten(original, tmp_path, lambda sd: sd["blocks.0.mlp.point_conv.conv.weight"].view(-1)[7].fill_(
        float("nan")))
    with pytest.raises(ValueError, match=r"Sana_600M_edited.safetensors: tensor 'blocks.0.mlp.point_conv.conv.weight'"
                                         r".*NaN/inf"):
        load_dit(path)


@pytest.mark.parametrize("content,looks", [(b"", "empty"), (b"<html><body>404</body></html>", "HTML page"),
                                           (b"version https://git-lfs.github.com/spec/v1\nsize 6\n", "Git-LFS")])
def test_broken_dit_files(tmp_path, content, looks):
    path = tmp_path / "Sana_1600M_1024px_BF16.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"Sana_1600M_1024px_BF16.pth.*{looks}.*Re-download"):
        load_dit(path)


def test_code_executing_dit_refused(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))
    torch.save({"state_dict": {"x_embedder.proj.weight": torch.zeros(1)}, "hook": RunsCode()}, tmp_path / "ft.pth")
    with pytest.raises(ValueError, match="ft.pth: loading this file would need to run code"):
        load_dit(tmp_path / "ft.pth")
    assert not marker.exists()


def test_fp32_load_equals_reference(sana600):
    """load_dit of the variant-free .pth in fp32 equals the reference tensors (<= 1e-5: exact here)."""
    original, folder, reference = sana600
    model = load_dit(folder, dtype=torch.float32)
    _same({k: v for k, v in model.state_dict().items()}, {k: v.float() for k, v in reference.items()})
    raw, config = read_checkpoint(original)
    assert config is None and "blocks.0.attn.qkv.weight" in raw


def test_inference_dtypes_per_variant(dit_checkpoints):
    for name, expected in (("1.0", FP16_OK_DTYPES), ("1.5", BF16_ONLY_DTYPES), ("sprint", BF16_ONLY_DTYPES),
                           ("4k", BF16_ONLY_DTYPES)):
        cfg = load_state_dict_and_config(dit_checkpoints[name]["original"])[1]
        assert inference_dtypes(cfg, torch.float32, "x.pth") == expected, name
    cfg = load_state_dict_and_config(dit_checkpoints["1.0-1.6B"]["original"])[1]
    assert inference_dtypes(cfg, torch.float32, "Sana_1600M_1024px.pth") == FP16_OK_DTYPES
    assert inference_dtypes(cfg, torch.float32, "Sana_1600M_1024px_BF16.pth") == BF16_ONLY_DTYPES
    assert inference_dtypes(cfg, torch.bfloat16, "finetune.safetensors") == BF16_ONLY_DTYPES


@pytest.mark.parametrize("meta,expected", [({"sana_pos_encoding": "alibi"}, r"'sana_pos_encoding' is 'alibi'"),
                                           ({"sana_pos_encoding": "rope", "sana_rope": '{"theta": 1, "bogus": 2}'},
                                            r"'sana_rope' has unknown field\(s\) \['bogus'\]")])
def test_unknown_position_metadata_refused(tmp_path, meta, expected):
    path = tmp_path / "Sana_rope_future.safetensors"
    save_file({"x_embedder.proj.weight": torch.zeros(1)}, str(path), metadata=meta)
    with pytest.raises(ValueError, match=f"Sana_rope_future.safetensors: metadata {expected}"):
        load_state_dict_and_config(path)
