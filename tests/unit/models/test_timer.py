"""SimSID's timer replaces anomalib's and names its figures: training speed, and test as inference."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from anomalib.callbacks import TimerCallback
from torch.utils.data import DataLoader

from anomalib_simsid import SimSID
from tests.helpers import TINY_MODEL


def test_simsid_timer_replaces_anomalibs_and_names_its_figures(caplog: pytest.LogCaptureFixture) -> None:
    callbacks = SimSID(**TINY_MODEL).configure_callbacks()
    timers = [c for c in callbacks if isinstance(c, TimerCallback)]
    assert len(timers) == 1, "SimSID must return a TimerCallback subclass to replace anomalib's"
    timer = timers[0]
    assert type(timer) is not TimerCallback
    loader = DataLoader(list(range(40)), batch_size=8)
    trainer = SimpleNamespace(test_dataloaders=loader)
    batch = torch.zeros(8, 3, 4, 4)
    with caplog.at_level(logging.INFO):
        timer.on_fit_start(trainer, None)
        for _ in range(2):
            timer.on_train_epoch_start(trainer, None)
            for index in range(3):
                timer.on_train_batch_end(trainer, None, None, batch, index)
            timer.on_train_epoch_end(trainer, None)
        timer.on_fit_end(trainer, None)
        timer.on_test_start(trainer, None)
        for index in range(2):  # --trainer.limit_test_batches 2 of the loader's 5 batches
            timer.on_test_batch_end(trainer, None, None, batch, index)
        timer.on_test_end(trainer, None)
    text = caplog.text
    assert "Throughput" not in text
    assert "48 training images" in text
    assert "test (inference only): 16 images" in text  # the images tested, not the dataset's 40
    assert "batch size 8" in text
