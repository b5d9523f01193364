"""The one reader of weights files and folders, shared by the DiT, DC-AE and text-encoder loaders. It never runs code
stored in a file and never downloads anything.

API (stable; every error is a `WeightsFileError`, a ValueError whose message names the file, what was found and what
to do):

- `read_weights(path, kind, variant=None, wrapper=None) -> dict[str, Tensor]`: a file, one shard of a sharded set
  (the whole set is read through its index), or a folder (one weight set chosen by `find_weight_set`). Safetensors are
  memory-mapped (tensors are zero-copy views of the file, so nothing is read before it is used); torch files
  (`.pth/.pt/.bin/.ckpt`) are read with `torch.load(weights_only=True)`, allowing only numpy's RNG-state types
  (`NUMPY_SAFE_GLOBALS`) through `torch.serialization.safe_globals`. `wrapper`: the key of a wrapping dict to return
  (e.g. "state_dict_ema"); None unwraps `{"state_dict": ...}`. `kind` ("DiT", "DC-AE", "text encoder") is used in
  messages.
- `read_weights_file(path, kind, wrapper=None) -> dict`: one file only (no index, no folder rules).
- `read_metadata(path) -> dict[str, str]`: the safetensors `__metadata__` (empty for other files).
- `read_torch_file(path) -> object`: the whole unpickled object of a torch file (trainer checkpoints: `state_dict`,
  `state_dict_ema`, optimizer, ...).
- `find_weight_set(folder, kind, variant=None) -> WeightSet` and `weight_sets(folder) -> list[WeightSet]`: the weight
  sets of a folder (one file, or shards + index; default precision or a variant such as `model.fp16-0000N-of-...`).
  The default precision is preferred; a variant is used only when it is all there is or when asked, and one set is
  read, never two copies.
- `component_folder(path, component) -> Path`: the `component` subfolder ("transformer", "vae", "text_encoder",
  "tokenizer") of a diffusers pipeline folder (`model_index.json`), else `path` itself.
- `read_json(path, what) -> dict`: a config/index file; invalid JSON names the file.
- `strip_prefix(sd, prefixes) -> dict`, `unwrap(obj, keys) -> dict`: prefix/wrapper helpers callers choose from
  (`COMMON_PREFIXES`: `model.diffusion_model.`, `module.`, `vae.`, ...).
- `check_finite(sd, source)`: refuses NaN/inf in floating tensors, naming the tensor.
- `convert_dtypes(sd, dtypes)`: casts tensors one at a time to the dtype the model wants, releasing each source's
  file pages, so a cast load never holds two copies.
- `describe_bytes(path) -> str`: what a broken file looks like (empty, HTML page, Git-LFS pointer, truncated, ...).

Messages: "<path>: <what happened> (<low-level error>). The file looks like <describe_bytes>. Re-download '<name>' into
<folder> ..."; a pickle that would run code: "<path>: loading this file would need to run code stored in it (it
references <globals>); this node pack never runs code from model files. Use a .safetensors copy ...".
"""

import contextlib
import json
import logging
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .weights_io import (WeightsFileError, describe_bytes, file_backed_ranges, read_safetensors,
                         read_safetensors_metadata, release_pages, wrap_errors)

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")  # read with torch.load(weights_only=True) only
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
STATE_DICT_WRAPPER = "state_dict"  # NVlabs .pth files hold {"state_dict": {...}} (NVlabs train_scripts/train.py)
COMMON_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "vae.", "first_stage_model.")
# Standard weight-file stems (diffusers `diffusion_pytorch_model`, transformers `model` / `pytorch_model`), preferred in
# this order over any other file of a folder.
STANDARD_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
# Precision variants diffusers/transformers write (`save_pretrained(variant=...)`); when only variants exist, the
# first of this order present is used.
VARIANTS = ("bf16", "fp16", "fp32", "fp8")
# numpy globals of an RNG state (np.random.get_state(): a uint32 array + scalars) as pickled by numpy 1.x and 2.x:
# the only non-torch types allowed through torch.serialization.safe_globals.
NUMPY_SAFE_GLOBALS = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                      "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
                      "numpy.dtypes.UInt32DType", "numpy.dtypes.Int64DType", "numpy.dtypes.Float64DType",
                      "numpy.dtypes.UInt64DType", "numpy.dtypes.Int32DType", "numpy.dtypes.Float32DType",
                      "numpy.dtypes.UInt8DType", "numpy.dtypes.BoolDType")
