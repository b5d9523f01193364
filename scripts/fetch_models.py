"""Fetch the real Sana model files into a ComfyUI models tree, or report what is missing, how large and where it goes.

Usage (from the ComfyUI folder, the one holding models/):
    python custom_nodes/sana-native/scripts/fetch_models.py            # the main job: Sana 1.6B 1024 px (~12.9 GB)
    python custom_nodes/sana-native/scripts/fetch_models.py --list     # only report, never download
    python custom_nodes/sana-native/scripts/fetch_models.py --workflow custom_nodes/sana-native/workflows/X.json
    python custom_nodes/sana-native/scripts/fetch_models.py --all      # every shipped workflow (~45 GB)

Files that already exist are skipped. Downloads go through ``huggingface_hub`` (resumable, with progress bars) from
ungated repositories into a staging folder outside models/ (``SANA_FETCH_CACHE``, default
``~/.cache/sana-native/downloads``) and are moved into place when complete, so models/ never holds partial files or
``.cache`` folders. Without network access (``HF_HUB_OFFLINE=1``, or the hub does not answer a 3 s connection probe)
the script downloads nothing and prints each missing file, its source and the exact path it must have.

Exit status: 0 when every required file is present afterwards; optional files without a public release (the glyph
projector) are reported but never make the run fail. 1 otherwise, 2 for a wrong command line.
"""

import argparse
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[1]
MAIN_WORKFLOW = REPO_ROOT / "workflows" / "sana_1600m_1024px_t2i.json"
DEFAULT_STAGING = Path.home() / ".cache" / "sana-native" / "downloads"
HUB_URL = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # one TCP connection attempt decides "offline" instead of huggingface_hub's retries (~47 s)
HUB_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": "10", "HF_HUB_DOWNLOAD_TIMEOUT": "30"}  # seconds, unless the user set them
GB = 1e9


@dataclass(frozen=True)
class ModelSource:
    """Where one file (or folder) of a ComfyUI models tree comes from on Hugging Face, and its size on disk."""

    repo_id: str  # "" when there is no public release
    repo_path: str  # a file inside the repo, or "" for a folder snapshot
    size_gb: float  # size on disk in GB (released .pth files are fp32 whatever their name)
    note: str = ""
    allow_patterns: tuple[str, ...] = ()  # folder snapshots: which repo files to take
    required: bool = True


GEMMA_FOLDER_FILES = ("config.json", "generation_config.json", "model-*.safetensors", "model.safetensors.index.json",
                      "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json")

# Keys are paths relative to ComfyUI/models, exactly as the loader nodes list them (their widget values in workflows).
MODEL_SOURCES = {
    "diffusion_models/Sana_1600M_1024px_BF16.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_1024px_BF16", "checkpoints/Sana_1600M_1024px_BF16.pth", 6.43),
    "diffusion_models/Sana_600M_1024px_MultiLing.pth": ModelSource(
        "Efficient-Large-Model/Sana_600M_1024px", "checkpoints/Sana_600M_1024px_MultiLing.pth", 2.37),
    "diffusion_models/Sana_1600M_2Kpx_BF16.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_2Kpx_BF16", "checkpoints/Sana_1600M_2Kpx_BF16.pth", 6.46),
    "diffusion_models/Sana_1600M_4Kpx_BF16.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_4Kpx_BF16", "checkpoints/Sana_1600M_4Kpx_BF16.pth", 6.57),
    "diffusion_models/SANA1.5_4.8B_1024px.pth": ModelSource(
        "Efficient-Large-Model/SANA1.5_4.8B_1024px", "checkpoints/SANA1.5_4.8B_1024px.pth", 18.9,
        "size estimated from the parameter count in fp32"),
    "diffusion_models/SANA1.5_1.6B_1024px.pth": ModelSource(
        "Efficient-Large-Model/SANA1.5_1.6B_1024px", "checkpoints/SANA1.5_1.6B_1024px.pth", 6.43,
        "size estimated from the parameter count in fp32"),
    "diffusion_models/Sana_Sprint_1.6B_1024px.pth": ModelSource(
        "Efficient-Large-Model/Sana_Sprint_1.6B_1024px", "checkpoints/Sana_Sprint_1.6B_1024px.pth", 6.45,
        "size estimated from the parameter count in fp32"),
    "controlnet/Sana_600M_1024px_ControlNet_HED.pth": ModelSource(
        "Efficient-Large-Model/Sana_600M_1024px_ControlNet_HED", "checkpoints/Sana_600M_1024px_ControlNet_HED.pth",
        2.9, "path in the repo and size (base model + 7 copied blocks, fp32) not checked offline"),
    "controlnet/Sana_1600M_1024px_BF16_ControlNet_HED.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_1024px_BF16_ControlNet_HED",
        "checkpoints/Sana_1600M_1024px_BF16_ControlNet_HED.pth", 8.7,
        "path in the repo and size (base model + 7 copied blocks, fp32) not checked offline"),
    "vae/dc-ae-f32c32-sana-1.1/model.safetensors": ModelSource(
        "mit-han-lab/dc-ae-f32c32-sana-1.1", "model.safetensors", 1.25),
    "text_encoders/gemma-2-2b-it": ModelSource(
        "Efficient-Large-Model/gemma-2-2b-it", "", 5.23, allow_patterns=GEMMA_FOLDER_FILES),
    "text_encoders/gemma_2_2b_it_elm_bf16.safetensors": ModelSource(
        "Comfy-Org/PixelDiT", "text_encoders/gemma_2_2b_it_elm_bf16.safetensors", 5.23,
        "Sana's Gemma-2-2b-it repackaged by Comfy-Org (tokenizer embedded); path in the repo not checked offline"),
    "text_encoders/byt5_small_glyphxl_fp16.safetensors": ModelSource(
        "Comfy-Org/HunyuanImage_2.1_ComfyUI", "split_files/text_encoders/byt5_small_glyphxl_fp16.safetensors", 0.44,
        "size estimated from the tensor shapes in fp16"),
    "text_encoders/sana_glyph_projector.safetensors": ModelSource(
        "", "", 0.0, "optional, no public release yet: without it the glyph branch stays off", required=False),
}


