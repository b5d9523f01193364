"""Fetch the real Sana model files into a ComfyUI models tree, or list what is missing and where it goes.

Usage:
    python scripts/fetch_models.py --comfyui ~/comfy/ComfyUI                      # files of every shipped workflow
    python scripts/fetch_models.py --comfyui ~/comfy/ComfyUI --workflow workflows/sana_1600m_1024px_t2i.json
    python scripts/fetch_models.py --comfyui ~/comfy/ComfyUI --list              # only report, never download

Files that already exist are skipped; downloads go through ``huggingface_hub`` (resumable, with progress bars) from the
ungated repositories below. Offline (or with ``--list``) the script prints each missing file, the repository it comes
from and the exact path it must have. Exit status: 0 when every needed file is present afterwards, 1 otherwise.
"""

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelSource:
    """Where one file (or folder) of a ComfyUI models tree comes from on Hugging Face."""

    repo_id: str
    repo_path: str  # a file inside the repo, or "" for a whole-repo folder snapshot
    note: str = ""


# Keys are paths relative to ComfyUI/models, exactly as the loader nodes list them (their widget values in workflows).
MODEL_SOURCES = {
    "diffusion_models/Sana_1600M_1024px_BF16.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_1024px_BF16", "checkpoints/Sana_1600M_1024px_BF16.pth"),
    "diffusion_models/Sana_600M_1024px_MultiLing.pth": ModelSource(
        "Efficient-Large-Model/Sana_600M_1024px", "checkpoints/Sana_600M_1024px_MultiLing.pth"),
    "diffusion_models/Sana_1600M_2Kpx_BF16.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_2Kpx_BF16", "checkpoints/Sana_1600M_2Kpx_BF16.pth"),
    "diffusion_models/Sana_1600M_4Kpx_BF16.pth": ModelSource(
        "Efficient-Large-Model/Sana_1600M_4Kpx_BF16", "checkpoints/Sana_1600M_4Kpx_BF16.pth"),
    "diffusion_models/SANA1.5_4.8B_1024px.pth": ModelSource(
        "Efficient-Large-Model/SANA1.5_4.8B_1024px", "checkpoints/SANA1.5_4.8B_1024px.pth"),
    "diffusion_models/SANA1.5_1.6B_1024px.pth": ModelSource(
        "Efficient-Large-Model/SANA1.5_1.6B_1024px", "checkpoints/SANA1.5_1.6B_1024px.pth"),
    "diffusion_models/Sana_Sprint_1.6B_1024px.pth": ModelSource(
        "Efficient-Large-Model/Sana_Sprint_1.6B_1024px", "checkpoints/Sana_Sprint_1.6B_1024px.pth"),
    "vae/dc-ae-f32c32-sana-1.1/model.safetensors": ModelSource(
        "mit-han-lab/dc-ae-f32c32-sana-1.1", "model.safetensors"),
    "text_encoders/gemma-2-2b-it": ModelSource("Efficient-Large-Model/gemma-2-2b-it", ""),
    "text_encoders/byt5_small_glyphxl_fp16.safetensors": ModelSource(
        "Comfy-Org/HunyuanImage_2.1_ComfyUI", "split_files/text_encoders/byt5_small_glyphxl_fp16.safetensors"),
    "text_encoders/sana_glyph_projector.safetensors": ModelSource(
        "", "", "no public release: a Gemma+ByT5 glyph projector must be trained; without it the glyph branch is off"),
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
    """A file exists, or a folder exists and holds a config.json (a finished snapshot)."""
    return target.is_file() or (target.is_dir() and (target / "config.json").is_file())


def download(key: str, source: ModelSource, target: Path) -> None:
    """Download one entry with huggingface_hub into ``target`` (resumable; progress bars from huggingface_hub)."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as e:
        raise RuntimeError("huggingface_hub is needed to download models: pip install huggingface_hub") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    if not source.repo_path:
        snapshot_download(source.repo_id, local_dir=target)
        return
    staging = target.parent / ".sana-fetch"
    fetched = Path(hf_hub_download(source.repo_id, source.repo_path, local_dir=staging))
    shutil.move(str(fetched), target)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (the one holding models/)")
    parser.add_argument("--workflow", type=Path, action="append", help="workflow file(s); default: every shipped one")
    parser.add_argument("--list", action="store_true", help="only report missing files, never download")
    args = parser.parse_args(argv)
    workflows = args.workflow or sorted((REPO_ROOT / "workflows").glob("*.json"))
    models_root = args.comfyui / "models"
    missing = [key for key in needed_files(workflows) if not is_present(models_root / key)]
    failed = []
    for key in missing:
        source, target = MODEL_SOURCES[key], models_root / key
        origin = f"hf://{source.repo_id}/{source.repo_path}".rstrip("/")
        if not source.repo_id:
            print(f"missing: {target}  ({source.note})")
            failed.append(key)
            continue
        if args.list:
            print(f"missing: {target}  <-  {origin}")
            continue
        print(f"fetching {origin} -> {target}")
        try:
            download(key, source, target)
        except Exception as e:  # network errors come in many types; report each file and go on
            print(f"could not download {origin} ({type(e).__name__}: {e}); put it at {target} by hand")
            failed.append(key)
    if not missing:
        print(f"all model files of {len(workflows)} workflow(s) are present under {models_root}")
    return 1 if (failed or (args.list and missing)) else 0


if __name__ == "__main__":
    sys.exit(main())