__all__ = ["WeightsFileError", "WeightSet", "check_finite", "component_folder", "convert_dtypes", "describe_bytes",
           "find_weight_set", "read_json", "read_metadata", "read_torch_file", "read_weights", "read_weights_file",
           "strip_prefix", "unwrap", "weight_sets"]
PIPELINE_INDEX = "model_index.json"


@dataclass(frozen=True)
class WeightSet:
    """One complete copy of a model's weights in a folder: `files` (one file or all shards) and the shard `index`."""

    stem: str
    variant: str | None
    files: tuple
    index: Path | None = None

    @property
    def name(self) -> str:
        return self.index.name if self.index else self.files[0].name


def _parse_name(name: str):
    """'model.fp16-00001-of-00002.safetensors' -> (stem, variant, total shards or None, ext), or None."""
    path = Path(name)
    if path.suffix not in WEIGHT_SUFFIXES:
        return None
    base, total = path.stem, None
    if len(base) > 15 and base[-15] == "-" and base[-9:-6] == "-of" and base[-14:-9].isdigit() and base[-5:].isdigit():
        base, total = base[:-15], int(base[-5:])
    stem, _, variant = base.rpartition(".")
    if not stem or variant not in VARIANTS:
        stem, variant = base, None
    return stem, variant, total, path.suffix


def _index_set(index: Path) -> WeightSet:
    """An index file (`X.safetensors.index.json`, `X.safetensors.index.fp16.json`) -> its WeightSet (shards checked)."""
    parts = index.name.split(".index")
    weights_name, variant = parts[0], parts[1].strip(".").removesuffix("json").strip(".") or None
    weight_map = read_json(index, "shard index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise WeightsFileError(f"{index}: this shard index has no 'weight_map'; re-download it from the model's "
                               f"repository into {index.parent}")
    files = tuple(index.parent / shard for shard in sorted(set(weight_map.values())))
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise WeightsFileError(f"{index.parent}: the shard index {index.name} lists {len(files)} shards but "
                               f"{missing[:4]} are missing; download the missing shard(s) into {index.parent}")
    return WeightSet(Path(weights_name).stem, variant, files, index)


def weight_sets(folder) -> list:
    """Every weight set in `folder` (not recursive): indexed shard sets, then single files not covered by an index."""
    folder = Path(folder)
    sets = [_index_set(p) for p in sorted(folder.glob("*.index*.json"))]
    covered = {f for s in sets for f in s.files}
    orphans = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p not in covered):
        parsed = _parse_name(path.name)
        if parsed is None:
            continue
        stem, variant, total, ext = parsed
        if total is None:
            sets.append(WeightSet(stem, variant, (path,)))
        else:
            orphans.setdefault((stem, variant, total, ext), []).append(path)
    for (stem, variant, total, _), files in orphans.items():  # shards without an index: usable only when complete
        if len(files) != total:
            raise WeightsFileError(f"{folder}: found {len(files)} of {total} shards of '{stem}' "
                                   f"({', '.join(f.name for f in files[:3])}) and no index; download every shard "
                                   f"(and its .index.json) into {folder}")
        sets.append(WeightSet(stem, variant, tuple(files)))
    return sets


def _rank(s: WeightSet, variant: str | None) -> tuple:
    wanted = 0 if s.variant == variant else 1 if s.variant is None else 2 + VARIANTS.index(s.variant)
    stem = STANDARD_STEMS.index(s.stem) if s.stem in STANDARD_STEMS else len(STANDARD_STEMS)
    return wanted, s.files[0].suffix not in SAFETENSORS_SUFFIXES, stem, s.name