def needed_files(workflows: list[Path]) -> list[str]:
    """Model paths (keys of MODEL_SOURCES) named by any widget value of the given UI- or API-format workflows."""
    by_name = {key.split("/", 1)[1]: key for key in MODEL_SOURCES}
    needed: list[str] = []
    for workflow in workflows:
        data = json.loads(workflow.read_text())
        is_ui = "nodes" in data
        for node in data["nodes"] if is_ui else data.values():
            values = node.get("widgets_values") or [] if is_ui else list(node.get("inputs", {}).values())
            for value in values if isinstance(values, list) else []:
                key = by_name.get(value.rstrip("/")) if isinstance(value, str) else None
                if key and key not in needed:
                    needed.append(key)
    return needed


def is_present(target: Path) -> bool:
    """A file exists, or a folder exists with a config.json and at least one weights file (a finished snapshot)."""
    if target.is_file():
        return True
    return target.is_dir() and (target / "config.json").is_file() and any(target.glob("*.safetensors"))


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether downloads can be tried: not HF_HUB_OFFLINE, and the hub host accepts one TCP connection in time."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT", HUB_URL))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        return False, f"{host}:{port} did not answer within {timeout_s:.0f} s ({type(e).__name__})"
    return True, ""


def staging_root() -> Path:
    """Folder outside models/ where downloads are assembled (resumable) before they are moved into place."""
    return Path(os.environ.get("SANA_FETCH_CACHE", DEFAULT_STAGING))


def download(source: ModelSource, target: Path) -> None:
    """Download one entry into a staging folder, then move the finished file or folder to ``target``."""
    for name, value in HUB_TIMEOUTS.items():
        os.environ.setdefault(name, value)
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as e:
        raise RuntimeError("huggingface_hub is needed to download models: pip install huggingface_hub") from e
    staging = staging_root() / source.repo_id.replace("/", "--")
    if source.repo_path:
        fetched = Path(hf_hub_download(source.repo_id, source.repo_path, local_dir=staging))
    else:
        snapshot_download(source.repo_id, local_dir=staging, allow_patterns=list(source.allow_patterns) or None)
        fetched = staging
    shutil.rmtree(fetched / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata, never moved
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(fetched), target)
    shutil.rmtree(staging, ignore_errors=True)


def _size(gb: float) -> str:
    return f"{gb:6.2f} GB" if gb else "     n/a"


def report_line(status: str, key: str, source: ModelSource, target: Path) -> str:
    """One aligned line: status, size, target path and where the file comes from (or why it has none)."""
    origin = f"hf://{source.repo_id}/{source.repo_path}".rstrip("/") if source.repo_id else source.note
    return f"{status:<10}{_size(source.size_gb)}  {target}  <-  {origin}"


def fetch_missing(missing: list[str], models_root: Path, online: bool) -> list[str]:
    """Download what can be downloaded; returns the keys still missing afterwards."""
    still_missing = []
    for key in missing:
        source, target = MODEL_SOURCES[key], models_root / key
        if not (online and source.repo_id):
            still_missing.append(key)
            continue
        print(f"fetching  {_size(source.size_gb)}  hf://{source.repo_id}/{source.repo_path}".rstrip("/"))
        try:
            download(source, target)
        except Exception as e:  # network errors come in many types; report each file and go on
            print(f"could not download ({type(e).__name__}: {e}); put it at {target} by hand")
            still_missing.append(key)
    return still_missing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, default=Path("."),
                        help="ComfyUI folder, the one holding models/ (default: the current folder)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--workflow", type=Path, action="append",
                       help="workflow file(s) whose model files to fetch (default: the main job, "
                            f"{MAIN_WORKFLOW.relative_to(REPO_ROOT)})")
    which.add_argument("--all", action="store_true", help="the files of every shipped workflow")
    parser.add_argument("--list", action="store_true", help="only report what is present and missing, never download")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    models_root = args.comfyui / "models"
    if not models_root.is_dir():
        print(f"error: {models_root.resolve()} does not exist; run from the ComfyUI folder or pass --comfyui PATH")
        return 2
    workflows = sorted((REPO_ROOT / "workflows").glob("*.json")) if args.all else args.workflow or [MAIN_WORKFLOW]
    needed = needed_files(workflows)
    missing = [key for key in needed if not is_present(models_root / key)]
    for key in needed:
        status = "missing" if key in missing else "present"
        status = "optional" if key in missing and not MODEL_SOURCES[key].required else status
        print(report_line(status, key, MODEL_SOURCES[key], models_root / key))
    to_fetch = [key for key in missing if MODEL_SOURCES[key].repo_id]
    print(f"{len(needed)} file(s) for {len(workflows)} workflow(s); "
          f"{sum(MODEL_SOURCES[k].size_gb for k in to_fetch):.2f} GB to download")
    online, reason = (False, "--list") if args.list else hub_reachable() if to_fetch else (True, "")
    if to_fetch and not online and not args.list:
        print(f"offline ({reason}): nothing downloaded; put each missing file at the path shown above")
    still_missing = fetch_missing(missing, models_root, online)
    failed = [key for key in still_missing if MODEL_SOURCES[key].required]
    if failed:
        print(f"{len(failed)} required file(s) missing under {models_root}")
        return 1
    print(f"all required model files are present under {models_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
