"""Benchmark: Sana text encoding (models/text_encoder.py) against diffusers SanaPipeline.encode_prompt, same run.

Encodes a prompt that fills the 300-token window (with the CHI prefix, as the pipelines do) through our encoder and
through diffusers on the same Gemma-2 weights and tokenizer, and prints one JSON line per figure (median seconds and
the ratio ours / diffusers). Also the cost of the glyph branch (ByT5 + projector) on a quoted prompt.

Run:  python tests/benchmarks/bench_text.py [--config fixture|real] [--device cpu|cuda] [--dtype float32|bfloat16]
``fixture`` uses the generated test checkpoint (2 Gemma layers); ``real`` builds Gemma-2-2b's full configuration with
random weights (26 layers, about 10 GB in float32; speed does not depend on trained weights).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.chi import CHI_DIFFUSERS  # noqa: E402
from models.text_encoder import MAX_SEQUENCE_LENGTH, load_text_encoder  # noqa: E402
from tests.fixtures.text import GEMMA_FOLDER, text_fixture_root  # noqa: E402

WARMUP, REPEATS = 2, 9
FILL_WORDS = "a small red fox in a snowy forest at dawn, soft light, "


def _seconds(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _timed_pair(fn_a, fn_b, device) -> tuple[float, float]:
    """Median seconds of two functions, run alternately so machine-load drift hits both alike."""
    times_a, times_b = [], []
    for i in range(WARMUP + REPEATS):
        a, b = _seconds(fn_a, device), _seconds(fn_b, device)
        if i >= WARMUP:
            times_a.append(a)
            times_b.append(b)
    return statistics.median(times_a), statistics.median(times_b)


def _full_prompt(encoder) -> str:
    words = FILL_WORDS.split(" ")
    prompt = ""
    for word in words * 100:
        candidate = (prompt + " " + word).strip()
        tokens = encoder.tokenize(candidate, chi="diffusers", lowercase=True)
        if int(tokens.attention_mask.sum()) >= MAX_SEQUENCE_LENGTH:
            return prompt
        prompt = candidate
    return prompt


def _real_folder(fixture: Path, out: Path) -> Path:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)  # the fixture's tokenizer is reused: its ids are all below Gemma's 256000
    Gemma2ForCausalLM(Gemma2Config(vocab_size=256000)).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((fixture / GEMMA_FOLDER / name).read_bytes())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["fixture", "real"], default="fixture")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    from diffusers import SanaPipeline
    from transformers import AutoTokenizer, Gemma2Model

    fixture = text_fixture_root()
    with tempfile.TemporaryDirectory() as tmp:
        folder = fixture / GEMMA_FOLDER if args.config == "fixture" else _real_folder(fixture, Path(tmp))
        ours = load_text_encoder(folder, fixture / "byt5_small_glyphxl_fp16.safetensors",
                                 fixture / "sana_glyph_projector.safetensors", dtype=dtype, device=device)
        reference = SanaPipeline(tokenizer=AutoTokenizer.from_pretrained(folder), vae=None, transformer=None,
                                 text_encoder=Gemma2Model.from_pretrained(folder, dtype=dtype).to(device).eval(),
                                 scheduler=None)
    prompt = _full_prompt(ours)
    common = {"config": args.config, "device": str(device), "dtype": args.dtype, "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    t_ours, t_ref = _timed_pair(
        lambda: ours.encode(prompt, chi="diffusers", lowercase=True, glyph_text=""),
        lambda: reference.encode_prompt(prompt, do_classifier_free_guidance=False, device=device,
                                        complex_human_instruction=list(CHI_DIFFUSERS)),
        device,
    )
    print(json.dumps({"figure": "encode_300_token_prompt", "ours_s": round(t_ours, 5), "diffusers_s": round(t_ref, 5),
                      "ratio_ours_over_diffusers": round(t_ours / t_ref, 3), **common}))
    glyph_prompt = prompt[:200] + ' with a sign that says "OPEN 24 HOURS"'
    t_glyph, t_plain = _timed_pair(lambda: ours.encode(glyph_prompt), lambda: ours.encode(glyph_prompt, glyph_text=""),
                                   device)
    print(json.dumps({"figure": "glyph_branch_overhead", "with_glyph_s": round(t_glyph, 5),
                      "without_glyph_s": round(t_plain, 5), "ratio": round(t_glyph / t_plain, 3), **common}))


if __name__ == "__main__":
    main()
