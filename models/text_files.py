"""File handling shared by the text-encoder loaders: state dicts, Hugging Face folders, strict transformers loading.

A text-encoder path may be a single weights file (safetensors, or ``.pth``/``.bin`` read with
``torch.load(weights_only=True)``), a Hugging Face model folder (``config.json`` plus ``model.safetensors`` or
``model-0000N-of-0000M.safetensors`` shards), or a weights file inside such a folder (then the whole folder is used).
The transformers models (Gemma-2, T5 encoder) are built with ``from_pretrained(None, config=..., state_dict=...)``
after an explicit strict key check, so a wrong or incomplete file fails with a message instead of leaving randomly
initialised weights behind.
"""

import json
from importlib import metadata
from pathlib import Path

import torch

from .weights_file import SAFETENSORS_SUFFIXES, read_weights_file
HF_CONFIG_NAME = "config.json"
TRANSFORMERS_DTYPE_KWARG_SINCE = (4, 56)  # transformers 4.56 renamed from_pretrained(torch_dtype=) to dtype=
NAMES_SHOWN_IN_ERRORS = 5


def require_transformers():
    """The transformers module, or a RuntimeError naming the package to install."""
    try:
        import transformers
    except ImportError as e:
        raise RuntimeError(
            "The Sana text encoder needs the 'transformers' package (pip install 'transformers>=4.50.3')."
        ) from e
    return transformers


def hf_folder_of(path: Path) -> Path | None:
    """The Hugging Face model folder ``path`` is or lies in (a folder with config.json), else None."""
    path = Path(path)
    if path.is_dir():
        return path if (path / HF_CONFIG_NAME).is_file() else None
    return path.parent if (path.parent / HF_CONFIG_NAME).is_file() else None


def read_hf_config(folder: Path) -> dict:
    """The parsed config.json of a Hugging Face model folder."""
    try:
        return json.loads((Path(folder) / HF_CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Could not read {Path(folder) / HF_CONFIG_NAME}: {e}. Is the folder complete?") from e


def _folder_weight_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in SAFETENSORS_SUFFIXES and p.name.startswith("model"))
    if not files:
        files = sorted(p for p in folder.iterdir() if p.suffix in SAFETENSORS_SUFFIXES)
    if not files:
        raise ValueError(
            f"No .safetensors weights found in the model folder {folder}. Expected model.safetensors or "
            "model-0000N-of-0000M.safetensors (pickled .bin weights are not read from folders; convert them first)."
        )
    return files


def _cast(sd: dict, dtype, keep_prefix: str | None) -> dict:
    if dtype is None:
        return sd
    keep = (lambda k: k.startswith(keep_prefix)) if keep_prefix else (lambda k: False)
    return {k: v.to(dtype) if v.is_floating_point() and not keep(k) else v for k, v in sd.items()}


def read_state_dict(path: Path, dtype: torch.dtype | None = None, keep_prefix: str | None = None) -> dict:
    """Every tensor of a weights file, or of all weight shards of a Hugging Face folder, on the CPU.

    dtype: cast floating-point tensors file by file (keeps the peak memory of a sharded fp32 folder near one shard),
    except keys under ``keep_prefix``; integer tensors such as embedded tokenizers are left alone.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Text-encoder path {path} does not exist.")
    if path.is_dir():
        sd: dict[str, torch.Tensor] = {}
        for file in _folder_weight_files(path):
            sd.update(_cast(read_weights_file(file, "text-encoder"), dtype, keep_prefix))
        return sd
    return _cast(read_weights_file(path, "text-encoder"), dtype, keep_prefix)


def split_prefixed(sd: dict, prefix: str) -> tuple[dict, dict]:
    """(keys under ``prefix`` with the prefix removed, every other key) of a state dict; the input is not changed."""
    inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    outside = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    return inside, outside


def _dtype_kwarg() -> str:
    version = tuple(int(p) for p in metadata.version("transformers").split(".")[:2] if p.isdigit())
    return "dtype" if version >= TRANSFORMERS_DTYPE_KWARG_SINCE else "torch_dtype"


def _preview(names) -> str:
    names = sorted(names)
    more = f" (+{len(names) - NAMES_SHOWN_IN_ERRORS} more)" if len(names) > NAMES_SHOWN_IN_ERRORS else ""
    return ", ".join(names[:NAMES_SHOWN_IN_ERRORS]) + more


def instantiate_strict(model_cls, config, sd: dict, dtype: torch.dtype, device, source: str, attn="eager"):
    """Build a transformers ``model_cls(config)`` holding exactly the tensors of ``sd`` (strict), in eval mode.

    model_cls: a transformers PreTrainedModel class (Gemma2Model, T5EncoderModel); sd: its state dict (all keys, tied
    ones included); source: the file named in errors; attn: the attention implementation ("eager" is exact for Gemma-2,
    whose attention-logit soft-capping SDPA cannot express). Returns the model on ``device`` in ``dtype``, no grads.
    """
    with torch.device("meta"):
        expected = {k: v.shape for k, v in model_cls(config).state_dict().items()}
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the {model_cls.__name__} built from its configuration: missing keys "
            f"[{_preview(missing)}], unexpected keys [{_preview(unexpected)}]. Is this the right file for this input?"
        )
    wrong = [k for k, shape in expected.items() if tuple(sd[k].shape) != tuple(shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{source}: tensor '{k}' has shape {tuple(sd[k].shape)}, expected {tuple(expected[k])} from the model "
            f"configuration ({len(wrong)} tensors differ). The file and its config.json do not belong together."
        )
    model = model_cls.from_pretrained(
        None, config=config, state_dict=sd, attn_implementation=attn, **{_dtype_kwarg(): dtype}
    )
    return model.to(device).eval().requires_grad_(False)
