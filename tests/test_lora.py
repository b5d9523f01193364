"""Sana LoRA key mapping (models/lora_keys.py) against diffusers' own LoRA loading of the same PEFT file.

The DiT-level check merges each LoRA file through our key map (fused q/k/v and k/v slices included) into the
original-layout DiT, and compares with diffusers `SanaTransformer2DModel` after
`SanaPipeline.load_lora_into_transformer` (PEFT layers), in float32. The kohya and original-name files carry the
same update (tests/fixtures/lora.py).
"""

import pytest
import torch

from models.dit_checkpoint import load_dit
from models.lora_keys import lora_key_map
from tests.assertions import assert_close
from tests.fixtures import dit as dit_fixtures
from tests.fixtures.lora import BASE_VARIANT

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

PARITY_TOL = 1e-5  # float32, as the DiT parity tests
MIN_LORA_CHANGE = 1e-3  # the LoRA must move the output well above the parity tolerance
BATCH, HEIGHT, WIDTH, TOKENS, VALID = 2, 3, 5, 12, (12, 5)
TIMESTEPS = (999.0, 400.0)
# kohya names over original keys, as ComfyUI core maps them (comfy/lora.py model_lora_keys_unet): not ours to add.
KOHYA_PREFIX = "lora_unet_"
PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"))


def _key_map(model) -> dict:
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    names = lora_key_map(shapes, prefix="")
    names.update({KOHYA_PREFIX + k[:-len(".weight")].replace(".", "_"): k for k in shapes if k.endswith(".weight")})
    return names


def _merge(model, lora: dict) -> list[str]:
    """Add every LoRA update to `model` through the key map; returns the stems it could not map."""
    names, sd, unmapped = _key_map(model), model.state_dict(), []
    for down_suffix, up_suffix in PAIRS:
        for stem in [k[:-len(down_suffix)] for k in lora if k.endswith(down_suffix)]:
            if stem not in names:
                unmapped.append(stem)
                continue
            down, up = lora[stem + down_suffix].float(), lora[stem + up_suffix].float()
            alpha = float(lora[stem + ".alpha"]) / down.shape[0] if stem + ".alpha" in lora else 1.0
            target = names[stem]
            key, slot = (target, None) if isinstance(target, str) else target
            weight = sd[key] if slot is None else sd[key].narrow(*slot)
            weight += alpha * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    return unmapped


def _inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 32, HEIGHT, WIDTH, generator=gen)
    context = torch.randn(BATCH, TOKENS, 2304, generator=gen)
    mask = torch.zeros(BATCH, TOKENS)
    for row, valid in enumerate(VALID):
        mask[row, :valid] = 1
    return x, context, mask


@pytest.fixture(scope="module")
def reference_outputs(sana_lora_files):
    folder = dit_fixtures.checkpoints()[BASE_VARIANT]["diffusers"]
    x, context, mask = _inputs()
    out = {}
    with torch.no_grad():
        for with_lora in (False, True):
            ref = diffusers.SanaTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
            if with_lora:
                state = diffusers.SanaPipeline.lora_state_dict(str(sana_lora_files["peft"]))
                diffusers.SanaPipeline.load_lora_into_transformer(state, transformer=ref)
            out[with_lora] = ref(x, encoder_hidden_states=context, timestep=torch.tensor(TIMESTEPS),
                                 encoder_attention_mask=mask).sample
    return out


@pytest.mark.parametrize("kind", ["peft", "kohya", "original"])
def test_lora_merged_dit_matches_diffusers(sana_lora_files, reference_outputs, kind):
    from safetensors.torch import load_file

    model = load_dit(dit_fixtures.checkpoints()[BASE_VARIANT]["original"], reference="diffusers")
    unmapped = _merge(model, load_file(str(sana_lora_files[kind])))
    assert not unmapped, f"{kind} LoRA stems without a target: {unmapped}"
    x, context, mask = _inputs()
    with torch.no_grad():
        ours = model(x, torch.tensor(TIMESTEPS), context, attention_mask=mask)
    change = (reference_outputs[True] - reference_outputs[False]).abs().max().item()
    assert change > MIN_LORA_CHANGE, f"the fixture LoRA changes the output by only {change:.2e}"
    assert_close(ours, reference_outputs[True], PARITY_TOL, f"{kind} LoRA DiT vs diffusers (effect {change:.1e})")


def test_lora_key_map_slices_fused_weights():
    shapes = {"blocks.0.attn.qkv.weight": (6, 2), "blocks.0.cross_attn.kv_linear.weight": (4, 2),
              "blocks.0.mlp.depth_conv.conv.weight": (5, 1, 3, 3), "t_block.1.weight": (12, 2)}
    names = lora_key_map(shapes)
    assert names["transformer.transformer_blocks.0.attn1.to_k"] == ("diffusion_model.blocks.0.attn.qkv.weight",
                                                                    (0, 2, 2))
    assert names["transformer_blocks.0.attn2.to_v"] == ("diffusion_model.blocks.0.cross_attn.kv_linear.weight",
                                                        (0, 2, 2))
    assert names["lora_transformer_transformer_blocks_0_ff_conv_depth"] == \
        "diffusion_model.blocks.0.mlp.depth_conv.conv.weight"
    assert names["time_embed.linear"] == "diffusion_model.t_block.1.weight"
    assert names["blocks.0.attn.qkv"] == "diffusion_model.blocks.0.attn.qkv.weight"
