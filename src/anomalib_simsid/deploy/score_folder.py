"""Score every image in a folder with an exported SimSID (OpenVINO IR) or a SimSID checkpoint.

Usage::

    python -m anomalib_simsid.deploy.score_folder MODEL INPUT_DIR --output OUT_DIR [--skip-bad]

``MODEL`` is an OpenVINO ``.xml`` (from ``anomalib export`` or :func:`export_openvino`) or a SimSID
Lightning ``.ckpt``. Writes ``OUT_DIR/scores.csv`` (file, score, label, ground_truth, heatmap) and
``OUT_DIR/heatmaps/<file>.png`` overlays (``<file>`` keeps its own suffix). Ground truth is filled in
when an image sits in a class folder (``NORMAL``/``PNEUMONIA``, ``good``/``anomalous``, ...).

Images are read with :func:`anomalib_simsid.data.image_io.read_image` (8/16-bit PNG, JPEG, TIFF,
DICOM; grey replicated to 3 channels, alpha composited on black) and resized to the model size
with the antialiased bicubic resize SimSID was trained with, so a 2000-pixel X-ray gets the same
pixels as in training (the graph's own resize is not antialiased). An unreadable file stops the
run with an error naming it, or is skipped with a warning and listed in ``skipped.csv`` under
``--skip-bad``; a non-finite score is treated the same way. No file ever gets a silent wrong score.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F
from tqdm import tqdm

from anomalib_simsid.data.image_io import IMAGE_SUFFIXES, ImageReadError, read_image

from ..models.simsid.pre_processing import simsid_resize
from .checkpoint import NotSimSIDError, load_simsid
from .export import MODEL_TYPE, read_metadata

logger = logging.getLogger(__name__)

NORMAL_FOLDERS = frozenset({"normal", "good", "healthy", "negative", "no_finding", "nofinding"})
ABNORMAL_FOLDERS = frozenset(
    {
        "pneumonia",
        "abnormal",
        "anomalous",
        "anomaly",
        "bad",
        "positive",
        "covid",
        "covid-19",
        "covid19",
        "disease",
    }
)
CSV_COLUMNS = ("file", "score", "label", "ground_truth", "heatmap")
REQUIRED_OUTPUTS = ("pred_score", "pred_label", "anomaly_map")
MAX_HEATMAP_SIDE = 1024

Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class ScoredFolder:
    """What :func:`score_folder` produced: one row per scored image, and the skipped files."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    csv_path: Path | None = None

    def auroc(self) -> float | None:
        """Image AUROC over the rows with ground truth, if both classes are present."""
        labelled = [(r["score"], r["ground_truth"] == "anomalous") for r in self.rows if r["ground_truth"]]
        if len({gt for _, gt in labelled}) < 2:
            return None
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score([gt for _, gt in labelled], [s for s, _ in labelled]))


# ----------------------------------------------------------------------------------------- models


def openvino_predictor(
    path: Path, device: str = "CPU", precision: str = "f32"
) -> tuple[Predictor, int | None]:
    """Compile an IR (or ONNX) file, refusing it unless it is SimSID's; return predictor and model size.

    ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32`` reproduces PyTorch; the CPU
    plugin's default on AVX-512-BF16 CPUs is ``bf16``, which shifts normalised scores); ``auto``
    keeps the plugin default.
    """
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        msg = f"cannot read OpenVINO model {path}: {err}".splitlines()[0]
        raise NotSimSIDError(msg) from err
    metadata = read_metadata(model)
    outputs = {name for output in model.outputs for name in output.get_names()}
    channels = model.input(0).get_partial_shape()[1] if len(model.inputs) == 1 else None
    if metadata and metadata.get("model_type") != MODEL_TYPE:
        msg = f"{path} is an exported {metadata.get('model_type')!r} model, not SimSID"
        raise NotSimSIDError(msg)
    if len(model.inputs) != 1 or not set(REQUIRED_OUTPUTS) <= outputs or channels != 3:
        msg = (
            f"{path} is not an exported anomalib SimSID: expected one 3-channel image input and outputs "
            f"{REQUIRED_OUTPUTS}, got {len(model.inputs)} input(s) and outputs {sorted(outputs)}"
        )
        raise NotSimSIDError(msg)
    if not metadata:
        warnings.warn(
            f"{path} has no SimSID metadata (exported with plain `anomalib export`?): its model type "
            "cannot be verified. Export with anomalib_simsid.deploy.export_openvino to embed it.",
            stacklevel=2,
        )
    img_size = int(metadata["img_size"]) if "img_size" in metadata else _graph_resize_size(model)
    config = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(model, device, config)

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        result = compiled(batch)
        return {output.get_any_name(): value for output, value in result.items()}

    return predict, img_size


