"""A fixed Gaussian low-pass of 1-channel images (the low-pass residual score; research options reuse it).

It traces to ONNX without data-dependent control flow.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``ceil(3 sigma)``.

    Args:
        sigma: standard deviation in pixels.

    Returns:
        The 1-D kernel, summing to 1.
    """
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


class GaussianBlur(nn.Module):
    """Fixed separable Gaussian low-pass of 1-channel images, reflect-padded (same size out).

    The kernel is a non-persistent buffer: it derives from ``sigma``, a hyper-parameter.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma <= 0:
            msg = f"blur sigma must be positive, got {sigma}"
            raise ValueError(msg)
        self.sigma = sigma
        self.register_buffer("kernel", gaussian_kernel(sigma), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``(B, 1, H, W)`` images.

        Args:
            x: ``(B, 1, H, W)``.

        Returns:
            The blurred images, same shape.
        """
        k = self.kernel.to(x.dtype)
        r = k.numel() // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
