"""SimSID's overlays read DICOM and 16-bit PNG through the package reader, and skip unreadable files."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch
from PIL import Image

from anomalib_simsid import SimSID
from tests.unit.data.fixtures import write_dicom, write_text_as_image

SIZE = 32


def _pixels() -> np.ndarray:
    """A 16-bit chest-like gradient that uses only part of its range (as 12-bit data in 16 bits does)."""
    ramp = np.linspace(2000, 50000, SIZE, dtype=np.float64)
    return np.add.outer(ramp, ramp / 4).clip(0, 65535).astype(np.uint16)


def _batch(paths: list[Path]) -> ImageBatch:
    n = len(paths)
    heat = torch.zeros(n, 1, SIZE, SIZE)
    heat[:, :, 8:16, 8:16] = 1.0
    return ImageBatch(
        image=torch.zeros(n, 3, SIZE, SIZE),
        image_path=[str(p) for p in paths],
        anomaly_map=heat,
        pred_score=torch.full((n,), 0.7),
        pred_label=torch.ones(n, dtype=torch.bool),
    )


def _image_panel(picture: Image.Image) -> np.ndarray:
    """The left panel (the image itself, without overlay) of anomalib's grid."""
    array = np.asarray(picture.convert("L"), dtype=np.float64)
    return array[:, : array.shape[1] // 3]


def test_16bit_overlay_matches_its_8bit_copy(tmp_path: Path) -> None:
    pixels = _pixels()
    Image.fromarray(pixels).save(tmp_path / "g16.png")
    Image.fromarray((pixels / 257).round().astype(np.uint8)).save(tmp_path / "g8.png")
    visualizer = SimSID.configure_visualizer()
    batch = _batch([tmp_path / "g16.png", tmp_path / "g8.png"])
    shown16, shown8 = visualizer.visualize(batch)
    panel16, panel8 = _image_panel(shown16), _image_panel(shown8)
    assert float((panel16 >= 250).mean()) < 0.05, "the 16-bit image is shown saturated"
    assert np.abs(panel16 - panel8).mean() < 2.0


def test_overlays_of_dicom_16bit_and_a_broken_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A DICOM gets an overlay (``x.dcm.png``); an unreadable file is named and skipped, not fatal."""
    pixels = _pixels()
    Image.fromarray(pixels).save(tmp_path / "g16.png")
    write_dicom(tmp_path / "scan.dcm", pixels, window=(20000.0, 40000.0))
    write_dicom(tmp_path / "scan_no_suffix", pixels)
    broken = write_text_as_image(tmp_path / "broken.png")
    out = tmp_path / "run"
    visualizer = SimSID.configure_visualizer()
    trainer = SimpleNamespace(default_root_dir=str(out), datamodule=None)
    batch = _batch([tmp_path / "g16.png", tmp_path / "scan.dcm", broken, tmp_path / "scan_no_suffix"])
    with caplog.at_level(logging.WARNING):
        visualizer.on_predict_batch_end(trainer, None, batch, batch, 0)
    written = {p.name: p for p in (out / "images").rglob("*") if p.is_file()}
    assert sorted(written) == ["g16.png", "scan.dcm.png", "scan_no_suffix.png"]
    assert "broken.png" in caplog.text
    # windowed (centre 20000, width 40000): the DICOM shows brighter than its unwindowed copy
    panels = {name: _image_panel(Image.open(path)) for name, path in written.items()}
    assert panels["scan.dcm.png"].mean() > panels["scan_no_suffix.png"].mean() + 20
    assert np.abs(panels["scan_no_suffix.png"] - panels["g16.png"]).mean() < 1.0
