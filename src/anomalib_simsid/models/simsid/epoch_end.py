"""What SimSID does after an epoch's last training batch, before validation and checkpointing.

With weight averaging (``ema_decay > 0``) the averaged networks are swapped into the model there, so
validation, the curve callback, every checkpoint, test and export see them; the live weights return
before the next training batch. With ``score="calibrated_residual"`` the residual-vs-sharpness line
is refitted on the training normals (as the training loader serves them, augmentation included)
with the weights the model then holds; under DDP every rank reads its share and the fit sees all.
Both passes over the training images run in fp32 under a forked RNG, so the calibration does not
depend on the training precision and training's shuffles, augmentations and masks do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .averaging import SCOPES, WeightAverage, recompute_batchnorm
from .robust import mean_abs_gradient
from .torch_model import full_precision

if TYPE_CHECKING:
    from .lightning_model import SimSID
    from .torch_model import SimSIDModel


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


def training_loader(module: SimSID, shard: bool) -> DataLoader:
    """Return the datamodule's training loader; with ``shard`` under DDP, this rank's share, in order.

    Rank ``r`` of ``w`` reads images ``r, r + w, ...`` (``DistributedSampler`` without shuffling; it
    repeats the first images to give every rank as many), so :func:`gather_in_order` restores the
    single-process order.
    """
    loader = module.trainer.datamodule.train_dataloader()
    world = module.trainer.world_size
    if not shard or world == 1:
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=module.global_rank, shuffle=False)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def gather_in_order(module: SimSID, values: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's per-image ``values`` of a sharded pass, back in the loader's order (``total`` rows)."""
    if module.trainer.world_size == 1:
        return values
    gathered = module.all_gather(values)  # (world, per_rank): rank r holds images r, r + w, ...
    return gathered.transpose(0, 1).reshape(-1)[:total]


def for_each_training_image(
    module: SimSID, step: Callable[[torch.Tensor], None], shard: bool = False
) -> None:
    """Call ``step`` on every pre-processed training batch in fp32, RNG untouched (see above)."""
    devices = [module.device] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), full_precision(module.device.type):
        for batch in training_loader(module, shard):
            step(module.pre_processor.transform(batch.image.to(module.device, non_blocking=True)))


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

            # Under DDP each rank reads its share of the training set; the fit sees all of it.
            for_each_training_image(module, collect, shard=True)
            total = len(module.trainer.datamodule.train_data)
            model.calibration.fit(
                gather_in_order(module, torch.cat(residuals), total),
                gather_in_order(module, torch.cat(sharpness), total),
            )
    finally:
        model.train(was_training)
