"""SimSID's five losses and their weights (``docs/method.md``, "Losses and training schedule")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .torch_model import SimSIDTrainOutput


class GeneratorLoss(nn.Module):
    """``λ_s·MSE(x̂_s, x) + λ_t·MSE(x̂_t, x) + λ_dist·Σ_l MSE(F_s^l, F_t^l) + λ_gen·BCE(D(x̂_s), 1)``.

    The teacher's reconstruction loss reaches only the teacher (its inputs are detached in the
    model); the distillation term trains both decoders and the whole student path.
    """

    def __init__(
        self, recon: float = 10.0, teacher: float = 0.01, dist: float = 0.001, adv: float = 0.005
    ) -> None:
        super().__init__()
        self.weights = {"recon": recon, "teacher": teacher, "dist": dist, "adv": adv}

    def forward(
        self, output: SimSIDTrainOutput, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and unweighted terms (for logging); ``fake_logits``: the updated critic on x̂_s.

        Args:
            output: the training pass.
            fake_logits: the updated critic's logits on the student's reconstruction.

        Returns:
            The weighted loss and the unweighted terms by name.
        """
        image, generated = output.image, output.generated
        terms = {
            "recon": F.mse_loss(generated.reconstruction, image),
            "teacher": F.mse_loss(generated.teacher_reconstruction, image),
            "dist": sum(
                F.mse_loss(s, t) for s, t in zip(generated.features, generated.teacher_features, strict=True)
            ),
            "adv": F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)),
        }
        return sum(self.weights[k] * v for k, v in terms.items()), terms


class DiscriminatorLoss(nn.Module):
    """``λ_d·[BCE(D(x), 1) + BCE(D(stopgrad(x̂_s)), 0)]``, real and fake in separate critic calls."""

    def __init__(self, weight: float = 0.005) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, output: SimSIDTrainOutput) -> torch.Tensor:
        """Weighted critic loss from the training output's real and (detached) fake logits.

        Args:
            output: the training pass.

        Returns:
            The weighted loss.
        """
        real_logits, fake_logits = output.real_logits, output.fake_logits
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return self.weight * (real + fake)
