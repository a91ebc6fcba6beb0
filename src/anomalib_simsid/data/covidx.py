"""COVIDx CXR (COVID-Net) with a SimSID-style protocol: normal versus pneumonia or COVID-19.

Reads a release as distributed: ``<root>/{train,test}/<files>`` plus list files whose lines are
``patient_id filename label source`` (older releases omit ``source``). Labels ``normal`` and
``negative`` are 0; ``pneumonia``, ``COVID-19`` and ``positive`` are 1.

Protocol: validation = ``val_size`` images drawn from the train list, stratified by label (the
authors' ``val_squid.txt`` is not public); training = the remaining normals, minus any
image of a patient already in validation; test = the official test list (COVIDx9A: 100 normal +
300 abnormal). SimSID's shipped config used ``positive_ratio=0.7``; the default here is 1.0.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torchvision.transforms.v2 import Transform

from .chest import ChestXRayDataModule, contaminate, draw_order, sample_rows

LABELS = {"normal": 0, "negative": 0, "pneumonia": 1, "covid-19": 1, "positive": 1}
COVIDX_LAYOUT = (
    "<root>/train/<files>, <root>/test/<files> and list files <root>/<train_list>, <root>/<test_list> "
    "with lines 'patient_id filename label source'"
)


def parse_list(path: Path) -> pd.DataFrame:
    """Read a COVIDx list file into ``patient``, ``filename``, ``label_index``.

    Filenames may contain spaces, so the label is found from the end of the line: the last field
    (3-field lines) or the one before the source (4 fields or more).
    """
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3:
            msg = (
                f"COVIDx: {path} line {number}: {line!r} has {len(fields)} field(s); expected {COVIDX_LAYOUT}"
            )
            raise ValueError(msg)
        if len(fields) > 3 and fields[-2].lower() in LABELS:
            label, filename = fields[-2], " ".join(fields[1:-2])
        elif fields[-1].lower() in LABELS:
            label, filename = fields[-1], " ".join(fields[1:-1])
        else:
            label = fields[2] if len(fields) <= 4 else fields[-2]
            msg = (
                f"COVIDx: {path} line {number}: unknown label {label!r} in {line!r}; "
                f"expected one of normal, negative, pneumonia, COVID-19, positive"
            )
            raise ValueError(msg)
        rows.append({"patient": fields[0], "filename": filename, "label_index": LABELS[label.lower()]})
    if not rows:
        msg = f"COVIDx: list file {path} is empty; expected lines 'patient_id filename label source'"
        raise ValueError(msg)
    return pd.DataFrame(rows).drop_duplicates("filename").reset_index(drop=True)


def resolve_list(root: Path, name: str, default: str, argument: str) -> Path:
    """Find the list file ``root/name``, or for a missing default name the single ``<split>*.txt``."""
    path = root / name
    if path.is_file():
        return path
    prefix = default.split(".")[0]
    candidates = sorted(p for p in root.glob(f"{prefix}*.txt") if p.is_file())
    if name == default and len(candidates) == 1:
        return candidates[0]
    found = f"; candidates found: {[p.name for p in candidates]}" if candidates else ""
    msg = (
        f"COVIDx: list file {path} does not exist{found}; pass {argument}=<file name>. "
        f"Expected {COVIDX_LAYOUT}"
    )
    raise FileNotFoundError(msg)


class COVIDx(ChestXRayDataModule):
    """COVIDx CXR releases (e.g. COVIDx9A, CXR-3, CXR-4 list files): normal versus pneumonia/COVID-19.

    Args:
        root: Folder with ``train/``, ``test/`` and the list files.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loading workers.
        train_augmentations: Training augmentations; when neither this nor ``augmentations`` is
            given, the SimSID default (:func:`simsid_train_augmentation`) is used.
        val_augmentations: Validation augmentations.
        test_augmentations: Test augmentations.
        augmentations: Augmentations for every split without its own.
        seed: anomalib's seed (unused by this protocol's splits; see ``split_seed``).
        train_list: Train list file in ``root``; if the default is missing, the single
            ``train*.txt`` present (e.g. ``train_COVIDx9A.txt``) is used.
        test_list: Test list file in ``root``, autodetected like ``train_list``.
        val_size: Images drawn from the train list for validation, stratified by label.
        split_seed: Seed of the validation draw and of the contamination draw.
        positive_ratio: Fraction of normal images in the training set (SimSID's config used 0.7).
        on_bad_image: ``"raise"`` (default) or ``"skip"`` unreadable files.
        image_cache / image_cache_size: decode and resize every image once into a uint8 cache
            (``"memory"`` or ``"file"``; side: the model's ``img_size``), see :class:`ChestXRayDataModule`.
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
        train_list: str = "train.txt",
        test_list: str = "test.txt",
        val_size: int = 200,
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
            split_seed=split_seed,
            positive_ratio=positive_ratio,
            on_bad_image=on_bad_image,
            image_cache=image_cache,
            image_cache_size=image_cache_size,
        )
        if val_size < 2:
            msg = f"val_size must be at least 2 (validation needs both labels), got {val_size}"
            raise ValueError(msg)
        self.train_list = train_list
        self.test_list = test_list
        self.val_size = val_size

    def build_samples(self) -> pd.DataFrame:
        """Stratified validation draw from the train list; remaining normals train; official test."""
        self._require_root(COVIDX_LAYOUT)
        for split in ("train", "test"):
            if not (self.root / split).is_dir():
                msg = f"COVIDx: image folder {self.root / split} does not exist; expected {COVIDX_LAYOUT}"
                raise FileNotFoundError(msg)
        train = parse_list(resolve_list(self.root, self.train_list, "train.txt", "train_list"))
        test = parse_list(resolve_list(self.root, self.test_list, "test.txt", "test_list"))
        train["image_path"] = [str(self.root / "train" / name) for name in train.filename]
        test["image_path"] = [str(self.root / "test" / name) for name in test.filename]

        normals = train[train.label_index == 0].reset_index(drop=True)
        abnormals = train[train.label_index == 1].reset_index(drop=True)
        n_abnormal = round(self.val_size * len(abnormals) / len(train))
        n_abnormal = min(max(n_abnormal, 1), self.val_size - 1, len(abnormals))
        if abnormals.empty or self.val_size - n_abnormal >= len(normals):
            msg = (
                f"COVIDx: val_size={self.val_size} does not fit the train list "
                f"({len(normals)} normal, {len(abnormals)} abnormal): validation needs both labels "
                f"and training needs normals left"
            )
            raise ValueError(msg)
        val_normal = normals.iloc[draw_order(list(normals.filename), self.split_seed, "covidx-val-normal")]
        val_normal = val_normal.iloc[: self.val_size - n_abnormal]
        val_abnormal = abnormals.iloc[
            draw_order(list(abnormals.filename), self.split_seed, "covidx-val-abnormal")
        ]
        val_abnormal = val_abnormal.iloc[:n_abnormal]
        val = pd.concat([val_normal, val_abnormal])
        held_out = set(val.filename)
        same_patient = set(val.patient)
        normals = normals[~normals.filename.isin(held_out) & ~normals.patient.isin(same_patient)]
        abnormals = abnormals[~abnormals.filename.isin(held_out) & ~abnormals.patient.isin(same_patient)]
        keep, extra = contaminate(
            list(normals.filename), list(abnormals.filename), self.positive_ratio, self.split_seed
        )

        rows = sample_rows(list(normals.image_path.iloc[keep]), 0, "train")
        rows += sample_rows(list(abnormals.image_path.iloc[extra]), 1, "train")
        rows += [
            {"image_path": p, "label_index": int(y), "split": "val"}
            for p, y in zip(val.image_path, val.label_index, strict=True)
        ]
        rows += [
            {"image_path": p, "label_index": int(y), "split": "test"}
            for p, y in zip(test.image_path, test.label_index, strict=True)
        ]
        return self._finalize(pd.DataFrame(rows), self.root)
