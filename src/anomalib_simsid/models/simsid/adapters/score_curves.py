"""Training callbacks: learning curves of every SimSID score on validation and test.

``ScoreCurves`` answers "where does the curve go, and which score ranks best?" without a second
training run: every ``every_n_epochs`` epochs it scores the validation and test splits with every
score one forward pass gives (:meth:`SimSIDModel.diagnostic_scores`) and rewrites one long CSV
(``epoch, score, split, auroc, n_normal, n_abnormal, wall_s, cpu_s``). Test AUROC is recorded to draw
the curve only; choose epochs and scores on validation.

Add it to a config (``trainer.callbacks``) or see ``benchmarks/curves.py``.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from sklearn.metrics import roc_auc_score

from anomalib_simsid.models.simsid.adapters.predictions import (
    COLUMNS,
    label_name,
    prediction_row,
    write_predictions,
)

CURVE_COLUMNS = ("epoch", "score", "split", "auroc", "n_normal", "n_abnormal", "wall_s", "cpu_s")
IMAGE_CONTEXT = ("epoch", "split")  # before the predictions columns in the per-image CSV


def _write_csv(path: Path, columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> None:
    """Write all rows to ``path`` through a temporary file, so a killed run never leaves half a CSV."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@torch.no_grad()
def score_tensors(
    pl_module: LightningModule, loader: Any
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Every diagnostic score (on the model's device), the labels and the paths of ``loader``'s images.

    The scores are fp32 on every device and at every training precision, as validation's
    ``image_AUROC`` and the exported graph (:meth:`SimSIDModel.diagnostic_scores`); they stay on the
    device until the whole split is scored.

    Args:
        pl_module: the SimSID Lightning module.
        loader: a validation or test loader.

    Returns:
        ``scores`` (name -> ``(n,)`` tensor), ``labels`` and ``paths``.
    """
    model = pl_module.model
    was_training = model.training
    model.eval()
    scores: dict[str, list[torch.Tensor]] = {}
    labels, paths = [], []
    try:
        for batch in loader:
            image = pl_module.pre_processor.transform(batch.image.to(pl_module.device, non_blocking=True))
            for name, value in model.diagnostic_scores(image).items():
                scores.setdefault(name, []).append(value)
            labels.append(batch.gt_label)
            paths.extend(batch.image_path)
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in scores.items()}, torch.cat(labels), paths


def score_loader(pl_module: LightningModule, loader: Any) -> dict[str, Any]:
    """:func:`score_tensors` as numpy arrays: ``scores`` by name, ``labels`` (int) and ``paths``.

    Args:
        pl_module: the SimSID Lightning module.
        loader: a validation or test loader.

    Returns:
        ``scores`` (name -> array), ``labels`` and ``paths``.
    """
    scores, labels, paths = score_tensors(pl_module, loader)
    return {
        "scores": {name: value.cpu().numpy() for name, value in scores.items()},
        "labels": labels.cpu().numpy().astype(int),
        "paths": paths,
    }


class ScoreCurves(Callback):
    """Record validation and test AUROC of every SimSID score every ``every_n_epochs`` epochs.

    Args:
        path: CSV to write (rewritten atomically after every evaluation; rows of epochs at or after
            a resumed run's start are replaced).
        every_n_epochs: evaluate after every n-th training epoch (and after the last one).
        splits: which of ``"val"`` and ``"test"`` to score.
        per_image_path: if given, also write every image's scores at every evaluation (for diagnosis):
            epoch, split, the predictions columns (``score``: the model's own score, ``label`` empty,
            ``ground_truth`` normal/anomalous) and one column per diagnostic score.
    """

    def __init__(
        self,
        path: str | Path,
        every_n_epochs: int = 2,
        splits: tuple[str, ...] = ("val", "test"),
        per_image_path: str | Path | None = None,
    ) -> None:
        if every_n_epochs < 1:
            msg = f"every_n_epochs must be at least 1, got {every_n_epochs}"
            raise ValueError(msg)
        unknown = set(splits) - {"val", "test"}
        if unknown:
            msg = f"splits must be 'val' and/or 'test', got {sorted(unknown)}"
            raise ValueError(msg)
        self.path = Path(path)
        self.every_n_epochs = every_n_epochs
        self.splits = tuple(splits)
        self.per_image_path = Path(per_image_path) if per_image_path else None
        self._start_wall = 0.0
        self._start_cpu = 0.0
        self._offset_wall = 0.0
        self._offset_cpu = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clocks."""
        del trainer, pl_module
        self._start_wall, self._start_cpu = time.perf_counter(), time.process_time()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On resume, continue the clocks from the last recorded row.

        Not in ``on_fit_start``: Lightning restores the epoch counter after that hook, so there a
        resumed run still reads epoch 0.
        """
        del pl_module
        rows = [r for r in _read_csv(self.path) if int(r["epoch"]) <= trainer.current_epoch]
        if rows:
            self._offset_wall = max(float(r["wall_s"]) for r in rows)
            self._offset_cpu = max(float(r["cpu_s"]) for r in rows)

    def _due(self, trainer: Trainer) -> bool:
        done = trainer.current_epoch + 1
        return done % self.every_n_epochs == 0 or done == trainer.max_epochs

    @rank_zero_only
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the chosen splits and rewrite the CSV (epoch = number of epochs trained)."""
        if not self._due(trainer):
            return
        epoch = trainer.current_epoch + 1
        wall = self._offset_wall + time.perf_counter() - self._start_wall
        cpu = self._offset_cpu + time.process_time() - self._start_cpu
        datamodule = trainer.datamodule
        loaders = {"val": datamodule.val_dataloader, "test": datamodule.test_dataloader}
        new_rows, image_rows = [], []
        for split in self.splits:
            result = score_loader(pl_module, loaders[split]())
            labels = result["labels"]
            for name, values in result["scores"].items():
                auroc = roc_auc_score(labels, values) if len(set(labels)) == 2 else float("nan")
                new_rows.append(
                    {
                        "epoch": epoch,
                        "score": name,
                        "split": split,
                        "auroc": round(float(auroc), 5),
                        "n_normal": int((labels == 0).sum()),
                        "n_abnormal": int((labels == 1).sum()),
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                    }
                )
            own = "critic_recon" if pl_module.model.score == "critic" else pl_module.model.score
            for i, path in enumerate(result["paths"]):
                row = prediction_row(path, result["scores"][own][i], "", label_name(labels[i]))
                row |= {"epoch": epoch, "split": split, "score": float(result["scores"][own][i])}
                row.update({name: float(values[i]) for name, values in result["scores"].items()})
                image_rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in _read_csv(self.path) if int(r["epoch"]) < epoch]
        _write_csv(self.path, CURVE_COLUMNS, kept + new_rows)
        if self.per_image_path is not None and image_rows:
            old = [r for r in _read_csv(self.per_image_path) if int(r["epoch"]) < epoch]
            scores = [c for c in image_rows[0] if c not in {*IMAGE_CONTEXT, *COLUMNS}]
            write_predictions(self.per_image_path, old + image_rows, IMAGE_CONTEXT, scores)
        summary = ", ".join(
            f"{r['score']} {r['auroc']:.3f}" for r in new_rows if r["split"] == self.splits[0]
        )
        pl_module.print(f"[ScoreCurves] epoch {epoch} {self.splits[0]} AUROC: {summary}")
