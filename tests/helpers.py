"""Shared test helpers: the repository root, a SimSID / DigitAnatomy small enough for CPU tests, files."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay inside the functions: conftest imports this module
    import torch

    from anomalib_simsid import DigitAnatomy, SimSID

REPO = Path(__file__).resolve().parents[1]
# A SimSID small enough for seconds-long CPU runs; the paper model is tested for shapes and counts.
TINY_MODEL = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}
TINY_DATA = {"image_size": 64, "num_train": 24, "num_val": 6, "num_test": 6}


def save_foreign_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint of another anomalib model (PaDiM, random backbone: no download)."""
    import lightning
    import torch
    from anomalib.models import Padim

    padim = Padim(backbone="resnet18", pre_trained=False)
    checkpoint = {
        "state_dict": padim.state_dict(),
        "hyper_parameters": dict(padim.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path


MAP_ATOL = 1e-5  # normalised anomaly maps (the residual is not amplified: ~1e-7 measured)


@dataclass
class TinyDeployment:
    """A trained tiny SimSID, its checkpoint, datamodule, IRs and the test images as one tensor."""

    model: SimSID
    ckpt: Path
    datamodule: DigitAnatomy
    irs: dict[str, Path]
    images: torch.Tensor
    image_paths: list[Path]
    work: Path


@functools.cache
def tiny_deployment(digit_root: Path) -> TinyDeployment:
    """Train one epoch and export FP32/FP16/INT8; cached so every test module of the run shares it."""
    import torch
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_simsid import DigitAnatomy, SimSID
    from anomalib_simsid.deploy import export_openvino

    work = Path(tempfile.mkdtemp(prefix="simsid_deploy_", dir=digit_root.parent))
    seed_everything(0)  # deterministic weights: the top-k memory read has no near-ties to flip by chance
    datamodule = DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=12)
    model = SimSID(**TINY_MODEL, lr=1e-3, disc_lr=1e-3, visualizer=False)
    engine = Engine(
        devices=1,
        default_root_dir=work,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model=model, datamodule=datamodule)
    ckpt = Path(engine.trainer.checkpoint_callback.best_model_path)
    irs = export_openvino(model, work / "export", ("fp32", "fp16", "int8"), datamodule=datamodule)
    datamodule.setup("test")
    test = datamodule.test_data
    images = torch.stack([test[i].image for i in range(len(test))])
    return TinyDeployment(
        model, ckpt, datamodule, irs, images, [Path(p) for p in test.samples.image_path], work
    )
