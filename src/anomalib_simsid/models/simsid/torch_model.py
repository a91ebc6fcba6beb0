"""SimSID as a plain torch module: generator (encoder, in-painting, student and teacher decoders) and critic.

Every size derives from ``img_size``, ``num_patch``, ``level`` and ``base_width``, so the
paper model (128 px, 2x2 patches, level 4, width 32) and a small demo model are one line apart.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from anomalib.data import InferenceBatch
from torch import nn
from torch.nn import functional as F

from .inpainting import InpaintingBlock
from .memory import MemoryQueue, WindowMemory
from .networks import Discriminator, ResBlock, UpBlock, patchify, stitch
from .robust import (
    SCORES,
    GaussianBlur,
    NuisanceAugment,
    SharpnessCalibration,
    mean_abs_gradient,
    standardise_intensity,
)


def full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """Switch autocast off where it is on, so that scores are fp32 whatever the training precision.

    Under ``16-mixed``/``bf16-mixed`` Lightning runs validation, test and predict inside autocast; the
    memory read's top-k then flips on near-ties and the score, threshold and min/max would come from
    other numbers than the exported fp32 graph computes. Where autocast is off (CPU fp32, export
    tracing) this is a no-op and leaves no trace in a graph.
    """
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class Encoder(nn.Module):
    """Per-patch CNN shared by all patches: an input ResBlock, then ``level`` stride-2 ResBlocks."""

    def __init__(self, channels: list[int], grid: int, full_image_skips: int) -> None:
        super().__init__()
        self.grid = grid
        self.full_image_skips = full_image_skips
        self.inc = ResBlock(1, channels[0])
        self.downs = nn.ModuleList(
            ResBlock(channels[i], channels[i + 1], stride=2) for i in range(len(channels) - 1)
        )

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``(B*N, 1, P, P)`` patches; the first ``full_image_skips`` skips are stitched."""
        x = self.inc(patches)
        skips = []
        for i, down in enumerate(self.downs):
            skips.append(stitch(x, self.grid) if i < self.full_image_skips else x)
            x = down(x)
        return x, skips