def _graph_resize_size(model: Any) -> int | None:
    """Find the square output side of the graph's first resize (anomalib's in-graph pre-processing)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Interpolate":
            shape = op.get_output_partial_shape(0)
            if shape.rank.is_static and shape[2].is_static and shape[2] == shape[3]:
                return shape[2].get_length()
    return None


def checkpoint_predictor(path: Path) -> tuple[Predictor, int]:
    """Load a SimSID checkpoint (checked) and run ``model.forward``, the function the IR exports."""
    model = load_simsid(path)

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            output = model(torch.from_numpy(batch))
        return {k: v.numpy() for k, v in output._asdict().items() if v is not None}

    return predict, int(model.hparams.img_size)


def load_predictor(
    model_path: str | Path, device: str = "CPU", precision: str = "f32"
) -> tuple[Predictor, int | None]:
    """Dispatch on the file type: OpenVINO ``.xml``/``.onnx``, or a Lightning checkpoint."""
    path = Path(model_path)
    if path.suffix == ".bin" and path.with_suffix(".xml").is_file():
        path = path.with_suffix(".xml")
    if not path.is_file():
        msg = f"model {path} does not exist"
        raise FileNotFoundError(msg)
    if path.suffix.lower() in {".xml", ".onnx"}:
        return openvino_predictor(path, device, precision)
    return checkpoint_predictor(path)


# ----------------------------------------------------------------------------------------- images


def find_images(root: Path) -> list[Path]:
    """Every image below ``root`` (recursive, sorted), hidden files and folders skipped."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def ground_truth(relative: Path) -> str:
    """``normal``/``anomalous`` from the deepest class-named folder of ``relative``, else ``""``."""
    for folder in reversed(relative.parts[:-1]):
        name = folder.lower()
        if name in NORMAL_FOLDERS:
            return "normal"
        if name in ABNORMAL_FOLDERS:
            return "anomalous"
    return ""


def load_input(path: Path, img_size: int | None) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read one image as ``(3, S, S)`` in [0, 1] at the model size, and its original ``(H, W)``."""
    image = read_image(path)
    if image.ndim != 3 or image.shape[0] != 3:
        msg = f"cannot use image {path}: read as shape {tuple(image.shape)}, expected (3, H, W)"
        raise ImageReadError(msg)
    size = (int(image.shape[1]), int(image.shape[2]))
    if img_size is not None and size != (img_size, img_size):
        image = simsid_resize((img_size, img_size))(image)
    return image, size


# ---------------------------------------------------------------------------------------- outputs


def overlay(image: torch.Tensor, anomaly_map: np.ndarray, size: tuple[int, int], text: str) -> Image.Image:
    """Draw the heatmap (jet, 40 %) over the grey image at its original size (long side <= 1024 px)."""
    from matplotlib import colormaps

    scale = min(1.0, MAX_HEATMAP_SIDE / max(size))
    out_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    grey = F.interpolate(image.mean(0)[None, None], size=out_size, mode="bilinear", align_corners=False)[0, 0]
    heat = torch.from_numpy(np.asarray(anomaly_map, dtype=np.float32).reshape(anomaly_map.shape[-2:]))
    heat = F.interpolate(heat[None, None], size=out_size, mode="bilinear", align_corners=False)[0, 0]
    colour = colormaps["jet"](heat.clamp(0, 1).numpy())[..., :3]
    blend = 0.6 * grey.clamp(0, 1).numpy()[..., None] + 0.4 * colour
    picture = Image.fromarray((blend * 255).round().astype(np.uint8), "RGB")
    if min(out_size) >= 192:  # the default bitmap font would cover a small image
        ImageDraw.Draw(picture).text((4, 4), text, fill=(255, 255, 255))
    return picture


def _batches(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def score_folder(
    model_path: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    device: str = "CPU",
    precision: str = "f32",
    batch_size: int = 8,
    skip_bad: bool = False,
    heatmaps: bool = True,
    input_size: int | None = None,
    progress: bool = True,
) -> ScoredFolder:
    """Score every image under ``input_dir`` and write ``scores.csv`` and heatmaps to ``output_dir``.

    Raises:
        ImageReadError: an image cannot be read (or scores non-finite) and ``skip_bad`` is off.
        NotSimSIDError: ``model_path`` is not a SimSID export or checkpoint.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        msg = f"input folder {input_dir} does not exist"
        raise FileNotFoundError(msg)
    predict, img_size = load_predictor(model_path, device, precision)
    img_size = input_size or img_size
    if img_size is None:
        warnings.warn(
            "model size unknown: images go to the graph unresized, one at a time (pass --input-size)",
            stacklevel=2,
        )
        batch_size = 1  # different sizes cannot share a batch
    files = find_images(input_dir)
    if not files:
        msg = f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {input_dir}"
        raise FileNotFoundError(msg)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = ScoredFolder(csv_path=output_dir / "scores.csv")
    for stale in (result.csv_path, output_dir / "skipped.csv"):  # a failed run must not leave an old CSV
        stale.unlink(missing_ok=True)

    def reject(path: Path, reason: str, err: Exception | None = None) -> None:
        if not skip_bad:
            raise ImageReadError(reason) from err
        warnings.warn(f"skipping {path}: {reason}", stacklevel=3)
        result.skipped.append((str(path.relative_to(input_dir)), reason))

    with tqdm(
        total=len(files), desc="SimSID scoring", unit="img", disable=not progress, file=sys.stderr
    ) as bar:
        for chunk in _batches(files, batch_size):
            loaded = []
            for path in chunk:
                try:
                    loaded.append((path, *load_input(path, img_size)))
                except ImageReadError as err:
                    reject(path, str(err), err)
            if loaded:
                batch = torch.stack([image for _, image, _ in loaded]).numpy()
                outputs = predict(batch)
                for index, (path, image, size) in enumerate(loaded):
                    row = _row(path, input_dir, output_dir, image, size, outputs, index, heatmaps)
                    if row is None:
                        reject(path, f"image {path} gave a non-finite score; it is not scored")
                    else:
                        result.rows.append(row)
            bar.update(len(chunk))

    _write_csv(result.csv_path, CSV_COLUMNS, [[row[c] for c in CSV_COLUMNS] for row in result.rows])
    if result.skipped:
        _write_csv(output_dir / "skipped.csv", ("file", "reason"), result.skipped)
    return result


