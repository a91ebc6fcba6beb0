"""Timing lines that say what they measured.

anomalib's ``TimerCallback`` ends ``anomalib train`` with "Throughput (batch_size=32) : 98 FPS": the
test loop's inference speed, read by users as the training speed (about 5 images/s for the paper
model on 2 CPU cores). SimSID returns this subclass from ``configure_callbacks``, which makes Lightning
use it in place of anomalib's timer for SimSID runs only. It logs the training speed when fitting
ends and labels the test figure as inference.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from anomalib.callbacks.timer import TimerCallback  # the module: anomalib.callbacks may be mid-import
from lightning.pytorch import LightningModule, Trainer

logger = logging.getLogger(__name__)


class SimSIDTimer(TimerCallback):
    """anomalib's timer with named figures: training images/s (fit) and inference images/s (test)."""

    def __init__(self) -> None:
        super().__init__()
        self.trained_images = 0
        self.train_seconds = 0.0
        self._epoch_start = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the fit clock and the training-image count."""
        super().on_fit_start(trainer, pl_module)
        self.trained_images, self.train_seconds = 0, 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Time training epochs only (validation excluded from the training speed)."""
        del trainer, pl_module
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count the images trained on."""
        del trainer, pl_module, outputs, batch_idx
        self.trained_images += len(batch)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Add the epoch's training time (before validation runs)."""
        del trainer, pl_module
        self.train_seconds += time.perf_counter() - self._epoch_start

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the fit time and the training speed."""
        del trainer, pl_module
        total = time.time() - self.start
        speed = self.trained_images / self.train_seconds if self.train_seconds > 0 else float("nan")
        logger.info(
            "SimSID training took %.1f s: %d training images at %.1f images/s (validation not counted)",
            total,
            self.trained_images,
            speed,
        )

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the test clock; images are counted as the loop sees them (``limit_test_batches`` safe)."""
        super().on_test_start(trainer, pl_module)
        self.num_images = 0  # anomalib counts the whole dataset, also when only a few batches run

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Count the images tested."""
        del trainer, pl_module, outputs, batch_idx, dataloader_idx
        self.num_images += len(batch)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the test loop's speed as what it is: inference, not training."""
        del pl_module
        seconds = time.time() - self.start
        loaders = trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        batch = getattr(loader, "batch_size", None)
        logger.info(
            "SimSID test (inference only): %d images in %.1f s, %.1f images/s at batch size %s",
            self.num_images,
            seconds,
            self.num_images / seconds if seconds > 0 else float("nan"),
            batch,
        )
