"""Learning-curve tools: diagnostic scores, the ScoreCurves callback, the fit warning, plots, diagnosis."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from anomalib_simsid import DigitAnatomy, SimSID
from anomalib_simsid.models.simsid.adapters.score_curves import CURVE_COLUMNS, ScoreCurves, _write_csv
from anomalib_simsid.models.simsid.config import SimSIDConfig
from anomalib_simsid.models.simsid.torch_model import SimSIDModel
from tests.helpers import TINY_DATA, TINY_MODEL

SCORES = {
    "critic_recon",
    "critic_input",
    "residual_mean",
    "lowpass_residual",
    "residual_max",
    "residual_block_max",
    "memory_distance",
    "teacher_gap",
}


def test_diagnostic_scores_include_the_paper_score() -> None:
    torch.manual_seed(0)
    model = SimSIDModel(SimSIDConfig(**TINY_MODEL)).eval()
    image = torch.rand(3, 3, 64, 64) * 2 - 1
    scores = model.diagnostic_scores(image)
    assert set(scores) == SCORES
    assert all(value.shape == (3,) for value in scores.values())
    assert torch.allclose(scores["critic_recon"], model(image).pred_score.flatten(), atol=1e-6)
    assert (scores["residual_max"] >= scores["residual_block_max"]).all()
    assert (scores["memory_distance"] > 0).all()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_score_curves_records_every_score_replaces_stale_rows_and_resumes_its_clocks(
    digit_root: Path, tmp_path: Path
) -> None:
    # anomalib's ModelCheckpoint: with a plain Lightning one the Engine would add its own beside it.
    from anomalib.callbacks.checkpoint import ModelCheckpoint
    from anomalib.engine import Engine

    curves = tmp_path / "curves.csv"
    stale = {c: "0" for c in CURVE_COLUMNS} | {"epoch": "3", "score": "stale", "split": "val"}
    _write_csv(curves, CURVE_COLUMNS, [stale])  # a previous run's later epoch must not survive
    torch.manual_seed(0)
    model = SimSID(**TINY_MODEL, visualizer=False)
    datamodule = DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=8)
    callback = ScoreCurves(curves, every_n_epochs=1, per_image_path=tmp_path / "per_image.csv")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    engine = Engine(
        max_epochs=2, devices=1, callbacks=[callback, checkpoint], default_root_dir=tmp_path, logger=False
    )
    engine.fit(model, datamodule=datamodule)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.is_file()

    rows = _rows(curves)
    assert {(int(r["epoch"]), r["score"], r["split"]) for r in rows} == {
        (epoch, score, split) for epoch in (1, 2) for score in SCORES for split in ("val", "test")
    }
    assert all(0.0 <= float(r["auroc"]) <= 1.0 for r in rows)
    assert all(int(r["n_normal"]) > 0 and int(r["n_abnormal"]) > 0 for r in rows)
    per_image = _rows(tmp_path / "per_image.csv")
    assert len(per_image) == 2 * (TINY_DATA["num_val"] + TINY_DATA["num_test"]) * 2  # 2 epochs, 2 classes
    assert set(per_image[0]) >= SCORES

    # Resumed from last.ckpt, the clocks continue from the last recorded row rather than from zero.
    far = 1.0e6
    _write_csv(curves, CURVE_COLUMNS, [r | {"wall_s": str(far), "cpu_s": str(far)} for r in rows])
    resumed = Engine(
        max_epochs=3,
        devices=1,
        callbacks=[ScoreCurves(curves, every_n_epochs=1), ModelCheckpoint(dirpath=tmp_path / "ckpt")],
        default_root_dir=tmp_path,
        logger=False,
    )
    resumed.fit(SimSID(**TINY_MODEL, visualizer=False), datamodule=datamodule, ckpt_path=last)
    third = [r for r in _rows(curves) if r["epoch"] == "3"]
    assert len(third) == len(SCORES) * 2
    assert all(float(r["wall_s"]) > far and float(r["cpu_s"]) > far for r in third)


def test_score_curves_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_n_epochs"):
        ScoreCurves(tmp_path / "c.csv", every_n_epochs=0)
    with pytest.raises(ValueError, match="splits"):
        ScoreCurves(tmp_path / "c.csv", splits=("train",))


@pytest.mark.parametrize(("auroc", "warns"), [(0.31, True), (0.5, False), (0.9, False), (None, False)])
def test_fit_warns_when_validation_ranks_backwards(auroc: float | None, warns: bool) -> None:
    model = SimSID(**TINY_MODEL, visualizer=False)
    metrics = {} if auroc is None else {"image_AUROC": torch.tensor(auroc)}
    model._trainer = SimpleNamespace(callback_metrics=metrics)
    with pytest.warns(UserWarning, match="ranks normal images as more anomalous") if warns else _no_warning():
        model.on_fit_end()


@pytest.mark.parametrize(
    ("precision", "fast", "warns"),
    [("bf16-mixed", False, True), ("bf16-mixed", True, False), ("32-true", False, False)],
)
def test_fit_warns_about_emulated_bf16_on_cpu(
    monkeypatch: pytest.MonkeyPatch, precision: str, fast: bool, warns: bool
) -> None:
    from anomalib_simsid.models.simsid import lightning_model

    monkeypatch.setattr(lightning_model, "cpu_has_fast_bf16", lambda: fast)
    model = SimSID(**TINY_MODEL, visualizer=False)
    model._trainer = SimpleNamespace(precision=precision)
    with pytest.warns(UserWarning, match="emulated") if warns else _no_warning():
        model.on_fit_start()


class _no_warning:  # noqa: N801  (a context manager used like pytest.warns)
    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def test_plot_and_diagnosis_tools(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from benchmarks.diagnose import STATS, folder_statistics, image_statistics, statistics_table
    from benchmarks.plot_curves import plot_curves

    flat, edges = torch.full((1, 32, 32), 0.5), torch.zeros(1, 32, 32)
    edges[:, :, ::2] = 1.0
    assert image_statistics(flat)["gradient"] == 0.0
    assert (
        image_statistics(torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0)))["gradient"] > 0.1
    )
    assert image_statistics(edges)["entropy"] == pytest.approx(1.0)

    rng = np.random.default_rng(0)
    folders = [("train", "normal", 3)] + [(s, c, 2) for s in ("val", "test") for c in ("normal", "abnormal")]
    for split, cls, n in folders:
        for i in range(n):
            (tmp_path / "data" / split / cls).mkdir(parents=True, exist_ok=True)
            smooth = cls == "abnormal"
            pixels = (
                np.full((40, 40), 128, np.uint8) if smooth else rng.integers(0, 256, (40, 40), dtype=np.uint8)
            )
            Image.fromarray(pixels).save(tmp_path / "data" / split / cls / f"{i}.png")
    stats = folder_statistics(str(tmp_path / "data"), size=32)
    assert len(stats) == 11
    assert set(STATS) <= set(stats.columns)
    table = statistics_table(stats)
    gradient_line = next(line for line in table.splitlines() if line.startswith("| gradient"))
    assert gradient_line.endswith("| 0.000 | 0.000 |")  # smooth abnormal images: the lowest gradients

    curves = tmp_path / "curves.csv"
    curves.write_text(
        "epoch,score,split,auroc\n1,critic_recon,val,0.4\n2,critic_recon,val,0.6\n"
        "1,critic_recon,test,0.45\n2,critic_recon,test,0.55\n"
    )
    png = plot_curves(curves, {"PaDiM": 76.8})
    assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_curves_runner_keeps_last_checkpoint_and_resumes(
    digit_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from benchmarks.curves import main

    config = {
        "seed_everything": 0,
        "model": {"class_path": "anomalib_simsid.SimSID", "init_args": {**TINY_MODEL, "visualizer": False}},
        "data": {
            "class_path": "anomalib_simsid.DigitAnatomy",
            "init_args": {**TINY_DATA, "train_batch_size": 8, "eval_batch_size": 8},
        },
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    # Evaluating every 2 epochs, a run that crashes in its second epoch must still leave the first
    # epoch's last.ckpt (Lightning saves after validation by default, and epoch 1 has none).
    args = ["--config", str(tmp_path / "tiny.yaml"), "--root", str(digit_root), "--every", "2"]
    out = tmp_path / "run"

    def crash_in_second_epoch(module: SimSID) -> None:
        if module.current_epoch == 1:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(SimSID, "on_train_epoch_start", crash_in_second_epoch, raising=False)
        with pytest.raises(RuntimeError, match="simulated crash"):
            main([*args, "--epochs", "2", "--out", str(out)])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    assert main([*args, "--epochs", "2", "--out", str(out)]) == 0  # resumes from last.ckpt
    epochs = {int(r["epoch"]) for r in _rows(out / "curves.csv")}
    assert epochs == {2}
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1  # 0-based: 2nd
