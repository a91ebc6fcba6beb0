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
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import Transform

from .augmentation import simsid_train_augmentation
from .image_cache import IMAGE_CACHE, build_cache
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
        self.cache: torch.Tensor | None = None  # (N, S, S) uint8, see :mod:`.image_cache`
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
        if self.cache is None:
            image = read_image(row.image_path)
        else:
            image = (self.cache[index].float() / 255).expand(3, -1, -1).contiguous()
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
        image_cache: str | None = None,
        image_cache_size: int | None = None,
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
        if image_cache is not None and image_cache not in IMAGE_CACHE:
            msg = f"image_cache must be one of {IMAGE_CACHE} or None, got {image_cache!r}"
            raise ValueError(msg)
        self.image_cache = image_cache
        self.image_cache_size = image_cache_size

    def _cache_size(self) -> int:
        """Return the cached side: ``image_cache_size``, else the model's ``img_size`` (one source)."""
        if self.image_cache_size is not None:
            return self.image_cache_size
        model = self.trainer.lightning_module if self.trainer is not None else None
        size = model.hparams.get("img_size") if model is not None else None
        if size is None:
            msg = (
                f"{self.name}: image_cache needs the model's img_size: fit through a trainer or pass "
                "image_cache_size"
            )
            raise ValueError(msg)
        return int(size)

    def _fill_caches(self) -> None:
        size = self._cache_size()
        for dataset in (self.train_data, self.val_data, self.test_data):
            dataset.cache = build_cache(list(dataset.samples.image_path), size, self.image_cache, self.root)
        rank_zero_info(f"{self.name}: images decoded once into a {size} px uint8 cache ({self.image_cache})")

    def _loader(self, loader: DataLoader) -> DataLoader:
        """Pin host memory when training on a GPU (faster, asynchronous copies to the device)."""
        if self.trainer is not None and self.trainer.strategy.root_device.type == "cuda":
            loader.pin_memory = True
        return loader

    def train_dataloader(self) -> DataLoader:
        """Anomalib's training loader, pinned on GPU (:meth:`_loader`)."""
        return self._loader(super().train_dataloader())

    def val_dataloader(self) -> DataLoader:
        """Anomalib's validation loader, pinned on GPU (:meth:`_loader`)."""
        return self._loader(super().val_dataloader())

    def test_dataloader(self) -> DataLoader:
        """Anomalib's test loader, pinned on GPU (:meth:`_loader`)."""
        return self._loader(super().test_dataloader())

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
        if self.image_cache is not None:
            self._fill_caches()
        counts = samples.groupby(["split", "label_index"]).size().unstack(fill_value=0)
        rank_zero_info(f"{self.name} splits (rows: split, columns: 0 normal / 1 abnormal):\n{counts}")

    def _create_test_split(self) -> None:
        """Keep the protocol's test set: anomalib must not move training normals into it."""
