"""Shared dataset and datamodule for sample lists with fixed train / validation / test splits.

Every chest X-ray protocol (and DigitAnatomy) ends in the same place: a table of files with a
split and a label. Subclasses only build that table in :meth:`SplitDataModule.build_samples`; this
module turns it into anomalib datasets with ``val_split_mode=from_dir``, so anomalib never moves
images between splits behind the protocol's back.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from anomalib.data import AnomalibDataModule, ImageItem
from anomalib.data.datasets.base import AnomalibDataset
from anomalib.data.utils import TestSplitMode, ValSplitMode
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchvision.transforms.v2 import Transform

from .augmentation import simsid_train_augmentation
from .image_io import ImageReadError, find_unreadable, read_image

SPLITS = ("train", "val", "test")
ON_BAD_IMAGE = ("raise", "skip")
_MAX_NAMED = 20


def named(items: Sequence[str]) -> str:
    """One item per line for an error message, cut after a screenful."""
    shown = "\n  ".join(items[:_MAX_NAMED])
    more = f"\n  ... and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
    return f"\n  {shown}{more}"


def apply_bad_image_policy(samples: pd.DataFrame, policy: str, name: str) -> pd.DataFrame:
    """Check every listed image cheaply (see :func:`check_image`) and raise on, or drop, the bad ones.

    Done at setup so that a truncated or mislabelled file stops the run before training, naming
    every bad file at once, instead of crashing a batch (or the test after a whole fit).
    """
    bad = find_unreadable(samples.image_path)
    if not bad:
        return samples
    if policy == "skip":
        rank_zero_warn(f"{name}: skipping {len(bad)} unreadable image(s):{named(list(bad.values()))}")
        return samples[~samples.image_path.isin(bad)].reset_index(drop=True)
    msg = (
        f"{name}: {len(bad)} unreadable image(s) (fix or remove them, or pass on_bad_image='skip' to "
        f"drop them):{named(list(bad.values()))}"
    )
    raise ImageReadError(msg)


def interleave_labels(rows: pd.DataFrame) -> pd.DataFrame:
    """Spread the labels evenly through ``rows``, keeping each label's own order.

    Evaluation sets are listed class by class, so ``--trainer.limit_val_batches`` (or a truncated
    test) would see normals only and report an AUROC of 0. Ranking each row by its position within
    its label, as a fraction of that label's count, starts with one row of each label and keeps
    every longer prefix near the overall proportion; the order is deterministic and needs no seed.
    """
    labels = rows.groupby("label_index").label_index
    rank = labels.cumcount() / labels.transform("size")
    return rows.assign(_rank=rank).sort_values(["_rank", "label_index"], kind="stable").drop(columns="_rank")


class SampleDataset(AnomalibDataset):
    """An anomalib image dataset over a ``samples`` table, read with :func:`read_image` (16-bit safe)."""

    def __init__(self, samples: pd.DataFrame, augmentations: Transform | None = None) -> None:
        super().__init__(augmentations=augmentations)
        samples = samples.reset_index(drop=True).copy()
        samples["mask_path"] = ""
        samples.attrs["task"] = "classification"
        self.samples = samples

    @property
    def samples(self) -> pd.DataFrame:
        """The samples table, in the protocol's order."""
        return super().samples

    @samples.setter
    def samples(self, samples: pd.DataFrame) -> None:
        # anomalib's setter validates, then sorts by path, which groups the classes again; keep ours.
        AnomalibDataset.samples.fset(self, samples)
        self._samples = samples.reset_index(drop=True)

    def __getitem__(self, index: int) -> ImageItem:
        """Read one image; augmentations (and the model's resize) apply per sample."""
        row = self.samples.iloc[index]
        image = read_image(row.image_path)
        if self.augmentations:
            image = self.augmentations(image)
        return ImageItem(
            image=image, gt_label=torch.tensor(int(row.label_index)), image_path=str(row.image_path)
        )


class SplitDataModule(AnomalibDataModule):
    """Base datamodule: subclasses return a table with ``image_path``, ``label_index`` and ``split``."""

    def __init__(
        self,
        root: str | Path,
        train_batch_size: int = 16,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        seed: int = 0,
    ) -> None:
        # Every protocol trains with SimSID's mild affine unless the user chose augmentations.
        if train_augmentations is None and augmentations is None:
            train_augmentations = simsid_train_augmentation()
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            val_split_mode=ValSplitMode.FROM_DIR,
            test_split_mode=TestSplitMode.FROM_DIR,
            seed=seed,
        )
        self.root = Path(root)

    @abstractmethod
    def build_samples(self) -> pd.DataFrame:
        """Return the protocol's samples: columns ``image_path``, ``label_index`` (0/1), ``split``."""

    def _setup(self, _stage: str | None = None) -> None:
        samples = self.build_samples()
        subsets = {split: samples[samples.split == split] for split in SPLITS}
        for split, rows in subsets.items():
            if rows.empty:
                msg = f"{self.name}: the {split} split is empty under {self.root}"
                raise ValueError(msg)
        if subsets["train"].label_index.any():
            rank_zero_info(f"{self.name}: the training split contains abnormal images (contamination)")
        self.train_data = SampleDataset(subsets["train"])
        self.val_data = SampleDataset(interleave_labels(subsets["val"]))
        self.test_data = SampleDataset(interleave_labels(subsets["test"]))
        counts = samples.groupby(["split", "label_index"]).size().unstack(fill_value=0)
        rank_zero_info(f"{self.name} splits (rows: split, columns: 0 normal / 1 abnormal):\n{counts}")

    def _create_test_split(self) -> None:
        """Keep the protocol's test set: anomalib must not move training normals into it."""
