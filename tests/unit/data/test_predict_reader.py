"""Prediction from a path (`Engine.predict(data_path=...)`, `anomalib predict --data`) reads like training.

anomalib's own ``PredictDataset`` clips 16-bit PNGs to white and finds no DICOM files; for SimSID's
predict calls only, the plugin's ``predict_reader`` fix routes it through the package's reader and
discovery (``fixes.predict.package_reader``); other models keep anomalib's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import PredictDataset
from anomalib.engine import Engine
from fixtures import write_dicom, write_text_as_image
from PIL import Image

from anomalib_simsid import SimSID
from anomalib_simsid.data.image_io import ImageReadError, read_image
from anomalib_simsid.fixes.predict import package_reader

# A SimSID small enough for a CPU forward pass in well under a second.
TINY_MODEL = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}


@pytest.fixture
def bit_depths(tmp_path: Path) -> Path:
    """The same radiograph-like picture as an 8-bit and a 16-bit PNG (values x 257: identical in [0, 1])."""
    rng = np.random.default_rng(0)
    pixels = (np.linspace(30, 220, 80)[None, :] + rng.normal(0, 8, (80, 80))).clip(0, 255).astype(np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(pixels, mode="L").save(folder / "same_8bit.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(folder / "same_16bit.png")
    return folder


def test_predict_dataset_is_anomalibs_own_outside_simsid_predict(bit_depths: Path) -> None:
    """Importing the plugin leaves ``PredictDataset`` alone: a 16-bit PNG reads as anomalib reads it."""
    import anomalib.data.predict as predict
    from anomalib.data.utils import read_image as anomalib_read_image

    assert predict.read_image is anomalib_read_image
    dataset = PredictDataset(bit_depths)
    images = {Path(item.image_path).name: item.image for item in (dataset[0], dataset[1])}
    assert float(images["same_16bit.png"].mean()) > 0.99  # anomalib 2.7 clips it to white


def test_predict_dataset_reads_16_bit_and_finds_dicom(bit_depths: Path, tmp_path: Path) -> None:
    with package_reader():
        _check_16_bit_and_dicom(bit_depths, tmp_path)


def _check_16_bit_and_dicom(bit_depths: Path, tmp_path: Path) -> None:
    dataset = PredictDataset(bit_depths)
    images = {Path(item.image_path).name: item.image for item in (dataset[0], dataset[1])}
    assert torch.allclose(images["same_8bit.png"], images["same_16bit.png"], atol=1e-6)
    assert float(images["same_16bit.png"].mean()) < 0.6  # not clipped to white

    dicoms = tmp_path / "dicom"
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    write_dicom(dicoms / "a.dcm", pixels)
    write_dicom(dicoms / "nested" / "IM0001", pixels)  # exports often have no suffix
    (dicoms / ".DS_Store").write_bytes(b"\0")
    dataset = PredictDataset(dicoms)
    assert sorted(Path(p).name for p in dataset.image_filenames) == ["IM0001", "a.dcm"]
    assert torch.equal(dataset[0].image, read_image(dataset.image_filenames[0]))


def test_bad_files_are_named_and_skipped_before_predicting(bit_depths: Path) -> None:
    write_text_as_image(bit_depths / "notes.png")
    (bit_depths / "empty.jpeg").write_bytes(b"")
    with (
        package_reader(),
        pytest.warns(
            UserWarning, match=r"(?s)2 of 4 image\(s\).*empty\.jpeg.*notes\.png.*other 2 are predicted"
        ),
    ):
        dataset = PredictDataset(bit_depths)
    assert sorted(Path(p).name for p in dataset.image_filenames) == ["same_16bit.png", "same_8bit.png"]


def test_a_folder_of_only_bad_files_is_one_error(tmp_path: Path) -> None:
    write_text_as_image(tmp_path / "notes.png")
    with package_reader(), pytest.raises(ImageReadError, match=r"(?s)1 of 1 image\(s\).*notes\.png"):
        PredictDataset(tmp_path)


def _scores(predictions: list) -> dict[str, float]:
    return {
        Path(path).name: float(score)
        for batch in predictions
        for path, score in zip(batch.image_path, batch.pred_score.flatten(), strict=True)
    }


def test_engine_predict_scores_8_and_16_bit_alike(bit_depths: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    engine = Engine(default_root_dir=tmp_path / "results", accelerator="cpu", devices=1, logger=False)
    scores = _scores(engine.predict(SimSID(**TINY_MODEL), data_path=bit_depths))
    assert scores.keys() == {"same_8bit.png", "same_16bit.png"}
    assert scores["same_8bit.png"] == pytest.approx(scores["same_16bit.png"], abs=1e-4)


# Runs the `anomalib` console script's entry point, recording what `Engine.predict` returned.
_CLI = """
import functools, json, sys
from pathlib import Path
from anomalib.cli.cli import main
from anomalib.engine import Engine

predict, target = Engine.predict, Path(sys.argv[1])

@functools.wraps(predict)  # the CLI builds its options from this signature
def recording(self, *args, **kwargs):
    out = predict(self, *args, **kwargs)
    scores = {
        Path(p).name: float(s) for b in out for p, s in zip(b.image_path, b.pred_score.flatten())
    }
    target.write_text(json.dumps(scores))
    return out

Engine.predict = recording
sys.argv = ["anomalib", *sys.argv[2:]]
main()
"""


@pytest.mark.slow
def test_cli_predict_scores_8_and_16_bit_alike(bit_depths: Path, tmp_path: Path) -> None:
    """`anomalib predict --model SimSID --ckpt_path X --data <folder>` in a fresh interpreter."""
    torch.manual_seed(0)
    model = SimSID(**TINY_MODEL)
    engine = Engine(default_root_dir=tmp_path / "fit", accelerator="cpu", devices=1, logger=False)
    expected = _scores(engine.predict(model, data_path=bit_depths))
    engine.trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    model_args = [arg for key, value in TINY_MODEL.items() for arg in (f"--model.{key}", str(value))]
    args = ["predict", "--model", "SimSID", *model_args, "--ckpt_path", str(tmp_path / "tiny.ckpt")]
    args += ["--data", str(bit_depths), "--default_root_dir", str(tmp_path / "cli")]
    out = tmp_path / "scores.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", _CLI, str(out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(out.read_text())
    assert scores["same_8bit.png"] == pytest.approx(scores["same_16bit.png"], abs=1e-4)
    assert scores == pytest.approx(expected, abs=1e-4)  # the checkpoint's model, read the same way
