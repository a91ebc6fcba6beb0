"""Reading radiographs as anomalib expects them: float32 tensors (3, H, W) in [0, 1].

anomalib's own ``read_image`` does ``PIL.Image.open(path).convert("RGB")``, which clips 16-bit
PNGs to white. This reader keeps the full dynamic range and names the file on any failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageReadError(RuntimeError):
    """An image could not be read; the message names the file and what was expected."""


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` float32 tensor in [0, 1] (grey replicated to 3 channels)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            array = _to_unit_float(img)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        msg = f"cannot read image {path}: {err}. Expected an 8- or 16-bit grayscale, RGB or RGBA PNG/JPEG."
        raise ImageReadError(msg) from err
    if array.ndim == 2:
        array = np.repeat(array[None], 3, axis=0)
    return torch.from_numpy(np.ascontiguousarray(array))


def _to_unit_float(img: Image.Image) -> np.ndarray:
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        array = np.asarray(img, dtype=np.float32)
        return array / (65535.0 if array.max() > 255 or img.mode.startswith("I;16") else 255.0)
    if img.mode in {"L", "P", "1"}:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
