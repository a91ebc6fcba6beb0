"""Convolutional building blocks (residual block, decoder level) and the patch grid helpers."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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
        """Apply the block.

        Args:
            x: ``(B, in_ch, H, W)``.

        Returns:
            ``(B, out_ch, H / stride, W / stride)``.
        """
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
        """Upsample ``x`` to ``skip``'s spatial size and decode.

        Args:
            x: the lower level's output.
            skip: the encoder feature of this level (concatenated, or only its size used).

        Returns:
            This level's feature.
        """
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if self.concat:
            x = torch.cat([skip, x], dim=1)
        return self.block(x)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is stored NHWC (and not also NCHW, as tensors with one channel or pixel are).

    Args:
        x: a 4-D tensor.

    Returns:
        True for a channels-last layout.
    """
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def patchify(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B*grid*grid, C, H/grid, W/grid), patches in row-major order.

    The result keeps ``x``'s memory format: a channels-last input is cut in NHWC order, so the
    convolutions after it get channels-last activations without another copy.

    Args:
        x: images.
        grid: patches per side.

    Returns:
        The patches, batch-major.
    """
    b, c, h, w = x.shape
    if is_channels_last(x):
        x = x.permute(0, 2, 3, 1).view(b, grid, h // grid, grid, w // grid, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b * grid * grid, h // grid, w // grid, c).permute(0, 3, 1, 2)
    x = x.view(b, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * grid * grid, c, h // grid, w // grid)


def stitch(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`patchify`, keeping ``x``'s memory format as it does.

    Args:
        x: patches as :func:`patchify` returns them.
        grid: patches per side.

    Returns:
        The images.
    """
    n, c, h, w = x.shape
    if is_channels_last(x):
        x = x.permute(0, 2, 3, 1).view(n // (grid * grid), grid, grid, h, w, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n // (grid * grid), grid * h, grid * w, c).permute(0, 3, 1, 2)
    x = x.view(n // (grid * grid), grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n // (grid * grid), c, grid * h, grid * w)
