"""ZhangLab: layouts, the SQUID/SimSID split, contamination, bad inputs, download, real counts."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fixtures import make_zhanglab, truncate, write_text_as_image, zhanglab_zip

from anomalib_simsid.data.chest import contaminate, draw_order
from anomalib_simsid.data.download import DownloadError
from anomalib_simsid.data.image_io import ImageReadError
from anomalib_simsid.data.zhanglab import ZhangLab

VAL = 6


def _split(samples: pd.DataFrame, split: str) -> pd.DataFrame:
    return samples[samples.split == split]


def _names(samples: pd.DataFrame, split: str) -> set[str]:
    return {Path(p).name for p in _split(samples, split).image_path}


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_zhanglab(tmp_path_factory.mktemp("zhanglab"))


@pytest.mark.parametrize("nesting", ["official", "direct", "celldata"])
def test_layouts_and_split_counts(tmp_path: Path, nesting: str) -> None:
    root = make_zhanglab(tmp_path, nesting=nesting)
    samples = ZhangLab(str(root), val_source="draw", val_size=VAL).build_samples()
    train, val, test = (_split(samples, s) for s in ("train", "val", "test"))
    assert (test.label_index == 0).sum() == 4
    assert (test.label_index == 1).sum() == 6
    assert len(val) == VAL
    assert set(val.label_index) == {0, 1}
    assert (train.label_index == 0).all()  # normal-only training by default
    # the pool is official train + val: 14 normals, minus those drawn into validation
    assert len(train) == 12 + 2 - (val.label_index == 0).sum()


def test_root_pointing_at_chest_xray(official: Path) -> None:
    a = ZhangLab(str(official), val_size=VAL).build_samples()
    b = ZhangLab(str(official / "chest_xray"), val_size=VAL).build_samples()
    assert a.equals(b)


def test_missing_val_folder(tmp_path: Path) -> None:
    root = make_zhanglab(tmp_path, counts={"train": (10, 10), "test": (2, 2)})
    samples = ZhangLab(str(root), val_size=VAL).build_samples()
    assert len(_split(samples, "val")) == VAL
    assert len(_split(samples, "train")) == 10 - (_split(samples, "val").label_index == 0).sum()


def test_present_val_folder_is_the_validation_set(official: Path) -> None:
    """``auto`` honours an official ``val/`` with both labels; train is then not drawn from."""
    auto = ZhangLab(str(official), val_size=VAL).build_samples()
    folder = ZhangLab(str(official), val_source="folder", val_size=VAL).build_samples()
    assert auto.equals(folder)
    val = _split(auto, "val")
    assert {Path(p).parts[-3] for p in val.image_path} == {"val"}
    assert sorted(val.label_index) == [0, 0, 1, 1]
    assert len(_split(auto, "train")) == 12  # every train normal, none drawn away


def test_val_folder_with_one_label_falls_back_to_the_draw(tmp_path: Path) -> None:
    root = make_zhanglab(tmp_path, counts={"train": (10, 10), "val": (2, 0), "test": (2, 2)})
    samples = ZhangLab(str(root), val_size=VAL).build_samples()
    assert len(_split(samples, "val")) == VAL
    with pytest.raises(FileNotFoundError, match=r"val_source='folder' needs images in both .*PNEUMONIA"):
        ZhangLab(str(root), val_source="folder").build_samples()


def test_normal_only_training_needs_no_train_pneumonia(tmp_path: Path) -> None:
    root = make_zhanglab(tmp_path, counts={"train": (10, 0), "val": (2, 2), "test": (2, 2)})
    (root / "chest_xray" / "train" / "PNEUMONIA").rmdir()
    samples = ZhangLab(str(root)).build_samples()
    assert len(_split(samples, "train")) == 10
    with pytest.raises(FileNotFoundError, match=r"positive_ratio=0.5 needs pneumonia training images"):
        ZhangLab(str(root), positive_ratio=0.5).build_samples()
    shutil.rmtree(root / "chest_xray" / "val")  # now validation must be drawn, and needs pneumonia
    with pytest.raises(FileNotFoundError, match=r"drawing the validation set needs pneumonia images"):
        ZhangLab(str(root), val_size=VAL).build_samples()


def test_splits_are_disjoint_and_deterministic(official: Path) -> None:
    first = ZhangLab(str(official), val_source="draw", val_size=VAL).build_samples()
    again = ZhangLab(str(official), val_source="draw", val_size=VAL).build_samples()
    other = ZhangLab(str(official), val_source="draw", val_size=VAL, split_seed=1).build_samples()
    assert first.equals(again)
    assert _names(first, "val") != _names(other, "val")
    train, val, test = (set(_split(first, s).image_path) for s in ("train", "val", "test"))
    assert not train & val
    assert not train & test
    assert not val & test


def test_draw_ignores_listing_order() -> None:
    keys = [f"NORMAL/IM-{i:04d}.jpeg" for i in range(50)]
    order = [keys[i] for i in draw_order(keys, 3, "salt")]
    shuffled = keys[::-1]
    assert [shuffled[i] for i in draw_order(shuffled, 3, "salt")] == order
    assert [keys[i] for i in draw_order(keys, 4, "salt")] != order


def test_contamination_ratio(official: Path) -> None:
    clean = ZhangLab(str(official), val_source="draw", val_size=VAL).build_samples()
    mixed = ZhangLab(str(official), val_source="draw", val_size=VAL, positive_ratio=0.75).build_samples()
    clean_train, train = _split(clean, "train"), _split(mixed, "train")
    total = len(clean_train)
    assert len(train) == total  # the training-set size is kept
    assert (train.label_index == 0).sum() == int(total * 0.75)
    assert (train.label_index == 1).sum() == total - int(total * 0.75)
    # validation and test do not move; contaminating images come from outside validation
    assert _names(clean, "val") == _names(mixed, "val")
    assert not set(train.image_path) & set(_split(mixed, "val").image_path)


def test_contaminate_needs_enough_abnormals() -> None:
    with pytest.raises(ValueError, match="abnormal"):
        contaminate([f"n{i}" for i in range(10)], ["a0"], 0.5, 0)


def test_default_train_augmentation(official: Path) -> None:
    module = ZhangLab(str(official))
    assert type(module.train_augmentations).__name__ == "RandomAffine"
    assert module.val_augmentations is None


def test_setup_builds_datasets(official: Path) -> None:
    module = ZhangLab(str(official), val_size=VAL, eval_batch_size=2)
    module.setup()
    batch = next(iter(module.val_dataloader()))
    assert batch.image.shape == (2, 3, 16, 16)
    assert len(module.test_data) == 10


def test_missing_root_names_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected .*chest_xray"):
        ZhangLab(str(tmp_path / "nowhere")).build_samples()


def test_wrong_layout_names_places_looked(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"looked in .*CellData"):
        ZhangLab(str(tmp_path)).build_samples()


def test_missing_and_empty_class_folder(tmp_path: Path) -> None:
    root = make_zhanglab(tmp_path, counts={"train": (10, 10), "test": (2, 0)})
    with pytest.raises(FileNotFoundError, match=r"test[/\\]PNEUMONIA holds no images"):
        ZhangLab(str(root), val_size=VAL).build_samples()
    (root / "chest_xray" / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(FileNotFoundError, match=r"no PNEUMONIA folder in .*test"):
        ZhangLab(str(root), val_size=VAL).build_samples()


def test_bad_images_in_every_split_are_named_at_setup(tmp_path: Path) -> None:
    """Truncated, empty and fake images fail setup together, before any training batch is read."""
    root = make_zhanglab(tmp_path, counts={"train": (10, 10), "test": (3, 3)})
    base = root / "chest_xray"
    cut = truncate(next((base / "test" / "NORMAL").iterdir()), keep=0.3)
    empty = base / "train" / "NORMAL" / "IM-9999-0001.jpeg"
    empty.write_bytes(b"")
    write_text_as_image(base / "test" / "PNEUMONIA" / "not_an_image.jpeg")
    with pytest.raises(ImageReadError, match=r"3 unreadable") as raised:
        ZhangLab(str(root), val_size=VAL).build_samples()
    for name in (cut.name, empty.name, "not_an_image.jpeg"):
        assert name in str(raised.value)
    with pytest.warns(UserWarning, match=r"(?s)skipping 3 unreadable.*IM-.*not_an_image"):
        skipped = ZhangLab(str(root), val_size=VAL, on_bad_image="skip").build_samples()
    assert len(_split(skipped, "test")) == 6 + 1 - 2
    assert empty.name not in {Path(p).name for p in skipped.image_path}


def test_invalid_options(official: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_image"):
        ZhangLab(str(official), on_bad_image="ignore")
    with pytest.raises(ValueError, match="val_source"):
        ZhangLab(str(official), val_source="official")
    with pytest.raises(ValueError, match="positive_ratio"):
        ZhangLab(str(official), positive_ratio=0.0)
    with pytest.raises(ValueError, match="val_size"):
        ZhangLab(str(official), val_source="draw", val_size=1000).build_samples()


# ------------------------------------------------------------------------------------- download


@pytest.fixture
def served_zip(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A fake ChestXRay2017.zip served on 127.0.0.1 (never the network)."""
    payload = zhanglab_zip()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "ChestXRay2017.zip").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ChestXRay2017.zip", payload
    finally:
        server.shutdown()
        server.server_close()


