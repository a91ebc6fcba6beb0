"""DigitAnatomy: deterministic generation, atomic writes, the datamodule, and learnability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torchvision.transforms.v2 import RandomAffine, RandomHorizontalFlip

from anomalib_simsid.data import digit_anatomy as da
from anomalib_simsid.data.augmentation import simsid_train_augmentation
from anomalib_simsid.data.digit_anatomy import (
    ANOMALY_TYPES,
    MANIFEST_NAME,
    DigitAnatomy,
    ensure_digit_anatomy,
    generate_image,
)
from anomalib_simsid.data.image_io import ImageReadError

TINY = {"num_train": 3, "num_val": 2, "num_test": 4}
MID = {"num_train": 120, "num_val": 4, "num_test": 32}


@pytest.fixture(scope="module")
def mid_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("digit") / "DigitAnatomy"
    return root, ensure_digit_anatomy(root, **MID)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _no_temp_siblings(root: Path) -> bool:
    return not [p for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.")]


def test_generate_image_is_a_pure_function() -> None:
    a, layout_a = generate_image(0, "test", 5, True)
    b, layout_b = generate_image(0, "test", 5, True)
    c, _ = generate_image(1, "test", 5, True)
    assert a.dtype == np.uint8
    assert a.shape == (96, 96)
    assert np.array_equal(a, b)
    assert layout_a == layout_b
    assert not np.array_equal(a, c)


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    ensure_digit_anatomy(tmp_path / "a", image_size=48, seed=3, **TINY)
    ensure_digit_anatomy(tmp_path / "b", image_size=48, seed=3, **TINY)
    ensure_digit_anatomy(tmp_path / "c", image_size=48, seed=4, **TINY)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert len(a) == 3 + 2 * 2 + 2 * 4
    assert all(a[name] != c.get(name) for name in a if "good" in name)


def test_counts_layout_and_image_format(mid_dataset: tuple[Path, pd.DataFrame]) -> None:
    root, samples = mid_dataset
    counts = samples.groupby(["split", "label_index"]).size().to_dict()
    assert counts == {("train", 0): 120, ("val", 0): 4, ("val", 1): 4, ("test", 0): 32, ("test", 1): 32}
    assert set(samples[samples.split == "test"].anomaly_type) == {*ANOMALY_TYPES, "good"}
    for row in samples.itertuples():
        path = Path(row.image_path)
        assert path.parent.parent.parent == root.resolve()
        assert path.parent.parent.name == row.split
        assert path.parent.name == ("anomalous" if row.label_index else "good")
        assert path.stem.endswith(f"_{row.anomaly_type}")
    for path in samples.groupby(["split", "label_index"]).head(2).image_path:
        with Image.open(path) as img:
            assert img.mode == "L"
            assert img.size == (96, 96)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["version"] == da.GENERATOR_VERSION
    assert manifest["num_train"] == 120


def test_anomaly_layouts() -> None:
    normal = da.DigitLayout.normal()
    rng = np.random.default_rng(0)
    for kind in ANOMALY_TYPES:
        for _ in range(20):
            layout = da.make_layout(rng, kind)
            changed = [i for i in range(9) if (layout.digits[i], layout.mirrored[i]) != (i + 1, False)]
            assert changed == list(layout.cells)
            assert len(changed) == (2 if kind == "swap" else 1)
            if kind == "mirror":
                assert layout.digits == normal.digits
                assert layout.digits[changed[0]] not in (0, 8)
            if kind == "missing":
                assert layout.digits[changed[0]] is None
            if kind == "foreign":
                assert layout.digits[changed[0]] in set(range(10)) - {changed[0] + 1}
    with pytest.raises(ValueError, match="unknown anomaly type"):
        da.make_layout(rng, "rotate")


def test_complete_dataset_is_reused_and_stale_one_regenerated(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ensure_digit_anatomy(root, image_size=32, seed=0, **TINY)
    first = _files(root)
    marker = root / "train" / "good" / "0000_good.png"
    mtime = marker.stat().st_mtime_ns
    ensure_digit_anatomy(root, image_size=32, seed=0, **TINY)
    assert marker.stat().st_mtime_ns == mtime  # reused, not rewritten

    samples = ensure_digit_anatomy(root, image_size=32, seed=1, **TINY)  # parameters changed
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 1
    assert _files(root) != first
    assert all(Path(p).exists() for p in samples.image_path)

    manifest = json.loads((root / MANIFEST_NAME).read_text())
    (root / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": -1}))  # older generator
    marker.unlink()
    ensure_digit_anatomy(root, image_size=32, seed=1, **TINY)
    assert marker.exists()
    assert json.loads((root / MANIFEST_NAME).read_text()) == manifest
    assert _no_temp_siblings(root)


def test_missing_file_triggers_regeneration(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ensure_digit_anatomy(root, image_size=32, **TINY)
    victim = next((root / "test" / "anomalous").glob("0001_*.png"))
    victim.unlink()
    ensure_digit_anatomy(root, image_size=32, **TINY)
    assert victim.exists()


def _failing_save(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    real_save = da._save_png
    calls = {"n": 0}

    def save(array: np.ndarray, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt("simulated interruption")
        real_save(array, path)

    monkeypatch.setattr(da, "_save_png", save)


def test_interrupted_generation_leaves_nothing_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    with monkeypatch.context() as patch:
        _failing_save(patch, after=5)
        with pytest.raises(KeyboardInterrupt):
            ensure_digit_anatomy(root, image_size=32, **TINY)
    assert not root.exists()
    assert _no_temp_siblings(root)

    samples = ensure_digit_anatomy(root, image_size=32, **TINY)
    assert len(samples) == 3 + 2 * 2 + 2 * 4
    assert all(Path(p).exists() for p in samples.image_path)


def test_interrupted_regeneration_keeps_old_dataset_marked_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    ensure_digit_anatomy(root, image_size=32, seed=0, **TINY)
    old = _files(root)
    with monkeypatch.context() as patch:
        _failing_save(patch, after=2)
        with pytest.raises(KeyboardInterrupt):
            ensure_digit_anatomy(root, image_size=32, seed=7, **TINY)
    assert _files(root) == old
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 0  # never taken for seed 7
    assert _no_temp_siblings(root)
    ensure_digit_anatomy(root, image_size=32, seed=7, **TINY)
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 7
    assert _files(root) == _files_for(tmp_path / "fresh", seed=7)


def _files_for(root: Path, seed: int) -> dict[str, bytes]:
    ensure_digit_anatomy(root, image_size=32, seed=seed, **TINY)
    return _files(root)


def test_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ensure_digit_anatomy(root, image_size=32, **TINY)
    assert (root / "notes.txt").read_text() == "keep me"


def test_datamodule_setup_yields_anomalib_items(tmp_path: Path) -> None:
    datamodule = DigitAnatomy(root=str(tmp_path / "ds"), image_size=64, **TINY)
    assert isinstance(datamodule.train_augmentations, RandomAffine)
    datamodule.prepare_data()
    datamodule.setup()
    assert len(datamodule.train_data) == 3
    assert len(datamodule.val_data) == 4
    assert len(datamodule.test_data) == 8
    assert sorted(datamodule.test_data.samples.label_index.tolist()) == [0] * 4 + [1] * 4
    for dataset in (datamodule.train_data, datamodule.test_data):
        item = dataset[0]
        assert item.image.shape == (3, 64, 64)
        assert item.image.dtype == torch.float32
        assert 0.0 <= float(item.image.min()) <= float(item.image.max()) <= 1.0
        assert item.gt_label.ndim == 0
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape == (8, 3, 64, 64)
    assert batch.gt_label.tolist().count(1) == 4


def test_setup_generates_when_prepare_data_was_skipped(tmp_path: Path) -> None:
    datamodule = DigitAnatomy(root=str(tmp_path / "ds"), image_size=32, **TINY)
    datamodule.setup()
    assert (tmp_path / "ds" / MANIFEST_NAME).exists()


def test_damaged_file_stops_setup(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    samples = ensure_digit_anatomy(root, image_size=32, **TINY)
    victim = Path(samples.image_path.iloc[-1])
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(ImageReadError, match=victim.name):
        DigitAnatomy(root=str(root), image_size=32, **TINY).setup()


def test_augmentation_defaults_and_overrides(tmp_path: Path) -> None:
    default = simsid_train_augmentation()
    assert tuple(default.translate) == (0.05, 0.05)
    assert tuple(default.scale) == (0.95, 1.05)
    assert DigitAnatomy(root=str(tmp_path)).val_augmentations is None
    flip = RandomHorizontalFlip()
    assert DigitAnatomy(root=str(tmp_path), train_augmentations=flip).train_augmentations is flip
    assert DigitAnatomy(root=str(tmp_path), augmentations=flip).train_augmentations is flip
    with pytest.raises(ValueError, match="image_size"):
        DigitAnatomy(root=str(tmp_path), image_size=8)


def test_jsonargparse_can_configure_the_datamodule(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(DigitAnatomy, "data")
    cfg = parser.parse_args(["--data.root", str(tmp_path), "--data.num_train", "5", "--data.seed", "2"])
    datamodule = DigitAnatomy(**cfg.data.as_dict())
    assert (datamodule.num_train, datamodule.seed, datamodule.image_size) == (5, 2, 96)


def test_anomalies_are_separable_by_pixel_distance(mid_dataset: tuple[Path, pd.DataFrame]) -> None:
    """Nearest-train-normal distance on standardised 32x32 thumbnails: the task is learnable."""
    _, samples = mid_dataset

    def thumbnails(paths: pd.Series) -> np.ndarray:
        x = np.stack(
            [
                np.asarray(Image.open(p).resize((32, 32), Image.Resampling.BOX), np.float64).ravel()
                for p in paths
            ]
        )
        return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)

    train = thumbnails(samples[samples.split == "train"].image_path)
    test_rows = samples[samples.split == "test"]
    test = thumbnails(test_rows.image_path)
    dist = (test**2).sum(1)[:, None] + (train**2).sum(1)[None] - 2 * test @ train.T
    auroc = roc_auc_score(test_rows.label_index, dist.min(1))
    assert auroc > 0.7, auroc