def _row(
    path: Path,
    input_dir: Path,
    output_dir: Path,
    image: torch.Tensor,
    size: tuple[int, int],
    outputs: dict[str, np.ndarray],
    index: int,
    heatmaps: bool,
) -> dict[str, Any] | None:
    score = float(np.asarray(outputs["pred_score"]).reshape(-1)[index])
    if not np.isfinite(score):
        return None
    label = "anomalous" if bool(np.asarray(outputs["pred_label"]).reshape(-1)[index]) else "normal"
    relative = path.relative_to(input_dir)
    heatmap = ""
    if heatmaps:
        target = output_dir / "heatmaps" / relative.parent / f"{relative.name}.png"  # a.png and a.jpg differ
        target.parent.mkdir(parents=True, exist_ok=True)
        overlay(image, outputs["anomaly_map"][index], size, f"{score:.3f} {label}").save(target)
        heatmap = str(target.relative_to(output_dir))
    return {
        "file": str(relative),
        "score": round(score, 6),
        "label": label,
        "ground_truth": ground_truth(relative),
        "heatmap": heatmap,
    }


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# -------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m anomalib_simsid.deploy.score_folder``."""
    parser = argparse.ArgumentParser(
        prog="python -m anomalib_simsid.deploy.score_folder",
        description="Score a folder of X-rays with an exported SimSID (OpenVINO .xml) or a SimSID .ckpt.",
    )
    parser.add_argument("model", type=Path, help="OpenVINO model.xml (or .onnx), or a SimSID Lightning .ckpt")
    parser.add_argument("input_dir", type=Path, help="folder of images, searched recursively")
    parser.add_argument("--output", "-o", type=Path, default=Path("simsid_scores"), help="output folder")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, AUTO)")
    parser.add_argument(
        "--precision",
        default="f32",
        choices=["f32", "bf16", "f16", "auto"],
        help="OpenVINO inference precision; f32 (default) reproduces PyTorch, bf16 is faster on AVX-512 CPUs",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images with a warning")
    parser.add_argument("--no-heatmaps", action="store_true", help="write the CSV only")
    parser.add_argument("--input-size", type=int, default=None, help="model input side, if the IR lacks it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; errors are printed as one line naming the file, with exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = score_folder(
            args.model,
            args.input_dir,
            args.output,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            skip_bad=args.skip_bad,
            heatmaps=not args.no_heatmaps,
            input_size=args.input_size,
            progress=not args.quiet,
        )
    except (ImageReadError, NotSimSIDError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    anomalous = sum(row["label"] == "anomalous" for row in result.rows)
    print(f"scored {len(result.rows)} images ({anomalous} anomalous), skipped {len(result.skipped)}")
    print(f"wrote {result.csv_path}")
    auroc = result.auroc()
    if auroc is not None:
        print(f"image AUROC against folder labels: {auroc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
