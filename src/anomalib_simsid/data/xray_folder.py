"""A user's own chest X-ray folders with fixed splits: ``<root>/{train,val,test}/{normal,abnormal}``.

Hospital exports usually come already split, with an explicit validation folder. This datamodule
keeps those splits exactly as they are on disk (no redraw), trains on ``train/normal`` only, and
uses the same reader, training augmentation, bad-image policy and validation checks as the chest
X-ray protocols. A ``train/abnormal`` folder, if present, is ignored with a message: SimSID trains on
normals (use ``positive_ratio`` on the protocol datamodules to study contamination).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torchvision.transforms.v2 import Transform

from .chest import ChestXRayDataModule, list_images, sample_rows
from .image_io import IMAGE_SUFFIXES


class XRayFolder(ChestXRayDataModule):
    """Fixed ``train/val/test`` folders of normal and abnormal images (e.g. ``adult-cxr-dev``).

    Args:
        root: Folder holding ``train/<normal_dir>``, ``val/{<normal_dir>,<abnormal_dir>}`` and
            ``test/{<normal_dir>,<abnormal_dir>}``.
        normal_dir: Name of the normal class folder in every split.
        abnormal_dir: Name of the abnormal class folder in ``val`` and ``test``.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loading workers.
        train_augmentations: Training augmentations; SimSID's default when neither this nor
            ``augmentations`` is given.
        val_augmentations: Validation augmentations.
        test_augmentations: Test augmentations.
        augmentations: Augmentations for every split without its own.
        seed: anomalib's seed (the splits are the folders, nothing is drawn).
        on_bad_image: ``"raise"`` (default) or ``"skip"`` unreadable files.
        image_cache / image_cache_size: decode and resize every image once into a uint8 cache
            (``"memory"`` or ``"file"``; side: the model's ``img_size``), see :class:`ChestXRayDataModule`.
    """

    split_options: tuple[str, ...] = ()  # nothing is drawn: the log names no split_seed or positive_ratio

    def __init__(
        self,
        root: str,
        normal_dir: str = "normal",
        abnormal_dir: str = "abnormal",
        train_batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        seed: int = 0,
        on_bad_image: str = "raise",
        image_cache: str | None = None,
        image_cache_size: int | None = None,
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
            on_bad_image=on_bad_image,
            image_cache=image_cache,
            image_cache_size=image_cache_size,
        )
        self.normal_dir = normal_dir
        self.abnormal_dir = abnormal_dir

    @property
    def layout(self) -> str:
        """The expected layout, for error messages."""
        n, a = self.normal_dir, self.abnormal_dir
        return (
            f"<root>/train/{n}/*, <root>/val/{{{n},{a}}}/*, <root>/test/{{{n},{a}}}/* "
            "(PNG, JPEG, TIFF or DICOM)"
        )

    def _images(self, split: str, class_dir: str) -> list[Path]:
        folder = self.root / split / class_dir
        if not folder.is_dir():
            present = (
                sorted(d.name for d in (self.root / split).iterdir() if d.is_dir())
                if (self.root / split).is_dir()
                else []
            )
            found = f" (found folders {present})" if present else ""
            msg = f"{self.name}: missing folder {folder}{found}; expected {self.layout}"
            raise FileNotFoundError(msg)
        images = list_images(folder)
        if not images:
            msg = f"{self.name}: class folder {folder} holds no images (looked for {sorted(IMAGE_SUFFIXES)})"
            raise FileNotFoundError(msg)
        return images

    def build_samples(self) -> pd.DataFrame:
        """One row per file, split and label as the folders say."""
        self._require_root(self.layout)
        rows = sample_rows(self._images("train", self.normal_dir), 0, "train")
        for split in ("val", "test"):
            rows += sample_rows(self._images(split, self.normal_dir), 0, split)
            rows += sample_rows(self._images(split, self.abnormal_dir), 1, split)
        if (self.root / "train" / self.abnormal_dir).is_dir():
            rank_zero_info(
                f"{self.name}: ignoring {self.root / 'train' / self.abnormal_dir} (trains on normals)"
            )
        return self._finalize(pd.DataFrame(rows), self.root)
