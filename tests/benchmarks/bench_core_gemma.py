"""Could the pack run Gemma-2 on ComfyUI core's own implementation (``comfy/text_encoders/llama.py``, ``Llama2_`` with
``Gemma2_2B_Config``, built on ``comfy.ops``) instead of transformers' ``Gemma2Model``? Measures the parity the pack
requires (<= 1e-5 in float32 against transformers / diffusers) on the generated Gemma-2 of tests/fixtures/text.py
(real hidden and head sizes, 2 layers) with Sana's CHI prompt padded to its real length.

Cases: the fixture weights as they are; query weights scaled so attention logits reach the size where Gemma-2's
attention-logit soft-capping (50 * tanh(x / 50), transformers ``attn_logit_softcapping``) acts, as in trained models;
and transformers with soft-capping switched off, to show that this is the only difference. Prints one JSON line each:
{"case": "fixture_weights", "max_abs_valid_tokens": 0.0073, "reference_max_abs": 4.9}

Run: COMFYUI_PATH=/path/to/ComfyUI python tests/benchmarks/bench_core_gemma.py
"""

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
QUERY_SCALES = {"fixture_weights": 1.0, "query_x100": 100.0}


def _core_model(config):
    sys.path.insert(0, os.environ.get("COMFYUI_PATH", str(ROOT.parent / "shared" / "ComfyUI")))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.ops
    from comfy.text_encoders.llama import Gemma2_2B_Config, Llama2_

    core_config = Gemma2_2B_Config(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads)
    return Llama2_(core_config, device="cpu", dtype=torch.float32, ops=comfy.ops.disable_weight_init).eval()


@torch.no_grad()
def main() -> None:
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer, Gemma2Model

    from models.chi import chi_text
    from tests.fixtures.text import GEMMA_FOLDER, text_fixture_root

    folder = text_fixture_root() / GEMMA_FOLDER
    reference = Gemma2Model.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    core = _core_model(reference.config)
    core.load_state_dict(reference.state_dict(), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    length = len(tokenizer(chi_text("nvlabs"))["input_ids"]) + 298  # Sana: num_chi + 300 - 2
    batch = tokenizer(chi_text("nvlabs") + "A cat holding a sign that says hello world", padding="max_length",
                      max_length=length, return_tensors="pt")
    valid = batch.attention_mask[0].bool()
    cases = dict(QUERY_SCALES, no_softcap_in_transformers=1.0)
    for case, scale in cases.items():
        if case == "no_softcap_in_transformers":
            for layer in reference.layers:
                layer.self_attn.attn_logit_softcapping = None
        for model in (reference, core):
            for layer in model.layers:
                layer.self_attn.q_proj.weight.mul_(scale)
        ours = core(batch.input_ids, attention_mask=batch.attention_mask)[0]
        ref = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        print(json.dumps({"case": case, "max_abs_valid_tokens": (ours - ref)[0, valid].abs().max().item(),
                          "reference_max_abs": ref[0, valid].abs().max().item()}))
        for model in (reference, core):
            for layer in model.layers:
                layer.self_attn.q_proj.weight.div_(scale)


if __name__ == "__main__":
    main()
