"""The sharpness calibration (``score="calibrated_residual"``) removes the sharpness trend it is fitted on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from scipy.stats import spearmanr
from torch import nn

from anomalib_simsid import DigitAnatomy, SimSID
from anomalib_simsid.models.simsid.config import SimSIDConfig
from anomalib_simsid.models.simsid.networks.generator import GeneratorOutput
from anomalib_simsid.models.simsid.networks.lowpass import GaussianBlur
from anomalib_simsid.models.simsid.torch_model import SimSIDModel
from anomalib_simsid.models.simsid.training.calibration import SharpnessCalibration, mean_abs_gradient
from tests.helpers import TINY_DATA, TINY_MODEL


def _images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random "anatomy" plus fine texture, in [-1, 1], shape (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=size, mode="bicubic")
    fine = torch.rand(n, 1, size, size, generator=g)
    return (0.7 * coarse + 0.3 * fine).clamp(0, 1) * 2 - 1


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
    model = SimSIDModel(SimSIDConfig(**TINY_MODEL, score="calibrated_residual")).eval()
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
    assert not any(k.startswith("calibration.") for k in SimSIDModel(SimSIDConfig(**TINY_MODEL)).state_dict())
    with pytest.raises(ValueError, match="at least 2 images"):
        SharpnessCalibration().fit(torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="score must be one of"):
        SimSIDConfig(**TINY_MODEL, score="ssim")


def test_the_calibration_fit_changes_no_training_step_and_lands_in_the_checkpoint(
    digit_root: Path, tmp_path: Path
) -> None:
    weights = {}
    for score in ("critic", "calibrated_residual"):
        seed_everything(0)
        model = SimSID(**TINY_MODEL, score=score, visualizer=False)
        engine = Engine(
            default_root_dir=tmp_path / score,
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        datamodule = DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=8)
        engine.fit(model, datamodule=datamodule)
        weights[score] = torch.cat([p.detach().flatten().clone() for p in model.model.parameters()])
    torch.testing.assert_close(weights["critic"], weights["calibrated_residual"], rtol=0, atol=0)
    calibration = model.model.calibration
    assert float(calibration.slope) != 0.0
    state = torch.load(engine.trainer.checkpoint_callback.best_model_path, weights_only=True)["state_dict"]
    assert float(state["model.calibration.slope"]) == float(calibration.slope)