def test_download_materialises_official_layout(tmp_path: Path, served_zip: tuple[str, bytes]) -> None:
    url, payload = served_zip
    root = tmp_path / "data"
    module = ZhangLab(
        str(root),
        val_size=4,
        download=True,
        download_url=url,
        download_sha256=hashlib.sha256(payload).hexdigest(),
        download_size=len(payload),
    )
    samples = module.build_samples()
    assert sorted(os.listdir(root)) == ["chest_xray"]  # no archive or staging folder left behind
    assert sorted(os.listdir(root / "chest_xray" / "train")) == ["NORMAL", "PNEUMONIA"]
    assert len(_split(samples, "test")) == 4
    module.prepare_data()  # present now: nothing is fetched again


def test_download_rejects_bad_checksum_and_leaves_nothing(
    tmp_path: Path, served_zip: tuple[str, bytes]
) -> None:
    url, payload = served_zip
    root = tmp_path / "data"
    module = ZhangLab(str(root), download=True, download_url=url, download_sha256="0" * 64, download_size=0)
    with pytest.raises(DownloadError, match="sha256"):
        module.prepare_data()
    assert os.listdir(root) == []
    module.download_sha256, module.download_size = hashlib.sha256(payload).hexdigest(), len(payload) + 1
    with pytest.raises(DownloadError, match="expected"):
        module.prepare_data()
    assert os.listdir(root) == []


