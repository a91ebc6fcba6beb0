"""Reading radiographs as anomalib expects them: float32 tensors (3, H, W) in [0, 1].

anomalib's own ``read_image`` does ``PIL.Image.open(path).convert("RGB")``, which clips 16-bit
PNGs to white and cannot read DICOM. This reader is the package's only way into pixels (training,
validation, test, predict, overlays and ``simsid-score``), with one intensity convention:

* **Windowed DICOM** (VOI LUT or window centre/width): the window, as a radiologist views it, maps to
  [0, 1] end to end, exactly as a PNG export of that view would hold it.
* **Everything else is scaled by its representable range, never by its content**: a PNG/JPEG by its
  bit depth (8-bit / 255, 16-bit / 65535), a DICOM without a window by the range of its stored bits
  (``BitsStored``, signed or not) through the modality rescale. The same pixels as a 16-bit PNG and as
  a 16-bit DICOM therefore give the same tensor and the same score, and a score never moves because
  of one bright pixel elsewhere in the image (as a min-max stretch would make it).

MONOCHROME1 is inverted, alpha composited on black, a JPEG's (or PNG's) EXIF orientation is applied
(the image is read upright, as every viewer shows it), and any failure names the file. Images
smaller than :data:`MIN_SIDE` pixels on a side are refused when a folder is listed (train, predict
and ``simsid-score`` alike): they carry no anatomy to score and break anomalib's overlays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

EXPECTED = "an 8- or 16-bit grayscale, RGB or RGBA PNG/JPEG, or a single-frame DICOM"
MIN_SIDE = 2  # pixels; a 1-pixel side is a degenerate image (no structure; anomalib's overlay fails)
EXIF_ORIENTATION = 0x0112
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
IMAGE_SUFFIXES = RASTER_SUFFIXES | DICOM_SUFFIXES
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageReadError(RuntimeError):
    """An image could not be read; the message names the file and what was expected."""


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` float32 tensor in [0, 1] (grey replicated to 3 channels)."""
    path = Path(path)
    try:
        array = _read_dicom(path) if is_dicom(path) else _read_raster(path)
    except ImageReadError:
        raise
    except Exception as err:
        msg = f"cannot read image {path}: {type(err).__name__}: {err}. Expected {EXPECTED}."
        raise ImageReadError(msg) from err
    _check_size(path, array.shape[-2:])
    array = np.clip(np.nan_to_num(array.astype(np.float32, copy=False)), 0.0, 1.0)
    if array.ndim == 2:
        array = np.repeat(array[None], 3, axis=0)
    return torch.from_numpy(np.ascontiguousarray(array))


def is_image_file(path: Path) -> bool:
    """Tell whether a package listing takes ``path``: a raster suffix, or DICOM (suffix or magic)."""
    return path.suffix.lower() in RASTER_SUFFIXES or is_dicom(path)


