"""Stanford CheXpert with the SQUID/SimSID protocol: frontal PA views, normal versus any finding.

Two layouts are read (see "Datasets and protocols" in ``docs/method.md``):

* the release as distributed (``CheXpert-v1.0`` or ``CheXpert-v1.0-small``): ``train.csv`` and
  ``valid.csv``. Test = ``test_size_per_class`` normal + as many abnormal PA images held out from
  the training pool by a seeded draw (the official test set is hidden; the authors' own 250 + 250
  list is not public); validation = the official ``valid.csv`` (PA); training = remaining normals.
  Every image of a test patient is also removed from training, so no patient is in both.
* the authors' preprocessed folders ``{train_256_pa,val_256_pa,our_test_256_pa}/{normal_256,abnormal_256}``
  with an optional ``our_test_256_pa/diseases.txt`` (``filename/Disease1/Disease2``).

Labels from the CSV. Normal: ``No Finding`` is 1 and no finding is positive or (still) uncertain.
Abnormal: at least one of the 12 findings is positive, i.e. every observation except ``No Finding``
and ``Support Devices`` (devices are not disease; this gives the paper's "12 abnormality types").
Uncertain (-1) labels follow ``uncertain``:

* ``"exclude"`` (default): an uncertain finding is unknown. An image with a positive finding is
  still abnormal; an image whose only findings are uncertain is dropped (neither a clean normal nor
  a confirmed abnormal).
* ``"positive"``: uncertain counts as present (U-Ones).
* ``"negative"``: uncertain counts as absent (U-Zeros); an image with only uncertain findings is normal.

Per-disease test (``test_disease``): the test set is drawn exactly as for ``"all"``, then abnormal test
images without the named disease are removed (``per_disease_mode="remove"``, default), so the test
compares normals against that disease only. The original code instead relabelled them as normal
(``"relabel"``), which scores other diseases as false positives. Under
``uncertain="exclude"``, abnormal images uncertain for the disease are dropped in both modes.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from torchvision.transforms.v2 import Transform

from .chest import ChestXRayDataModule, contaminate, draw_order, list_images, sample_rows
from .image_io import IMAGE_SUFFIXES

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
FINDINGS = OBSERVATIONS[1:-1]
UNCERTAIN_POLICIES = ("exclude", "positive", "negative")
PER_DISEASE_MODES = ("remove", "relabel")
PREPROCESSED_DIRS = ("train_256_pa", "val_256_pa", "our_test_256_pa")
CSV_DIRS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
CHEXPERT_LAYOUT = (
    "either train.csv + valid.csv of CheXpert-v1.0[-small] in <root> or <root>/CheXpert-v1.0[-small]/, "
    "or the preprocessed <root>/{train_256_pa,val_256_pa,our_test_256_pa}/{normal_256,abnormal_256}/"
)
_CSV_COLUMNS = ("Path", "Frontal/Lateral", "AP/PA", *OBSERVATIONS[:-1])


def normalise_disease(name: str) -> str:
    """Compare disease names loosely: case, underscores and hyphens do not matter."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


