"""DC-AE f32c32 (models/dcae*.py): structure, both checkpoint layouts, and float32 parity with diffusers AutoencoderDC.

Reference: diffusers `AutoencoderDC` with the real `dc-ae-f32c32-sana` config and the same seeded random weights
(tests/fixtures/dcae.py). Images are non-square and small so stages 4-5 run LiteMLA's quadratic branch and stage 3 the
linear one (H*W <= 32 switches), exactly as in the reference.
"""

import pytest
import torch

from models.dcae import DCAE, DCAEConfig
from models.dcae_blocks import relu_attention
from models.dcae_checkpoint import config_from_state_dict, detect_layout, load_dcae, read_dcae_weights
from tests.fixtures.dcae import DIFFUSERS_DIR, DIFFUSERS_FILE, ORIGINAL_DIR, ORIGINAL_FILE
from tests.assertions import assert_close, assert_relative_close

# Parity bound (issue 4). Reached: decode ~3e-6 on outputs of magnitude ~1.4; encode ~3e-5 on latents of magnitude
# ~12 (the encoder has no output norm, so float32 rounding, ~1e-7 relative per op, grows with the residual stream).
PARITY_ATOL = 1e-4
# bf16 weights vs float32 (relative L2): bf16 keeps 8 mantissa bits (~4e-3 relative per op) over ~60 layers;
# measured 1.2e-2 on the fixture. The low-precision guards themselves: tests/test_low_precision_dcae.py.
BF16_RTOL = 2.5e-2
# Keys of the real files: mit-han-lab model.safetensors (339) and diffusers AutoencoderDC (375); docs/ARCHITECTURE.md
# §10.
ORIGINAL_KEYS = 339
DIFFUSERS_KEYS = 375
SANA_F32C32_PARAMETERS = 312_250_275
SHAPES = [(1, 64, 96), (2, 96, 64)]