def image_files(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every image below ``root`` (recursive, sorted; DICOM also by magic), as every listing finds them.

    Hidden files and folders, and ``exclude``, are skipped.
    """
    excluded = exclude.resolve() if exclude is not None else None
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and (excluded is None or not p.resolve().is_relative_to(excluded))
        and is_image_file(p)
    )


def is_dicom(path: Path) -> bool:
    """DICOM by suffix, or by the ``DICM`` magic for files without a raster suffix."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in RASTER_SUFFIXES:
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def check_image(path: str | Path) -> None:
    """Cheaply check that ``path`` is a readable image, raising :class:`ImageReadError` if not.

    Decoding every image at setup would take minutes on full-size datasets, so raster files are
    only opened (header), verified where Pillow can (PNG chunk CRCs up to IEND) and, for JPEG,
    checked for the end-of-image marker, which catches truncated downloads. DICOM files, which none
    of the supported datasets ship, are fully decoded.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image {path} does not exist or is not a file; expected {EXPECTED}."
        raise ImageReadError(msg)
    if is_dicom(path):
        read_image(path)
        return
    try:
        with Image.open(path) as img:
            image_format, (width, height) = img.format, img.size
            img.verify()
    except Exception as err:
        msg = f"cannot read image {path}: {type(err).__name__}: {err}. Expected {EXPECTED}."
        raise ImageReadError(msg) from err
    _check_size(path, (height, width))
    if image_format == "JPEG" and not _has_jpeg_end_marker(path):
        msg = f"image {path} is a truncated JPEG (no end-of-image marker); expected {EXPECTED}."
        raise ImageReadError(msg)


def find_unreadable(paths: Iterable[str | Path]) -> dict[str, str]:
    """Map each unreadable path (by :func:`check_image`) to the reason, in input order."""
    bad: dict[str, str] = {}
    for path in paths:
        try:
            check_image(path)
        except ImageReadError as err:
            bad[str(path)] = str(err)
    return bad


def _check_size(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse a degenerate image (a side under :data:`MIN_SIDE` pixels), naming it and its size."""
    height, width = (int(side) for side in shape)
    if min(height, width) < MIN_SIDE:
        msg = (
            f"image {path} is {width}x{height} pixels, a degenerate image; expected at least "
            f"{MIN_SIDE}x{MIN_SIDE} pixels ({EXPECTED})."
        )
        raise ImageReadError(msg)


def _has_jpeg_end_marker(path: Path, tail: int = 4096) -> bool:
    """Look for the EOI marker near the end (some encoders pad after it)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - tail))
        return b"\xff\xd9" in handle.read()


# --------------------------------------------------------------------------------------- raster


def _read_raster(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if _is_16bit_colour_png(path):
            array = _read_16bit_colour_png(path)
        else:
            img.load()
            array = _pil_to_unit(img)
    return orient(array, orientation)


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (1-8) to an ``(H, W)`` or ``(C, H, W)`` array, as viewers show it.

    The same transposes as Pillow's ``ImageOps.exif_transpose``; any other value leaves the array.
    """
    rows, cols = array.ndim - 2, array.ndim - 1
    transposed = array.swapaxes(rows, cols)
    upright = {
        2: lambda: np.flip(array, cols),
        3: lambda: np.rot90(array, 2, axes=(rows, cols)),
        4: lambda: np.flip(array, rows),
        5: lambda: transposed,
        6: lambda: np.rot90(array, -1, axes=(rows, cols)),
        7: lambda: np.rot90(transposed, 2, axes=(rows, cols)),
        8: lambda: np.rot90(array, 1, axes=(rows, cols)),
    }.get(orientation)
    return np.ascontiguousarray(upright()) if upright is not None else array


def _is_16bit_colour_png(path: Path) -> bool:
    """Pillow reduces 16-bit RGB(A)/LA PNGs to 8 bits, so those go through OpenCV."""
    with path.open("rb") as handle:
        head = handle.read(26)
    return len(head) == 26 and head.startswith(_PNG_SIGNATURE) and head[24] == 16 and head[25] != 0


def _read_16bit_colour_png(path: Path) -> np.ndarray:
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        msg = f"cannot read image {path}: OpenCV could not decode this 16-bit PNG. Expected {EXPECTED}."
        raise ImageReadError(msg)
    array = array.astype(np.float32) / 65535.0
    if array.ndim == 2:
        return array
    if array.shape[2] == 2:  # grey + alpha
        return array[..., 0] * array[..., 1]
    rgb = array[..., 2::-1]  # BGR(A) -> RGB
    if array.shape[2] == 4:
        rgb = rgb * array[..., 3:4]
    return rgb.transpose(2, 0, 1)


def _pil_to_unit(img: Image.Image) -> np.ndarray:
    """Scale by the image's bit depth (never by its content), alpha composited on black."""
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if mode == "I":  # 32-bit int: 16-bit PNGs on some Pillow versions, or TIFF
        array = np.asarray(img, dtype=np.float64)
        if img.format == "PNG" or (array.size and array.min() >= 0 and array.max() <= 65535):
            return (array / 65535.0).astype(np.float32)
        return _min_max(array)
    if mode == "F":
        array = np.asarray(img, dtype=np.float64)
        if array.size and array.min() >= 0.0 and array.max() <= 1.0:
            return array.astype(np.float32)
        return _min_max(array)
    if mode in {"1", "L"}:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if mode in {"LA", "La"}:
        grey_alpha = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        return grey_alpha[..., 0] * grey_alpha[..., 1]
    if mode in {"RGBA", "RGBa", "PA"} or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return (rgba[..., :3] * rgba[..., 3:4]).transpose(2, 0, 1)
    return np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


def _min_max(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return np.zeros(array.shape, dtype=np.float32)
    return ((array - low) / (high - low)).astype(np.float32)


# ---------------------------------------------------------------------------------------- DICOM


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True)  # files without the 128-byte preamble
    if "PixelData" not in ds:
        msg = f"cannot read image {path}: the DICOM file has no pixel data. Expected {EXPECTED}."
        raise ImageReadError(msg)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        msg = f"cannot read image {path}: the DICOM file has {frames} frames. Expected {EXPECTED}."
        raise ImageReadError(msg)
    array = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in {"MONOCHROME1", "MONOCHROME2"}:
        values = np.asarray(apply_modality_lut(array, ds), dtype=np.float64)
        unit = _voi_window(values, ds)
        return 1.0 - unit if photometric == "MONOCHROME1" else unit
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, ds)
        bits = 16 if array.dtype.itemsize > 1 else 8
    else:  # RGB; pydicom already converts YBR_* to RGB in pixel_array
        bits = int(ds.get("BitsStored", 8 * array.dtype.itemsize))
    rgb = np.asarray(array, dtype=np.float64) / float(2**bits - 1)
    return rgb.transpose(2, 0, 1).astype(np.float32)


def _voi_window(values: np.ndarray, ds: object) -> np.ndarray:
    """Apply the DICOM VOI LUT or window (pydicom), scaled to [0, 1] by its output range.

    pydicom maps to the output range of the LUT (its bit depth) or of the window (which depends on
    the stored bits and the rescale), so that range is read back rather than recomputed here: a
    window sends -inf and +inf to its two ends. Without a VOI LUT or window, scale by the stored
    range (:func:`_stored_range`), as a PNG is scaled by its bit depth.
    """
    from pydicom.pixels import apply_voi_lut

    if ds.get("VOILUTSequence"):
        high = 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1.0
        return apply_voi_lut(np.rint(values).astype(np.int64), ds) / high
    if "WindowCenter" in ds and "WindowWidth" in ds:
        low, high = apply_voi_lut(np.array([-np.inf, np.inf]), ds)
        return (apply_voi_lut(values, ds) - low) / (high - low)
    low, high = _stored_range(ds)
    return (values - low) / (high - low)


def _stored_range(ds: object) -> tuple[float, float]:
    """Return the range ``BitsStored`` (signed or not) can hold, through the modality rescale."""
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    ends = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    low, high = float(ends.min()), float(ends.max())
    if high <= low:
        msg = f"the DICOM modality LUT maps the stored range {stored.tolist()} to one value {low}"
        raise ValueError(msg)
    return low, high
