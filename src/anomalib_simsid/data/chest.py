"""The protocol pieces every chest X-ray datamodule shares, so that they cannot drift apart.

Seeded draws that do not depend on listing order, training-set contamination, sample-table rows,
and :class:`ChestXRayDataModule`: the shared arguments, the bad-image policy and the validation
checks. ``ZhangLab``, ``CheXpert``, ``COVIDx`` and ``XRayFolder`` are siblings built on it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torchvision.transforms.v2 import Transform

from .base import ON_BAD_IMAGE, SPLITS, SplitDataModule, apply_bad_image_policy
from .image_io import is_image_file


def list_images(folder: Path) -> list[Path]:
    """Image files (:func:`is_image_file`) directly in ``folder``, sorted; hidden files skipped."""
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and is_image_file(entry)
    )


def draw_order(keys: Sequence[str], seed: int, salt: str) -> list[int]:
    """Order the indices of ``keys`` pseudo-randomly by a seed.

    Ranking by ``sha256(salt, seed, key)`` depends only on the keys themselves: not on listing order,
    the operating system or the numpy version, and adding a file does not reshuffle the others.
    """

    def rank(index: int) -> tuple[bytes, str]:
        return hashlib.sha256(f"{salt}\0{seed}\0{keys[index]}".encode()).digest(), keys[index]

    return sorted(range(len(keys)), key=rank)


def contaminate(
    normal_keys: Sequence[str], abnormal_keys: Sequence[str], positive_ratio: float, seed: int
) -> tuple[list[int], list[int]]:
    """Pick the training set for ``positive_ratio`` (fraction of normals), keeping its size.

    With T normals available, keeps ⌊T·r⌋ normals and adds T − ⌊T·r⌋ abnormal images, both by a
    seeded draw. The original code took the *first* files in directory-listing order instead, which
    is not reproducible across filesystems. Returns indices into the two key lists.
    """
    total = len(normal_keys)
    if positive_ratio >= 1.0:
        return list(range(total)), []
    keep = math.floor(round(total * positive_ratio, 9))
    extra = total - keep
    if extra > len(abnormal_keys):
        msg = (
            f"positive_ratio={positive_ratio} needs {extra} abnormal training images, "
            f"but only {len(abnormal_keys)} are left in the abnormal pool"
        )
        raise ValueError(msg)
    normals = sorted(draw_order(normal_keys, seed, "contamination-normal")[:keep])
    abnormals = sorted(draw_order(abnormal_keys, seed, "contamination-abnormal")[:extra])
    return normals, abnormals


def sample_rows(paths: Sequence[Path | str], label: int, split: str) -> list[dict]:
    """Rows of the samples table."""
    return [{"image_path": str(path), "label_index": int(label), "split": split} for path in paths]


class ChestXRayDataModule(SplitDataModule):
    """Shared arguments and checks of the chest X-ray datamodules (not used directly).

    Every selected file of every split is checked cheaply at setup (header, PNG CRCs, JPEG end
    marker; no full decode: for ZhangLab's 5,840 files about 3 s on 2 cores, 9 s from a cold disk
    cache). ``on_bad_image="raise"`` then stops with one error naming every bad file; ``"skip"``
    drops them with a warning naming them. Files are checked after the split is drawn, so a bad
    file shrinks its split rather than changing which files the others contain.

    ``image_cache="memory"`` (or ``"file"``, kept beside the data) decodes and resizes every image
    once at setup into a uint8 cache at the model's ``img_size`` (or ``image_cache_size``), so an
    epoch reads no file (see :mod:`.image_cache`). Off by default: it rounds to 8 bits and augments
    the resized image.
    """

    # Options that decide the drawn splits, named in the split log (a subclass without any sets ()).
    split_options: tuple[str, ...] = ("split_seed", "positive_ratio")

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
        split_seed: int = 0,
        positive_ratio: float = 1.0,
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
            image_cache=image_cache,
            image_cache_size=image_cache_size,
        )
        if not 0.0 < positive_ratio <= 1.0:
            msg = (
                f"positive_ratio must be in (0, 1] (fraction of normal training images), got {positive_ratio}"
            )
            raise ValueError(msg)
        if on_bad_image not in ON_BAD_IMAGE:
            msg = f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}"
            raise ValueError(msg)
        self.split_seed = split_seed
        self.positive_ratio = positive_ratio
        self.on_bad_image = on_bad_image

    def _require_root(self, layout: str) -> None:
        if not self.root.exists():
            msg = f"{self.name}: dataset root {self.root} does not exist; expected {layout}"
            raise FileNotFoundError(msg)

    def _finalize(self, samples: pd.DataFrame, source: Path) -> pd.DataFrame:
        """Apply the bad-image policy, check the validation labels and log the split sizes."""
        samples = apply_bad_image_policy(samples.reset_index(drop=True), self.on_bad_image, self.name)
        val_labels = set(samples.label_index[samples.split == "val"])
        if val_labels != {0, 1}:
            msg = (
                f"{self.name}: the validation split must hold normal and abnormal images (anomalib fits "
                f"thresholds on it), found labels {sorted(val_labels)}"
            )
            raise ValueError(msg)
        labels = samples.groupby(["split", "label_index"]).size()
        sizes = ", ".join(
            f"{split} {labels.get((split, 0), 0)} normal + {labels.get((split, 1), 0)} abnormal"
            for split in SPLITS
        )
        options = ", ".join(f"{name}={getattr(self, name)}" for name in self.split_options)
        rank_zero_info(f"{self.name} from {source}: {sizes} ({options or 'splits as on disk'})")
        return samples