def find_weight_set(folder, kind: str, variant: str | None = None) -> WeightSet:
    """The one weight set to read from `folder`: default precision first (or `variant` when given)."""
    folder = Path(folder)
    sets = weight_sets(folder)
    if not sets:
        raise WeightsFileError(f"{folder}: the folder holds no {kind} weights (*.safetensors, *.bin, *.pth or shards "
                               f"with an .index.json); put the model's weight files there or pick the file itself")
    if variant is not None and not any(s.variant == variant for s in sets):
        raise WeightsFileError(f"{folder}: no '{variant}' variant of the {kind} weights (found: "
                               f"{sorted({s.name for s in sets})}); pick one of those")
    chosen = min(sets, key=lambda s: _rank(s, variant))
    others = [s.name for s in sets if s is not chosen]
    if others:
        logger.info("%s: reading %s weights from %s; not reading the other copies %s", folder, kind, chosen.name,
                    others)
    return chosen


def _set_of_file(path: Path) -> WeightSet | None:
    """The shard set a single shard belongs to (through its index or complete siblings), or None for a lone file."""
    parsed = _parse_name(path.name)
    if parsed is None or parsed[2] is None:
        return None
    for s in weight_sets(path.parent):
        if path in s.files:
            return s
    return None


def read_json(path, what: str = "config") -> dict:
    """A JSON file -> dict; a missing or invalid file raises WeightsFileError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        looks = describe_bytes(path)
        looks = "damaged JSON text (cut off or edited)" if looks.startswith("a JSON text") else looks
        raise WeightsFileError(f"{path}: cannot read this {what} file ({type(e).__name__}: {e}); the file looks like "
                               f"{looks}. Re-download {path.name} from the model's repository into "
                               f"{path.parent}") from e
    if not isinstance(data, dict):
        raise WeightsFileError(f"{path}: this {what} file holds a JSON {type(data).__name__}, expected an object; "
                               f"re-download {path.name} into {path.parent}")
    return data


def component_folder(path, component: str) -> Path:
    """`path/component` when `path` is a diffusers pipeline folder (model_index.json, or the subfolder has a config),
    else `path` unchanged. component: "transformer", "vae", "text_encoder", "tokenizer", ..."""
    path = Path(path)
    sub = path / component
    if path.is_dir() and sub.is_dir() and ((path / PIPELINE_INDEX).exists() or (sub / "config.json").exists()):
        return sub
    return path


def _allowed_numpy_globals(names) -> list | None:
    """Every importable NUMPY_SAFE_GLOBALS object when `names` are all allowed RNG-state types, else None (the
    dtype classes are reached only through the first ones, so all are allowed together)."""
    if not names or any(n not in NUMPY_SAFE_GLOBALS for n in names):
        return None
    import importlib

    objects = []
    for name in NUMPY_SAFE_GLOBALS:
        module, _, attr = name.rpartition(".")
        with contextlib.suppress(ImportError, AttributeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy 2 deprecates the numpy.core alias
            objects.append(getattr(importlib.import_module(module), attr))
    return objects


def _load_torch(path: Path, safe_globals=()):
    with torch.serialization.safe_globals(list(safe_globals)):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) torch files cannot be memory-mapped
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)


def read_torch_file(path) -> object:
    """Unpickle a torch file with `weights_only=True`, allowing only numpy RNG-state types; code never runs."""
    path = Path(path)
    with wrap_errors(path):
        try:
            return _load_torch(path)
        except pickle.UnpicklingError as e:
            if not zipfile.is_zipfile(path):
                raise
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:  # noqa: BLE001 - an unreadable pickle: diagnosed by wrap_errors from the first error
                raise e from None
            allowed = _allowed_numpy_globals(unsafe)
            if allowed is None:
                raise WeightsFileError(
                    f"{path}: loading this file would need to run code stored in it (it references "
                    f"{', '.join(unsafe[:4]) or 'non-tensor objects'}); this node pack never runs code from model "
                    f"files. Use a .safetensors copy of the model or the official release (e.g. the NVlabs .pth from "
                    f"the Efficient-Large-Model Hugging Face repositories), or convert it to safetensors with a "
                    f"trusted tool.") from None
            return _load_torch(path, allowed)


def unwrap(obj, keys=(STATE_DICT_WRAPPER,)) -> dict:
    """Return `obj[key]` for the first key in `keys` holding a dict, else `obj` itself (when it is a dict)."""
    for key in keys:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def strip_prefix(sd: dict, prefixes=COMMON_PREFIXES) -> dict:
    """Drop the first prefix of `prefixes` that some key starts with, keeping only the keys that carry it."""
    for prefix in prefixes:
        if any(isinstance(k, str) and k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
    return sd


def _tensors_only(obj, path: Path, kind: str, wrapper: str | None) -> dict:
    if wrapper is not None:
        if not isinstance(obj, dict) or not isinstance(obj.get(wrapper), dict):
            found = sorted(k for k in obj if isinstance(k, str))[:8] if isinstance(obj, dict) else type(obj).__name__
            raise WeightsFileError(f"{path}: no '{wrapper}' entry in this file (found: {found}); pick another option "
                                   f"or file")
        obj = obj[wrapper]
    else:
        obj = unwrap(obj)
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict of {sorted(map(str, obj))[:6]}"
        raise WeightsFileError(f"{path}: this file holds {found}, not a state dict of tensors; expected a {kind} "
                               f"weights file")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_weights_file(path, kind: str, wrapper: str | None = None) -> dict:
    """Tensors of one file -> dict (a `{"state_dict": ...}` wrapper removed, or the `wrapper` entry chosen)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: file not found; expected a {kind} weights file")
    if path.suffix in SAFETENSORS_SUFFIXES:
        if wrapper is not None:
            raise WeightsFileError(f"{path}: a safetensors file holds one set of weights, not a '{wrapper}' entry "
                                   f"(that exists only in trainer checkpoints, .pth); turn that option off")
        return read_safetensors(path)
    if path.suffix not in TORCH_SUFFIXES:
        raise WeightsFileError(f"{path}: unsupported {kind} file type '{path.suffix}'; expected one of "
                               f"{WEIGHT_SUFFIXES} or a model folder")
    return _tensors_only(read_torch_file(path), path, kind, wrapper)


