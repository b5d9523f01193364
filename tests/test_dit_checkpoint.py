"""Checkpoint formats of the Sana DiT (models/dit_checkpoint.py): both layouts load to identical tensors, variants are
detected from the weights (and config.json), and files that are not a Sana DiT get an error naming what they are."""

import json
import logging
import shutil

import pytest
import torch

from models.dit import SanaDiT, SanaDiTConfig
from models.dit_checkpoint import config_from_state_dict, load_dit, load_state_dict_and_config
from models.pos_embed import sincos_2d

EXPECTED = {  # fixture -> (variant name, depth, hidden, flow_shift, use_pe, pe_interpolation, sample_size)
    "1.0": ("Sana 1.0 1024px, 0.6B-class (hidden 1152), 2 blocks", 2, 1152, 4.0, False, 1.0, 32),
    "1.0-1.6B": ("Sana 1.0 1024px, 1.6B-class (hidden 2240), 1 blocks", 1, 2240, 3.0, False, 1.0, 32),
    "1.5": ("Sana 1.5 1024px, 1.6B-class (hidden 2240), 1 blocks", 1, 2240, 3.0, False, 1.0, 32),
    "sprint": ("Sana Sprint 1024px, 1.6B-class (hidden 2240), 1 blocks", 1, 2240, 3.0, False, 1.0, 32),
    "4k": ("Sana 1.0 4Kpx, 1.6B-class (hidden 2240), 1 blocks", 1, 2240, 6.0, True, 2.0, 128),
}
FAMILY_FLAGS = {"1.0": (False, False), "1.0-1.6B": (False, False), "1.5": (True, False), "sprint": (True, True),
                "4k": (False, False)}


def _summary(cfg):
    return (cfg.variant, cfg.depth, cfg.hidden_size, cfg.flow_shift, cfg.use_pe, cfg.pe_interpolation, cfg.sample_size)


def _assert_same_tensors(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), f"{what}: key sets differ: {sorted(a.keys() ^ b.keys())[:6]}"
    bad = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not bad, f"{what}: tensors differ for {bad[:6]}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dit_checkpoint_layouts_identical_and_detected(dit_checkpoints, name, caplog):
    paths = dit_checkpoints[name]
    with caplog.at_level(logging.INFO, logger="models.dit_checkpoint"):
        original, cfg_o = load_state_dict_and_config(paths["original"])
        diffusers, cfg_d = load_state_dict_and_config(paths["diffusers"])
    _assert_same_tensors(original, diffusers, name)
    assert cfg_o == cfg_d, f"{name}: original {cfg_o} vs diffusers {cfg_d}"
    assert _summary(cfg_o) == EXPECTED[name]
    assert (cfg_o.qk_norm, cfg_o.guidance_embeds) == FAMILY_FLAGS[name]
    assert f"detected {cfg_o.variant}" in caplog.text  # the detected config is logged


def test_dit_checkpoint_other_containers(dit_checkpoints, tmp_path):
    """Safetensors with ComfyUI's model.diffusion_model. prefix, a sharded diffusers folder, its repo root, and one
    weights file inside a diffusers folder all load to the same tensors as the .pth."""
    paths = dit_checkpoints["1.0"]
    reference, _ = load_state_dict_and_config(paths["original"])
    folder = paths["diffusers"]
    assert (folder / "diffusion_pytorch_model.safetensors.index.json").exists(), "fixture should be sharded"
    shard = sorted(folder.glob("diffusion_pytorch_model-*.safetensors"))[0]
    for source in (paths["comfy_prefixed"], folder.parent, shard):
        sd, cfg = load_state_dict_and_config(source)
        _assert_same_tensors(reference, sd, str(source))
        assert cfg.depth == 2 and cfg.hidden_size == 1152


def test_dit_checkpoint_diffusers_file_without_config(dit_checkpoints, tmp_path):
    """A lone diffusers file still loads; the training grid falls back to 1024 px and the variant to weights only."""
    src = dit_checkpoints["1.5"]["diffusers"] / "diffusion_pytorch_model.safetensors"
    lone = tmp_path / "sana15.safetensors"
    shutil.copy(src, lone)
    _, cfg = load_state_dict_and_config(lone)
    assert cfg.qk_norm and cfg.sample_size == 32 and not cfg.use_pe


def test_dit_checkpoint_config_json_drives_pe(dit_checkpoints):
    config = json.loads((dit_checkpoints["4k"]["diffusers"] / "config.json").read_text())
    assert config["interpolation_scale"] == 2.0
    _, cfg = load_state_dict_and_config(dit_checkpoints["4k"]["diffusers"])
    assert (cfg.use_pe, cfg.base_size, cfg.pe_interpolation) == (True, 128, 2.0)


def test_dit_checkpoint_load_dit_dtype_and_reference(dit_checkpoints):
    model = load_dit(dit_checkpoints["1.0"]["original"], dtype=torch.bfloat16, reference="diffusers")
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    assert model.config.reference == "diffusers" and not model.training
    assert model.config.flow_shift == 4.0 and model.config.sample_size == 32


def test_dit_checkpoint_foreign_files_named(dit_foreign_files):
    for path, kind in dit_foreign_files.items():
        with pytest.raises(ValueError, match="expected a Sana DiT") as err:
            load_dit(path)
        assert kind in str(err.value) and str(path) in str(err.value), str(err.value)


def test_dit_checkpoint_missing_and_empty(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_dit(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no diffusers transformer weights"):
        load_dit(tmp_path)


def _tiny_state_dict() -> dict:
    return SanaDiT(SanaDiTConfig(hidden_size=64, depth=1, num_cross_heads=4), device="meta").state_dict()


def test_dit_checkpoint_pos_embed_content_decides_pe():
    """pos_embed: zeros -> no PE; a sin-cos table -> PE with the interpolation read from it; noise -> error."""
    sd = _tiny_state_dict()
    kw = {"source": "tiny.pth", "num_cross_heads": 4}
    assert not config_from_state_dict(sd, pos_embed=torch.zeros(1, 64, 64), **kw).use_pe
    table = sincos_2d(64, 8, 8, 8, 0.5)[None].to(torch.bfloat16)
    cfg = config_from_state_dict(sd, pos_embed=table, **kw)
    assert (cfg.use_pe, cfg.sample_size, cfg.pe_interpolation) == (True, 8, 0.5)
    with pytest.raises(ValueError, match="pos_embed is neither zeros nor Sana's sin-cos"):
        config_from_state_dict(sd, pos_embed=torch.randn(1, 64, 64), **kw)
    with pytest.raises(ValueError, match="pos_embed has shape"):
        config_from_state_dict(sd, pos_embed=torch.zeros(1, 60, 64), **kw)
