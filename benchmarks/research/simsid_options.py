"""SimSID's options against the sharpness shortcut that were measured not to help: a research subclass.

SimSID's reconstructions are smoother than their inputs, so a critic trained to tell the two apart
can learn to detect blur. A 64-px exploration (``benchmarks/results/robust/README.md``) tried one
remedy per option; only ``score: calibrated_residual`` won on both sets and stays in the product.
These did not, and live here with their tests, so the committed results stay reproducible:

* ``critic_blur_sigma``: a fixed Gaussian low-pass in front of the critic, for real and reconstructed
  images alike (:class:`BlurredDiscriminator`);
* ``nuisance_strength``: random blur/sharpening, gamma, contrast and brightness of training images
  (:class:`NuisanceAugment`);
* ``intensity_standardise``: per-image zero mean and fixed spread, inside the exported graph
  (:func:`standardise_intensity`);
* ``score: lowpass_residual`` with ``lowpass_sigma``: mean ``|blur(x) - blur(x_hat)|`` as the score;
* ``ema_decay`` / ``ema_scope``: a weight average swapped in wherever the model is scored
  (:mod:`.weight_average`).

Each is off by default; ``SimSIDResearch()`` with no option is the product's :class:`SimSID`, weight
for weight under the same seed. Train it with ``python -m benchmarks.curves ... --model-class
benchmarks.research.simsid_options.SimSIDResearch --model-args '{"ema_decay": 0.98}'`` (the full
commands: ``benchmarks/results/robust/README.md``), or name it as ``class_path`` in a config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from anomalib.data import Batch
from torch import nn

from anomalib_simsid.models.simsid import SimSID, SimSIDModel
from anomalib_simsid.models.simsid.config import SimSIDConfig
from anomalib_simsid.models.simsid.networks.critic import Discriminator
from anomalib_simsid.models.simsid.networks.lowpass import GaussianBlur
from anomalib_simsid.models.simsid.training.calibration import for_each_training_image

from .weight_average import averaged_networks, build_weight_average, recompute_batchnorm

# The spread a [-1, 1] chest X-ray has on average (std 0.24 in [0, 1] on both real sets): after
# standardisation images keep the value range the generator's tanh output can reach.
STANDARD_STD = 0.5
SCORES = ("critic", "lowpass_residual", "calibrated_residual")


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


class BlurredDiscriminator(Discriminator):
    """The critic behind a fixed Gaussian low-pass, so sharpness alone cannot separate real from fake.

    ``input_blur_sigma = 0`` is the plain critic. The filter has no state: checkpoints keep their keys.
    """

    def __init__(
        self,
        img_size: int,
        in_ch: int = 1,
        final_size: int = 4,
        eval_norm: str = "per_sample",
        input_blur_sigma: float = 0.0,
    ) -> None:
        super().__init__(img_size, in_ch, final_size, eval_norm)
        self.input_filter = GaussianBlur(input_blur_sigma) if input_blur_sigma > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur, then score like :class:`Discriminator`."""
        return super().forward(self.input_filter(x))


@dataclass(frozen=True)
class ResearchOptions:
    """The research options of the torch model (see the module docstring); all off by default."""

    critic_blur_sigma: float = 0.0
    nuisance_strength: float = 0.0
    intensity_standardise: bool = False
    lowpass_sigma: float = 2.0


class SimSIDResearchModel(SimSIDModel):
    """:class:`SimSIDModel` with the research options; ``score`` may also be ``"lowpass_residual"``."""

    def __init__(self, config: SimSIDConfig, options: ResearchOptions, score: str) -> None:
        super().__init__(config)
        if options.critic_blur_sigma > 0:
            # Same weights as the plain critic just drawn (and the RNG left as it was): the filter
            # adds no parameter, so a seed gives the weights it gave before the options left src/.
            with torch.random.fork_rng(devices=[]):
                critic = BlurredDiscriminator(
                    config.img_size,
                    final_size=config.img_size // 32,
                    eval_norm=config.disc_eval_norm,
                    input_blur_sigma=options.critic_blur_sigma,
                )
            critic.load_state_dict(self.discriminator.state_dict())
            self.discriminator = critic
        self.nuisance = NuisanceAugment(options.nuisance_strength) if options.nuisance_strength > 0 else None
        self.intensity_standardise = options.intensity_standardise
        self.score = score
        self.lowpass = GaussianBlur(options.lowpass_sigma)

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Grey, (training) nuisance augmentation, (option) standardised."""
        gray = self.to_gray(image)
        if self.training and self.nuisance is not None:
            gray = self.nuisance(gray)
        return standardise_intensity(gray) if self.intensity_standardise else gray

    def image_score(self, gray: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Score as :class:`SimSIDModel` does, or by the low-pass residual."""
        if self.score == "lowpass_residual":
            return self.lowpass_residual(gray, reconstruction)
        return super().image_score(gray, reconstruction)


