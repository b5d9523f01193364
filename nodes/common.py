"""Shared constants and helpers of the node layer."""

from pathlib import Path

import folder_paths

CATEGORY = "Sana"


def resolve_model_file(folder: str, name: str) -> Path:
    """Full path of ``name`` inside the ComfyUI model folder ``folder``, or a ValueError naming the folders searched."""
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder))
        raise ValueError(
            f"Model file '{name}' was not found in the '{folder}' folder (searched: {searched}). "
            f"Put the file there or pick another entry from the list."
        )
    return Path(path)
