"""Low-level file access for models/weights_file.py: a memory-mapped safetensors reader, the diagnosis of broken files
(empty, HTML page, Git-LFS pointer, truncated download) and the error wrapper that turns any read failure into a
message naming the file and what to do, and releasing the file pages of tensors that were cast to another dtype.

Safetensors format (huggingface/safetensors docs): 8-byte little-endian header length N, N bytes of JSON
({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then the data; offsets are relative
to the end of the header.
"""

import contextlib
import json
import math
import mmap
import pickle
import sys
import zipfile
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
HEADER_LENGTH_BYTES = 8
HEAD_BYTES = 512  # how much of a file is sniffed to say what it is
ZIP_TAIL_BYTES = 1 << 16  # a zip's end-of-central-directory record lies in its last 64 KiB
LFS_POINTER = b"version https://git-lfs"
MADV_DONTNEED = 4  # Linux <sys/mman.h>
PAGE = mmap.PAGESIZE


class WeightsFileError(ValueError):
    """A weights/config file that cannot be read; the message names the file, what was found and what to do."""


def _read_header(path: Path) -> tuple[dict, int]:
    """(header dict, byte offset of the data) of a safetensors file; ValueError when it is not one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(HEADER_LENGTH_BYTES), "little")
        if size < HEADER_LENGTH_BYTES or length > size - HEADER_LENGTH_BYTES:
            raise ValueError(f"header length {length} does not fit in a file of {size} bytes")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return header, HEADER_LENGTH_BYTES + length


def read_safetensors_metadata(path: Path) -> dict:
    """The `__metadata__` strings of a safetensors file."""
    with wrap_errors(path):
        return dict(_read_header(path)[0].get("__metadata__") or {})


def _expected_size(header: dict, data_start: int) -> int:
    ends = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
    return data_start + max(ends, default=0)


def read_safetensors(path: Path) -> dict:
    """All tensors of a safetensors file as zero-copy views of a private memory map (read lazily on first use)."""
    with wrap_errors(path):
        header, data_start = _read_header(path)
        size = path.stat().st_size
        if _expected_size(header, data_start) > size:
            raise ValueError(f"the header describes {_expected_size(header, data_start)} bytes, the file has {size}")
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > data_start else None
        out = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise WeightsFileError(f"{path}: tensor '{key}' has dtype {info['dtype']}, which this pack cannot "
                                       f"read (supported: {sorted(SAFETENSORS_DTYPES)})")
            shape, (begin, _) = info["shape"], info["data_offsets"]
            numel = math.prod(shape)
            if numel == 0:
                out[key] = torch.empty(shape, dtype=dtype)
                continue
            offset = data_start + begin
            if offset % dtype.itemsize:  # misaligned (writers normally align): copy the bytes out
                raw = torch.frombuffer(mapped, dtype=torch.uint8, count=numel * dtype.itemsize, offset=offset)
                out[key] = raw.clone().view(dtype).view(shape)
                continue
            out[key] = torch.frombuffer(mapped, dtype=dtype, count=numel, offset=offset).view(shape)
        return out


def _describe_safetensors(path: Path, head: bytes, size: int) -> str | None:
    length = int.from_bytes(head[:HEADER_LENGTH_BYTES], "little")
    if len(head) <= HEADER_LENGTH_BYTES or head[HEADER_LENGTH_BYTES:HEADER_LENGTH_BYTES + 1] != b"{":
        return None
    if length > size - HEADER_LENGTH_BYTES:
        return (f"a truncated safetensors download ({size} bytes; its header alone needs "
                f"{length + HEADER_LENGTH_BYTES})")
    try:
        header, data_start = _read_header(path)
        expected = _expected_size(header, data_start)
    except (ValueError, KeyError, TypeError, IndexError):
        return "a safetensors file with a damaged header"
    if expected > size:
        return f"a truncated safetensors download ({size} of {expected} bytes)"
    return "a complete safetensors file"


def _describe_zip(path: Path, size: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, size - ZIP_TAIL_BYTES))
        tail = f.read()
    if b"PK\x05\x06" not in tail:
        return (f"a truncated torch file ({size} bytes; the zip directory at its end is missing: the download was "
                f"cut off)")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return f"a damaged torch zip file ({size} bytes)"
    return f"a torch file with a damaged entry ({bad})" if bad else "a torch zip file"


def describe_bytes(path) -> str:
    """What the bytes of `path` look like: "an empty (zero-byte) file", "an HTML page ...", "a Git-LFS pointer ...",
    "a truncated safetensors download (N of M bytes)", "a truncated torch file ...", "not a weights file ..."."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        return f"an unreadable file ({e.strerror or e})"
    if size == 0:
        return "an empty (zero-byte) file: the download or copy did not complete"
    if head.startswith(LFS_POINTER):
        real = next((line.split()[1].decode() for line in head.splitlines() if line.startswith(b"size ")), "?")
        return (f"a Git-LFS pointer ({size} bytes of text standing for the real {real}-byte file: the repository was "
                f"cloned without Git LFS)")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text:
        return "an HTML page (a web page, e.g. a login or error page, was saved instead of the file)"
    described = _describe_safetensors(path, head, size)
    if described:
        return described
    if head.startswith(b"PK\x03\x04"):
        return _describe_zip(path, size)
    if head[:1] == b"\x80":
        return f"a legacy torch/pickle file ({size} bytes)"
    if text.startswith((b"{", b"[")):
        return "a JSON text file, not weights"
    return f"not a weights file ({size} bytes starting with {head[:16]!r})"


def _fix(path: Path) -> str:
    return (f"Re-download '{path.name}' into {path.parent} from the model's official repository (with Git LFS when "
            f"cloning, or the file's direct download link) and check that its size matches the listing")


@contextlib.contextmanager
def wrap_errors(path):
    """Turn any low-level read failure inside the block into a WeightsFileError naming `path`, what the bytes look
    like and what to do. Errors that are already WeightsFileError pass through."""
    path = Path(path)
    try:
        yield
    except WeightsFileError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, TypeError, IndexError, pickle.UnpicklingError,
            zipfile.BadZipFile, json.JSONDecodeError, MemoryError) as e:
        looks = describe_bytes(path)
        pickled = looks.startswith(("a torch zip file", "a legacy torch/pickle"))
        if pickled and isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            raise WeightsFileError(f"{path}: loading this file would need to run code stored in it; this node pack "
                                   f"never runs code from model files. Use a .safetensors copy of the model or the "
                                   f"official release instead") from None
        reason = str(e).splitlines()[0].split(". ")[0][:160] if str(e) else type(e).__name__
        raise WeightsFileError(f"{path}: cannot read this weights file ({type(e).__name__}: {reason}). The file "
                               f"looks like {looks}. {_fix(path)}") from e


def file_backed_ranges() -> list:
    """[(start, end)] of this process's memory maps of regular files (Linux /proc/self/maps; [] elsewhere)."""
    if sys.platform != "linux":
        return []
    ranges = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def release_pages(tensor: torch.Tensor, ranges=None) -> None:
    """Drop the resident pages of a tensor that is a view of a privately mapped, unmodified weights file (they are
    re-read from the file if used again), so that a cast copy does not sit beside its source. Memory that is not
    file-backed is never touched."""
    if sys.platform != "linux" or tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    ranges = file_backed_ranges() if ranges is None else ranges
    if not any(lo <= start and end <= hi for lo, hi in ranges):
        return
    first, last = -(-start // PAGE) * PAGE, end // PAGE * PAGE
    if last > first:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED)
