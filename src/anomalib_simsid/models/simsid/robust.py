"""Options that keep image sharpness and global intensity from deciding SimSID's score.

SimSID's reconstructions are smoother than their inputs, so a critic trained to tell the two apart
can learn to detect blur, and blurrier test images (pneumonia, another scanner) then score as
anomalies whatever their anatomy. Each piece here removes one such global cue; all are off by
default (the paper's model) and switched on by :class:`~anomalib_simsid.SimSID` arguments:

* :class:`GaussianBlur`: a fixed low-pass filter, shared by the bandwidth-matched critic and the
  low-pass residual score;
* :class:`NuisanceAugment`: random blur/sharpening, brightness, contrast and gamma of training images;
* :func:`standardise_intensity`: per-image zero mean and fixed spread (inside the exported graph);
* :class:`SharpnessCalibration`: the residual relative to the residual expected at the image's
  sharpness, a line fitted on training normals and kept in buffers (checkpoints and exports).

Everything here traces to ONNX without data-dependent control flow.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# The spread a [-1, 1] chest X-ray has on average (std 0.24 in [0, 1] on both real sets): after
# standardisation images keep the value range the generator's tanh output can reach.
STANDARD_STD = 0.5
SCORES = ("critic", "lowpass_residual", "calibrated_residual")


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``ceil(3 sigma)``."""
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
        """Blur ``(B, 1, H, W)`` images."""
        k = self.kernel.to(x.dtype)
        r = k.numel() // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def mean_abs_gradient(x: torch.Tensor) -> torch.Tensor:
    """Sharpness of each image ``(B, 1, H, W)``: mean gradient magnitude (forward differences)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return torch.sqrt(dx.float() ** 2 + dy.float() ** 2).mean(dim=(1, 2, 3))


def standardise_intensity(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per image: zero mean and standard deviation :data:`STANDARD_STD`, clamped to [-1, 1].

    Any positive affine change of the input's grey levels (brightness, contrast, window) leaves the
    result unchanged, so the network cannot score an image by its exposure. The clamp keeps real
    images in the range of the generator's tanh output, so the critic cannot tell them by range.
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * (STANDARD_STD / (std + eps))).clamp(-1.0, 1.0)


class NuisanceAugment(nn.Module):
    """Random per-image blur or sharpening, gamma, contrast and brightness of a training batch.

    On [-1, 1] images, in training mode only (identity in eval, so never in the exported graph).
    ``strength`` in (0, 1] scales every range: at 1, gamma in [1/1.5, 1.5], contrast x[0.7, 1.3],
    brightness +-0.1 (of the [0, 1] range), and ``x + k (x - blur(x))`` with ``k`` in [-1, 1] and
    a 1-px Gaussian (``k = -1`` is the blurred image, ``k = 1`` an unsharp mask). Global appearance
    then varies among "normal" images, so it carries no information about normality.
    """

    def __init__(self, strength: float, sigma: float = 1.0) -> None:
        super().__init__()
        if not 0 < strength <= 1:
            msg = f"nuisance_strength must be in (0, 1], got {strength}"
            raise ValueError(msg)
        self.strength = strength
        self.blur = GaussianBlur(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a ``(B, 1, H, W)`` batch in [-1, 1] (unchanged in eval mode)."""
        if not self.training:
            return x
        s = self.strength

        def draw(low: float, high: float) -> torch.Tensor:
            return torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(low, high)

        u = (x.float() + 1) / 2
        k = draw(-s, s)
        u = (u + k * (u - self.blur(u))).clamp(0, 1)
        u = u.clamp_min(1e-6) ** torch.exp(draw(-s, s) * math.log(1.5))
        mean = u.mean(dim=(1, 2, 3), keepdim=True)
        u = (mean + (u - mean) * draw(1 - 0.3 * s, 1 + 0.3 * s) + draw(-0.1 * s, 0.1 * s)).clamp(0, 1)
        return (u * 2 - 1).to(x.dtype)


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
        """Least-squares line of log residual on log sharpness over normal images (at least 2)."""
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
        """Calibrated score per image (higher = more anomalous than its sharpness explains)."""
        log_r, log_s = self._logs(residual, sharpness)
        return log_r - (self.intercept + self.slope * log_s)
