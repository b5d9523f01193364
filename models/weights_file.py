"""Reading one weights file without executing pickles: safetensors, or torch files with ``weights_only=True``.

Shared by the DiT, DC-AE and text-encoder loaders (DESIGN.md §6: no pickle execution, no download).
"""

from pathlib import Path

import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")  # read with torch.load(weights_only=True) only
STATE_DICT_WRAPPER = "state_dict"  # NVlabs .pth files hold {"state_dict": {...}} (reference/sana.md §1.1)


def _torch_load(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
        return torch.load(str(path), map_location="cpu", weights_only=True)


def read_weights_file(path: Path, kind: str) -> dict:
    """Tensors of one file -> dict, with a ``{"state_dict": ...}`` wrapper removed.

    kind: what the caller expects (e.g. "DiT", "DC-AE", "text-encoder"), used in the error for an unsupported suffix.
    """
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(f"Unsupported {kind} file type '{path.suffix}' for {path}; expected one of "
                         f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES} (or a Hugging Face / diffusers model folder).")
    data = _torch_load(path)
    if isinstance(data, dict) and isinstance(data.get(STATE_DICT_WRAPPER), dict):
        data = data[STATE_DICT_WRAPPER]
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(data).__name__}); expected a {kind} file.")
    return data
