"""ZhangLab (Kermany) pediatric pneumonia chest X-rays with the SQUID/SimSID protocol.

Protocol (SQUID/SimSID): the test set is the official ``test`` (234 normal + 390 pneumonia) and
the training set is normal images only. Validation depends on ``val_source``:

* ``"draw"``: the paper's protocol. The training pool is official ``train`` plus official ``val`` (if
  present); ``val_size`` images drawn from it by a seeded draw, both labels, form the validation
  set; the remaining normals train. The authors' own 200-image list is not public.
* ``"folder"``: the ``val`` folder, as it is on disk, is the validation set; ``train`` is not drawn
  from. The official ``val`` holds only 8 + 8 images, a noisy basis for checkpoint selection.
* ``"auto"`` (default): ``"folder"`` when ``val/NORMAL`` and ``val/PNEUMONIA`` both hold images,
  otherwise ``"draw"``. A copy without ``val/`` (common on mirrors) therefore gets the paper's draw;
  a user's own ``val/`` is honoured.

``train/PNEUMONIA`` is needed only when validation is drawn (the draw needs abnormal images) or
when ``positive_ratio`` < 1; normal-only training from a ``val/`` folder works without it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torchvision.transforms.v2 import Transform

from .chest import ChestXRayDataModule, contaminate, draw_order, list_images, sample_rows
from .download import ZHANGLAB_ARCHIVE, ZHANGLAB_SHA256, ZHANGLAB_SIZE, ZHANGLAB_URL, download_dataset
from .image_io import IMAGE_SUFFIXES

VAL_SOURCES = ("auto", "draw", "folder")
ZHANGLAB_LAYOUT = (
    "<root>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (val and train/PNEUMONIA optional); "
    "root may also be the "
    "chest_xray folder itself, or hold CellData/chest_xray or ZhangLabData/CellData/chest_xray"
)
# Folder names per label: the official ones, and SQUID's resized copy.
_ZHANGLAB_CLASSES = {0: ("normal", "normal_256"), 1: ("pneumonia", "pneumonia_256")}
_ZHANGLAB_KEYS = {0: "NORMAL", 1: "PNEUMONIA"}


def zhanglab_candidates(root: Path) -> list[Path]:
    """Where the ``chest_xray`` folder may sit under ``root``, in the order they are tried."""
    return [
        root,
        root / "chest_xray",
        root / "CellData" / "chest_xray",
        root / "ZhangLabData" / "CellData" / "chest_xray",
    ]


def find_zhanglab_root(root: Path) -> Path | None:
    """Return the first candidate holding ``train`` and ``test`` folders, or ``None``."""
    for candidate in zhanglab_candidates(root):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def _class_folder(split_dir: Path, label: int, required: bool) -> Path | None:
    names = _ZHANGLAB_CLASSES[label]
    looked = f"{names[0].upper()} or {names[1]}"
    found = (
        [d for d in split_dir.iterdir() if d.is_dir() and d.name.lower() in names]
        if split_dir.is_dir()
        else []
    )
    if len(found) > 1:
        msg = f"ZhangLab: ambiguous class folders in {split_dir}: {[d.name for d in found]}"
        raise ValueError(msg)
    if found:
        return found[0]
    if required:
        msg = (
            f"ZhangLab: no {_ZHANGLAB_KEYS[label]} folder in {split_dir} (looked for {looked}, any case); "
            f"expected {ZHANGLAB_LAYOUT}"
        )
        raise FileNotFoundError(msg)
    return None


def _class_images(split_dir: Path, label: int, required: bool) -> list[Path]:
    folder = _class_folder(split_dir, label, required)
    if folder is None:
        return []
    images = list_images(folder)
    if required and not images:
        msg = f"ZhangLab: class folder {folder} holds no images (looked for {sorted(IMAGE_SUFFIXES)})"
        raise FileNotFoundError(msg)
    return images


class ZhangLab(ChestXRayDataModule):
    """ZhangLab / Kermany pediatric chest X-rays (normal versus pneumonia), SQUID/SimSID protocol.

    Args:
        root: Folder holding ``chest_xray`` (or the ``chest_xray`` folder itself, or the original
            ``CellData/chest_xray`` nesting). With ``download=True`` it is created if missing.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loading workers.
        train_augmentations: Training augmentations; when neither this nor ``augmentations`` is
            given, the SimSID default (:func:`simsid_train_augmentation`) is used.
        val_augmentations: Validation augmentations.
        test_augmentations: Test augmentations.
        augmentations: Augmentations for every split without its own.
        seed: anomalib's seed (unused by this protocol's splits; see ``split_seed``).
        val_source: Where validation comes from: ``"auto"`` (the ``val`` folder when it holds both
            labels, otherwise a draw), ``"draw"`` (the paper's draw from train + val) or ``"folder"``.
        val_size: Images drawn from the training pool (both labels, label-agnostic) for validation;
            unused when validation is the ``val`` folder.
        split_seed: Seed of the validation draw and of the contamination draw.
        positive_ratio: Fraction of normal images in the training set; below 1, seeded abnormal
            images from the pool replace normals (the original took them in listing order).
        on_bad_image: ``"raise"`` (default) or ``"skip"`` unreadable files, see :class:`ChestXRayDataModule`.
        image_cache / image_cache_size: decode and resize every image once into a uint8 cache
            (``"memory"`` or ``"file"``; side: the model's ``img_size``), see :class:`ChestXRayDataModule`.
        download: Fetch ``ChestXRay2017.zip`` from Mendeley Data (CC BY 4.0) when no layout is found.
        download_url: Where to download from (a mirror, or a ``file://`` URL).
        download_sha256: Expected sha256 of the archive; required for downloading because the
            project could not record it (see :mod:`anomalib_simsid.data.download`).
        download_size: Expected archive size in bytes (0 skips the size check).
    """

    def __init__(
        self,
        root: str,
        train_batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        seed: int = 0,
        val_source: str = "auto",
        val_size: int = 200,
        split_seed: int = 0,
        positive_ratio: float = 1.0,
        on_bad_image: str = "raise",
        image_cache: str | None = None,
        image_cache_size: int | None = None,
        download: bool = False,
        download_url: str = ZHANGLAB_URL,
        download_sha256: str = ZHANGLAB_SHA256,
        download_size: int = ZHANGLAB_SIZE,
    ) -> None:
        super().__init__(
            root=root,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            seed=seed,
            split_seed=split_seed,
            positive_ratio=positive_ratio,
            on_bad_image=on_bad_image,
            image_cache=image_cache,
            image_cache_size=image_cache_size,
        )
        if val_source not in VAL_SOURCES:
            msg = f"val_source must be one of {VAL_SOURCES}, got {val_source!r}"
            raise ValueError(msg)
        if val_size < 2:
            msg = f"val_size must be at least 2 (validation needs both labels), got {val_size}"
            raise ValueError(msg)
        self.val_source = val_source
        self.val_size = val_size
        self.download = download
        self.download_url = download_url
        self.download_sha256 = download_sha256
        self.download_size = download_size

    def prepare_data(self) -> None:
        """Download the dataset once (rank 0) when asked to and no layout is present."""
        if self.download and find_zhanglab_root(self.root) is None:
            download_dataset(
                self.root / "chest_xray",
                url=self.download_url,
                sha256=self.download_sha256,
                size=self.download_size,
                find_root=find_zhanglab_root_in_archive,
                archive_name=ZHANGLAB_ARCHIVE,
            )

    def layout_root(self) -> Path:
        """Return the ``chest_xray`` folder in use, with an error naming every place looked at."""
        if self.download:
            self.prepare_data()
        self._require_root(ZHANGLAB_LAYOUT)
        found = find_zhanglab_root(self.root)
        if found is None:
            looked = ", ".join(str(c) for c in zhanglab_candidates(self.root))
            msg = (
                f"ZhangLab: no train/ and test/ folders found; looked in {looked}; expected {ZHANGLAB_LAYOUT}"
            )
            raise FileNotFoundError(msg)
        return found

    def build_samples(self) -> pd.DataFrame:
        """Official test; validation from ``val/`` or drawn (``val_source``); normals train."""
        source = self.layout_root()
        train = {0: _class_images(source / "train", 0, required=True)}
        train[1] = _class_images(source / "train", 1, required=False)
        official_val = {label: _class_images(source / "val", label, required=False) for label in (0, 1)}
        test = {label: _class_images(source / "test", label, required=True) for label in (0, 1)}
        has_val = all(official_val.values())
        if self.val_source == "folder" and not has_val:
            msg = (
                f"ZhangLab: val_source='folder' needs images in both {source / 'val' / 'NORMAL'} and "
                f"{source / 'val' / 'PNEUMONIA'}; expected {ZHANGLAB_LAYOUT}"
            )
            raise FileNotFoundError(msg)
        if self.val_source == "folder" or (self.val_source == "auto" and has_val):
            rank_zero_info(
                f"ZhangLab: validation is the folder {source / 'val'} ({len(official_val[0])} normal + "
                f"{len(official_val[1])} pneumonia); val_size is unused (val_source='draw' draws it instead)"
            )
            normals = [(f"NORMAL/{p.name}", p) for p in train[0]]
            abnormals = [(f"PNEUMONIA/{p.name}", p) for p in train[1]]
            val = [(p, label) for label in (0, 1) for p in official_val[label]]
        else:
            normals, abnormals, val = self._draw_validation(source, train, official_val)
        if self.positive_ratio < 1.0 and not abnormals:
            msg = (
                f"ZhangLab: positive_ratio={self.positive_ratio} needs pneumonia training images, but "
                f"{source / 'train'} has no PNEUMONIA images left; expected {ZHANGLAB_LAYOUT}"
            )
            raise FileNotFoundError(msg)
        keep, extra = contaminate(
            [k for k, _ in normals], [k for k, _ in abnormals], self.positive_ratio, self.split_seed
        )
        rows = sample_rows([normals[i][1] for i in keep], 0, "train")
        rows += sample_rows([abnormals[i][1] for i in extra], 1, "train")
        rows += [row for path, label in val for row in sample_rows([path], label, "val")]
        rows += sample_rows(test[0], 0, "test") + sample_rows(test[1], 1, "test")
        return self._finalize(pd.DataFrame(rows), source)

    def _draw_validation(
        self, source: Path, train: dict[int, list[Path]], official_val: dict[int, list[Path]]
    ) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]], list[tuple[Path, int]]]:
        """Draw ``val_size`` images of train + val (paper protocol); return the rest by label and the draw."""
        pool = [
            (f"{_ZHANGLAB_KEYS[label]}/{path.name}", path, label)
            for images in (train, official_val)
            for label in (0, 1)
            for path in images[label]
        ]
        if not any(label for _, _, label in pool):
            msg = (
                f"ZhangLab: drawing the validation set needs pneumonia images, but {source / 'train'} "
                f"(and {source / 'val'}) hold no PNEUMONIA images; add them, or provide val/NORMAL and "
                f"val/PNEUMONIA (val_source='folder'). Expected {ZHANGLAB_LAYOUT}"
            )
            raise FileNotFoundError(msg)
        if self.val_size >= len(pool):
            msg = f"ZhangLab: val_size={self.val_size} leaves no training images (pool of {len(pool)})"
            raise ValueError(msg)
        drawn = set(draw_order([key for key, _, _ in pool], self.split_seed, "zhanglab-val")[: self.val_size])
        rest = [item for i, item in enumerate(pool) if i not in drawn]
        normals = [(key, path) for key, path, label in rest if label == 0]
        abnormals = [(key, path) for key, path, label in rest if label == 1]
        return normals, abnormals, [(pool[i][1], pool[i][2]) for i in sorted(drawn)]


def find_zhanglab_root_in_archive(extracted: Path) -> Path | None:
    """Locate ``chest_xray`` in an extracted Mendeley archive (ChestXRay2017.zip or ZhangLabData.zip)."""
    found = find_zhanglab_root(extracted)
    if found is not None:
        return found
    for candidate in sorted(extracted.glob("*/chest_xray")) + sorted(extracted.glob("*/*/chest_xray")):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None
