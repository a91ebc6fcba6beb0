"""The scores of ``anomalib predict``, written where a user finds them: ``<run folder>/predictions.csv``.

anomalib 2.7's ``predict`` prints no score and writes only overlay images; the scores exist only in
the returned batches. SimSID returns this callback from ``configure_callbacks``, so every SimSID
``predict`` (CLI or ``Engine.predict``) writes one CSV of image path, score and label beside the
overlays' ``images/`` folder and prints its path. The score is the post-processed one (0..1,
anomalous from 0.5, as in the overlays and in ``simsid-score``'s ``scores.csv``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

COLUMNS = ("image_path", "score", "label")
FILE_NAME = "predictions.csv"


class PredictionsCSV(Callback):
    """Collect every predicted image's path, score and label; write them when ``predict`` ends."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

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
        del trainer, pl_module, batch, batch_idx, dataloader_idx
        if outputs is None or outputs.pred_score is None:
            return
        scores = outputs.pred_score.detach().float().reshape(-1).cpu().tolist()
        labels = outputs.pred_label.reshape(-1).cpu().tolist() if outputs.pred_label is not None else None
        paths = outputs.image_path or [""] * len(scores)
        for index, (path, score) in enumerate(zip(paths, scores, strict=True)):
            label = "" if labels is None else ("anomalous" if labels[index] else "normal")
            self.rows.append((str(path), round(float(score), 6), label))

    @rank_zero_only
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write ``<trainer.default_root_dir>/predictions.csv`` atomically and print where it is."""
        path = Path(trainer.default_root_dir) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(self.rows)
        os.replace(temporary, path)
        pl_module.print(f"SimSID: wrote {len(self.rows)} predictions (image_path, score, label) to {path}")
