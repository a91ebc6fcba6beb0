"""DICOM and 16-bit PNG through `anomalib train` (with its test), `anomalib predict` and `simsid-score`.

The folder dataset mixes 16-bit PNGs, windowed and unwindowed DICOM and a DICOM without suffix. The
run must not crash on the overlays, `predict` must write `predictions.csv` and print where, and
`simsid-score` must find and score the same files with the same scores.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import REPO, TINY_MODEL
from tests.unit.data.fixtures import write_dicom

SIZE = TINY_MODEL["img_size"]


def _picture(seed: int, abnormal: bool) -> np.ndarray:
    """A 16-bit 'radiograph' in the lower part of its range: a smooth dome, a bright blob if abnormal."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    dome = 8000 + 20000 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) * 4)
    if abnormal:
        dome += 15000 * np.exp(-((x - 0.3) ** 2 + (y - 0.3) ** 2) * 80)
    return (dome + rng.normal(0, 300, dome.shape)).clip(0, 65535).astype(np.uint16)


def _write(path: Path, pixels: np.ndarray, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        Image.fromarray(pixels).save(path.with_suffix(".png"))
    elif kind == "dcm":
        write_dicom(path.with_suffix(".dcm"), pixels)
    elif kind == "windowed":
        write_dicom(path.with_suffix(".dcm"), pixels, window=(18000.0, 30000.0))
    else:  # a DICOM without suffix, found by its DICM magic
        write_dicom(path, pixels)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An XRayFolder dataset and a predict folder, both mixing 16-bit PNG and DICOM."""
    root = tmp_path_factory.mktemp("xrays")
    kinds = ("png", "dcm", "windowed", "bare")
    counts = {("train", "normal"): 16, ("val", "normal"): 4, ("val", "abnormal"): 4}
    counts |= {("test", "normal"): 4, ("test", "abnormal"): 4}
    seed = 0
    for (split, label), count in counts.items():
        for i in range(count):
            pixels = _picture(seed, label == "abnormal")
            _write(root / "data" / split / label / f"{label}{i}", pixels, kinds[i % 4])
            seed += 1
    predict = root / "predict"
    for i, kind in enumerate(kinds):
        _write(predict / f"image{i}", _picture(100 + i, abnormal=i % 2 == 1), kind)
    (predict / "notes.txt").write_text("not an image")
    return root / "data", predict


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


def _config(tmp_path: Path, data_root: Path) -> Path:
    config = yaml.safe_load((REPO / "configs" / "digitanatomy.yaml").read_text())
    config["default_root_dir"] = str(tmp_path / "results")
    config["trainer"].update({"max_epochs": 1, "enable_progress_bar": False})
    config["model"]["init_args"].update(TINY_MODEL)
    config["data"] = {
        "class_path": "anomalib_simsid.XRayFolder",
        "init_args": {"root": str(data_root), "train_batch_size": 8, "eval_batch_size": 8},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_train_test_predict_and_score_dicom_and_16bit(
    tmp_path: Path, folders: tuple[Path, Path], anomalib_bin: str
) -> None:
    data_root, predict_dir = folders
    config = _config(tmp_path, data_root)
    trained = _run([anomalib_bin, "train", "--model", "SimSID", "--config", str(config)], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    output = trained.stdout + trained.stderr
    assert "Throughput" not in output  # anomalib's test FPS, read as training speed
    assert "training images at" in output
    assert "test (inference only)" in output
    overlays = {p.name for p in (tmp_path / "results").rglob("images/**/*") if p.is_file()}
    assert {"abnormal1.dcm.png", "abnormal2.dcm.png", "abnormal3.png", "abnormal0.png"} <= overlays
    ckpt = next((tmp_path / "results" / "logs").rglob("last.ckpt"))

    model_args = [f"--model.{key}={value}" for key, value in TINY_MODEL.items()]
    data_args = ["--data", str(predict_dir), "--default_root_dir", str(tmp_path / "predict")]
    predicted = _run(
        [anomalib_bin, "predict", "--model", "SimSID", *model_args, "--ckpt_path", str(ckpt), *data_args],
        tmp_path,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    written = list((tmp_path / "predict").rglob("predictions.csv"))
    assert len(written) == 1
    assert str(written[0]) in predicted.stdout + predicted.stderr  # says where
    by_predict = {Path(r["image_path"]).name: r for r in _rows(written[0])}
    assert sorted(by_predict) == ["image0.png", "image1.dcm", "image2.dcm", "image3"]
    assert all(
        r["label"] in {"normal", "anomalous"} and 0 <= float(r["score"]) <= 1 for r in by_predict.values()
    )

    out = tmp_path / "scores"
    score_module = ["-m", "anomalib_simsid.deploy.score_folder"]
    scored = _run(
        [sys.executable, *score_module, str(ckpt), str(predict_dir), "-o", str(out), "--quiet"], tmp_path
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    by_score = {Path(r["image_path"]).name: r for r in _rows(out / "predictions.csv")}
    assert sorted(by_score) == sorted(by_predict)  # both find the suffix-less DICOM
    for name, row in by_predict.items():
        assert float(by_score[name]["score"]) == pytest.approx(float(row["score"]), abs=1e-4), name
        assert by_score[name]["label"] == row["label"], name