def _images(batch: int, height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(height * width + batch)
    return torch.rand(batch, 3, height, width, generator=generator) * 2 - 1


def _latents(batch: int, height: int, width: int) -> torch.Tensor:
    """Raw latents with the spread of real ones (std 1 / 0.41407, the scaling factor's definition)."""
    generator = torch.Generator().manual_seed(height * width + batch)
    return torch.randn(batch, 32, height, width, generator=generator) / 0.41407


class RecordingOps:
    """An operations namespace that records every layer built through it."""

    def __init__(self):
        self.built = []

    def Conv2d(self, *args, **kwargs):  # noqa: N802 - mirrors torch.nn / comfy.ops naming
        self.built.append(kwargs.get("device"))
        return torch.nn.Conv2d(*args, **kwargs)


def test_dcae_meta_build_uses_operations():
    ops = RecordingOps()
    model = DCAE(DCAEConfig(), device="meta", operations=ops)
    conv_count = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(ops.built) == conv_count and set(ops.built) == {"meta"}
    assert all(p.is_meta for p in model.parameters())
    assert len(model.state_dict()) == ORIGINAL_KEYS
    assert sum(p.numel() for p in model.parameters()) == SANA_F32C32_PARAMETERS


@pytest.mark.parametrize(("fields", "match"), [
    (dict(encoder_depths=(2, 2, 2)), "encoder_depths has 3 entries"),
    (dict(decoder_depths=(0, 3, 3, 3, 3, 3)), "depth 0"),
    (dict(encoder_block_types=("ResBlock",) * 5 + ("Attention",)), "block type 'Attention'"),
    (dict(latent_channels=48), "multiples of latent_channels=48"),
])
def test_dcae_config_errors(fields, match):
    with pytest.raises(ValueError, match=match):
        DCAEConfig(**fields)


def test_dcae_layout_key_counts(dcae_root):
    original = read_dcae_weights(dcae_root / ORIGINAL_DIR / ORIGINAL_FILE)
    diffusers = read_dcae_weights(dcae_root / DIFFUSERS_DIR)
    assert (len(original), len(diffusers)) == (ORIGINAL_KEYS, DIFFUSERS_KEYS)
    assert (detect_layout(original), detect_layout(diffusers)) == ("original", "diffusers")
    assert config_from_state_dict(original) == DCAEConfig()


def test_dcae_rename_table_inverts_diffusers_converter(dcae_root):
    """Our diffusers -> original table, undone by diffusers' own original -> diffusers converter, is the identity."""
    single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")
    original = read_dcae_weights(dcae_root / ORIGINAL_DIR / ORIGINAL_FILE)
    diffusers = read_dcae_weights(dcae_root / DIFFUSERS_DIR / DIFFUSERS_FILE)
    back = single_file_utils.convert_autoencoder_dc_checkpoint_to_diffusers(dict(original))
    assert sorted(back) == sorted(diffusers)
    mismatched = [key for key in diffusers if not torch.equal(back[key], diffusers[key])]
    assert not mismatched, f"{len(mismatched)} tensors differ, e.g. {mismatched[:3]}"


def test_dcae_both_layouts_load_identical_tensors(dcae_root, dcae_model):
    for source in (dcae_root / DIFFUSERS_DIR, dcae_root / DIFFUSERS_DIR / DIFFUSERS_FILE):
        other = load_dcae(source).state_dict()
        ours = dcae_model.state_dict()
        assert sorted(other) == sorted(ours)
        different = [key for key in ours if not torch.equal(other[key], ours[key])]
        assert not different, f"{source}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_dcae_prefixed_state_dict_loads(tmp_path, dcae_root):
    from safetensors.torch import save_file

    weights = read_dcae_weights(dcae_root / ORIGINAL_DIR / ORIGINAL_FILE)
    save_file({f"vae.{k}": v for k, v in weights.items()}, str(tmp_path / "prefixed.safetensors"))
    model = load_dcae(tmp_path / "prefixed.safetensors", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_dcae_wrong_file_errors(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.x_embedder.proj.weight": torch.zeros(1)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(ValueError, match="Not a DC-AE checkpoint"):
        load_dcae(tmp_path / "dit.safetensors")
    with pytest.raises(ValueError, match="file not found"):
        load_dcae(tmp_path / "missing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no DC-AE weights"):
        load_dcae(tmp_path / "empty")


@pytest.mark.parametrize(("batch", "height", "width"), SHAPES)
def test_dcae_encode_parity(dcae_model, dcae_reference, batch, height, width):
    image = _images(batch, height, width)
    with torch.no_grad():
        expected = dcae_reference.encode(image).latent
    latent = dcae_model.encode(image)
    assert latent.shape == (batch, 32, height // 32, width // 32)
    assert_close(latent, expected, PARITY_ATOL, f"encode {batch}x{height}x{width} vs diffusers")


@pytest.mark.parametrize(("batch", "height", "width"), SHAPES)
def test_dcae_decode_parity(dcae_model, dcae_reference, batch, height, width):
    latent = _latents(batch, height // 32, width // 32)
    with torch.no_grad():
        expected = dcae_reference.decode(latent).sample
    image = dcae_model.decode(latent)
    assert image.shape == (batch, 3, height, width)
    assert_close(image, expected, PARITY_ATOL, f"decode {batch}x{height}x{width} vs diffusers")


@torch.no_grad()
def test_dcae_bf16_weights_decode_close(dcae_model):
    """The real-width decoder with bf16 weights (a bf16 copy of the session model; loading the file in bf16 is
    covered by test_dcae_prefixed_state_dict_loads) on a 2x2 latent: stages 4-5 quadratic, stage 3 linear attention."""
    latent = _latents(1, 2, 2)
    reference = dcae_model.decode(latent)
    bf16 = DCAE(dcae_model.config, dtype=torch.bfloat16, device="meta")  # cast tensor by tensor: +0.6 GB, not +1.2
    bf16.load_state_dict({k: v.bfloat16() for k, v in dcae_model.state_dict().items()}, assign=True)
    image = bf16.eval().decode(latent.bfloat16())
    assert image.dtype == torch.bfloat16
    assert_relative_close(image.float(), reference, BF16_RTOL, "bf16 decode vs float32")


@pytest.mark.parametrize("tokens", [(2, 3), (8, 12)])
def test_relu_attention_accumulates_in_float32(tokens):
    """bf16 input -> the same result as the float32 computation, rounded once (quadratic and linear branches)."""
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 2 * 96, *tokens, generator=generator).bfloat16()
    out = relu_attention(qkv, 32)
    expected = relu_attention(qkv.float(), 32).bfloat16()
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


def test_dcae_input_validation(dcae_model):
    with pytest.raises(ValueError, match="multiples of 32"):
        dcae_model.encode(torch.zeros(1, 3, 64, 80))
    with pytest.raises(ValueError, match=r"latent \[B, 32, h, w\]"):
        dcae_model.decode(torch.zeros(1, 16, 2, 2))
