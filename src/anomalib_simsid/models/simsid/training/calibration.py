"""The sharpness calibration of ``score="calibrated_residual"``: the score's buffers and their fit.

SimSID's reconstructions are smoother than their inputs, so sharp normal images reconstruct with
larger errors than smooth ones and the plain residual ranks smooth (often abnormal) images as more
normal. :class:`SharpnessCalibration` scores the residual relative to the one expected at the
image's sharpness; :func:`fit_calibration` refits that line on the training normals after every
training epoch (as the training loader serves them, augmentation included), before validation and
checkpointing, with the weights the model then holds. The pass over the training images runs in fp32
under a forked RNG, so the calibration does not depend on the training precision and changes no
shuffle, augmentation or mask of training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .precision import full_precision

if TYPE_CHECKING:
    from ..lightning_model import SimSID


def mean_abs_gradient(x: torch.Tensor) -> torch.Tensor:
    """Sharpness of each image ``(B, 1, H, W)``: mean gradient magnitude (forward differences).

    Args:
        x: ``(B, 1, H, W)``.

    Returns:
        ``(B,)`` float sharpness.
    """
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return torch.sqrt(dx.float() ** 2 + dy.float() ** 2).mean(dim=(1, 2, 3))


class SharpnessCalibration(nn.Module):
    """``log r - (a + b log s)``: the residual ``r`` relative to the one expected at sharpness ``s``.

    Sharp normal images reconstruct with larger errors than smooth ones, so the plain residual ranks
    smooth (often abnormal) images as *more* normal. A line ``log r = a + b log s`` fitted by least
    squares on training normals (:meth:`fit`) removes that trend; what is left is the error the
    anatomy causes. ``a``, ``b`` are buffers, so they travel in checkpoints and exported graphs.
    Before any fit (``a = b = 0``) the score is the log residual.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("intercept", torch.zeros(()))
        self.register_buffer("slope", torch.zeros(()))

    @staticmethod
    def _logs(residual: torch.Tensor, sharpness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return residual.float().clamp_min(1e-8).log(), sharpness.float().clamp_min(1e-8).log()

    @torch.no_grad()
    def fit(self, residual: torch.Tensor, sharpness: torch.Tensor) -> None:
        """Least-squares line of log residual on log sharpness over normal images (at least 2).

        Args:
            residual: ``(n,)`` mean residuals of normal images.
            sharpness: ``(n,)`` their :func:`mean_abs_gradient`.
        """
        log_r, log_s = self._logs(residual, sharpness)
        if log_r.numel() < 2:
            msg = f"sharpness calibration needs at least 2 images, got {log_r.numel()}"
            raise ValueError(msg)
        centred = log_s - log_s.mean()
        var = centred.pow(2).sum()
        slope = (centred * (log_r - log_r.mean())).sum() / var if var > 0 else torch.zeros(())
        self.slope.fill_(float(slope))
        self.intercept.fill_(float(log_r.mean() - slope * log_s.mean()))

    def forward(self, residual: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
        """Calibrated score per image (higher = more anomalous than its sharpness explains).

        Args:
            residual: ``(B,)`` mean residuals.
            sharpness: ``(B,)`` sharpness of the images.

        Returns:
            ``(B,)`` calibrated scores.
        """
        log_r, log_s = self._logs(residual, sharpness)
        return log_r - (self.intercept + self.slope * log_s)


def training_loader(module: SimSID, shard: bool) -> DataLoader:
    """Return the datamodule's training loader; with ``shard`` under DDP, this rank's share, in order.

    Rank ``r`` of ``w`` reads images ``r, r + w, ...`` (``DistributedSampler`` without shuffling; it
    repeats the first images to give every rank as many), so :func:`gather_in_order` restores the
    single-process order.

    Args:
        module: the Lightning module, attached to a trainer with a datamodule.
        shard: whether to read only this rank's share under DDP.

    Returns:
        The loader.
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
    """Every rank's per-image ``values`` of a sharded pass, back in the loader's order.

    Args:
        module: the Lightning module.
        values: this rank's ``(n,)`` values, as :func:`training_loader` served its images.
        total: the number of training images.

    Returns:
        ``(total,)`` values of all ranks.
    """
    if module.trainer.world_size == 1:
        return values
    gathered = module.all_gather(values)  # (world, per_rank): rank r holds images r, r + w, ...
    return gathered.transpose(0, 1).reshape(-1)[:total]


def for_each_training_image(
    module: SimSID, step: Callable[[torch.Tensor], None], shard: bool = False
) -> None:
    """Call ``step`` on every pre-processed training batch in fp32, RNG untouched.

    Args:
        module: the Lightning module, attached to a trainer with a datamodule.
        step: called with each pre-processed batch.
        shard: under DDP, read only this rank's share (:func:`training_loader`).
    """
    devices = [module.device] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), full_precision(module.device.type):
        for batch in training_loader(module, shard):
            step(module.pre_processor.transform(batch.image.to(module.device, non_blocking=True)))


def fit_calibration(module: SimSID) -> None:
    """Refit the calibration line on the training normals (a no-op without ``calibrated_residual``).

    Under DDP every rank reads its share of the training set and the fit sees all of it.

    Args:
        module: the Lightning module, attached to a trainer with a datamodule.
    """
    model = module.model
    if model.calibration is None:
        return
    was_training = model.training
    model.eval()  # clean images: no in-painting mask
    residuals, sharpness = [], []

    def collect(image: torch.Tensor) -> None:
        gray = model.prepare(image)
        reconstruction = model.generator(gray).reconstruction
        residuals.append(model.mean_residual(gray, reconstruction))
        sharpness.append(mean_abs_gradient(gray))

    try:
        for_each_training_image(module, collect, shard=True)
        total = len(module.trainer.datamodule.train_data)
        model.calibration.fit(
            gather_in_order(module, torch.cat(residuals), total),
            gather_in_order(module, torch.cat(sharpness), total),
        )
    finally:
        model.train(was_training)
