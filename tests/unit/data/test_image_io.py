"""read_image: bit depths, DICOM display pipeline, alpha, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fixtures import truncate, write_dicom, write_image, write_text_as_image
from PIL import Image

from anomalib_simsid.data.image_io import (
    ImageReadError,
    check_image,
    find_unreadable,
    is_image_file,
    read_image,
)


def _assert_unit(image: torch.Tensor, shape: tuple[int, int]) -> None:
    assert image.dtype == torch.float32
    assert image.shape == (3, *shape)
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


@pytest.mark.parametrize("suffix", [".png", ".jpeg"])
def test_8bit_grey(tmp_path: Path, suffix: str) -> None:
    path = write_image(tmp_path / f"a{suffix}", seed=1)
    image = read_image(path)
    _assert_unit(image, (16, 16))
    assert torch.equal(image[0], image[1])
    if suffix == ".png":
        expected = np.asarray(Image.open(path), dtype=np.float32) / 255
        assert np.allclose(image[0].numpy(), expected)


def test_16bit_png_keeps_full_range(tmp_path: Path) -> None:
    pixels = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(pixels).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    _assert_unit(image, (8, 8))
    assert np.allclose(image[0].numpy(), pixels / 65535.0, atol=1e-6)
    # a dark 16-bit image stays dark: scaling by bit depth, not by content
    Image.fromarray((pixels // 256).astype(np.uint16)).save(tmp_path / "dark.png")
    assert float(read_image(tmp_path / "dark.png").max()) == pytest.approx(255 / 65535)


def test_16bit_rgb_png_is_not_reduced_to_8bit(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1000, 30000, 65535
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    image = read_image(tmp_path / "rgb16.png")
    assert image[:, 0, 0].tolist() == pytest.approx([1000 / 65535, 30000 / 65535, 1.0], abs=1e-6)


def test_rgb_and_rgba(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert read_image(tmp_path / "rgb.png")[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    rgba = np.full((4, 4, 4), 200, dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    _assert_unit(image, (4, 4))
    assert image[:, 0, 0].tolist() == pytest.approx([200 / 255] * 3)
    assert float(image[:, 1:, 1:].max()) == 0.0  # transparent composited on black
    grey_alpha = Image.fromarray(np.full((4, 4), 255, np.uint8)).convert("LA")
    grey_alpha.putalpha(Image.fromarray(np.full((4, 4), 51, np.uint8)))
    grey_alpha.save(tmp_path / "la.png")
    assert float(read_image(tmp_path / "la.png").max()) == pytest.approx(0.2)


def test_dicom_rescale_window_and_monochrome1(tmp_path: Path) -> None:
    raw = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    # no window: the stored range 0..65535 through the rescale (2x - 100) spans -100..130970
    image = read_image(write_dicom(tmp_path / "a.dcm", raw, slope=2.0, intercept=-100.0))
    _assert_unit(image, (2, 2))
    assert image[0].flatten().tolist() == pytest.approx([v * 2 / 131070 for v in (0, 100, 200, 300)])
    # VOI window on the rescaled values: centre 200, width 401 maps [0, 400] to [0, 1], clipping outside
    image = read_image(
        write_dicom(tmp_path / "w.dcm", raw, slope=2.0, intercept=-100.0, window=(200.0, 401.0))
    )
    assert image[0].flatten().tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0], abs=0.01)
    # several windows: the first is the default view
    image = read_image(
        write_dicom(tmp_path / "w2.dcm", raw, slope=2.0, intercept=-100.0, window=([200, 0], [401, 5]))
    )
    assert image[0].flatten().tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0], abs=0.01)
    # MONOCHROME1: high values are dark
    image = read_image(write_dicom(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1"))
    assert image[0].flatten().tolist() == pytest.approx([1 - v / 65535 for v in (0, 100, 200, 300)])


def test_dicom_and_png_of_the_same_pixels_read_the_same(tmp_path: Path) -> None:
    """One convention: without a window, DICOM is scaled by its stored range as PNG by its bit depth.

    The pixels do not span their range (a min-max stretch would brighten the DICOM only).
    """
    pixels = np.random.default_rng(0).integers(1000, 40000, (8, 8)).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "g16.png")
    as_png = read_image(tmp_path / "g16.png")
    as_dicom = read_image(write_dicom(tmp_path / "g16.dcm", pixels))
    assert torch.equal(as_png, as_dicom)
    grey = (pixels // 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    assert torch.equal(read_image(tmp_path / "g8.png"), read_image(write_dicom(tmp_path / "g8.dcm", grey)))


def test_dicom_scaled_by_bits_stored(tmp_path: Path) -> None:
    """12 stored bits in 16 allocated: 4095 is white; signed data spans -2048..2047."""
    pixels = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    image = read_image(write_dicom(tmp_path / "b12.dcm", pixels, bits_stored=12))
    assert image[0].flatten().tolist() == pytest.approx((pixels.flatten() / 4095).tolist())
    signed = np.array([[-2048, 0], [1000, 2047]], dtype=np.int16)
    image = read_image(write_dicom(tmp_path / "s12.dcm", signed, bits_stored=12))
    assert image[0].flatten().tolist() == pytest.approx(((signed.flatten() + 2048) / 4095).tolist())


def test_dicom_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    """A VOI LUT sequence (instead of a window) maps stored values through its table."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1], [2, 3]], dtype=np.uint16))
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 8])  # 4 entries, first stored value 0, 8-bit output
    item.add_new("LUTData", "US", [0, 50, 200, 255])
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)
    image = read_image(path)
    assert image[0].flatten().tolist() == pytest.approx([0.0, 50 / 255, 200 / 255, 1.0])


