"""CheXpert: CSV release and preprocessed folders, PA filter, labels, held-out test, per-disease."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures import make_chexpert_csv, make_chexpert_folders, truncate

from anomalib_simsid.data.chexpert import CheXpert
from anomalib_simsid.data.image_io import ImageReadError

TEST = 3


def _split(samples: pd.DataFrame, split: str) -> pd.DataFrame:
    return samples[samples.split == split]


def _keys(samples: pd.DataFrame) -> list[tuple[str, str]]:
    """Paths below the release folder, with their split."""
    return sorted(
        (Path(*Path(p).parts[-4:]).as_posix(), s)
        for p, s in zip(samples.image_path, samples.split, strict=True)
    )


def _patients(samples: pd.DataFrame, split: str) -> set[str]:
    return {Path(p).parts[-3] for p in _split(samples, split).image_path}


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chexpert_csv(tmp_path_factory.mktemp("chexpert"))


@pytest.fixture(scope="module")
def folders_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chexpert_folders(tmp_path_factory.mktemp("chexpert_pre"))


# ------------------------------------------------------------------------------------- CSV layout


@pytest.mark.parametrize("inner", [False, True])
def test_csv_split_counts(csv_root: Path, inner: bool) -> None:
    root = csv_root / "CheXpert-v1.0-small" if inner else csv_root
    samples = CheXpert(str(root), test_size_per_class=TEST).build_samples()
    train, val, test = (_split(samples, s) for s in ("train", "val", "test"))
    assert ((test.label_index == 0).sum(), (test.label_index == 1).sum()) == (TEST, TEST)
    assert ((val.label_index == 0).sum(), (val.label_index == 1).sum()) == (
        3,
        3,
    )  # PA only: the AP row is dropped
    assert (train.label_index == 0).all()
    assert all("frontal" in p for p in samples.image_path)
    # 16 PA normals (10 patients + 6 second studies), minus test normals and their patients' other studies
    assert len(train) <= 16 - TEST
    assert not _patients(samples, "train") & _patients(samples, "test")  # patient-disjoint


def test_csv_same_split_for_small_and_full_release(tmp_path: Path, csv_root: Path) -> None:
    full = make_chexpert_csv(tmp_path, release="CheXpert-v1.0")
    small = CheXpert(str(csv_root), test_size_per_class=TEST).build_samples()
    big = CheXpert(str(full), test_size_per_class=TEST).build_samples()
    assert _keys(small) == _keys(big)


def test_csv_deterministic_and_seeded(csv_root: Path) -> None:
    a = CheXpert(str(csv_root), test_size_per_class=TEST).build_samples()
    b = CheXpert(str(csv_root), test_size_per_class=TEST).build_samples()
    c = CheXpert(str(csv_root), test_size_per_class=TEST, split_seed=7).build_samples()
    assert a.equals(b)
    assert set(_split(a, "test").image_path) != set(_split(c, "test").image_path)
    train, val, test = (set(_split(a, s).image_path) for s in ("train", "val", "test"))
    assert not train & val
    assert not train & test
    assert not val & test


@pytest.mark.parametrize(
    ("policy", "pool_abnormal", "pool_normal"),
    [("exclude", 15, 16), ("positive", 20, 16), ("negative", 15, 21)],
)
def test_uncertain_policies(csv_root: Path, policy: str, pool_abnormal: int, pool_normal: int) -> None:
    module = CheXpert(str(csv_root), uncertain=policy)
    pool = module._read_csv(csv_root / "CheXpert-v1.0-small" / "train.csv")
    assert (pool.label_index == 1).sum() == pool_abnormal
    assert (pool.label_index == 0).sum() == pool_normal


def test_csv_contamination(csv_root: Path) -> None:
    clean = CheXpert(str(csv_root), test_size_per_class=TEST).build_samples()
    mixed = CheXpert(str(csv_root), test_size_per_class=TEST, positive_ratio=0.5).build_samples()
    total = len(_split(clean, "train"))
    train = _split(mixed, "train")
    assert len(train) == total
    assert (train.label_index == 1).sum() == total - total // 2
    assert not set(train.image_path) & set(_split(mixed, "test").image_path)
    assert set(_split(clean, "test").image_path) == set(_split(mixed, "test").image_path)


@pytest.mark.parametrize("mode", ["remove", "relabel"])
def test_csv_per_disease(csv_root: Path, mode: str) -> None:
    size = 8
    everything = CheXpert(str(csv_root), test_size_per_class=size).build_samples()
    one = CheXpert(
        str(csv_root), test_size_per_class=size, test_disease="pleural_effusion", per_disease_mode=mode
    )
    samples = one.build_samples()
    test, full_test = _split(samples, "test"), _split(everything, "test")
    pool = one._read_csv(csv_root / "CheXpert-v1.0-small" / "train.csv").set_index("image_path")
    effusion = pool["pleural effusion"] == 1
    positives = {p for p in full_test.image_path if p in effusion.index and effusion[p]}
    assert set(test.image_path[test.label_index == 1]) == positives
    assert 0 < len(positives) < size
    if mode == "remove":
        assert len(test) == size + len(positives)
    else:  # the original: other diseases stay, labelled normal
        assert set(test.image_path) == set(full_test.image_path)
    assert _split(samples, "train").equals(_split(everything, "train"))


def test_csv_per_disease_unknown_name(csv_root: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown test_disease 'Flu'.*Pleural Effusion"):
        CheXpert(str(csv_root), test_size_per_class=TEST, test_disease="Flu").build_samples()


def test_csv_missing_image_named(tmp_path: Path) -> None:
    root = make_chexpert_csv(tmp_path)
    victim = root / "CheXpert-v1.0-small" / "valid" / "patient90001" / "study1" / "view1_frontal.jpg"
    victim.unlink()
    with pytest.raises(ImageReadError, match=r"patient90001.study1.view1_frontal\.jpg"):
        CheXpert(str(root), test_size_per_class=TEST).build_samples()
    with pytest.warns(UserWarning, match="patient90001"):
        samples = CheXpert(str(root), test_size_per_class=TEST, on_bad_image="skip").build_samples()
    assert len(_split(samples, "val")) == 5


def test_csv_bad_value_and_columns(tmp_path: Path) -> None:
    root = make_chexpert_csv(tmp_path, patients=6)
    csv = root / "CheXpert-v1.0-small" / "train.csv"
    lines = csv.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "patient00002/study1" in line)  # Pleural Effusion 1.0
    head, tail = lines[index].rsplit("1.0", 1)
    lines[index] = f"{head}yes{tail}"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"train\.csv line {index + 1}, column 'Pleural Effusion'.*'yes'"):
        CheXpert(str(root), test_size_per_class=1).build_samples()
    csv.write_text("Path,Sex\nx.jpg,Male\n")
    with pytest.raises(ValueError, match=r"train\.csv lacks the column"):
        CheXpert(str(root), test_size_per_class=1).build_samples()


def test_missing_root_and_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected .*valid\.csv"):
        CheXpert(str(tmp_path / "nowhere")).build_samples()
    with pytest.raises(FileNotFoundError, match=r"looked for .*train_256_pa.*train\.csv"):
        CheXpert(str(tmp_path)).build_samples()


def test_test_size_too_large(csv_root: Path) -> None:
    with pytest.raises(ValueError, match="test_size_per_class=250"):
        CheXpert(str(csv_root)).build_samples()


# -------------------------------------------------------------------------------- folder layout


def test_folders_split_counts(folders_root: Path) -> None:
    samples = CheXpert(str(folders_root)).build_samples()
    counts = samples.groupby(["split", "label_index"]).size().to_dict()
    assert counts == {("train", 0): 8, ("val", 0): 3, ("val", 1): 3, ("test", 0): 4, ("test", 1): 4}


def test_folders_contamination(folders_root: Path) -> None:
    samples = CheXpert(str(folders_root), positive_ratio=0.75).build_samples()
    train = _split(samples, "train")
    assert ((train.label_index == 0).sum(), (train.label_index == 1).sum()) == (6, 2)
    other = CheXpert(str(folders_root), positive_ratio=0.75, split_seed=5).build_samples()
    assert set(train.image_path) != set(_split(other, "train").image_path)


@pytest.mark.parametrize("mode", ["remove", "relabel"])
def test_folders_per_disease(folders_root: Path, mode: str) -> None:
    samples = CheXpert(str(folders_root), test_disease="effusion", per_disease_mode=mode).build_samples()
    test = _split(samples, "test")
    positives = {Path(p).name for p in test.image_path[test.label_index == 1]}
    assert positives == {"abnormal_256_0.png", "abnormal_256_1.png", "abnormal_256_2.png"}
    if mode == "remove":
        assert len(test) == 4 + 3
    else:
        assert len(test) == 4 + 4
        assert (test.label_index == 0).sum() == 5


def test_folders_per_disease_errors(tmp_path: Path, folders_root: Path) -> None:
    with pytest.raises(ValueError, match=r"'Flu' is not in .*diseases\.txt.*cardiomegaly"):
        CheXpert(str(folders_root), test_disease="Flu").build_samples()
    root = make_chexpert_folders(tmp_path)
    (root / "our_test_256_pa" / "diseases.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"diseases\.txt"):
        CheXpert(str(root), test_disease="Effusion").build_samples()


def test_folders_empty_class_folder_named(tmp_path: Path) -> None:
    root = make_chexpert_folders(tmp_path, counts=(4, 2, 2, 0, 2, 2))
    with pytest.raises(FileNotFoundError, match=r"val_256_pa.abnormal_256 holds no images"):
        CheXpert(str(root)).build_samples()
    (root / "val_256_pa" / "abnormal_256").rmdir()
    with pytest.raises(FileNotFoundError, match=r"missing folder .*val_256_pa.abnormal_256"):
        CheXpert(str(root)).build_samples()


def test_folders_skip_bad_image(tmp_path: Path) -> None:
    root = make_chexpert_folders(tmp_path)
    truncate(root / "val_256_pa" / "normal_256" / "normal_256_0.png")
    with pytest.warns(UserWarning, match=r"normal_256_0\.png"):
        samples = CheXpert(str(root), on_bad_image="skip").build_samples()
    assert len(_split(samples, "val")) == 5
