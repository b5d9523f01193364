"""Text-encoder files: where the weights, config and tokenizer of a chosen path are, reading them, strict building.

A text-encoder path may be:
- a single weights file: ComfyUI's repackaged layout (``model.layers.N.*`` + a ``spiece_model`` uint8 tensor, e.g.
  Comfy-Org ``gemma_2_2b_it_elm_bf16.safetensors`` and its ``_fp8_scaled`` sibling), ``byt5_small_glyphxl_fp16
  .safetensors``, or a file/shard inside a Hugging Face folder (then that folder's config.json and tokenizer are used);
- a Hugging Face model folder (``config.json`` + weights: one file, shards + index, variant shards, ``pytorch_model
  .bin``) such as ``Efficient-Large-Model/gemma-2-2b-it`` or ``google/byt5-small``;
- a diffusers pipeline folder (``model_index.json``): its ``text_encoder/`` is used, with the sibling ``tokenizer/``.

Which weight set of a folder is read (default precision before ``.fp16``/``.bf16`` variants, standard names before a
merged duplicate such as ``gemma-2-2b-it.safetensors``, one copy only) is decided by the shared reader,
models/weights_file.py. ComfyUI's scaled-fp8 files (``scaled_fp8`` marker, fp8 weights with a per-layer
``scale_weight``; ComfyUI ``comfy/utils.py`` ``convert_old_quants`` and ``comfy/quant_ops.py``) are dequantised to
``weight * scale`` in the compute dtype. Models are built with ``from_pretrained(None, config=..., state_dict=...)``
after an explicit strict key and shape check, so a wrong or incomplete file fails naming the file and the keys.
"""

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from .weights_file import WeightsFileError, check_finite, component_folder, convert_dtypes, read_json, read_weights

logger = logging.getLogger(__name__)

KIND = "text encoder"
HF_CONFIG_NAME = "config.json"
TOKENIZER_FOLDER = "tokenizer"  # diffusers pipelines: the tokenizer sits beside text_encoder/
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TRANSFORMERS_DTYPE_KWARG_SINCE = (4, 56)  # transformers 4.56 renamed from_pretrained(torch_dtype=) to dtype=
NAMES_SHOWN_IN_ERRORS = 5
# ComfyUI scaled fp8 (comfy/utils.py convert_old_quants): a "scaled_fp8" marker tensor, fp8 "<layer>.weight" with a
# float32 "<layer>.scale_weight" (dequantised: weight * scale) and an optional "<layer>.scale_input" (activations only).
# Newer ComfyUI quantised files name them "<layer>.weight_scale" / "<layer>.input_scale" + "<layer>.comfy_quant".
SCALED_FP8_MARKER = "scaled_fp8"
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
IGNORED_QUANT_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def require_transformers():
    """The transformers module, or a RuntimeError naming the package to install."""
    try:
        import transformers
    except ImportError as e:
        raise RuntimeError(
            "The Sana text encoder needs the 'transformers' package (pip install 'transformers>=4.50.3')."
        ) from e
    return transformers


@dataclass(frozen=True)
class ModelFiles:
    """Where one text-encoder model lives: ``weights`` (file or folder for the shared reader), ``config`` (folder with
    config.json or None), ``tokenizer`` (folder with tokenizer.json / tokenizer.model or None), ``source`` (as chosen).
    """

    weights: Path
    config: Path | None
    tokenizer: Path | None
    source: Path


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def _tokenizer_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder.parent / TOKENIZER_FOLDER):
        if _has_tokenizer(candidate):
            return candidate
    return None


def locate(path, component: str = "text_encoder") -> ModelFiles:
    """The :class:`ModelFiles` of a chosen file or folder (``component``: the pipeline subfolder to use)."""
    path = Path(path)
    if not path.exists():
        raise WeightsFileError(f"{path}: not found; expected a {KIND} weights file or model folder.")
    if path.is_dir():
        folder = component_folder(path, component)
        config = folder if (folder / HF_CONFIG_NAME).is_file() else None
        return ModelFiles(folder, config, _tokenizer_folder(folder), path)
    if (path.parent / HF_CONFIG_NAME).is_file():
        return ModelFiles(path, path.parent, _tokenizer_folder(path.parent), path)
    return ModelFiles(path, None, None, path)


def read_config(folder: Path, what: str = "model configuration") -> dict:
    """config.json of ``folder`` as a dict; a damaged file raises an error naming it."""
    return read_json(Path(folder) / HF_CONFIG_NAME, what)


def check_tokenizer_files(folder: Path) -> None:
    """Parse the JSON files of a Hugging Face tokenizer folder first, so a damaged one is named in the error."""
    for name in TOKENIZER_JSON_FILES:
        if (Path(folder) / name).is_file():
            read_json(Path(folder) / name, "tokenizer")


def _layer_of(key: str, suffixes) -> str:
    return next(key[: -len(s)] for s in suffixes if key.endswith(s))


