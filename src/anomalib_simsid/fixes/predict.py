"""SimSID prediction from a path reads images through the package's reader (16-bit, DICOM, RGBA safe).

``anomalib predict --data <image or folder>`` and ``Engine.predict(data_path=...)`` build anomalib's
``PredictDataset``, which lists files by torchvision's raster suffixes (a folder of DICOM files gives
"Found 0 images") and reads them with ``PIL.Image.open(path).convert("RGB")`` (a 16-bit PNG is
clipped to white and scored as an ordinary image, without a warning). For SimSID's predict calls
only, the ``predict_reader`` fix (:mod:`.engine`) swaps the two names that ``anomalib.data.predict``
imported for this with the functions below, and puts anomalib's back afterwards.

anomalib's path validation also refuses every path outside printable ASCII ("Path contains
non-printable characters": ``Röntgen/``, ``胸片/``), which train, ``simsid-score`` and
``simsid-export`` accept. The ``unicode_paths`` fix lets SimSID's predict calls use
:func:`has_control_characters` in its place: a path is refused only for control characters (NUL,
newline, escape, ...), the case anomalib's check is there for.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from anomalib_simsid.data.base import named
from anomalib_simsid.data.image_io import (
    EXPECTED,
    IMAGE_SUFFIXES,
    ImageReadError,
    find_unreadable,
    image_files,
    read_image,
)


def find_images(path: str | Path, base_dir: str | Path | None = None) -> list[Path]:
    """List the image ``path``, or every image under the folder ``path`` (recursive, hidden skipped).

    Keeps anomalib's path validation (length, characters, ``base_dir`` confinement, existence), finds
    DICOM by suffix or by its ``DICM`` magic, and checks every file cheaply up front. Unreadable files
    of a folder are named in one warning and skipped, so one bad file does not cost the whole folder's
    predictions; an unreadable single file, or a folder with nothing readable, is one error.
    """
    from anomalib.data.utils.path import validate_path

    path = validate_path(path, base_dir)
    if path.is_file():
        images = [path]
    elif path.is_dir():
        images = image_files(path)
        if not images:
            msg = f"found no images in {path} (looked recursively for {sorted(IMAGE_SUFFIXES)} and DICOM)"
            raise ValueError(msg)
    else:
        msg = f"{path} is neither an image file nor a folder of images; expected {EXPECTED}"
        raise FileNotFoundError(msg)
    bad = find_unreadable(images)
    if not bad:
        return images
    msg = f"{len(bad)} of {len(images)} image(s) to predict cannot be read:{named(list(bad.values()))}"
    if len(bad) == len(images):
        raise ImageReadError(msg)
    warnings.warn(f"{msg}\nThey are skipped; the other {len(images) - len(bad)} are predicted.", stacklevel=2)
    return [image for image in images if str(image) not in bad]


def read_predict_image(path: str | Path, as_tensor: bool = False) -> torch.Tensor | np.ndarray:
    """Read like anomalib's ``read_image`` (``(3, H, W)`` tensor or ``(H, W, 3)`` array), 16-bit safe."""
    image = read_image(path)
    return image if as_tensor else image.permute(1, 2, 0).numpy()


def has_control_characters(path: str | Path) -> bool:
    """Whether ``path`` holds a control or otherwise unprintable character (any script is fine)."""
    return not str(path).isprintable() or not str(path)


@contextmanager
def unicode_paths() -> Iterator[None]:
    """Let ``anomalib.data.utils.path.validate_path`` accept printable non-ASCII paths, then restore."""
    import anomalib.data.utils.path as paths

    saved = paths.contains_non_printable_characters
    paths.contains_non_printable_characters = has_control_characters
    try:
        yield
    finally:
        paths.contains_non_printable_characters = saved


@contextmanager
def package_reader() -> Iterator[None]:
    """Point ``anomalib.data.predict`` at :func:`find_images` and :func:`read_predict_image`, then back."""
    import anomalib.data.predict as predict

    saved = predict.get_image_filenames, predict.read_image
    predict.get_image_filenames, predict.read_image = find_images, read_predict_image
    try:
        yield
    finally:
        predict.get_image_filenames, predict.read_image = saved
