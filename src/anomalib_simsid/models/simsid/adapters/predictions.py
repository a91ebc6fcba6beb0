"""One predictions table for every SimSID scorer: ``anomalib predict``, ``simsid-score``, ``ScoreCurves``.

anomalib 2.7's ``predict`` prints no score and writes only overlay images; the scores exist only in
the returned batches. SimSID returns :class:`PredictionsCSV` from ``configure_callbacks``, so every
SimSID ``predict`` (CLI or ``Engine.predict``) writes ``predictions.csv`` into its own run folder
beside the overlays' ``images/`` and prints its path. ``simsid-score`` writes the same file with the
same columns, and ``ScoreCurves`` writes its per-image rows with them too (plus its epoch, split and
one column per diagnostic score), all through :func:`write_predictions`:

* ``image_path``: the image as it was listed;
* ``score``: the post-processed score in [0, 1] (anomalous from 0.5; the raw paper score in curves);
* ``label``: ``normal`` / ``anomalous`` from the model's threshold (empty where no threshold applies);
* ``ground_truth``: ``normal`` / ``anomalous`` from the dataset, else from a class-named folder of the
  path (``NORMAL``, ``PNEUMONIA``, ``good``, ...), else empty;
* ``overlay``: the heatmap overlay of the image, relative to the CSV's folder (empty if none).

Under DDP every rank predicts its own share: the rows of all ranks are gathered and rank 0 writes them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

COLUMNS = ("image_path", "score", "label", "ground_truth", "overlay")
FILE_NAME = "predictions.csv"
NORMAL, ANOMALOUS = "normal", "anomalous"
NORMAL_FOLDERS = frozenset({"normal", "good", "healthy", "negative", "no_finding", "nofinding"})
ABNORMAL_FOLDERS = frozenset({
    "pneumonia", "abnormal", "anomalous", "anomaly", "bad", "positive",
    "covid", "covid-19", "covid19", "disease",
})  # fmt: skip


def label_name(anomalous: Any) -> str:
    """``anomalous`` / ``normal`` for a truthy / falsy flag, ``""`` for ``None``."""
    if anomalous is None:
        return ""
    return ANOMALOUS if bool(anomalous) else NORMAL


def folder_ground_truth(path: str | Path) -> str:
    """Return ``normal`` / ``anomalous`` from the deepest class-named folder of ``path``, else ``""``."""
    for folder in reversed(Path(path).parts[:-1]):
        name = folder.lower()
        if name in NORMAL_FOLDERS:
            return NORMAL
        if name in ABNORMAL_FOLDERS:
            return ANOMALOUS
    return ""


def prediction_row(
    image_path: str | Path,
    score: float,
    label: str = "",
    ground_truth: str | None = None,
    overlay: str | Path = "",
) -> dict[str, Any]:
    """One row of :data:`COLUMNS`; ``ground_truth=None`` reads it from the path's class folders."""
    return {
        "image_path": str(image_path),
        "score": round(float(score), 6),
        "label": label,
        "ground_truth": folder_ground_truth(image_path) if ground_truth is None else ground_truth,
        "overlay": str(overlay),
    }


def write_predictions(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]],
    leading: Sequence[str] = (),
    trailing: Sequence[str] = (),
) -> Path:
    """Write ``rows`` as ``leading + COLUMNS + trailing`` to ``path`` atomically (never half a file).

    Args:
        path: the CSV to write (its folder is created).
        rows: mappings holding every column.
        leading: context columns before :data:`COLUMNS` (``ScoreCurves``: epoch, split).
        trailing: extra score columns after them (``ScoreCurves``: one per diagnostic score).

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per process: concurrent runs
    try:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*leading, *COLUMNS, *trailing], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's ``rows``, rank by rank (collective under DDP: every rank must call it)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


class PredictionsCSV(Callback):
    """Collect every predicted image's row; rank 0 writes all ranks' rows when ``predict`` ends."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a fresh table for this ``predict`` call."""
        del trainer, pl_module
        self.rows = []

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Record the batch (``outputs`` is post-processed by then: the post-processor runs first)."""
        del trainer, batch, batch_idx, dataloader_idx
        if outputs is None or outputs.pred_score is None:
            return
        scores = outputs.pred_score.detach().float().reshape(-1).cpu().tolist()
        labels = outputs.pred_label.reshape(-1).cpu().tolist() if outputs.pred_label is not None else None
        truths = outputs.gt_label.reshape(-1).cpu().tolist() if outputs.gt_label is not None else None
        paths = outputs.image_path or [""] * len(scores)
        for index, (path, score) in enumerate(zip(paths, scores, strict=True)):
            self.rows.append(
                prediction_row(
                    path,
                    score,
                    label_name(None if labels is None else labels[index]),
                    None if truths is None else label_name(truths[index]),
                )
            )

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Gather all ranks' rows; rank 0 writes ``<run folder>/predictions.csv`` and prints where."""
        folder = Path(trainer.default_root_dir)
        # the visualizer's overlays (drawn in this rank), relative to the CSV: the run folder moves whole
        saved = {k: v for c in trainer.callbacks for k, v in getattr(c, "saved", {}).items()}
        for row in self.rows:
            if row["image_path"] in saved:
                row["overlay"] = os.path.relpath(saved[row["image_path"]], folder)
        rows = gather_rows(self.rows)
        if not trainer.is_global_zero:
            return
        path = write_predictions(folder / FILE_NAME, rows)
        pl_module.print(f"SimSID: wrote {len(rows)} predictions ({', '.join(COLUMNS)}) to {path}")
