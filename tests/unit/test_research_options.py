"""The research options (benchmarks/research): each does what it claims, and only when on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomalib_simsid.models.simsid.config import SimSIDConfig
from anomalib_simsid.models.simsid.networks.critic import Discriminator
from anomalib_simsid.models.simsid.networks.lowpass import GaussianBlur
from anomalib_simsid.models.simsid.torch_model import SimSIDModel
from anomalib_simsid.models.simsid.training.calibration import mean_abs_gradient
from benchmarks.research.simsid_options import (
    BlurredDiscriminator,
    NuisanceAugment,
    ResearchOptions,
    SimSIDResearchModel,
    standardise_intensity,
)
from tests.helpers import TINY_MODEL


def _research(score: str = "critic", **options: float) -> SimSIDResearchModel:
    return SimSIDResearchModel(SimSIDConfig(**TINY_MODEL), ResearchOptions(**options), score)


def _images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random "anatomy" plus fine texture, in [-1, 1], shape (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=size, mode="bicubic")
    fine = torch.rand(n, 1, size, size, generator=g)
    return (0.7 * coarse + 0.3 * fine).clamp(0, 1) * 2 - 1


def _energy(x: torch.Tensor) -> float:
    return float(mean_abs_gradient(x).mean())


def test_critic_blur_equalises_the_gradient_energy_of_real_and_reconstructed_inputs() -> None:
    real = _images(8)
    fake = GaussianBlur(1.0)(real)  # a reconstruction: same anatomy, smoother
    view = GaussianBlur(3.0)  # what the bandwidth-matched critic applies to both
    raw_gap = abs(_energy(real) - _energy(fake)) / _energy(real)
    seen_gap = abs(_energy(view(real)) - _energy(view(fake))) / _energy(view(real))
    assert raw_gap > 0.4
    assert seen_gap < 0.1


def test_discriminator_scores_its_blurred_input_and_is_unchanged_by_default() -> None:
    torch.manual_seed(0)
    plain = Discriminator(64, final_size=2).eval()
    assert isinstance(BlurredDiscriminator(64, final_size=2).input_filter, nn.Identity)
    blurred = BlurredDiscriminator(64, final_size=2, input_blur_sigma=2.0).eval()
    blurred.load_state_dict(plain.state_dict())  # the filter adds no state: checkpoints keep their keys
    x = _images(3)
    with torch.no_grad():
        torch.testing.assert_close(blurred(x), plain(GaussianBlur(2.0)(x)))
        assert not torch.allclose(blurred(x), plain(x), atol=1e-3)


def test_nuisance_augmentation_varies_training_images_only() -> None:
    torch.manual_seed(0)
    model = _research(nuisance_strength=1.0)
    x = _images(6).expand(-1, 3, -1, -1)
    gray = model.to_gray(x)
    augmented = model.train()(x).image
    assert augmented.shape == gray.shape
    assert augmented.abs().max() <= 1.0
    changed = (augmented - gray).abs().mean(dim=(1, 2, 3))
    assert (changed > 1e-3).all()
    assert changed.std() > 1e-3  # per-image parameters, not one change for the batch
    sharpness = mean_abs_gradient(augmented) / mean_abs_gradient(gray)
    assert sharpness.min() < 0.95 < 1.05 < sharpness.max()  # both blurred and sharpened images
    # Eval (and therefore the exported graph): the same as a model without the option.
    paper = SimSIDModel(SimSIDConfig(**TINY_MODEL))
    paper.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).pred_score, paper.eval()(x).pred_score)
    with pytest.raises(ValueError, match="nuisance_strength"):
        NuisanceAugment(1.5)


def test_standardisation_makes_scores_and_maps_invariant_to_affine_intensity_changes() -> None:
    torch.manual_seed(0)
    x = (_images(4) * 0.6).expand(-1, 3, -1, -1)  # in [-0.6, 0.6]: room for a brighter, wider window
    changed = 1.4 * x + 0.2
    model = _research(intensity_standardise=True).eval()
    paper = SimSIDModel(SimSIDConfig(**TINY_MODEL)).eval()
    paper.load_state_dict(model.state_dict())
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
        torch.testing.assert_close(out.pred_score, out_changed.pred_score, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.anomaly_map, out_changed.anomaly_map, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(paper(x).pred_score, paper(changed).pred_score, atol=1e-2)
    y = standardise_intensity(model.to_gray(x))
    assert y.abs().max() <= 1.0
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(4), atol=0.02, rtol=0)


def test_lowpass_residual_ignores_fine_differences_and_can_be_the_model_score() -> None:
    model = _research("lowpass_residual", lowpass_sigma=2.0).eval()
    x = _images(2)
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.4 - 0.2
    scores = model.residual_scores(x, x + checker)
    torch.testing.assert_close(scores["residual_mean"], torch.full((2,), 0.2))
    assert (scores["lowpass_residual"] < 0.02).all()
    shifted = model.residual_scores(x, x + 0.2)  # a coarse (low-frequency) difference is kept
    torch.testing.assert_close(shifted["lowpass_residual"], torch.full((2,), 0.2), atol=1e-5, rtol=0)
    with torch.no_grad():
        reconstruction = model.generator(x).reconstruction
        expected = (model.lowpass(x) - model.lowpass(reconstruction)).abs().mean(dim=(1, 2, 3))
        torch.testing.assert_close(model(x).pred_score, expected)
        torch.testing.assert_close(model.diagnostic_scores(x)["lowpass_residual"], expected)