def dequantize_fp8(sd: dict, dtype: torch.dtype, source) -> dict:
    """fp8 weights (ComfyUI scaled fp8, or plain fp8) → ``weight * scale_weight`` in ``dtype``; other keys unchanged.

    Refuses a scale without its weight. The product is formed in float32 (as ComfyUI's dequantisation), then cast.
    """
    scales = [k for k in sd if k.endswith(WEIGHT_SCALE_SUFFIXES)]
    if not scales and not any(v.dtype in FP8_DTYPES for v in sd.values()):
        return sd
    out = {k: v for k, v in sd.items() if k != SCALED_FP8_MARKER and not k.endswith(IGNORED_QUANT_SUFFIXES)}
    for key in scales:
        weight_key = _layer_of(key, WEIGHT_SCALE_SUFFIXES) + ".weight"
        if weight_key not in out:
            raise WeightsFileError(f"{source}: scale tensor '{key}' has no weight '{weight_key}'; the scaled-fp8 file "
                                   "is incomplete. Re-download it or use the bf16 file.")
        scale, weight = out.pop(key).to(torch.float32), out[weight_key]
        if scale.numel() > 1:  # one scale per output row, stored as [out] or [out, 1]
            scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
        out[weight_key] = (weight.to(torch.float32) * scale).to(dtype)
    for key, value in out.items():
        if value.dtype in FP8_DTYPES:  # fp8 without a scale: the scale is 1
            out[key] = value.to(dtype)
    logger.info("%s: ComfyUI scaled-fp8 file, %d weights dequantised to %s.", source, len(scales), dtype)
    return out


def read_text_weights(files: ModelFiles, dtype: torch.dtype | None = None, keep_prefix: str | None = None) -> dict:
    """Every tensor of a text-encoder model on the CPU: fp8 dequantised, finite values checked, cast to ``dtype``.

    dtype: floating tensors are cast one at a time (the file stays memory-mapped), except keys under ``keep_prefix``;
    integer tensors such as an embedded tokenizer are left alone.
    """
    sd = read_weights(files.weights, KIND)
    sd = dequantize_fp8(sd, dtype or torch.float32, files.source)
    check_finite(sd, files.source)
    if dtype is None:
        return sd
    return convert_dtypes(sd, {k: None if keep_prefix and k.startswith(keep_prefix) else dtype for k in sd})


def split_prefixed(sd: dict, prefix: str) -> tuple[dict, dict]:
    """(keys under ``prefix`` with the prefix removed, every other key) of a state dict; the input is not changed."""
    inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    outside = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    return inside, outside


def _dtype_kwarg() -> str:
    version = tuple(int(p) for p in metadata.version("transformers").split(".")[:2] if p.isdigit())
    return "dtype" if version >= TRANSFORMERS_DTYPE_KWARG_SINCE else "torch_dtype"


def preview(names) -> str:
    """The first few sorted names, with a count of the rest."""
    names = sorted(names)
    more = f" (+{len(names) - NAMES_SHOWN_IN_ERRORS} more)" if len(names) > NAMES_SHOWN_IN_ERRORS else ""
    return ", ".join(names[:NAMES_SHOWN_IN_ERRORS]) + more


def instantiate_strict(model_cls, config, sd: dict, dtype: torch.dtype, device, source, detected: str, attn="eager"):
    """Build a transformers ``model_cls(config)`` holding exactly the tensors of ``sd`` (strict), in eval mode.

    model_cls: a transformers PreTrainedModel class (Gemma2Model, T5EncoderModel); sd: its state dict (all keys, tied
    ones included); source: the file named in errors; detected: what the file was taken for (named in errors); attn:
    the attention implementation ("eager" is exact for Gemma-2, whose attention-logit soft-capping SDPA cannot
    express). Returns the model on ``device`` in ``dtype``, no grads.
    """
    with torch.device("meta"):
        expected = {k: v.shape for k, v in model_cls(config).state_dict().items()}
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unexpected:
        raise WeightsFileError(
            f"{source}: detected {detected}, but the file does not match the {model_cls.__name__} built from it: "
            f"missing keys [{preview(missing)}], unexpected keys [{preview(unexpected)}]. The file is incomplete or "
            "is another model: re-download it, or pick the right file for this input."
        )
    wrong = [k for k, shape in expected.items() if tuple(sd[k].shape) != tuple(shape)]
    if wrong:
        k = wrong[0]
        raise WeightsFileError(
            f"{source}: tensor '{k}' has shape {tuple(sd[k].shape)}, expected {tuple(expected[k])} for {detected} "
            f"({len(wrong)} tensors differ). The weights and their config.json do not belong together: re-download "
            "the folder."
        )
    model = model_cls.from_pretrained(
        None, config=config, state_dict=sd, attn_implementation=attn, **{_dtype_kwarg(): dtype}
    )
    return model.to(device).eval().requires_grad_(False)
