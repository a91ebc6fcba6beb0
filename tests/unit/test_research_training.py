"""The research subclass through a real fit: weight averaging, alone and with the calibration fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from anomalib_simsid import DigitAnatomy, SimSID
from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError
from benchmarks.research.simsid_options import SimSIDResearch
from tests.helpers import TINY_DATA, TINY_MODEL

OPTIONS = (
    "critic_blur_sigma",
    "nuisance_strength",
    "intensity_standardise",
    "score",
    "lowpass_sigma",
    "ema_decay",
    "ema_scope",
)


def test_the_research_model_without_options_is_the_product_model_weight_for_weight() -> None:
    states = []
    for cls, options in ((SimSID, {}), (SimSIDResearch, {"critic_blur_sigma": 1.0, "lowpass_sigma": 1.0})):
        seed_everything(0)
        model = cls(**TINY_MODEL, **options, visualizer=False)
        states.append((model.state_dict(), torch.rand(3)))  # the RNG after construction, too
    (plain, plain_next), (research, research_next) = states
    assert plain.keys() == research.keys()
    torch.testing.assert_close(research, plain, rtol=0, atol=0, equal_nan=True)  # NaN: unfitted thresholds
    assert torch.equal(plain_next, research_next)


def _fit(
    model: SimSID, root: Path, work: Path, callbacks: list[Callback] | None = None, epochs: int = 2
) -> Engine:
    engine = Engine(
        default_root_dir=work,
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )
    engine.fit(
        model, datamodule=DigitAnatomy(root=str(root), **TINY_DATA, train_batch_size=8, eval_batch_size=8)
    )
    return engine


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


class _RecordGenerator(Callback):
    """Record the generator's live weights after every generator step and what validation scores with."""

    def __init__(self, n_critic: int) -> None:
        self.n_critic = n_critic
        self.initial: torch.Tensor | None = None
        self.after_steps: list[torch.Tensor] = []
        self.at_validation: list[torch.Tensor] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.initial = _flat(pl_module.model.generator)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        # Callbacks run before the module's own hook, so these are still the live weights.
        if batch_idx % self.n_critic == 0:
            self.after_steps.append(_flat(pl_module.model.generator))

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.at_validation.append(_flat(pl_module.model.generator))


def test_generator_average_is_what_validation_checkpoints_and_inference_use(
    digit_root: Path, tmp_path: Path
) -> None:
    seed_everything(0)
    decay = 0.9
    model = SimSIDResearch(**TINY_MODEL, ema_decay=decay, lr=1e-3, disc_lr=1e-3, visualizer=False)
    critic_before = _flat(model.model.discriminator)
    record = _RecordGenerator(n_critic=2)
    engine = _fit(model, digit_root, tmp_path, [record])
    # The EMA of the live weights after every generator step, computed here independently.
    expected = record.initial
    for n, live in enumerate(record.after_steps):
        warm = min(decay, (1 + n) / (10 + n))  # the warm-up keeps a short run off the initial weights
        expected = warm * expected + (1 - warm) * live
    averaged = _flat(model.model.generator)
    torch.testing.assert_close(averaged, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(averaged, record.after_steps[-1], atol=1e-4)  # it really differs from live
    assert len(record.at_validation) == 2
    assert torch.equal(record.at_validation[-1], averaged)  # validation scored the averaged generator
    # The critic is not averaged (scope "generator"): it is live, and it trained.
    assert not torch.equal(_flat(model.model.discriminator), critic_before)
    assert not torch.equal(_flat(model.weight_average.shadow["generator"]), averaged)
    # The checkpoint's model weights are the averaged ones; the options are hyper-parameters.
    checkpoint = torch.load(engine.trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert {k: checkpoint["hyper_parameters"][k] for k in ("ema_decay", "ema_scope")} == {
        "ema_decay": decay,
        "ema_scope": "generator",
    }
    assert set(OPTIONS) <= set(checkpoint["hyper_parameters"])
    best = engine.trainer.checkpoint_callback.best_model_path
    with pytest.raises(NotSimSIDError, match=r"ema_decay=0\.9, an option SimSID no longer has"):
        SimSID.load_from_checkpoint(best)  # the product class would silently score the live weights
    reloaded = SimSIDResearch.load_from_checkpoint(best).eval()
    torch.testing.assert_close(_flat(reloaded.model.generator), averaged)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(image).pred_score, model.eval()(image).pred_score)
    # Training resumes from the live weights.
    model.on_train_batch_start(None, 0)
    torch.testing.assert_close(_flat(model.model.generator), record.after_steps[-1])
    assert not bool(model.weight_average.averaged_in_model)


def test_averaging_both_networks_recomputes_batchnorm_for_the_averaged_weights(
    digit_root: Path, tmp_path: Path
) -> None:
    seed_everything(0)
    model = SimSIDResearch(**TINY_MODEL, ema_decay=0.5, ema_scope="both", visualizer=False)
    _fit(model, digit_root, tmp_path, epochs=1)
    live = model.weight_average.shadow
    assert not torch.equal(_flat(model.model.discriminator), _flat(live["discriminator"]))
    norm = model.model.generator.encoder.inc.head[1]
    live_norm = live["generator"].encoder.inc.head[1]
    assert not torch.allclose(norm.running_mean, live_norm.running_mean)  # recomputed, not copied
    assert norm.momentum == live_norm.momentum == 0.1  # restored after the cumulative pass


def test_a_limited_epoch_still_ends_with_the_average_in_and_the_calibration_fitted(
    digit_root: Path, tmp_path: Path
) -> None:
    seed_everything(0)
    model = SimSIDResearch(**TINY_MODEL, score="calibrated_residual", ema_decay=0.5, visualizer=False)
    engine = Engine(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(
        model,
        datamodule=DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=8),
    )
    assert bool(model.weight_average.averaged_in_model)
    assert float(model.model.calibration.slope) != 0.0
