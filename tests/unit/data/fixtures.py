"""Tiny fake chest X-ray datasets in every supported layout (16x16 images, a few per class).

Every image has distinct random content so that files cannot be confused; the writers return the
folder a datamodule's ``root`` should point at.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16


def write_image(path: Path, seed: int = 0, size: int = SIZE) -> Path:
    """An 8-bit grayscale image, format from the suffix (PNG or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file short, like an interrupted download."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def write_text_as_image(path: Path) -> Path:
    """A text file with an image suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image\n")
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float | list[float], float | list[float]] | None = None,
    bits_stored: int | None = None,
) -> Path:
    """A minimal uncompressed single-frame DICOM (explicit VR little endian) written with pydicom.

    ``bits_stored`` defaults to the dtype's bits (``BitsAllocated``).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    ds.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    bits = 8 * pixels.dtype.itemsize
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------- ZhangLab

ZHANGLAB_COUNTS = {"train": (12, 20), "val": (2, 2), "test": (4, 6)}


def make_zhanglab(
    root: Path,
    nesting: str = "official",
    counts: dict[str, tuple[int, int]] | None = None,
    suffix: str = ".jpeg",
) -> Path:
    """Write a ZhangLab tree; ``nesting`` is where ``chest_xray`` sits.

    ``official``: root/chest_xray; ``direct``: root is chest_xray; ``celldata``: root/CellData/chest_xray.

    A split with ``None`` counts (or absent from ``counts``) is not created. Returns the dataset root.
    """
    counts = ZHANGLAB_COUNTS if counts is None else counts
    base = {"official": root / "chest_xray", "direct": root, "celldata": root / "CellData" / "chest_xray"}[
        nesting
    ]
    seed = 0
    for split, pair in counts.items():
        if pair is None:
            continue
        for folder, count in zip(("NORMAL", "PNEUMONIA"), pair, strict=True):
            (base / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = (
                    f"IM-{seed:04d}-0001{suffix}"
                    if folder == "NORMAL"
                    else f"person{seed}_bacteria_{i}{suffix}"
                )
                write_image(base / split / folder / name, seed=seed)
                seed += 1
    return root


def zhanglab_zip(counts: dict[str, tuple[int, int]] | None = None, top: str = "chest_xray") -> bytes:
    """A fake ChestXRay2017.zip (with a __MACOSX entry, as real macOS-made archives have)."""
    counts = counts or {"train": (6, 6), "test": (2, 2)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        seed = 0
        for split, (n_normal, n_abnormal) in counts.items():
            for folder, count in (("NORMAL", n_normal), ("PNEUMONIA", n_abnormal)):
                for i in range(count):
                    image = io.BytesIO()
                    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
                    Image.fromarray(pixels, mode="L").save(image, format="JPEG")
                    archive.writestr(f"{top}/{split}/{folder}/img{seed}_{i}.jpeg", image.getvalue())
                    seed += 1
        archive.writestr(f"__MACOSX/{top}/._junk", b"\0")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------- CheXpert

CHEXPERT_FINDINGS = (
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
)
CHEXPERT_COLUMNS = (
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    *CHEXPERT_FINDINGS,
    "Support Devices",
)


def _chexpert_row(path: str, view: str, ap_pa: str, labels: dict[str, float]) -> str:
    values = {"Path": path, "Sex": "Female", "Age": "60", "Frontal/Lateral": view, "AP/PA": ap_pa}
    for column in CHEXPERT_COLUMNS[5:]:
        value = labels.get(column)
        values[column] = "" if value is None else f"{float(value):.1f}"
    return ",".join(values[c] for c in CHEXPERT_COLUMNS)


def make_chexpert_csv(root: Path, release: str = "CheXpert-v1.0-small", patients: int = 30) -> Path:
    """A CheXpert release: per patient one PA study, plus AP/lateral distractors.

    Patient p (0-based) has PA frontal images labelled by ``p % 6``: 0-1 normal (No Finding 1, one
    with Support Devices), 2 Pleural Effusion, 3 Edema + uncertain Pneumonia, 4 only uncertain
    Cardiomegaly (no No Finding), 5 Cardiomegaly. Every 5th patient has a second normal PA study.
    Validation: 3 normal + 3 abnormal PA, 1 AP. Returns ``root`` (the release folder sits inside).
    """
    base = root / release
    lines = [",".join(CHEXPERT_COLUMNS)]
    kinds = [
        {"No Finding": 1},
        {"No Finding": 1, "Support Devices": 1},
        {"Pleural Effusion": 1, "Lung Opacity": 0},
        {"Edema": 1, "Pneumonia": -1},
        {"Cardiomegaly": -1},
        {"Cardiomegaly": 1},
    ]
    seed = 0
    for p in range(patients):
        studies = [kinds[p % 6]] + ([{"No Finding": 1}] if p % 5 == 0 else [])
        for s, labels in enumerate(studies, start=1):
            rel = f"{release}/train/patient{p:05d}/study{s}"
            write_image(root / rel / "view1_frontal.jpg", seed=seed)
            lines.append(_chexpert_row(f"{rel}/view1_frontal.jpg", "Frontal", "PA", labels))
            seed += 1
        # distractors that the PA-frontal filter must drop (not even written to disk)
        lines.append(
            _chexpert_row(
                f"{release}/train/patient{p:05d}/study9/view1_frontal.jpg", "Frontal", "AP", {"No Finding": 1}
            )
        )
        lines.append(
            _chexpert_row(
                f"{release}/train/patient{p:05d}/study9/view2_lateral.jpg", "Lateral", "", {"No Finding": 1}
            )
        )
    base.mkdir(parents=True, exist_ok=True)
    (base / "train.csv").write_text("\n".join(lines) + "\n")
    valid = [",".join(CHEXPERT_COLUMNS)]
    for v in range(6):
        rel = f"{release}/valid/patient{90000 + v}/study1/view1_frontal.jpg"
        write_image(root / rel, seed=1000 + v)
        valid.append(_chexpert_row(rel, "Frontal", "PA", {"No Finding": 1} if v < 3 else {"Edema": 1}))
    valid.append(
        _chexpert_row(f"{release}/valid/patient90009/study1/view1_frontal.jpg", "Frontal", "AP", {"Edema": 1})
    )
    (base / "valid.csv").write_text("\n".join(valid) + "\n")
    return root


def make_chexpert_folders(
    root: Path, counts: tuple[int, int, int, int, int, int] = (8, 6, 3, 3, 4, 4)
) -> Path:
    """Authors' layout; counts = train normal/abnormal, val normal/abnormal, test normal/abnormal.

    Test abnormal images i are listed in diseases.txt: even i Effusion, odd i Cardiomegaly (and
    i == 1 also Effusion), i == 3 not listed.
    """
    names = ("train_256_pa", "train_256_pa", "val_256_pa", "val_256_pa", "our_test_256_pa", "our_test_256_pa")
    seed = 0
    for (folder, klass), count in zip(
        ((n, c) for n, c in zip(names, ("normal_256", "abnormal_256") * 3, strict=True)), counts, strict=True
    ):
        (root / folder / klass).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write_image(root / folder / klass / f"{klass}_{i}.png", seed=seed)
            seed += 1
    lines = []
    for i in range(counts[5]):
        if i == 3:
            continue
        diseases = (
            ["Effusion"] if i % 2 == 0 else (["Cardiomegaly", "Effusion"] if i == 1 else ["Cardiomegaly"])
        )
        lines.append("/".join([f"abnormal_256_{i}.png", *diseases]))
    (root / "our_test_256_pa" / "diseases.txt").write_text("\n".join(lines) + "\n")
    return root


# ----------------------------------------------------------------------------------------- COVIDx


def make_covidx(
    root: Path,
    train: tuple[int, int, int] = (30, 10, 10),
    test: tuple[int, int, int] = (4, 4, 8),
    train_list: str = "train.txt",
    test_list: str = "test.txt",
) -> Path:
    """A COVIDx release: counts are normal / pneumonia / COVID-19; one list line per image.

    Two consecutive COVID-19 images share a patient id (patients with several images).
    """
    seed = 0
    for split, counts, list_name in (("train", train, train_list), ("test", test, test_list)):
        lines = []
        for label, count in zip(("normal", "pneumonia", "COVID-19"), counts, strict=True):
            for i in range(count):
                name = f"{split}_{label.lower()}_{i}.png"
                patient = f"{label}-{i - i % 2}" if label == "COVID-19" else f"{label}-{i}"
                write_image(root / split / name, seed=seed)
                lines.append(f"{patient} {name} {label} fakesource")
                seed += 1
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root
