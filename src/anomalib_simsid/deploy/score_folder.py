"""Score every image in a folder with an exported SimSID (OpenVINO IR) or a SimSID checkpoint.

Usage::

    simsid-score MODEL INPUT_DIR --output OUT_DIR [--skip-bad]

``MODEL`` is an OpenVINO ``.xml`` (from ``anomalib export`` or ``simsid-export``) or a SimSID
Lightning ``.ckpt``. Writes ``OUT_DIR/predictions.csv`` (the columns of ``anomalib predict``'s:
image_path, score, label, ground_truth, overlay; one writer,
:mod:`anomalib_simsid.models.simsid.adapters.predictions`) and ``OUT_DIR/heatmaps/<file>.png`` overlays
(``<file>`` keeps its own suffix). Ground truth is filled in when an image sits in a class folder
below ``INPUT_DIR`` (``NORMAL``/``PNEUMONIA``, ``good``/``anomalous``, ...).

Every image is checked before any scoring; all unreadable files are named at once, or skipped with
a warning and listed in ``skipped.csv`` under ``--skip-bad``; a non-finite score is treated the same
way. Outputs are written to a hidden staging folder and moved into ``OUT_DIR`` only when the run
succeeds, so a failed run leaves nothing half-written (and an earlier run's outputs untouched). An
output folder inside the input folder is never scored as images. Loading, pre-processing and
running the model is :class:`~anomalib_simsid.deploy.predictor.SimSIDPredictor`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.visualization.image.functional import add_text_to_image, overlay_image, visualize_anomaly_map
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from anomalib_simsid.data.image_io import IMAGE_SUFFIXES, ImageReadError, find_unreadable, image_files
from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError
from anomalib_simsid.models.simsid.adapters.openvino import staging_folder
from anomalib_simsid.models.simsid.adapters.predictions import (
    FILE_NAME,
    label_name,
    prediction_row,
    write_predictions,
)

from .predictor import PRECISIONS, SimSIDPredictor

logger = logging.getLogger(__name__)

OUTPUTS = (FILE_NAME, "skipped.csv", "heatmaps")  # what a run owns inside the output folder
MAX_HEATMAP_SIDE = 1024
HEATMAP_ALPHA = 0.4
MAX_LISTED = 20  # bad files named in one error message; the rest are counted


@dataclass
class ScoredFolder:
    """What :func:`score_folder` produced: one row per scored image, and the skipped files."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    csv_path: Path | None = None

    def auroc(self) -> float | None:
        """Image AUROC over the rows with ground truth, if both classes are present."""
        anomalous = label_name(True)
        labelled = [(r["score"], r["ground_truth"] == anomalous) for r in self.rows if r["ground_truth"]]
        if len({gt for _, gt in labelled}) < 2:
            return None
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score([gt for _, gt in labelled], [s for s, _ in labelled]))


# ----------------------------------------------------------------------------------------- images


# ---------------------------------------------------------------------------------------- outputs


def overlay(image: torch.Tensor, anomaly_map: np.ndarray, size: tuple[int, int], text: str) -> Image.Image:
    """Draw the heatmap (jet, 40 %) over the grey image at its original size (long side <= 1024 px)."""
    scale = min(1.0, MAX_HEATMAP_SIDE / max(size))
    out_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    grey = F.interpolate(image.mean(0)[None, None], size=out_size, mode="bilinear", align_corners=False)
    heat = torch.from_numpy(np.asarray(anomaly_map, dtype=np.float32).reshape(anomaly_map.shape[-2:]))
    heat = F.interpolate(heat[None, None], size=out_size, mode="bilinear", align_corners=False)
    base = visualize_anomaly_map(grey[0, 0].clamp(0, 1), colormap=False)
    picture = overlay_image(base, visualize_anomaly_map(heat[0, 0].clamp(0, 1)), alpha=HEATMAP_ALPHA)
    if min(out_size) >= 192:  # the label would cover a small image
        picture = add_text_to_image(picture, text)
    return picture.convert("RGB")


