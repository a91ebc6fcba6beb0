"""Options against the sharpness shortcut: each does what it claims, and only when on."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from anomalib_simsid.models.simsid.networks.blocks import Discriminator
from anomalib_simsid.models.simsid.robust import (
    GaussianBlur,
    NuisanceAugment,
    SharpnessCalibration,
    mean_abs_gradient,
    standardise_intensity,
)
from anomalib_simsid.models.simsid.torch_model import GeneratorOutput, SimSIDModel
from tests.helpers import TINY_MODEL


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
    assert isinstance(plain.input_filter, nn.Identity)
    blurred = Discriminator(64, final_size=2, input_blur_sigma=2.0).eval()
    blurred.load_state_dict(plain.state_dict())  # the filter adds no state: checkpoints keep their keys
    x = _images(3)
    with torch.no_grad():
        torch.testing.assert_close(blurred(x), plain(GaussianBlur(2.0)(x)))
        assert not torch.allclose(blurred(x), plain(x), atol=1e-3)


def test_nuisance_augmentation_varies_training_images_only() -> None:
    torch.manual_seed(0)
    model = SimSIDModel(**TINY_MODEL, nuisance_strength=1.0)
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
    paper = SimSIDModel(**TINY_MODEL)
    paper.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).pred_score, paper.eval()(x).pred_score)
    with pytest.raises(ValueError, match="nuisance_strength"):
        NuisanceAugment(1.5)


def test_standardisation_makes_scores_and_maps_invariant_to_affine_intensity_changes() -> None:
    torch.manual_seed(0)
    x = (_images(4) * 0.6).expand(-1, 3, -1, -1)  # in [-0.6, 0.6]: room for a brighter, wider window
    changed = 1.4 * x + 0.2
    model = SimSIDModel(**TINY_MODEL, intensity_standardise=True).eval()
    paper = SimSIDModel(**TINY_MODEL).eval()
    paper.load_state_dict(model.state_dict())
    with torch.no_grad():
        out, out_changed = model(x), model(changed)
        torch.testing.assert_close(out.pred_score, out_changed.pred_score, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.anomaly_map, out_changed.anomaly_map, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(paper(x).pred_score, paper(changed).pred_score, atol=1e-2)
    y = standardise_intensity(model.to_gray(x))
    assert y.abs().max() <= 1.0
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(4), atol=0.02, rtol=0)


class _Smoother(nn.Module):
    """A stand-in generator whose reconstruction is a blurred copy of its input (like SimSID's)."""

    def __init__(self) -> None:
        super().__init__()
        self.blur = GaussianBlur(1.5)

    def forward(self, image: torch.Tensor, teacher: bool = False) -> GeneratorOutput:
        del teacher
        return GeneratorOutput(self.blur(image), [], None)


def _sharpness_series(n: int, seed: int) -> torch.Tensor:
    """Normal images at random sharpness (blurred by a random sigma in 0.3-2 px)."""
    base = _images(n, seed=seed)
    sigmas = torch.empty(n).uniform_(0.3, 2.0, generator=torch.Generator().manual_seed(seed))
    return torch.cat([GaussianBlur(float(s))(img[None]) for s, img in zip(sigmas, base, strict=True)])


def test_calibrated_residual_removes_the_sharpness_trend_that_the_plain_residual_follows() -> None:
    model = SimSIDModel(**TINY_MODEL, score="calibrated_residual").eval()
    model.generator = _Smoother()
    train, held_out = _sharpness_series(64, seed=1), _sharpness_series(64, seed=2)
    fitted = model.residual_scores(train, model.generator(train).reconstruction)
    model.calibration.fit(fitted["residual_mean"], mean_abs_gradient(train))
    assert float(model.calibration.slope) > 0.5  # sharp normals reconstruct worse
    with torch.no_grad():
        scores = model.residual_scores(held_out, model.generator(held_out).reconstruction)
    sharpness = mean_abs_gradient(held_out).numpy()
    assert spearmanr(scores["residual_mean"].numpy(), sharpness).statistic > 0.9
    # A line in log-log space: most of the trend goes (the rest is the curvature a line cannot follow).
    assert abs(spearmanr(scores["calibrated_residual"].numpy(), sharpness).statistic) < 0.4
    # A sharpness-only nuisance (one image blurred more) moves the plain residual, not the calibrated one.
    sharpest = int(mean_abs_gradient(held_out).argmax())
    one = held_out[sharpest : sharpest + 1]
    softer = GaussianBlur(1.5)(one)
    pair = model.residual_scores(
        torch.cat([one, softer]), model.generator(torch.cat([one, softer])).reconstruction
    )
    plain_change = abs(float(pair["residual_mean"][0].log() - pair["residual_mean"][1].log()))
    calibrated_change = abs(float(pair["calibrated_residual"][0] - pair["calibrated_residual"][1]))
    assert plain_change > 0.3
    assert calibrated_change < plain_change / 3
    # The model's score is the calibrated residual; the buffers are part of the state (checkpoints).
    torch.testing.assert_close(model(held_out).pred_score, scores["calibrated_residual"])
    assert {"calibration.slope", "calibration.intercept"} <= set(model.state_dict())


def test_only_a_calibrated_model_has_calibration_buffers() -> None:
    assert not any(k.startswith("calibration.") for k in SimSIDModel(**TINY_MODEL).state_dict())
    with pytest.raises(ValueError, match="at least 2 images"):
        SharpnessCalibration().fit(torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="score must be one of"):
        SimSIDModel(**TINY_MODEL, score="ssim")


def test_lowpass_residual_ignores_fine_differences_and_can_be_the_model_score() -> None:
    model = SimSIDModel(**TINY_MODEL, score="lowpass_residual", lowpass_sigma=2.0).eval()
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
