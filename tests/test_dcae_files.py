"""DC-AE files users have (models/dcae_checkpoint.py): pipeline and loose layouts load the same tensors as the reference
file; other autoencoders and broken files are refused with a message naming the file, what it is and what to do.

The real-size fixtures (tests/fixtures/dcae.py) are linked into the layouts, never copied; refusals use a tiny
original-layout DC-AE written here.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from models.dcae import DCAE, DCAEConfig
from models.dcae_checkpoint import load_dcae
from tests.fixtures.dcae import DIFFUSERS_DIR, DIFFUSERS_FILE, ORIGINAL_DIR, ORIGINAL_FILE

TINY = DCAEConfig(encoder_widths=(8, 16, 32, 32, 64, 64), decoder_widths=(8, 16, 32, 32, 64, 64),
                  encoder_depths=(1,) * 6, decoder_depths=(1,) * 6)
# Signature keys and shapes of KL autoencoders (SDXL's sdxl_vae.safetensors: original layout, 4 latent channels;
# FLUX.1's diffusers AutoencoderKL: 16 latent channels, no quant_conv).
SDXL_KEYS = {"encoder.conv_in.weight": (128, 3, 3, 3), "encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3),
             "decoder.conv_in.weight": (512, 4, 3, 3), "quant_conv.weight": (8, 8, 1, 1)}
FLUX_KEYS = {"encoder.conv_in.weight": (128, 3, 3, 3), "encoder.down_blocks.0.resnets.0.conv1.weight": (128, 128, 3, 3),
             "decoder.conv_in.weight": (512, 16, 3, 3)}


def _assert_same_tensors(model, reference, source):
    ours, other = model.state_dict(), reference.state_dict()
    different = [key for key in other if not torch.equal(ours[key], other[key])]
    assert set(ours) == set(other) and not different, f"{source}: {len(different)} tensors differ"


def _link(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)
    return target


def test_pipeline_vae_folder_reads_default_precision_only(tmp_path, dcae_root, dcae_model):
    pipeline = tmp_path / "Sana_1600M_1024px_diffusers"
    for name in (DIFFUSERS_FILE, "config.json"):
        _link(dcae_root / DIFFUSERS_DIR / name, pipeline / "vae" / name)
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "SanaPipeline"}))
    # A variant copy that would fail to load if it were read.
    variant = pipeline / "vae" / "diffusion_pytorch_model.fp16.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(1)}, str(variant))
    for path in (pipeline, pipeline / "vae"):
        _assert_same_tensors(load_dcae(path), dcae_model, path)


def test_model_safetensors_directly_in_vae_folder(tmp_path, dcae_root, dcae_model):
    loose = _link(dcae_root / ORIGINAL_DIR / ORIGINAL_FILE, tmp_path / "vae" / "model.safetensors")
    _assert_same_tensors(load_dcae(loose), dcae_model, loose)


@pytest.mark.parametrize(("keys", "expected"), [
    (SDXL_KEYS, r"sdxl_vae.safetensors is an SD1/SD2/SDXL-family VAE \(4 latent channels, original KL layout\)"),
    (FLUX_KEYS, r"sdxl_vae.safetensors is an SD3/Flux.1-family VAE \(16 latent channels, diffusers AutoencoderKL"),
])
def test_other_vae_families_are_named(tmp_path, keys, expected):
    save_file({k: torch.zeros(shape, dtype=torch.float16) for k, shape in keys.items()},
              str(tmp_path / "sdxl_vae.safetensors"))
    with pytest.raises(ValueError, match=expected + r".*stock Load VAE node.*dc-ae-f32c32-sana"):
        load_dcae(tmp_path / "sdxl_vae.safetensors")


@pytest.fixture(scope="module")
def tiny_state_dict():
    torch.manual_seed(0)
    model = DCAE(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_tiny_original_file_round_trips(tmp_path, tiny_state_dict):
    save_file(tiny_state_dict, str(tmp_path / "tiny.safetensors"))
    loaded = load_dcae(tmp_path / "tiny.safetensors").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_state_dict.items())


def test_strict_loading_refusals(tmp_path, tiny_state_dict):
    key = "decoder.stages.2.op_list.1.main.conv2.norm.weight"
    cases = {
        "missing": ({k: v for k, v in tiny_state_dict.items() if k != key}, rf"missing \['{key}'\]"),
        "unexpected": ({**tiny_state_dict, "encoder.extra.weight": torch.zeros(2)},
                       r"1 are unexpected \['encoder.extra.weight'\]"),
        "nan": ({**tiny_state_dict, key: torch.full_like(tiny_state_dict[key], float("nan"))}, rf"tensor '{key}'.*NaN"),
    }
    for name, (sd, expected) in cases.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ValueError, match=rf"{name}.safetensors: .*{expected}"):
            load_dcae(tmp_path / f"{name}.safetensors")