def _batches(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _bad_files_error(bad: dict[str, str], input_dir: Path) -> ImageReadError:
    """One error naming every bad file (the first :data:`MAX_LISTED`, then a count)."""
    lines = [f"  {Path(path).relative_to(input_dir)}: {reason}" for path, reason in bad.items()]
    more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    msg = (
        f"{len(bad)} of the images under {input_dir} cannot be scored; nothing was written "
        f"(pass --skip-bad to score the others):\n" + "\n".join(lines[:MAX_LISTED]) + more
    )
    return ImageReadError(msg)


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
    progress: bool | None = None,
) -> ScoredFolder:
    """Score every image under ``input_dir`` and write ``predictions.csv`` and heatmaps to ``output_dir``.

    ``progress=None`` shows the bar only on a terminal.

    Raises:
        ImageReadError: images cannot be read (or score non-finite) and ``skip_bad`` is off; all named.
        NotSimSIDError: ``model_path`` is not a SimSID export or checkpoint.
        ValueError: ``input_size`` disagrees with the model's own size.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        msg = f"input folder {input_dir} does not exist"
        raise FileNotFoundError(msg)
    predictor = SimSIDPredictor.load(model_path, device, precision, input_size)
    if predictor.img_size is None:
        warnings.warn(
            "model size unknown: images go to the graph unresized, one at a time (pass --input-size)",
            stacklevel=2,
        )
        batch_size = 1  # different sizes cannot share a batch
    files = image_files(input_dir, exclude=output_dir)
    if not files:
        msg = f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {input_dir}"
        raise FileNotFoundError(msg)
    bad = find_unreadable(files)
    if bad and not skip_bad:
        raise _bad_files_error(bad, input_dir)

    with staging_folder(output_dir) as staging_name:
        staging = Path(staging_name)
        result = _score(predictor, files, bad, input_dir, staging, batch_size, heatmaps, progress)
        if result.skipped and not skip_bad:
            raise _bad_files_error(dict(result.skipped), input_dir)
        for path, reason in result.skipped:
            warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
        write_predictions(staging / FILE_NAME, result.rows)
        if result.skipped:
            _write_csv(staging / "skipped.csv", ("file", "reason"), result.skipped)
        _move_into_place(staging, output_dir)
    result.skipped = [(str(Path(path).relative_to(input_dir)), reason) for path, reason in result.skipped]
    result.csv_path = output_dir / FILE_NAME
    return result


def _score(
    predictor: SimSIDPredictor,
    files: Sequence[Path],
    bad: dict[str, str],
    input_dir: Path,
    staging: Path,
    batch_size: int,
    heatmaps: bool,
    progress: bool | None,
) -> ScoredFolder:
    """Score the readable files into ``staging``; files that fail here join ``skipped`` (full paths)."""
    result = ScoredFolder(skipped=list(bad.items()))
    todo = [path for path in files if str(path) not in bad]
    disable = None if progress is None else not progress
    with tqdm(total=len(todo), desc="SimSID scoring", unit="img", disable=disable, file=sys.stderr) as bar:
        for chunk in _batches(todo, batch_size):
            loaded = []
            for path in chunk:
                try:
                    loaded.append((path, *predictor.preprocess(path)))
                except ImageReadError as err:
                    result.skipped.append((str(path), str(err)))
            if loaded:
                outputs = predictor(torch.stack([image for _, image, _ in loaded]))
                for index, (path, image, size) in enumerate(loaded):
                    row = _row(path, input_dir, staging, image, size, outputs, index, heatmaps)
                    if row is None:
                        result.skipped.append((str(path), "non-finite score"))
                    else:
                        result.rows.append(row)
            bar.update(len(chunk))
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
    label = label_name(np.asarray(outputs["pred_label"]).reshape(-1)[index])
    relative = path.relative_to(input_dir)
    heatmap = ""
    if heatmaps:
        target = output_dir / "heatmaps" / relative.parent / f"{relative.name}.png"  # a.png and a.jpg differ
        target.parent.mkdir(parents=True, exist_ok=True)
        overlay(image, outputs["anomaly_map"][index], size, f"{score:.3f} {label}").save(target)
        heatmap = str(target.relative_to(output_dir))
    # ground truth from the class folders below the input folder only (not from the user's own path)
    row = prediction_row(relative, score, label, overlay=heatmap)
    return row | {"image_path": str(path.absolute())}


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """Replace this tool's outputs in ``output_dir`` by the staged ones; other files there are kept."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        old = output_dir / name
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
        if (staging / name).exists():
            (staging / name).rename(old)


# -------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``simsid-score``."""
    parser = argparse.ArgumentParser(
        prog="simsid-score",
        description="Score a folder of X-rays with an exported SimSID (OpenVINO .xml) or a SimSID .ckpt.",
    )
    parser.add_argument("model", type=Path, help="OpenVINO model.xml (or .onnx), or a SimSID Lightning .ckpt")
    parser.add_argument("input_dir", type=Path, help="folder of images, searched recursively")
    parser.add_argument("--output", "-o", type=Path, default=Path("simsid_scores"), help="output folder")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, AUTO)")
    parser.add_argument(
        "--precision",
        default="f32",
        choices=PRECISIONS,
        help="OpenVINO inference precision; f32 (default) reproduces PyTorch, bf16 is faster on AVX-512 CPUs",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images with a warning")
    parser.add_argument("--no-heatmaps", action="store_true", help="write the CSV only")
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="model input side, only for exports that do not record it",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (it is shown only on a terminal)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI (the ``simsid-score`` entry point); errors are printed without a traceback, exit code 2."""
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
            progress=False if args.quiet else None,
        )
    except (ImageReadError, NotSimSIDError, FileNotFoundError, PermissionError, ValueError) as err:
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