class SimSIDResearch(SimSID):
    """:class:`SimSID` with the options measured not to help (module docstring); all off by default.

    Args:
        critic_blur_sigma: Gaussian low-pass (pixels) in front of the critic. 0 = off (paper).
        nuisance_strength: random blur/sharpening, gamma, contrast and brightness of training
            images, scaled 0-1. 0 = off.
        intensity_standardise: per-image zero mean / fixed spread before the networks, in training,
            inference and the exported graph. False = paper.
        lowpass_sigma: Gaussian (pixels) of the low-pass residual (score and diagnostic).
        ema_decay: exponential moving average of the networks' weights, used by validation,
            checkpoints, test and export. 0 = off.
        ema_scope: ``"generator"`` (the live critic judges the averaged generator) or ``"both"``
            (critic averaged too, BatchNorm statistics recomputed on the training images).
        score: as :class:`SimSID`, or ``"lowpass_residual"``.
        **kwargs: :class:`SimSID`'s arguments.
    """

    def __init__(
        self,
        critic_blur_sigma: float = 0.0,
        nuisance_strength: float = 0.0,
        intensity_standardise: bool = False,
        lowpass_sigma: float = 2.0,
        ema_decay: float = 0.0,
        ema_scope: str = "generator",
        score: str = "critic",
        **kwargs: Any,
    ) -> None:
        if score not in SCORES:
            msg = f"score must be one of {SCORES}, got {score!r}"
            raise ValueError(msg)
        super().__init__(score="critic" if score == "lowpass_residual" else score, **kwargs)
        options = ResearchOptions(critic_blur_sigma, nuisance_strength, intensity_standardise, lowpass_sigma)
        plain = self.model
        with torch.random.fork_rng(devices=[]):  # the same weights as the plain model, RNG untouched
            research = SimSIDResearchModel(plain.config, options, score)
        research.load_state_dict(plain.state_dict())
        if kwargs.get("channels_last"):
            research.to(memory_format=torch.channels_last)
        self.model = research
        self.weight_average = build_weight_average(self.model, ema_decay, ema_scope)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """:meth:`SimSID.training_step`, then the average follows the live weights."""
        super().training_step(batch, batch_idx)
        generator_step = batch_idx % self.hparams.n_critic == 0
        if self.weight_average is not None and (generator_step or self.hparams.ema_scope == "both"):
            self.weight_average.update(averaged_networks(self.model, self.hparams.ema_scope))

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Train the live weights (the averaged ones sit in the model from the end of each epoch)."""
        del batch, batch_idx
        average = self.weight_average
        if average is not None and bool(average.averaged_in_model):
            average.swap(averaged_networks(self.model, self.hparams.ema_scope))

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """After the epoch's last batch: averaged weights in, then the calibration fitted on them."""
        if self.trainer.is_last_batch or batch_idx + 1 >= self.trainer.num_training_batches:
            self._swap_in_average()
        super().on_train_batch_end(outputs, batch, batch_idx)

    def _swap_in_average(self) -> None:
        """Put the averaged weights in the model (BatchNorm recomputed for ``"both"``)."""
        average, model = self.weight_average, self.model
        if average is None:
            return
        scope = self.hparams.ema_scope
        if not bool(average.averaged_in_model):
            average.swap(averaged_networks(model, scope))
        if scope != "both":
            return
        was_training = model.training
        model.eval()  # clean images: no nuisance augmentation, no in-painting mask

        def refresh(image: torch.Tensor) -> None:
            gray = model.prepare(image)
            model.discriminator(gray)
            model.discriminator(model.generator(gray).reconstruction)

        try:
            networks = [model.generator, model.discriminator]
            recompute_batchnorm(networks, lambda: for_each_training_image(self, refresh))
        finally:
            model.train(was_training)
