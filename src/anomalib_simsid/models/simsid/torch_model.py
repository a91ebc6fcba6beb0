"""SimSID as a plain torch module: the generator and the critic, the score and the training pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from anomalib.data import InferenceBatch
from torch import nn
from torch.nn import functional as F

from .config import SimSIDConfig
from .networks.critic import Discriminator
from .networks.generator import Generator, GeneratorOutput
from .networks.lowpass import GaussianBlur
from .training.calibration import SharpnessCalibration, mean_abs_gradient
from .training.precision import full_precision

# Gaussian (pixels) of the diagnostic low-pass residual that the learning curves record.
LOWPASS_SIGMA = 2.0


@dataclass
class SimSIDTrainOutput:
    """What one training step's losses need: the 1-channel input, the generator pass, the critic's logits.

    ``fake_logits`` is the critic on the *detached* reconstruction (the critic's own loss); the
    generator's adversarial term needs the critic after its update, so the step calls it again.
    """

    image: torch.Tensor
    generated: GeneratorOutput
    real_logits: torch.Tensor
    fake_logits: torch.Tensor


class SimSIDModel(nn.Module):
    """SimSID generator and discriminator.

    In eval mode ``forward`` takes anomalib's 3-channel batch in [-1, 1], reduces it to one channel
    (the channel mean), reconstructs it with the student path only, and returns an
    :class:`~anomalib.data.InferenceBatch`: ``pred_score`` is, with ``score="critic"`` (the paper),
    the negated critic logit of the reconstruction (monotone in the paper's
    ``1 - sigmoid((s - mu) / sigma)``), and ``anomaly_map`` the absolute reconstruction residual (a
    plugin extension: the paper defines no map). With ``score="calibrated_residual"`` it is the
    residual relative to the one expected at the image's sharpness
    (:class:`~.training.calibration.SharpnessCalibration`). In training mode it runs what one
    training step needs and returns :class:`SimSIDTrainOutput`.

    Args:
        config: sizes and options, built once by :class:`~.SimSID` (defaults: the paper model).
    """

    def __init__(self, config: SimSIDConfig | None = None) -> None:
        super().__init__()
        config = config or SimSIDConfig()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(
            config.img_size, final_size=config.img_size // 32, eval_norm=config.disc_eval_norm
        )
        self.score = config.score
        self.lowpass = GaussianBlur(LOWPASS_SIGMA)
        # Only a calibrated model has the buffers, so paper checkpoints keep their exact keys.
        self.calibration = SharpnessCalibration() if config.score == "calibrated_residual" else None

    @staticmethod
    def to_gray(image: torch.Tensor) -> torch.Tensor:
        """Reduce anomalib's forced 3-channel batch to the single channel SimSID is defined on.

        Args:
            image: ``(B, C, H, W)``.

        Returns:
            ``(B, 1, H, W)``.
        """
        return image.mean(dim=1, keepdim=True) if image.shape[1] != 1 else image

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Make the 1-channel image the networks see (every path goes through here).

        Args:
            image: pre-processed batch ``(B, C, H, W)`` in [-1, 1].

        Returns:
            The grey batch ``(B, 1, H, W)``.
        """
        return self.to_gray(image)

    @staticmethod
    def mean_residual(gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean ``|x - x_hat|`` per image: the plain residual score, and what the calibration fits.

        Args:
            gray: the networks' input ``(B, 1, H, W)``.
            reconstruction: its reconstruction.

        Returns:
            ``(B,)`` float scores.
        """
        return (gray - reconstruction).abs().float().mean(dim=(1, 2, 3))

    def lowpass_residual(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean ``|blur(x) - blur(x_hat)|`` per image: the residual without its finest detail.

        Args:
            gray: the networks' input ``(B, 1, H, W)``.
            reconstruction: its reconstruction.

        Returns:
            ``(B,)`` float scores.
        """
        return (self.lowpass(gray) - self.lowpass(reconstruction)).abs().float().mean(dim=(1, 2, 3))

    def calibrated_residual(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Compare the mean residual with the one expected at the image's sharpness (fitted calibration).

        Args:
            gray: the networks' input ``(B, 1, H, W)``.
            reconstruction: its reconstruction.

        Returns:
            ``(B,)`` float scores (log scale).
        """
        return self.calibration(self.mean_residual(gray, reconstruction), mean_abs_gradient(gray))

    def residual_scores(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score by the residual: plain mean, low-pass mean, and (if fitted) sharpness-calibrated.

        Args:
            gray: the networks' input ``(B, 1, H, W)``.
            reconstruction: the student's reconstruction of it.

        Returns:
            One ``(B,)`` score per name (higher = more anomalous).
        """
        scores = {
            "residual_mean": self.mean_residual(gray, reconstruction),
            "lowpass_residual": self.lowpass_residual(gray, reconstruction),
        }
        if self.calibration is not None:
            scores["calibrated_residual"] = self.calibrated_residual(gray, reconstruction)
        return scores

    def image_score(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Compute the model's ``pred_score`` (higher = more anomalous) as chosen by ``score``.

        Args:
            gray: the networks' input ``(B, 1, H, W)``.
            reconstruction: the student's reconstruction of it.

        Returns:
            ``(B,)`` scores.
        """
        if self.score == "critic":
            return -self.discriminator(reconstruction)
        return self.calibrated_residual(gray, reconstruction)

    @torch.no_grad()
    def diagnostic_scores(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every per-image anomaly score one eval forward pass yields (higher = more anomalous).

        ``critic_recon`` is the paper's score; the model's ``pred_score`` is the one ``score`` names
        (``critic`` = ``critic_recon``). The others are SimSID-family alternatives for learning curves
        and diagnosis: the critic on the input itself, the residual ``|x - x_hat|`` (mean, max, max of
        8x8-averaged blocks), its low-pass and sharpness-calibrated versions, the squared distance of
        the bottleneck queries to their memory reads, and the student-teacher reconstruction gap.
        One generator forward (with the teacher) serves them all, in fp32 (:func:`full_precision`).
        Call in eval mode.

        Args:
            image: pre-processed batch ``(B, C, H, W)`` in [-1, 1].

        Returns:
            One ``(B,)`` float score per name.
        """
        with full_precision(image.device.type):
            return self._diagnostic_scores(image)

    def _diagnostic_scores(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        gray = self.prepare(image)
        generated = self.generator(gray, teacher=True)
        reconstruction = generated.reconstruction
        reads = self.generator.inpainting.memory(generated.queries)
        memory_distance = (generated.queries.float() - reads.float()).pow(2).mean(dim=(1, 2))
        residual = (gray - reconstruction).abs().float()
        return {
            "critic_recon": -self.discriminator(reconstruction).float().flatten(),
            "critic_input": -self.discriminator(gray).float().flatten(),
            **self.residual_scores(gray, reconstruction),
            "residual_max": residual.amax(dim=(1, 2, 3)),
            "residual_block_max": F.avg_pool2d(residual, 8).amax(dim=(1, 2, 3)),
            "memory_distance": memory_distance,
            "teacher_gap": (reconstruction - generated.teacher_reconstruction)
            .abs()
            .float()
            .mean(dim=(1, 2, 3)),
        }

    def write_memory(self, queries: torch.Tensor) -> None:
        """After a generator step, store its bottleneck queries in the queue (no-op for a learned matrix).

        Args:
            queries: ``(B, N, d)`` bottleneck queries of the generator pass.
        """
        self.generator.write_memory(queries)

    def forward(self, image: torch.Tensor, full_pass: bool = True) -> InferenceBatch | SimSIDTrainOutput:
        """Training: generator pass and critic logits. Eval: score and residual map, student path only.

        Args:
            image: pre-processed batch ``(B, C, H, W)`` in [-1, 1].
            full_pass: training only; ``False`` (critic-only batches) runs the generator without an
                autograd graph and without the teacher: the critic step only needs the detached
                reconstruction.

        Returns:
            Eval: an :class:`~anomalib.data.InferenceBatch` (``pred_score``, ``anomaly_map``).
            Training: a :class:`SimSIDTrainOutput`.
        """
        if not self.training:
            with full_precision(image.device.type):
                gray = self.prepare(image)
                reconstruction = self.generator(gray).reconstruction
                score = self.image_score(gray, reconstruction)
                return InferenceBatch(pred_score=score, anomaly_map=(gray - reconstruction).abs())
        gray = self.prepare(image)
        with torch.set_grad_enabled(full_pass and torch.is_grad_enabled()):
            generated = self.generator(gray, teacher=full_pass)
        return SimSIDTrainOutput(
            image=gray,
            generated=generated,
            real_logits=self.discriminator(gray),
            fake_logits=self.discriminator(generated.reconstruction.detach()),
        )
