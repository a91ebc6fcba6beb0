"""What SimSID does after an epoch's last training batch, before validation and checkpointing.

With weight averaging (``ema_decay > 0``) the averaged networks are swapped into the model there, so
validation, the curve callback, every checkpoint, test and export see them; the live weights return
before the next training batch. With ``score="calibrated_residual"`` the residual-vs-sharpness line
is refitted on the training normals (as the training loader serves them, augmentation included)
with the weights the model then holds. Both passes over the
training images run under a forked RNG, so they change no shuffle, augmentation or mask of training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..robust import mean_abs_gradient
from .weight_average import SCOPES, WeightAverage, recompute_batchnorm

if TYPE_CHECKING:
    from ..lightning_model import SimSID
    from ..torch_model import SimSIDModel


def averaged_networks(model: SimSIDModel, scope: str) -> dict[str, nn.Module]:
    """Name the networks ``ema_scope`` averages: the generator, and with ``"both"`` the critic."""
    networks: dict[str, nn.Module] = {"generator": model.generator}
    if scope == "both":
        networks["discriminator"] = model.discriminator
    return networks


def build_weight_average(model: SimSIDModel, decay: float, scope: str) -> WeightAverage | None:
    """Build the EMA shadow of the averaged networks, or ``None`` when ``decay`` is 0 (paper)."""
    if scope not in SCOPES:
        msg = f"ema_scope must be one of {SCOPES}, got {scope!r}"
        raise ValueError(msg)
    return WeightAverage(averaged_networks(model, scope), decay) if decay else None


def resume_live_weights(module: SimSID) -> None:
    """Put the live weights back into the model if the averaged ones are there (before training)."""
    average = module.weight_average
    if average is not None and bool(average.averaged_in_model):
        average.swap(averaged_networks(module.model, module.hparams.ema_scope))


def for_each_training_image(module: SimSID, step: Callable[[torch.Tensor], None]) -> None:
    """Call ``step`` on every pre-processed training batch, at the trainer's precision, RNG untouched."""
    trainer = module.trainer
    devices = [module.device] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for batch in trainer.datamodule.train_dataloader():
            image = module.pre_processor.transform(batch.image.to(module.device))
            with trainer.precision_plugin.forward_context():
                step(image)


def finish_training_epoch(module: SimSID) -> None:
    """Swap the averaged weights in (BatchNorm recomputed for ``"both"``) and fit the calibration."""
    model = module.model
    average = module.weight_average
    if average is None and model.calibration is None:
        return
    was_training = model.training
    model.eval()  # clean images: no nuisance augmentation, no in-painting mask
    try:
        if average is not None:
            scope = module.hparams.ema_scope
            if not bool(average.averaged_in_model):
                average.swap(averaged_networks(model, scope))
            if scope == "both":

                def refresh(image: torch.Tensor) -> None:
                    gray = model.prepare(image)
                    model.discriminator(gray)
                    model.discriminator(model.generator(gray).reconstruction)

                networks = [model.generator, model.discriminator]
                recompute_batchnorm(networks, lambda: for_each_training_image(module, refresh))
        if model.calibration is not None:
            residuals, sharpness = [], []

            def collect(image: torch.Tensor) -> None:
                gray = model.prepare(image)
                reconstruction = model.generator(gray).reconstruction
                residuals.append(model.mean_residual(gray, reconstruction))
                sharpness.append(mean_abs_gradient(gray))

            for_each_training_image(module, collect)
            model.calibration.fit(torch.cat(residuals), torch.cat(sharpness))
    finally:
        model.train(was_training)