class Decoder(nn.Module):
    """U-Net-style decoder: skip concatenation on the ``skip_levels`` lowest levels, size-only above.

    The student owns a :class:`WindowMemory` after each concatenating level; the teacher has none.
    Per-patch maps are stitched into full images after the last concatenating level.
    """

    def __init__(
        self,
        channels: list[int],
        bottleneck: int,
        grid: int,
        skip_levels: int,
        num_slots: int,
        topk: int | None,
    ) -> None:
        super().__init__()
        level = len(channels) - 1
        self.grid = grid
        self.skip_levels = skip_levels
        self.ups = nn.ModuleList()
        self.memories = nn.ModuleList()
        spatial = bottleneck
        for j in range(level):
            s = level - 1 - j
            spatial *= 2
            concat = j < skip_levels
            self.ups.append(UpBlock(channels[s + 1], channels[s], channels[s], concat=concat))
            if concat and topk is not None:
                self.memories.append(WindowMemory(channels[s], spatial, num_slots, topk))
        self.out = nn.Conv2d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decode; returns the reconstruction in [-1, 1] and the feature after every level."""
        features = []
        for j, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 1 - j])
            if j < len(self.memories):
                x = self.memories[j](x)
            if j == self.skip_levels - 1:
                x = stitch(x, self.grid)
            features.append(x)
        return torch.tanh(self.out(x)), features


@dataclass
class GeneratorOutput:
    """One generator pass: the student's reconstruction and features, bottleneck queries, the teacher's."""

    reconstruction: torch.Tensor
    features: list[torch.Tensor]
    queries: torch.Tensor | None
    teacher_reconstruction: torch.Tensor | None = None
    teacher_features: list[torch.Tensor] | None = None


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


class Generator(nn.Module):
    """Encoder, in-painting block, student decoder with memories and (training-only) teacher decoder."""

    def __init__(
        self,
        img_size: int,
        num_patch: int,
        level: int,
        base_width: int,
        skip_levels: int,
        memory: str,
        num_slots: int,
        topk: int,
        inpaint_mask_ratio: float,
        use_inpainting: bool,
    ) -> None:
        super().__init__()
        patch = img_size // num_patch
        if img_size % num_patch or patch % 2**level or patch // 2**level < 1:
            msg = (
                f"img_size {img_size} cannot be cut into a {num_patch}x{num_patch} patch grid whose patches "
                f"halve {level} times: img_size must be a multiple of "
                f"num_patch * 2**level = {num_patch * 2**level}"
            )
            raise ValueError(msg)
        if not 0 < skip_levels <= level:
            msg = f"skip_levels must be in 1..level={level}, got {skip_levels}"
            raise ValueError(msg)
        channels = [base_width * 2**i for i in range(level + 1)]
        bottleneck = patch // 2**level
        self.grid = num_patch
        self.encoder = Encoder(channels, num_patch, full_image_skips=level - skip_levels)
        self.inpainting = (
            InpaintingBlock(
                channels[-1], bottleneck, num_patch, memory, num_slots, topk, mask_ratio=inpaint_mask_ratio
            )
            if use_inpainting
            else None
        )
        self.student = Decoder(channels, bottleneck, num_patch, skip_levels, num_slots, topk)
        self.teacher = Decoder(channels, bottleneck, num_patch, skip_levels, num_slots, topk=None)

    def forward(self, image: torch.Tensor, teacher: bool = False) -> GeneratorOutput:
        """Reconstruct a 1-channel image in [-1, 1]; the teacher runs only when asked (training losses)."""
        bottleneck, skips = self.encoder(patchify(image, self.grid))
        queries = None
        inpainted = bottleneck
        if self.inpainting is not None:
            inpainted, queries = self.inpainting(bottleneck)
        reconstruction, features = self.student(inpainted, skips)
        output = GeneratorOutput(reconstruction, features, queries)
        if teacher:
            output.teacher_reconstruction, output.teacher_features = self.teacher(
                bottleneck.detach(), [s.detach() for s in skips]
            )
        return output

    def write_memory(self, queries: torch.Tensor) -> None:
        """Store the bottleneck queries of a generator step in the queue (a no-op for a learned matrix)."""
        if self.inpainting is not None and isinstance(self.inpainting.memory, MemoryQueue):
            self.inpainting.memory.write(queries)


class SimSIDModel(nn.Module):
    """SimSID generator and discriminator.

    In eval mode ``forward`` takes anomalib's 3-channel batch in [-1, 1], reduces it to one channel
    (the channel mean), reconstructs it with the student path only, and returns an
    :class:`~anomalib.data.InferenceBatch`: ``pred_score`` is, with ``score="critic"`` (the paper),
    the negated critic logit of the reconstruction (monotone in the paper's
    ``1 - sigmoid((s - mu) / sigma)``), and ``anomaly_map`` the absolute reconstruction residual (a
    plugin extension: the paper defines no map). In training mode it runs what one training step
    needs and returns :class:`SimSIDTrainOutput`.

    The options of :mod:`.robust` (all off by default) are: ``critic_blur_sigma`` (the critic sees
    real and reconstructed images through one fixed low-pass), ``nuisance_strength`` (training-only
    random blur/sharpening, gamma, contrast, brightness), ``intensity_standardise`` (per-image
    standardisation, inside the exported graph), and ``score``: ``"critic"``, ``"lowpass_residual"``
    (mean ``|blur(x) - blur(x_hat)|`` with a ``lowpass_sigma`` Gaussian) or ``"calibrated_residual"``
    (the residual relative to the one expected at the image's sharpness, see
    :class:`.robust.SharpnessCalibration`).
    """

    def __init__(
        self,
        img_size: int = 128,
        num_patch: int = 2,
        level: int = 4,
        base_width: int = 32,
        skip_levels: int = 2,
        memory: str = "matrix",
        num_slots: int = 200,
        topk: int = 5,
        inpaint_mask_ratio: float = 1.0,
        use_inpainting: bool = True,
        disc_eval_norm: str = "per_sample",
        critic_blur_sigma: float = 0.0,
        nuisance_strength: float = 0.0,
        intensity_standardise: bool = False,
        score: str = "critic",
        lowpass_sigma: float = 2.0,
    ) -> None:
        super().__init__()
        if img_size % 32:
            msg = f"img_size must be a multiple of 32 (the critic halves it 5 times), got {img_size}"
            raise ValueError(msg)
        if score not in SCORES:
            msg = f"score must be one of {SCORES}, got {score!r}"
            raise ValueError(msg)
        self.generator = Generator(
            img_size,
            num_patch,
            level,
            base_width,
            skip_levels,
            memory,
            num_slots,
            topk,
            inpaint_mask_ratio,
            use_inpainting,
        )
        self.discriminator = Discriminator(
            img_size, final_size=img_size // 32, eval_norm=disc_eval_norm, input_blur_sigma=critic_blur_sigma
        )
        self.nuisance = NuisanceAugment(nuisance_strength) if nuisance_strength > 0 else None
        self.intensity_standardise = intensity_standardise
        self.score = score
        self.lowpass = GaussianBlur(lowpass_sigma)
        # Only a calibrated model has the buffers, so paper checkpoints keep their exact keys.
        self.calibration = SharpnessCalibration() if score == "calibrated_residual" else None

    @staticmethod
    def to_gray(image: torch.Tensor) -> torch.Tensor:
        """Reduce anomalib's forced 3-channel batch to the single channel SimSID is defined on."""
        return image.mean(dim=1, keepdim=True) if image.shape[1] != 1 else image

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Make the 1-channel image the networks see: grey, (training) nuisance, (option) standardised."""
        gray = self.to_gray(image)
        if self.training and self.nuisance is not None:
            gray = self.nuisance(gray)
        return standardise_intensity(gray) if self.intensity_standardise else gray

    @staticmethod
    def mean_residual(gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean ``|x - x_hat|`` per image: the plain residual score, and what the calibration fits."""
        return (gray - reconstruction).abs().float().mean(dim=(1, 2, 3))

    def lowpass_residual(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean ``|blur(x) - blur(x_hat)|`` per image: the residual without its finest detail."""
        return (self.lowpass(gray) - self.lowpass(reconstruction)).abs().float().mean(dim=(1, 2, 3))

    def calibrated_residual(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Compare the mean residual with the one expected at the image's sharpness (fitted calibration)."""
        return self.calibration(self.mean_residual(gray, reconstruction), mean_abs_gradient(gray))

    def residual_scores(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score by the residual: plain mean, low-pass mean, and (if fitted) sharpness-calibrated."""
        scores = {
            "residual_mean": self.mean_residual(gray, reconstruction),
            "lowpass_residual": self.lowpass_residual(gray, reconstruction),
        }
        if self.calibration is not None:
            scores["calibrated_residual"] = self.calibrated_residual(gray, reconstruction)
        return scores

    def image_score(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Compute the model's ``pred_score`` (higher = more anomalous) as chosen by ``score``."""
        if self.score == "critic":
            return -self.discriminator(reconstruction)
        if self.score == "lowpass_residual":
            return self.lowpass_residual(gray, reconstruction)
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
        """
        with full_precision(image.device.type):
            return self._diagnostic_scores(image)

    def _diagnostic_scores(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        gray = self.prepare(image)
        generated = self.generator(gray, teacher=True)
        reconstruction = generated.reconstruction
        memory_distance = torch.zeros(gray.shape[0], device=gray.device)
        if generated.queries is not None:
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
        """After a generator step, store its bottleneck queries in the queue (no-op for a learned matrix)."""
        self.generator.write_memory(queries)

    def forward(self, image: torch.Tensor, full_pass: bool = True) -> InferenceBatch | SimSIDTrainOutput:
        """Training: generator pass and critic logits. Eval: score and residual map, student path only.

        ``full_pass=False`` (critic-only training batches) runs the generator without an autograd graph
        and without the teacher: the critic step only needs the detached reconstruction. Eval runs in
        fp32 whatever the training precision (:func:`full_precision`), as the exported graph does.
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
