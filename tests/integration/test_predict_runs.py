"""`anomalib predict` never loses predictions: every run writes its own folder, concurrent runs too."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from anomalib_simsid.models.simsid.adapters.predictions import COLUMNS
from tests.helpers import TINY_DATA, TINY_MODEL


@pytest.fixture(scope="module")
def checkpoint(digit_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from anomalib.engine import Engine

    from anomalib_simsid import DigitAnatomy, SimSID

    work = tmp_path_factory.mktemp("predict_runs")
    model = SimSID(**TINY_MODEL, visualizer=False)
    engine = Engine(default_root_dir=work, devices=1, max_epochs=1, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8))
    return Path(engine.trainer.checkpoint_callback.best_model_path)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_concurrent_predicts_into_one_root_both_keep_their_rows(
    tmp_path: Path, checkpoint: Path, digit_root: Path, anomalib_bin: str
) -> None:
    images = sorted((digit_root / "test").rglob("*.png"))
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, part in zip(folders, (images[:3], images[3:7]), strict=True):
        folder.mkdir()
        for image in part:
            (folder / image.name).write_bytes(image.read_bytes())
    root = tmp_path / "root"
    model_args = [f"--model.{key}={value}" for key, value in TINY_MODEL.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = [anomalib_bin, "predict", "--model", "SimSID", *model_args, "--ckpt_path", str(checkpoint)]
    runs = [
        subprocess.Popen(
            [*command, "--data", str(folder), "--default_root_dir", str(root)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for folder in folders
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    written = sorted(root.rglob("predictions.csv"))
    assert len(written) == 2, written  # one per run, in two run folders
    assert written[0].parent != written[1].parent
    by_folder = {Path(_rows(path)[0]["image_path"]).parent.name: _rows(path) for path in written}
    assert {name: len(rows) for name, rows in by_folder.items()} == {"a": 3, "b": 4}
    for path in written:
        assert tuple(_rows(path)[0]) == COLUMNS
        assert any(str(path) in output for output in outputs)  # each run says where its rows are
        overlays = {row["overlay"] for row in _rows(path)}
        assert all(overlay and (path.parent / overlay).is_file() for overlay in overlays), overlays
    latest = next(root.rglob("latest"))
    assert latest.resolve() in {path.parent for path in written}


def test_predict_reads_non_ascii_paths(tmp_path: Path, checkpoint: Path, digit_root: Path) -> None:
    from anomalib.engine import Engine

    from anomalib_simsid import SimSID

    folder = tmp_path / "Röntgen 胸片"
    folder.mkdir()
    for image in sorted((digit_root / "test").rglob("*.png"))[:2]:
        (folder / f"é_{image.name}").write_bytes(image.read_bytes())
    engine = Engine(default_root_dir=tmp_path / "out", devices=1, logger=False, enable_progress_bar=False)
    engine.predict(SimSID(**TINY_MODEL), ckpt_path=checkpoint, data_path=folder)
    rows = _rows(next((tmp_path / "out").rglob("predictions.csv")))
    assert sorted(Path(row["image_path"]).name for row in rows) == sorted(p.name for p in folder.iterdir())
    assert all(Path(row["image_path"]).parent == folder for row in rows)


def test_fit_leaves_no_empty_run_folder_and_warns_on_a_foreign_datamodule(
    tmp_path: Path, digit_root: Path
) -> None:
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.data import Folder
    from anomalib.engine import Engine

    from anomalib_simsid import SimSID

    datamodule = Folder(
        name="digits",
        root=digit_root,
        normal_dir="train/good",
        abnormal_dir="test/anomalous",
        normal_test_dir="test/good",
        train_batch_size=8,
    )
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="last")  # as the configs
    engine = Engine(
        default_root_dir=tmp_path / "results",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=[checkpoints],
        limit_train_batches=1,
        limit_val_batches=1,
    )
    with pytest.warns(UserWarning, match="Folder trains without augmentation"):
        engine.fit(SimSID(**TINY_MODEL), datamodule=datamodule)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "results").exists()  # no empty v0, no latest on it
