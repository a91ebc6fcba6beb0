"""XRayFolder: a user's own train/val/test folders, kept as they are on disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from fixtures import truncate, write_image, write_text_as_image

from anomalib_simsid.data.image_io import ImageReadError
from anomalib_simsid.data.xray_folder import XRayFolder

COUNTS = {
    ("train", "normal"): 5,
    ("val", "normal"): 2,
    ("val", "abnormal"): 3,
    ("test", "normal"): 4,
    ("test", "abnormal"): 1,
}


def make_folders(root: Path, counts: dict[tuple[str, str], int] = COUNTS) -> Path:
    seed = 0
    for (split, cls), n in counts.items():
        for i in range(n):
            write_image(root / split / cls / f"{cls}-{i}.png", seed=seed)
            seed += 1
    return root


def test_splits_are_the_folders(tmp_path: Path) -> None:
    samples = XRayFolder(str(make_folders(tmp_path))).build_samples()
    counts = samples.groupby(["split", "label_index"]).size().to_dict()
    assert counts == {("train", 0): 5, ("val", 0): 2, ("val", 1): 3, ("test", 0): 4, ("test", 1): 1}
    for row in samples.itertuples():
        assert Path(row.image_path).parts[-3] == row.split


def test_train_abnormal_is_ignored(tmp_path: Path) -> None:
    root = make_folders(tmp_path)
    write_image(root / "train" / "abnormal" / "x.png", seed=99)
    samples = XRayFolder(str(root)).build_samples()
    assert not samples[samples.split == "train"].label_index.any()


def test_custom_class_names(tmp_path: Path) -> None:
    counts = {
        (s, c.replace("normal", "NORMAL").replace("abNORMAL", "COVID")): n for (s, c), n in COUNTS.items()
    }
    root = make_folders(tmp_path, counts)
    samples = XRayFolder(str(root), normal_dir="NORMAL", abnormal_dir="COVID").build_samples()
    assert len(samples) == sum(COUNTS.values())


def test_missing_root_names_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist.*train/normal"):
        XRayFolder(str(tmp_path / "nowhere")).build_samples()


def test_missing_class_folder_names_it(tmp_path: Path) -> None:
    root = make_folders(tmp_path, {k: v for k, v in COUNTS.items() if k != ("val", "abnormal")})
    with pytest.raises(FileNotFoundError, match=r"val/abnormal.*found folders \['normal'\]"):
        XRayFolder(str(root)).build_samples()


def test_empty_class_folder_names_it(tmp_path: Path) -> None:
    root = make_folders(tmp_path)
    for f in (root / "test" / "abnormal").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"test/abnormal holds no images"):
        XRayFolder(str(root)).build_samples()


def test_setup_builds_datasets(tmp_path: Path) -> None:
    datamodule = XRayFolder(str(make_folders(tmp_path)))
    datamodule.setup()
    assert (len(datamodule.train_data), len(datamodule.val_data), len(datamodule.test_data)) == (5, 5, 5)
    assert datamodule.train_data[0].image.shape[0] == 3


def test_bad_images_are_all_named_at_setup(tmp_path: Path) -> None:
    root = make_folders(tmp_path)
    truncate(root / "train" / "normal" / "normal-0.png")
    (root / "val" / "abnormal" / "abnormal-0.png").write_bytes(b"")
    write_text_as_image(root / "test" / "abnormal" / "abnormal-0.png")
    datamodule = XRayFolder(str(root))
    with pytest.raises(ImageReadError, match=r"(?s)3 unreadable.*normal-0.*abnormal-0.*abnormal-0"):
        datamodule.setup()
    with pytest.warns(UserWarning, match="skipping 3"):
        samples = XRayFolder(str(root), on_bad_image="skip").build_samples()
    assert samples.groupby("split").size().to_dict() == {"train": 4, "val": 4, "test": 4}


def _adult_root() -> Path:
    env = os.environ.get("ADULT_CXR_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared/data/adult-cxr-dev"


@pytest.mark.realdata
@pytest.mark.skipif(not _adult_root().is_dir(), reason="adult-cxr-dev not available")
def test_real_adult_cxr_counts() -> None:
    samples = XRayFolder(str(_adult_root())).build_samples()
    counts = samples.groupby(["split", "label_index"]).size().to_dict()
    assert counts == {
        ("train", 0): 2000,
        ("val", 0): 100,
        ("val", 1): 100,
        ("test", 0): 500,
        ("test", 1): 500,
    }


def test_split_log_names_no_options_it_lacks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is drawn, so the log names neither split_seed nor positive_ratio."""
    with caplog.at_level(logging.INFO):
        XRayFolder(str(make_folders(tmp_path))).build_samples()
    line = next(r.getMessage() for r in caplog.records if "5 normal" in r.getMessage())
    assert "split_seed" not in line
    assert "positive_ratio" not in line
    assert "splits as on disk" in line