def test_dicom_without_suffix_is_detected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "image", np.arange(4, dtype=np.uint8).reshape(2, 2))
    assert read_image(path).shape == (3, 2, 2)
    (tmp_path / "notes").write_text("not an image")
    assert is_image_file(path)
    assert not is_image_file(tmp_path / "notes")
    assert not is_image_file(write_text_as_image(tmp_path / "x.txt"))


def test_truncated_jpeg_names_file(tmp_path: Path) -> None:
    path = truncate(write_image(tmp_path / "broken.jpeg", size=64))
    with pytest.raises(ImageReadError, match=r"broken\.jpeg.*[Ee]xpected"):
        read_image(path)
    with pytest.raises(ImageReadError, match=r"broken\.jpeg"):
        check_image(path)


@pytest.mark.parametrize("name", ["text.png", "text.dcm"])
def test_not_an_image_names_file(tmp_path: Path, name: str) -> None:
    path = write_text_as_image(tmp_path / name)
    with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
        read_image(path)
    with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
        check_image(path)


def test_find_unreadable(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png")
    bad_png = truncate(write_image(tmp_path / "cut.png", size=64))
    text = write_text_as_image(tmp_path / "text.jpg")
    missing = tmp_path / "missing.png"
    bad = find_unreadable([good, bad_png, text, missing])
    assert list(bad) == [str(bad_png), str(text), str(missing)]
    assert "does not exist" in bad[str(missing)]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_rotated_jpeg_is_read_upright(tmp_path: Path) -> None:
    # A phone-style JPEG: the pixels are stored sideways and EXIF orientation 6 tells viewers to turn
    # them 90 degrees clockwise. Upright, the bright half is the top; stored, it is the left half.
    upright = np.zeros((48, 32), dtype=np.uint8)
    upright[:24] = 220
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 32 high, 48 wide
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=100, exif=_exif(6))
    image = read_image(path)
    _assert_unit(image, (48, 32))  # as a viewer shows it: 48 high, 32 wide
    assert float(image[0, :24].mean()) > 0.8 > 0.05 > float(image[0, 24:].mean())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_transpose(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    pixels = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3) * 2  # asymmetric, RGB
    path = tmp_path / "o.png"
    Image.fromarray(pixels).save(path, exif=_exif(orientation))
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img), dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.array_equal(read_image(path).numpy(), expected)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".dcm"])
def test_degenerate_image_is_refused_at_listing_naming_it(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"dot{suffix}"
    if suffix == ".dcm":
        write_dicom(path, np.zeros((1, 1), dtype=np.uint16))
    else:
        Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(path)
    write_image(tmp_path / "fine.png", seed=0)
    bad = find_unreadable([path, tmp_path / "fine.png"])
    assert list(bad) == [str(path)]
    assert "1x1 pixels" in bad[str(path)]
    assert "at least 2x2" in bad[str(path)]
    with pytest.raises(ImageReadError, match="1x1 pixels"):
        read_image(path)