def read_weights(path, kind: str, variant: str | None = None, wrapper: str | None = None) -> dict:
    """Tensors of a file, of the whole shard set a shard belongs to, or of the chosen weight set of a folder."""
    path = Path(path)
    if path.is_dir():
        chosen = find_weight_set(path, kind, variant)
    elif not path.exists():
        raise WeightsFileError(f"{path}: file not found; expected a {kind} weights file or folder")
    else:
        chosen = _set_of_file(path)
    if chosen is None:
        return read_weights_file(path, kind, wrapper)
    sd = {}
    for file in chosen.files:
        sd.update(read_weights_file(file, kind, wrapper))
    return sd


def read_metadata(path) -> dict:
    """The `__metadata__` strings of a safetensors file ({} for any other file)."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES or not path.is_file():
        return {}
    return read_safetensors_metadata(path)


def check_finite(sd: dict, source) -> None:
    """Refuse a state dict with NaN or inf in a floating tensor, naming the first such tensor.

    One min/max reduction per tensor (NaN propagates through torch.aminmax), no boolean copy of the weights, and one
    device synchronisation for the whole state dict (on a GPU the pass costs milliseconds)."""
    keys, stats = [], []
    for key, tensor in sd.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        values = tensor if tensor.dtype.itemsize > 1 else tensor.float()  # fp8 has no reductions on CPU
        keys.append(key)
        stats.append(torch.stack(torch.aminmax(values)).float())
    if not stats:
        return
    finite = torch.isfinite(torch.stack([s.to(stats[0].device) for s in stats])).all(dim=1)
    if bool(finite.all()):
        return
    key = keys[int((~finite).nonzero()[0, 0])]
    tensor = sd[key]
    bad = int((~torch.isfinite(tensor.float())).sum())
    raise WeightsFileError(f"{source}: tensor '{key}' {tuple(tensor.shape)} holds {bad} NaN/inf value(s); the file "
                           f"is corrupt (or was saved after a diverged training step). Re-download it, or use an "
                           f"earlier checkpoint")


def convert_dtypes(sd: dict, dtypes) -> dict:
    """Cast each tensor to `dtypes[key]` (a dict) or `dtypes` (one dtype), one tensor at a time, releasing the file
    pages of each source tensor, so a cast never holds two copies of the weights. Non-floating tensors are kept."""
    out, ranges = {}, file_backed_ranges()
    for key in list(sd):
        tensor = sd.pop(key)
        dtype = dtypes.get(key) if isinstance(dtypes, dict) else dtypes
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            converted = tensor.to(dtype)
            release_pages(tensor, ranges)
            tensor = converted
        out[key] = tensor
    return out
