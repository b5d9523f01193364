"""Soak benchmark: 50 prompts through one real ComfyUI server with the package; the server's resident memory (RSS)
after every 10 prompts, as JSON lines. Goal (issue 15): RSS growth from the end of the warm-up (the first 10 prompts)
to the last prompt < 2 %.

Run: ``cd <repo> && COMFYUI_PATH=/path/to/ComfyUI python tests/benchmarks/bench_soak.py [--prompts 50] [--no-decode]``
with the CI environment's python (ComfyUI requirements + diffusers/transformers for the fixtures). Each prompt is the
tiny txt2img graph of the bad-input suite (generated fixtures: 1-block DiT, 2-layer Gemma, real-size DC-AE) with a
new prompt text and seed, 2 steps of flow_dpm_solver, a 64 px image decoded and saved; ``--no-decode`` saves the
latent instead. Prints one JSON object per line: {"prompts": n, "rss_mb", "anon_mb", "file_mb"} every 10 prompts,
then the summary {"warmup_rss_mb", "final_rss_mb", "growth_rss_pct", "growth_anon_pct", "goal_pct",
"seconds_per_prompt"}. On a machine short of memory the file-backed part of RSS (memory-mapped weights) can shrink
when the kernel drops clean pages; the anonymous part is the leak indicator then.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root: `tests.*` imports as in the test suite

from tests.integration import bad_input_harness as h  # noqa: E402
from tests.integration.conftest import PACKAGE_ROOT, _model_files  # noqa: E402
from tests.integration.server import ComfyServer, find_comfyui  # noqa: E402

REPORT_EVERY = 10
WARMUP_PROMPTS = 10
GOAL_GROWTH_PCT = 2.0
SUBJECTS = ("a red fox", "a lighthouse", "a bowl of ramen", "a mountain lake", "an old tram", "a paper crane",
            "a desert road", "a koi pond", "a snowy cabin", "a neon alley")


def memory_mb(pid: int) -> dict:
    """{"rss_mb", "anon_mb", "file_mb"} of a process in MiB (Linux /proc): the resident set and its anonymous part
    (heap, tensors: where a leak grows) and file-backed part (memory-mapped safetensors, libraries: the kernel may
    drop these pages under memory pressure, so RSS alone can fall without anything being freed)."""
    fields = {"VmRSS:": "rss_mb", "RssAnon:": "anon_mb", "RssFile:": "file_mb"}
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(" ")[0].split("\t")[0]
        if key in fields:
            values[fields[key]] = round(int(line.split()[1]) / 1024, 1)
    if "rss_mb" not in values:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return values


def prompt_graph(index: int, latent_node: str, decode: bool):
    g, b = h.base_graph(latent_node)
    positive = g.node("CLIPTextEncode", clip=b.clip[0], text=f"{SUBJECTS[index % len(SUBJECTS)]}, photo {index}")
    sampled = h.ksampler(g, b, positive=positive, steps=2, seed=index)
    if decode:
        g.node("SaveImage", images=g.node("VAEDecode", samples=sampled[0], vae=b.vae[0])[0], filename_prefix="soak")
    else:
        h.save_latent(g, sampled)
    return g


def soak(server: ComfyServer, prompts: int, decode: bool) -> dict:
    info = server.object_info()
    latent_node = "EmptySanaLatent" if "EmptySanaLatent" in info else "EmptySanaLatentImage"
    pid, readings, start = server._process.pid, {}, time.monotonic()
    for index in range(1, prompts + 1):
        server.run(prompt_graph(index, latent_node, decode))
        if index % REPORT_EVERY == 0:
            readings[index] = memory_mb(pid)
            print(json.dumps({"prompts": index, **readings[index]}), flush=True)
    warm, final = readings[min(readings, key=lambda n: abs(n - WARMUP_PROMPTS))], readings[max(readings)]
    growth = {f"growth_{k.removesuffix('_mb')}_pct": round(100 * (final[k] - warm[k]) / warm[k], 2)
              for k in ("rss_mb", "anon_mb") if k in warm}
    return {"warmup_rss_mb": warm["rss_mb"], "final_rss_mb": final["rss_mb"], **growth, "goal_pct": GOAL_GROWTH_PCT,
            "seconds_per_prompt": round((time.monotonic() - start) / prompts, 2), "decode": decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--no-decode", action="store_true", help="save latents instead of decoded images")
    args = parser.parse_args()
    comfy_root, reason = find_comfyui()
    if comfy_root is None:
        raise SystemExit(f"bench_soak: {reason}")
    with tempfile.TemporaryDirectory(prefix="sana-soak-") as base:
        server = ComfyServer(comfy_root, PACKAGE_ROOT, Path(base), _model_files())
        try:
            server.start()
            print(json.dumps(soak(server, args.prompts, not args.no_decode)), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
