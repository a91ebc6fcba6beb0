"""The Lightning module: training schedule, queue writes, determinism, anomalib registration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_simsid import DigitAnatomy, SimSID
from tests.helpers import TINY_DATA, TINY_MODEL, save_foreign_checkpoint


def _engine(tmp_path: Path, **kwargs: object) -> Engine:
    defaults = {"max_epochs": 1, "enable_progress_bar": False, "logger": False}
    return Engine(default_root_dir=tmp_path, accelerator="cpu", devices=1, **{**defaults, **kwargs})


def _data(root: Path, **kwargs: object) -> DigitAnatomy:
    return DigitAnatomy(root=str(root), **TINY_DATA, train_batch_size=8, eval_batch_size=8, **kwargs)


def test_queue_is_written_only_after_generator_steps(tmp_path: Path, digit_root: Path) -> None:
    """3 batches with n_critic=2: generator steps on batches 0 and 2, so 2 x 8 rows, never in validation."""
    model = SimSID(**TINY_MODEL, memory="queue", visualizer=False)
    queue = model.model.generator.inpainting.memory
    initial = queue.memory.clone()
    engine = _engine(tmp_path, limit_train_batches=3, limit_val_batches=2)
    engine.fit(model, datamodule=_data(digit_root))
    assert queue.ptr.item() == 16
    assert not torch.equal(queue.memory[:, :16], initial[:, :16])
    assert torch.equal(queue.memory[:, 16:], initial[:, 16:])
    written = queue.memory.clone()
    engine.validate(model, datamodule=_data(digit_root))
    engine.test(model, datamodule=_data(digit_root))
    assert torch.equal(queue.memory, written)
    assert queue.ptr.item() == 16


def test_schedule_steps_once_per_epoch_and_optimisers_follow_the_release(
    tmp_path: Path, digit_root: Path
) -> None:
    model = SimSID(**TINY_MODEL, cosine_period=4, eta_min=1e-5, visualizer=False)
    _engine(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1).fit(
        model, datamodule=_data(digit_root)
    )
    d_opt, g_opt = model.optimizers()
    assert d_opt.param_groups[0]["eps"] == 1e-8
    assert d_opt.param_groups[0]["weight_decay"] == 0
    assert g_opt.param_groups[0]["eps"] == 1e-7
    assert g_opt.param_groups[0]["weight_decay"] == 1e-5
    # cosine after 2 of T_max=4 epochs: eta_min + (lr - eta_min) * (1 + cos(pi/2)) / 2
    assert g_opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (1e-4 - 1e-5) * 0.5)
    assert d_opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_disc_cosine_anneals_the_critic_on_the_same_schedule(tmp_path: Path, digit_root: Path) -> None:
    model = SimSID(
        **TINY_MODEL, cosine_period=4, eta_min=1e-5, disc_cosine=True, disc_lr=2e-4, visualizer=False
    )
    _engine(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1).fit(
        model, datamodule=_data(digit_root)
    )
    d_opt, g_opt = model.optimizers()
    assert g_opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (1e-4 - 1e-5) * 0.5)
    assert d_opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (2e-4 - 1e-5) * 0.5)


def _scores(tmp_path: Path, root: Path, seed: int) -> torch.Tensor:
    seed_everything(seed, workers=True)
    model = SimSID(**TINY_MODEL, memory="queue", visualizer=False)
    engine = _engine(tmp_path / str(seed), max_epochs=2)
    datamodule = _data(root)
    engine.fit(model, datamodule=datamodule)
    predictions = engine.predict(model, dataloaders=datamodule.test_dataloader())
    return torch.cat([batch.pred_score for batch in predictions])


def test_same_seed_gives_same_scores(tmp_path: Path, digit_root: Path) -> None:
    first = _scores(tmp_path / "a", digit_root, seed=7)
    second = _scores(tmp_path / "b", digit_root, seed=7)
    other = _scores(tmp_path / "c", digit_root, seed=8)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_registered_with_anomalib() -> None:
    import anomalib.data
    import anomalib.models
    from anomalib.models import get_model

    assert anomalib.models.SimSID is SimSID
    assert anomalib.data.ZhangLab.__module__ == "anomalib_simsid.data.zhanglab"
    model = get_model("SimSID", **TINY_MODEL)
    assert isinstance(model, SimSID)
    assert model.model.generator.grid == 2


def test_max_epochs_enters_trainer_arguments_only_when_set() -> None:
    assert "max_epochs" not in SimSID(**TINY_MODEL).trainer_arguments
    assert SimSID(**TINY_MODEL, max_epochs=3).trainer_arguments["max_epochs"] == 3


def test_user_pre_processor_must_resize_to_the_network_size() -> None:
    """The network size and the pre-processor's resize have one source: a mismatch is refused at once."""
    matching = SimSID.configure_pre_processor((64, 64))
    assert SimSID(**TINY_MODEL, pre_processor=matching).pre_processor is matching
    with pytest.raises(ValueError, match=r"resizes to \(96, 96\), but the model's img_size is 64"):
        SimSID(**TINY_MODEL, pre_processor=SimSID.configure_pre_processor((96, 96)))


def test_ddp_without_unused_parameter_detection_is_refused_with_the_strategy_to_use() -> None:
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    from anomalib_simsid.models.simsid.training.distributed import require_unused_parameter_detection

    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        require_unused_parameter_detection(DDPStrategy())
    require_unused_parameter_detection(StrategyRegistry.get("ddp_find_unused_parameters_true"))
    with pytest.raises(ValueError, match="static_graph=True"):  # issue 31: the graph is not static
        require_unused_parameter_detection(DDPStrategy(static_graph=True))
    require_unused_parameter_detection(object())  # not DDP: nothing to check


def test_foreign_checkpoint_is_refused_with_a_short_not_simsid_error(tmp_path: Path) -> None:
    """``SimSID.load_from_checkpoint`` (what ``anomalib export --ckpt_path`` runs) names the problem."""
    from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError

    path = save_foreign_checkpoint(tmp_path / "padim.ckpt")
    with pytest.raises(NotSimSIDError, match="not a SimSID checkpoint") as error:
        SimSID.load_from_checkpoint(path)
    assert "feature_extractor" in str(error.value)  # names what the checkpoint holds
    assert len(str(error.value)) < 400
