"""The Sana latent space (DC-AE f32c32) as a ComfyUI LatentFormat, with latent2rgb preview factors fitted per VAE.

How fitted factors reach the previewer: ComfyUI builds the latent2rgb previewer from the MODEL's latent format
(`latent_preview.get_previewer(device, model.model.latent_format)`) at the start of every sampling run, and the VAE is
not connected to the MODEL. So `SanaVAELoader` fits 32x3 factors + bias from the loaded VAE's own weights
(`models.dcae_preview`), keyed by a fingerprint of those weights, and writes them as one small JSON file per VAE under
ComfyUI's user directory (`user/sana_native/latent_rgb/<fingerprint>.json`; a later load of the same VAE reuses it and
only refreshes its time stamp). `SanaLatentFormat.latent_rgb_factors` is a read-only property that reads the most
recently written or refreshed file when the previewer is built; no module or class state is written. Without any
file (no Sana VAE ever loaded in this user directory) it returns None: no latent2rgb preview, never a guessed matrix.
Factors are stored for raw latents and divided by `scale_factor` here, since previews see model-space latents.
"""

import json
import os
from pathlib import Path

import comfy.latent_formats
import folder_paths

# diffusers `mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers` config.json `scaling_factor`; NVlabs `vae.scale_factor`.
SANA_LATENT_SCALE = 0.41407
SANA_LATENT_CHANNELS = 32
SANA_SPATIAL_FACTOR = 32  # DC-AE f32c32: one latent pixel per 32x32 image pixels (docs/ARCHITECTURE.md §10)
PREVIEW_SUBDIR = ("sana_native", "latent_rgb")
PREVIEW_FILE_VERSION = 1


def preview_cache_dir() -> Path:
    """Folder of the fitted preview factors inside ComfyUI's user directory."""
    return Path(folder_paths.get_user_directory()).joinpath(*PREVIEW_SUBDIR)


def save_preview_factors(fingerprint: str, factors: list, bias: list, method: str, r2: float | None) -> Path:
    """Write one VAE's raw-latent factors ([C][3]) and bias ([3]) atomically; returns the file."""
    folder = preview_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fingerprint}.json"
    record = {"version": PREVIEW_FILE_VERSION, "fingerprint": fingerprint, "method": method, "r2": r2,
              "space": "raw_latent", "factors": factors, "bias": bias}
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(record))
    os.replace(staging, path)
    return path


def refresh_preview_factors(fingerprint: str, method: str) -> bool:
    """Mark the stored factors of `fingerprint` as the most recent; False when none (or none of `method`) exist."""
    record = _read(preview_cache_dir() / f"{fingerprint}.json")
    if record is None or record.get("method") != method:
        return False
    os.utime(preview_cache_dir() / f"{fingerprint}.json")
    return True


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    valid = record.get("version") == PREVIEW_FILE_VERSION and len(record.get("bias", ())) == 3
    return record if valid else None


def latest_preview_factors() -> dict | None:
    """The most recently written or refreshed factors record, or None when there is none."""
    folder = preview_cache_dir()
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return next((record for record in map(_read, files) if record is not None), None)


class SanaLatentFormat(comfy.latent_formats.LatentFormat):
    """32-channel, 32x-downsampled DC-AE latents; LATENT dicts hold raw latents, the sampler scales by 0.41407."""

    latent_channels = SANA_LATENT_CHANNELS
    latent_dimensions = 2
    scale_factor = SANA_LATENT_SCALE

    @property
    def latent_rgb_factors(self) -> list | None:
        """[32][3] factors for model-space latents from the latest fitted VAE, or None (no preview)."""
        record = latest_preview_factors()
        if record is None or len(record["factors"]) != self.latent_channels:
            return None
        return [[value / self.scale_factor for value in row] for row in record["factors"]]

    @property
    def latent_rgb_factors_bias(self) -> list | None:
        """[3] bias of the latest fitted VAE, or None."""
        record = latest_preview_factors()
        return None if record is None else list(record["bias"])
