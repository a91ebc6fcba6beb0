"""Shared test helpers: the repository root, a SimSID / DigitAnatomy small enough for CPU tests, files."""

from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# A SimSID small enough for seconds-long CPU runs; the paper model is tested for shapes and counts.
TINY_MODEL = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}
TINY_DATA = {"image_size": 64, "num_train": 24, "num_val": 6, "num_test": 6}


def save_foreign_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint of another anomalib model (PaDiM, random backbone: no download)."""
    import lightning
    from anomalib.models import Padim

    padim = Padim(backbone="resnet18", pre_trained=False)
    checkpoint = {
        "state_dict": padim.state_dict(),
        "hyper_parameters": dict(padim.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path