class CheXpert(ChestXRayDataModule):
    """CheXpert frontal PA views, normal versus abnormal, SQUID/SimSID protocol (see module docstring).

    Args:
        root: Folder with ``train.csv``/``valid.csv`` (or holding ``CheXpert-v1.0[-small]/``), or the
            authors' preprocessed folders.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data-loading workers.
        train_augmentations: Training augmentations; when neither this nor ``augmentations`` is
            given, the SimSID default (:func:`simsid_train_augmentation`) is used.
        val_augmentations: Validation augmentations.
        test_augmentations: Test augmentations.
        augmentations: Augmentations for every split without its own.
        seed: anomalib's seed (unused by this protocol's splits; see ``split_seed``).
        test_size_per_class: Normal and abnormal PA images held out as the test set (CSV layout).
        split_seed: Seed of the held-out test draw and of the contamination draw.
        positive_ratio: Fraction of normal images in the training set (SimSID's config used 0.9).
        uncertain: How uncertain (-1) labels count: ``"exclude"``, ``"positive"`` or ``"negative"``.
        test_disease: ``"all"``, or one finding (e.g. ``"Pleural Effusion"``) for a per-disease test.
        per_disease_mode: ``"remove"`` other-disease test images, or ``"relabel"`` them normal (original).
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
        test_size_per_class: int = 250,
        split_seed: int = 0,
        positive_ratio: float = 1.0,
        uncertain: str = "exclude",
        test_disease: str = "all",
        per_disease_mode: str = "remove",
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
        if uncertain not in UNCERTAIN_POLICIES:
            msg = f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}"
            raise ValueError(msg)
        if per_disease_mode not in PER_DISEASE_MODES:
            msg = f"per_disease_mode must be one of {PER_DISEASE_MODES}, got {per_disease_mode!r}"
            raise ValueError(msg)
        if test_size_per_class < 1:
            msg = f"test_size_per_class must be positive, got {test_size_per_class}"
            raise ValueError(msg)
        self.test_size_per_class = test_size_per_class
        self.uncertain = uncertain
        self.test_disease = test_disease
        self.per_disease_mode = per_disease_mode

    @property
    def per_disease(self) -> bool:
        """Whether the test is restricted to one disease."""
        return normalise_disease(self.test_disease) != "all"

    def build_samples(self) -> pd.DataFrame:
        """Detect the layout and build the protocol's table."""
        self._require_root(CHEXPERT_LAYOUT)
        if (self.root / PREPROCESSED_DIRS[0]).is_dir():
            return self._from_folders(self.root)
        for folder in (self.root, *(self.root / name for name in CSV_DIRS)):
            if (folder / "train.csv").is_file():
                return self._from_csv(folder)
        looked = [str(self.root / PREPROCESSED_DIRS[0])]
        looked += [str(f / "train.csv") for f in (self.root, *(self.root / n for n in CSV_DIRS))]
        msg = (
            f"CheXpert: no known layout under {self.root}; looked for {', '.join(looked)}; "
            f"expected {CHEXPERT_LAYOUT}"
        )
        raise FileNotFoundError(msg)

    # ------------------------------------------------------------------------------- CSV layout

    def _read_csv(self, csv_path: Path) -> pd.DataFrame:
        """Labelled frontal PA rows: key, image_path, patient, label_index and the mapped findings."""
        if not csv_path.is_file():
            msg = f"CheXpert: {csv_path} does not exist; expected {CHEXPERT_LAYOUT}"
            raise FileNotFoundError(msg)
        table = pd.read_csv(csv_path, dtype={"Path": str, "Frontal/Lateral": str, "AP/PA": str})
        missing = [column for column in _CSV_COLUMNS if column not in table.columns]
        if missing:
            msg = (
                f"CheXpert: {csv_path} lacks the column(s) {missing}; "
                f"expected the CheXpert CSV columns {list(_CSV_COLUMNS)}"
            )
            raise ValueError(msg)
        frontal = table["Frontal/Lateral"].fillna("").str.strip().str.lower() == "frontal"
        pa = table["AP/PA"].fillna("").str.strip().str.upper() == "PA"
        table = table[frontal & pa]
        raw = table[list(FINDINGS)].apply(pd.to_numeric, errors="coerce")
        invalid = (table[list(FINDINGS)].notna() & raw.isna()) | (raw.notna() & ~raw.isin([1, 0, -1]))
        if invalid.to_numpy().any():
            row, column = np.argwhere(invalid.to_numpy())[0]
            line = int(table.index[row]) + 2  # header is line 1
            value = table[FINDINGS[column]].iloc[row]
            msg = (
                f"CheXpert: {csv_path} line {line}, column {FINDINGS[column]!r}: value {value!r}; "
                "expected 1, 0, -1 or empty"
            )
            raise ValueError(msg)
        findings = (
            raw if self.uncertain == "exclude" else raw.replace(-1, 1 if self.uncertain == "positive" else 0)
        )
        positive = (findings == 1).any(axis=1)
        unsure = (findings == -1).any(axis=1)
        no_finding = pd.to_numeric(table["No Finding"], errors="coerce") == 1
        only_uncertain = (raw == -1).any(axis=1) & (self.uncertain == "negative")
        normal = ~positive & ~unsure & (no_finding | only_uncertain)
        keys = [self._key(path) for path in table["Path"]]
        frame = pd.DataFrame(
            {
                "key": keys,
                "image_path": [str(csv_path.parent / key) for key in keys],
                "patient": [
                    PurePosixPath(key).parts[1] if len(PurePosixPath(key).parts) > 2 else key for key in keys
                ],
                "label_index": np.where(positive, 1, np.where(normal, 0, -1)),
            },
            index=table.index,
        )
        frame = pd.concat([frame, findings.rename(columns=normalise_disease)], axis=1)
        return frame[frame.label_index >= 0].reset_index(drop=True)

    @staticmethod
    def _key(csv_path: str) -> str:
        """``CheXpert-v1.0-small/train/p/s/v.jpg`` -> ``train/p/s/v.jpg``: the same for both releases."""
        parts = PurePosixPath(str(csv_path).replace("\\", "/")).parts
        if parts and parts[0].lower().startswith("chexpert"):
            parts = parts[1:]
        return str(PurePosixPath(*parts))

    def _disease_column(self) -> str:
        wanted = normalise_disease(self.test_disease)
        known = {normalise_disease(f): f for f in FINDINGS}
        if wanted not in known:
            msg = (
                f"CheXpert: unknown test_disease {self.test_disease!r}; "
                f"expected 'all' or one of {list(FINDINGS)}"
            )
            raise ValueError(msg)
        return wanted

    def _from_csv(self, folder: Path) -> pd.DataFrame:
        column = self._disease_column() if self.per_disease else None
        pool = self._read_csv(folder / "train.csv")
        valid = self._read_csv(folder / "valid.csv")
        normals = pool[pool.label_index == 0].reset_index(drop=True)
        abnormals = pool[pool.label_index == 1].reset_index(drop=True)
        size = self.test_size_per_class
        if len(normals) <= size or len(abnormals) < size:
            msg = (
                f"CheXpert: test_size_per_class={size} needs more than {size} normal and at least {size} "
                f"abnormal PA images in {folder / 'train.csv'}; found {len(normals)} and {len(abnormals)}"
            )
            raise ValueError(msg)
        test_normal = normals.iloc[
            draw_order(list(normals.key), self.split_seed, "chexpert-test-normal")[:size]
        ]
        test_abnormal = abnormals.iloc[
            draw_order(list(abnormals.key), self.split_seed, "chexpert-test-abnormal")[:size]
        ]
        test_patients = set(test_normal.patient) | set(test_abnormal.patient)
        normals = normals[~normals.patient.isin(test_patients)].reset_index(drop=True)
        abnormals = abnormals[~abnormals.patient.isin(test_patients)].reset_index(drop=True)
        keep, extra = contaminate(
            list(normals.key), list(abnormals.key), self.positive_ratio, self.split_seed
        )
        if column is not None:
            test_abnormal = self._per_disease(
                test_abnormal, test_abnormal[column] == 1, test_abnormal[column] == -1
            )
        rows = sample_rows(list(normals.image_path.iloc[keep]), 0, "train")
        rows += sample_rows(list(abnormals.image_path.iloc[extra]), 1, "train")
        rows += [
            {"image_path": path, "label_index": int(label), "split": "val"}
            for path, label in zip(valid.image_path, valid.label_index, strict=True)
        ]
        rows += sample_rows(list(test_normal.image_path), 0, "test")
        rows += [
            {"image_path": path, "label_index": int(label), "split": "test"}
            for path, label in zip(test_abnormal.image_path, test_abnormal.label_index, strict=True)
        ]
        return self._finalize(pd.DataFrame(rows), folder)

    def _per_disease(self, abnormal: pd.DataFrame, has: pd.Series, unsure: pd.Series) -> pd.DataFrame:
        """Restrict the abnormal test images to one disease (``remove``) or relabel the rest (``relabel``)."""
        abnormal = abnormal[has | ~unsure].copy()
        has = has[abnormal.index]
        if self.per_disease_mode == "remove":
            return abnormal[has]
        abnormal.loc[~has, "label_index"] = 0
        return abnormal

    # ---------------------------------------------------------------------------- folder layout

    def _class_images(self, split_dir: Path, name: str, required: bool = True) -> list[Path]:
        folder = split_dir / name
        if not folder.is_dir():
            if not required:
                return []
            msg = f"CheXpert: missing folder {folder}; expected {CHEXPERT_LAYOUT}"
            raise FileNotFoundError(msg)
        images = list_images(folder)
        if required and not images:
            msg = f"CheXpert: class folder {folder} holds no images (looked for {sorted(IMAGE_SUFFIXES)})"
            raise FileNotFoundError(msg)
        return images

    def _from_folders(self, root: Path) -> pd.DataFrame:
        train_dir, val_dir, test_dir = (root / name for name in PREPROCESSED_DIRS)
        train_normal = self._class_images(train_dir, "normal_256")
        train_abnormal = self._class_images(train_dir, "abnormal_256", required=self.positive_ratio < 1.0)
        keep, extra = contaminate(
            [p.name for p in train_normal],
            [p.name for p in train_abnormal],
            self.positive_ratio,
            self.split_seed,
        )
        rows = sample_rows([train_normal[i] for i in keep], 0, "train")
        rows += sample_rows([train_abnormal[i] for i in extra], 1, "train")
        rows += sample_rows(self._class_images(val_dir, "normal_256"), 0, "val")
        rows += sample_rows(self._class_images(val_dir, "abnormal_256"), 1, "val")
        rows += sample_rows(self._class_images(test_dir, "normal_256"), 0, "test")
        test_abnormal = pd.DataFrame(sample_rows(self._class_images(test_dir, "abnormal_256"), 1, "test"))
        if self.per_disease:
            diseases = self._read_diseases(test_dir / "diseases.txt")
            wanted = normalise_disease(self.test_disease)
            known = sorted({d for names in diseases.values() for d in names})
            if wanted not in known:
                msg = (
                    f"CheXpert: test_disease {self.test_disease!r} is not in "
                    f"{test_dir / 'diseases.txt'}; found {known}"
                )
                raise ValueError(msg)
            names = [Path(p).name for p in test_abnormal.image_path]
            has = pd.Series([wanted in diseases.get(n, ()) for n in names], index=test_abnormal.index)
            test_abnormal = self._per_disease(test_abnormal, has, pd.Series(False, index=test_abnormal.index))
        rows += test_abnormal.to_dict("records")
        return self._finalize(pd.DataFrame(rows), root)

    @staticmethod
    def _read_diseases(path: Path) -> dict[str, set[str]]:
        """``diseases.txt``: one ``filename/Disease1/Disease2`` line per abnormal test image."""
        if not path.is_file():
            msg = (
                f"CheXpert: test_disease needs {path} (lines 'filename/Disease1/Disease2...'), "
                "which does not exist"
            )
            raise FileNotFoundError(msg)
        diseases: dict[str, set[str]] = {}
        for line in path.read_text().splitlines():
            parts = [part.strip() for part in line.strip().split("/") if part.strip()]
            if parts:
                diseases[parts[0]] = {normalise_disease(p) for p in parts[1:]}
        return diseases
