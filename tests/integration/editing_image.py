"""The input picture of the editing tests and of the shipped editing workflows (LoadImage ``example.png``).

A smooth RGBA picture (colour ramps plus a soft disc) with a transparent block in the top-left corner: LoadImage
turns transparency into its MASK output (1 − alpha), so the block is the region to inpaint. The block is aligned to
the 32-px DC-AE cells so the latent-resolution mask is exactly 0 or 1.
"""

from pathlib import Path

import numpy as np

INPUT_IMAGE = "example.png"  # the name ComfyUI's own example workflows load
MASK_BOX = (0, 0, 64, 64)  # x0, y0, x1, y1 in pixels: latent cells (0..1, 0..1)


def input_pixels(width: int, height: int) -> np.ndarray:
    """[height, width, 4] uint8: RGB ramps and a disc, alpha 0 inside MASK_BOX."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = ((x - 0.6 * width) ** 2 + (y - 0.5 * height) ** 2) < (0.3 * height) ** 2
    rgb = np.stack([x / width, y / height, 0.5 + 0.4 * disc - 0.2 * (x / width)], axis=-1)
    alpha = np.ones((height, width))
    x0, y0, x1, y1 = MASK_BOX
    alpha[y0:y1, x0:x1] = 0
    return np.round(255 * np.clip(np.concatenate([rgb, alpha[..., None]], axis=-1), 0, 1)).astype(np.uint8)


def write_input_image(folder: Path, width: int, height: int) -> Path:
    """Write ``example.png`` into ComfyUI's input folder (overwrites)."""
    from PIL import Image

    path = Path(folder) / INPUT_IMAGE
    Image.fromarray(input_pixels(width, height), "RGBA").save(path)
    return path
