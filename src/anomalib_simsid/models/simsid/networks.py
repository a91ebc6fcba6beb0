"""Convolutional building blocks: residual blocks, decoder levels, discriminator; patch grid helpers."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .robust import GaussianBlur


def _conv_bn(in_ch: int, out_ch: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.BatchNorm2d(out_ch)]


class ResBlock(nn.Module):
    """conv-BN-ReLU, then a two-conv residual branch: ``ReLU(h + r)`` (the original "double_conv")."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.head = nn.Sequential(*_conv_bn(in_ch, out_ch, stride), nn.ReLU(inplace=True))
        self.residual = nn.Sequential(
            *_conv_bn(out_ch, out_ch), nn.ReLU(inplace=True), *_conv_bn(out_ch, out_ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        h = self.head(x)
        return F.relu(h + self.residual(h))


class UpBlock(nn.Module):
    """Bilinear upsampling to the skip's size, optional skip concatenation, then a ResBlock.

    With ``concat=False`` the skip tensor only supplies the target size (the released model's
    ``none`` op), so anomalous high-resolution detail cannot leak into the reconstruction.
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, concat: bool) -> None:
        super().__init__()
        self.concat = concat
        self.block = ResBlock(in_ch + (skip_ch if concat else 0), out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` to ``skip``'s spatial size and decode."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if self.concat:
            x = torch.cat([skip, x], dim=1)
        return self.block(x)


class Discriminator(nn.Module):
    """DCGAN-style critic: 5x5 stride-2 convs with LeakyReLU(0.2), BN from the second on, a linear logit.

    There are ``log2(img_size / final_size)`` convolutions with ``min(16 * 2**l, 256)`` channels.
    ``eval_norm`` decides what BatchNorm does outside training:

    * ``"per_sample"`` (default, faithful): the released code never put the critic in eval mode and
      scored images one at a time, so BN normalised each image by its own statistics. That equals
      instance normalisation with the BN affine parameters, and keeps a score independent of the
      other images in its batch.
    * ``"running"``: standard eval-mode BN with running statistics.

    ``input_blur_sigma > 0`` puts a fixed Gaussian low-pass in front of the first convolution, so
    real images and reconstructions reach the critic with the same bandwidth and sharpness alone
    cannot separate them (the bandwidth-matched critic; off in the paper).
    """

    def __init__(
        self,
        img_size: int,
        in_ch: int = 1,
        final_size: int = 4,
        eval_norm: str = "per_sample",
        input_blur_sigma: float = 0.0,
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
        self.input_filter = GaussianBlur(input_blur_sigma) if input_blur_sigma > 0 else nn.Identity()
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
        """Return one logit per image, shape ``(B,)``; high means "looks like a real normal image"."""
        x = self.input_filter(x)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.leaky_relu(self._norm(norm, conv(x)), 0.2)
        return self.fc(x.flatten(1)).squeeze(1)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is stored NHWC (and not also NCHW, as tensors with one channel or pixel are)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def patchify(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B*grid*grid, C, H/grid, W/grid), patches in row-major order.

    The result keeps ``x``'s memory format: a channels-last input is cut in NHWC order, so the
    convolutions after it get channels-last activations without another copy.
    """
    b, c, h, w = x.shape
    if is_channels_last(x):
        x = x.permute(0, 2, 3, 1).view(b, grid, h // grid, grid, w // grid, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b * grid * grid, h // grid, w // grid, c).permute(0, 3, 1, 2)
    x = x.view(b, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * grid * grid, c, h // grid, w // grid)


def stitch(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`patchify`, keeping ``x``'s memory format as it does."""
    n, c, h, w = x.shape
    if is_channels_last(x):
        x = x.permute(0, 2, 3, 1).view(n // (grid * grid), grid, grid, h, w, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n // (grid * grid), grid * h, grid * w, c).permute(0, 3, 1, 2)
    x = x.view(n // (grid * grid), grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n // (grid * grid), c, grid * h, grid * w)
