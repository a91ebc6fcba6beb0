"""Decode and resize every image once: a uint8 cache, so that an epoch costs no image decoding.

A full-size chest X-ray takes milliseconds to decode and resize on a CPU core, far longer than the
paper model's step on a GPU, so with the default two workers the GPU waits for the loader. With
``image_cache`` on, setup reads every image once, reduces it to one grey channel (SimSID's input is
the channel mean), resizes it with SimSID's own resize (:func:`simsid_resize`) to the model's
``img_size`` and keeps it as uint8: 16 kB per image at 128 px (ZhangLab: 93 MB). The dataset then
serves the cached image; the model's pre-processor finds it at its size and does not resize again.

Two differences from reading the file every time, both small: the grey value is rounded to 1/255
after the resize (a 16-bit image loses its extra bits), and the training augmentation (a mild
affine) applies to the resized image rather than the full one.

``"file"`` also stores the cache beside the data (``<root>/.simsid-cache/``), keyed by size and by
the list of files with their sizes and modification times, and reuses it in later runs; where the
root is read-only it warns and keeps the cache in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from .image_io import read_image

IMAGE_CACHE = ("memory", "file")
CACHE_DIR = ".simsid-cache"


def cache_key(paths: Sequence[str], size: int) -> str:
    """Name of a cache file: the size and a hash of every file's path, size and modification time."""
    digest = hashlib.sha256(str(size).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return f"{size}px-{len(paths)}-{digest.hexdigest()[:16]}.npy"


def decode_resized(path: str, size: int) -> np.ndarray:
    """One image as SimSID sees it before scaling: grey, resized to ``size``, rounded to uint8."""
    from ..models.simsid.adapters.pre_processing import simsid_resize  # the models package imports data

    grey = read_image(path).mean(dim=0, keepdim=True)
    resized = simsid_resize((size, size))(grey)
    return (resized.clamp(0, 1) * 255).round().to(torch.uint8)[0].numpy()


def build_cache(paths: Sequence[str], size: int, mode: str, root: Path) -> torch.Tensor:
    """Build the ``(N, size, size)`` uint8 cache of ``paths``; ``mode="file"`` reads/writes it on disk."""
    if mode not in IMAGE_CACHE:
        msg = f"image_cache must be one of {IMAGE_CACHE} or None, got {mode!r}"
        raise ValueError(msg)
    file = root / CACHE_DIR / cache_key(paths, size) if mode == "file" else None
    if file is not None and file.is_file():
        return torch.from_numpy(np.load(file))
    cache = np.empty((len(paths), size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        cache[i] = decode_resized(path, size)
    if file is not None:
        try:
            file.parent.mkdir(exist_ok=True)
            tmp = file.with_suffix(f".{os.getpid()}.tmp")
            with tmp.open("wb") as handle:
                np.save(handle, cache)
            os.replace(tmp, file)
        except OSError as err:
            rank_zero_warn(
                f"image_cache='file': cannot write {file} ({err.strerror}); the cache stays in memory"
            )
    return torch.from_numpy(cache)
