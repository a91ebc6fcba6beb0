"""The critic (DCGAN-style): its negated logit on the reconstruction is the paper's score."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Discriminator(nn.Module):
    """DCGAN-style critic: 5x5 stride-2 convs with LeakyReLU(0.2), BN from the second on, a linear logit.

    There are ``log2(img_size / final_size)`` convolutions with ``min(16 * 2**l, 256)`` channels.
    ``eval_norm`` decides what BatchNorm does outside training:

    * ``"per_sample"`` (default, faithful): the released code never put the critic in eval mode and
      scored images one at a time, so BN normalised each image by its own statistics. That equals
      instance normalisation with the BN affine parameters, and keeps a score independent of the
      other images in its batch.
    * ``"running"``: standard eval-mode BN with running statistics.

    Args:
        img_size: side of the (square) input.
        in_ch: input channels (SimSID scores one grey channel).
        final_size: side of the last feature map; ``img_size / final_size`` must be a power of two.
        eval_norm: ``"per_sample"`` or ``"running"``, as above.
    """

    def __init__(
        self,
        img_size: int,
        in_ch: int = 1,
        final_size: int = 4,
        eval_norm: str = "per_sample",
    ) -> None:
        super().__init__()
        if eval_norm not in {"per_sample", "running"}:
            msg = f"eval_norm must be 'per_sample' or 'running', got {eval_norm!r}"
            raise ValueError(msg)
        num_convs = int(math.log2(img_size // final_size))
        if final_size * 2**num_convs != img_size:
            msg = f"discriminator: img_size {img_size} is not final_size {final_size} times a power of two"
            raise ValueError(msg)
        self.eval_norm = eval_norm
        channels = [in_ch] + [min(16 * 2**i, 256) for i in range(num_convs)]
        self.convs = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], 5, 2, 2) for i in range(num_convs))
        self.norms = nn.ModuleList([nn.Identity()] + [nn.BatchNorm2d(c) for c in channels[2:]])
        self.fc = nn.Linear(channels[-1] * final_size * final_size, 1)

    def _norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # _BatchNorm also covers SyncBatchNorm (``--trainer.sync_batchnorm true``).
        per_sample = not self.training and self.eval_norm == "per_sample"
        if per_sample and isinstance(norm, nn.modules.batchnorm._BatchNorm):
            return F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=norm.eps)
        return norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per image, shape ``(B,)``; high means "looks like a real normal image".

        Args:
            x: ``(B, in_ch, img_size, img_size)``.

        Returns:
            ``(B,)`` logits.
        """
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.leaky_relu(self._norm(norm, conv(x)), 0.2)
        return self.fc(x.flatten(1)).squeeze(1)
