"""COVIDx: list files, label mapping, stratified validation draw, list autodetection, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures import make_covidx, write_text_as_image

from anomalib_simsid.data.covidx import COVIDx, parse_list
from anomalib_simsid.data.image_io import ImageReadError

VAL = 10


def _split(samples: pd.DataFrame, split: str) -> pd.DataFrame:
    return samples[samples.split == split]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_covidx(tmp_path_factory.mktemp("covidx"))


def test_split_counts(root: Path) -> None:
    samples = COVIDx(str(root), val_size=VAL).build_samples()
    counts = samples.groupby(["split", "label_index"]).size().to_dict()
    # test: COVID-19 and pneumonia are both 1; val is stratified (20 of 50 train images abnormal -> 4 of 10)
    assert counts == {("test", 0): 4, ("test", 1): 12, ("val", 0): 6, ("val", 1): 4, ("train", 0): 30 - 6}
    train, val, test = (set(_split(samples, s).image_path) for s in ("train", "val", "test"))
    assert not train & val
    assert not train & test
    assert not val & test


def test_deterministic_and_seeded(root: Path) -> None:
    a = COVIDx(str(root), val_size=VAL).build_samples()
    assert a.equals(COVIDx(str(root), val_size=VAL).build_samples())
    b = COVIDx(str(root), val_size=VAL, split_seed=3).build_samples()
    assert set(_split(a, "val").image_path) != set(_split(b, "val").image_path)


def test_contamination(root: Path) -> None:
    samples = COVIDx(str(root), val_size=VAL, positive_ratio=0.7).build_samples()
    train = _split(samples, "train")
    assert len(train) == 24
    assert ((train.label_index == 0).sum(), (train.label_index == 1).sum()) == (16, 8)
    assert not set(train.image_path) & set(_split(samples, "val").image_path)


def test_patient_in_validation_is_not_trained_on(tmp_path: Path) -> None:
    root = make_covidx(tmp_path, train=(20, 0, 20))
    samples = COVIDx(str(root), val_size=VAL, positive_ratio=0.5).build_samples()
    patients = pd.concat([parse_list(root / "train.txt")]).set_index("filename").patient

    def to_patient(paths: pd.Series) -> set[str]:
        return {patients[Path(p).name] for p in paths}

    assert not to_patient(_split(samples, "train").image_path) & to_patient(_split(samples, "val").image_path)


def test_covidx9a_names_autodetected(tmp_path: Path) -> None:
    root = make_covidx(tmp_path, train_list="train_COVIDx9A.txt", test_list="test_COVIDx9A.txt")
    samples = COVIDx(str(root), val_size=VAL).build_samples()
    assert len(_split(samples, "test")) == 16
    (root / "train_extra.txt").write_text("")
    with pytest.raises(
        FileNotFoundError, match=r"train\.txt does not exist; candidates found.*train_extra\.txt"
    ):
        COVIDx(str(root), val_size=VAL).build_samples()
    assert len(COVIDx(str(root), val_size=VAL, train_list="train_COVIDx9A.txt").build_samples()) == 50


def test_parse_list_formats(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(
        "p1 a.png normal src\np2 b c.png COVID-19 src\np3 d.png positive\n\np4 e.png Negative rsna\n"
    )
    table = parse_list(path)
    assert list(table.filename) == ["a.png", "b c.png", "d.png", "e.png"]
    assert list(table.label_index) == [0, 1, 1, 0]


def test_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    root = make_covidx(tmp_path)
    with (root / "test.txt").open("a") as handle:
        handle.write("p9 x.png flu src\n")
    with pytest.raises(ValueError, match=r"test\.txt line 17: unknown label 'flu'"):
        COVIDx(str(root), val_size=VAL).build_samples()


def test_short_line_named(tmp_path: Path) -> None:
    root = make_covidx(tmp_path)
    (root / "test.txt").write_text("p1 only_two\n")
    with pytest.raises(ValueError, match=r"test\.txt line 1: 'p1 only_two' has 2 field"):
        COVIDx(str(root), val_size=VAL).build_samples()


def test_missing_root_folder_and_list(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected .*train_list"):
        COVIDx(str(tmp_path / "nowhere")).build_samples()
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"image folder .*test does not exist"):
        COVIDx(str(tmp_path)).build_samples()
    (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError, match=r"list file .*train\.txt does not exist"):
        COVIDx(str(tmp_path)).build_samples()


def test_missing_and_corrupt_images(tmp_path: Path) -> None:
    root = make_covidx(tmp_path)
    (root / "test" / "test_normal_0.png").unlink()
    write_text_as_image(root / "test" / "test_covid-19_1.png")
    with pytest.raises(ImageReadError, match=r"test_normal_0\.png"):
        COVIDx(str(root), val_size=VAL).build_samples()
    with pytest.warns(UserWarning, match=r"(?s)skipping 2.*test_normal_0\.png.*test_covid-19_1\.png"):
        samples = COVIDx(str(root), val_size=VAL, on_bad_image="skip").build_samples()
    assert len(_split(samples, "test")) == 14


def test_val_size_must_fit(root: Path) -> None:
    with pytest.raises(ValueError, match="val_size=100"):
        COVIDx(str(root), val_size=100).build_samples()
