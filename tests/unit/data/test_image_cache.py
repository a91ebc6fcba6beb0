"""The uint8 image cache of the chest datamodules: same images as the reader + resize, no decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures import write_image

from anomalib_simsid.data import image_cache
from anomalib_simsid.data.xray_folder import XRayFolder
from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_resize

SIZE = 32  # the cached side; the files are 48 px, so the cache resizes


def make_folders(root: Path) -> Path:
    counts = {("train", "normal"): 3, ("val", "normal"): 1, ("val", "abnormal"): 1, ("test", "normal"): 1}
    counts[("test", "abnormal")] = 1
    seed = 0
    for (split, cls), n in counts.items():
        for i in range(n):
            write_image(root / split / cls / f"{cls}-{i}.png", seed=seed, size=48)
            seed += 1
    return root


def cached_module(root: Path, mode: str | None) -> XRayFolder:
    module = XRayFolder(root=str(root), image_cache=mode, image_cache_size=SIZE, train_augmentations=None)
    module.train_augmentations = None
    module.setup("fit")
    return module


@pytest.mark.parametrize("mode", ["memory", "file"])
def test_cached_images_equal_the_read_and_resized_files(tmp_path: Path, mode: str) -> None:
    root = make_folders(tmp_path / "data")
    plain, cached = cached_module(root, None), cached_module(root, mode)
    for split in ("train_data", "val_data", "test_data"):
        a, b = getattr(plain, split), getattr(cached, split)
        assert b.cache is not None
        assert b.cache.shape == (len(a), SIZE, SIZE)
        assert b.cache.dtype == torch.uint8
        for i in range(len(a)):
            expected = simsid_resize((SIZE, SIZE))(a[i].image).clamp(0, 1)
            assert b[i].image.shape == (3, SIZE, SIZE)
            torch.testing.assert_close(b[i].image, expected, atol=0.5 / 255 + 1e-6, rtol=0)
            assert b[i].image_path == a[i].image_path


def test_an_epoch_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = cached_module(make_folders(tmp_path / "data"), "memory")

    def refuse(path):
        raise AssertionError(f"decoded {path} during an epoch")

    monkeypatch.setattr("anomalib_simsid.data.base.read_image", refuse)
    assert sum(len(batch.image) for batch in module.train_dataloader()) == 3


def test_file_cache_is_reused_and_keyed_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folders(tmp_path / "data")
    cached_module(root, "file")
    files = sorted((root / image_cache.CACHE_DIR).glob("*.npy"))
    assert len(files) == 3  # train, val, test
    assert all(f.name.startswith(f"{SIZE}px-") for f in files)
    monkeypatch.setattr(image_cache, "decode_resized", lambda path, size: pytest.fail("decoded again"))
    cached_module(root, "file")


def test_unknown_cache_mode_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_cache must be one of"):
        XRayFolder(root=str(tmp_path), image_cache="disk")


def test_cache_size_comes_from_the_model_or_is_asked_for(tmp_path: Path) -> None:
    module = XRayFolder(root=str(make_folders(tmp_path / "data")), image_cache="memory")
    with pytest.raises(ValueError, match="needs the model's img_size"):
        module.setup("fit")


@pytest.mark.parametrize(("device", "pinned"), [("cuda", True), ("cpu", False)])
def test_loaders_pin_memory_when_training_on_a_gpu(tmp_path: Path, device: str, pinned: bool) -> None:
    from types import SimpleNamespace

    module = cached_module(make_folders(tmp_path / "data"), None)
    module.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    loaders = (module.train_dataloader(), module.val_dataloader(), module.test_dataloader())
    assert [loader.pin_memory for loader in loaders] == [pinned] * 3