def test_download_requires_checksum(tmp_path: Path) -> None:
    module = ZhangLab(
        str(tmp_path / "data"), download=True, download_url="http://127.0.0.1:9/x.zip", download_sha256=""
    )
    with pytest.raises(ValueError, match="sha256"):
        module.prepare_data()


def test_download_from_file_url(tmp_path: Path) -> None:
    payload = zhanglab_zip(top="CellData/chest_xray")
    archive = tmp_path / "ZhangLabData.zip"
    archive.write_bytes(payload)
    module = ZhangLab(
        str(tmp_path / "data"),
        val_size=4,
        download=True,
        download_url=archive.as_uri(),
        download_sha256=hashlib.sha256(payload).hexdigest(),
        download_size=len(payload),
    )
    assert len(_split(module.build_samples(), "train")) > 0
    assert (tmp_path / "data" / "chest_xray" / "test" / "NORMAL").is_dir()


# ------------------------------------------------------------------------------------ real data


def _real_root() -> Path:
    env = os.environ.get("ZHANGLAB_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared/data/zhanglab-224"


@pytest.mark.realdata
@pytest.mark.skipif(not _real_root().is_dir(), reason="real ZhangLab data not available")
def test_real_zhanglab_counts() -> None:
    """Lists files only (a stat per file); never decodes the 5,856 images."""
    samples = ZhangLab(str(_real_root())).build_samples()
    train, val, test = (_split(samples, s) for s in ("train", "val", "test"))
    assert (test.label_index == 0).sum() == 234
    assert (test.label_index == 1).sum() == 390
    assert len(val) == 200
    assert set(val.label_index) == {0, 1}
    assert (train.label_index == 0).all()
    assert len(train) == 1341 - (val.label_index == 0).sum()
