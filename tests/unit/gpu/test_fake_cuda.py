"""The GPU lane without a GPU: SimSID on fake CUDA tensors under CUDA's fp16 and bf16 autocast.

What each test would catch on a GPU (see :mod:`tests.fake_cuda` for the machinery):

* ``test_training_step``: a CPU tensor created inside the step (device mix), a host synchronisation
  (``.item()``, ``bool()``, ``int()`` of a tensor, ``nonzero``, a copy to the CPU), a loss that is not
  an fp32 scalar on the GPU, an optimiser that does not step, the critic's loss reaching the
  generator (a missing ``detach``), a loss logged without ``sync_dist``. Every option that stays in
  the product: memory matrix / queue, score critic / calibrated_residual, channels-last.
* ``test_eval_scores_are_fp32``: validation and predict scoring any operator in fp16/bf16 (the
  threshold and min/max would then be fitted on other numbers than the fp32 export computes).
* ``test_score_curves_match_validation_precision``: ScoreCurves scoring at another precision than
  validation (its curve AUROC would differ from the logged ``image_AUROC``).
* ``test_calibration_pass_is_fp32``: the end-of-epoch calibration fitted on reduced-precision
  residuals.
* ``test_lane_catches_*``: the lane itself raises on a host sync and on a device mix.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, unset_fake_temporarily

from anomalib_simsid import SimSID
from tests.fake_cuda import (
    AUTOCAST_DTYPES,
    FakeBatch,
    OpRecorder,
    cuda_autocast,
    fake_cuda,
    reached_parameters,
    to_fake_cuda,
)
from tests.helpers import TINY_MODEL

OPTIONS = {
    "paper": {},
    "queue": {"memory": "queue", "num_slots": 24},
    "calibrated_residual": {"memory": "queue", "num_slots": 24, "score": "calibrated_residual"},
    "channels_last": {"channels_last": True},
}
BATCH = 4
pytestmark = pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")


class StepRecorder:
    """Stands in for Lightning around ``training_step``: optimisers, ``manual_backward``, ``log_dict``."""

    def __init__(self, module: SimSID) -> None:
        self.stepped: list[str] = []
        self.losses: list[torch.Tensor] = []
        self.logged: list[tuple[dict, dict]] = []
        d_opt, g_opt = module.configure_optimizers()[0]
        self.params = {
            "critic": [id(p) for group in d_opt.param_groups for p in group["params"]],
            "generator": [id(p) for group in g_opt.param_groups for p in group["params"]],
        }
        module.optimizers = lambda: (self._optimizer("critic"), self._optimizer("generator"))
        # The autograd engine needs a CUDA context to run: the graph each loss reaches is checked instead.
        module.manual_backward = self.losses.append
        module.log_dict = lambda values, **kwargs: self.logged.append((values, kwargs))
        module._trainer = SimpleNamespace(world_size=1)

    def _optimizer(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(zero_grad=lambda: None, step=lambda: self.stepped.append(name))


def fake_module(mode, **options) -> SimSID:
    """A tiny SimSID (built on the CPU, as Lightning does) moved to fake CUDA."""
    with unset_fake_temporarily(), torch.device("cpu"):
        torch.manual_seed(0)
        module = SimSID(**TINY_MODEL, visualizer=False, **options)
    return to_fake_cuda(module, mode)


def images() -> torch.Tensor:
    """A pre-processed batch on the GPU (what the model sees after anomalib's pre-processor)."""
    size = TINY_MODEL["img_size"]
    return torch.rand(BATCH, 3, size, size) * 2 - 1


@pytest.mark.parametrize("precision", sorted(AUTOCAST_DTYPES))
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_training_step(precision: str, option: str) -> None:
    with fake_cuda() as mode:
        module = fake_module(mode, **OPTIONS[option])
        step = StepRecorder(module)
        module.train()
        recorder = OpRecorder()
        with cuda_autocast(AUTOCAST_DTYPES[precision]), recorder:
            module.training_step(FakeBatch(images()), batch_idx=0)  # critic and generator step
            module.training_step(FakeBatch(images()), batch_idx=1)  # critic only
    assert step.stepped == ["critic", "generator", "critic"]
    assert not recorder.host_copies, f"copies to the host inside the step: {recorder.host_copies}"
    assert recorder.reduced_precision_ops(), "autocast did not reach the step (the lane would be void)"
    for loss in step.losses:
        assert (loss.device.type, loss.dtype, loss.dim()) == ("cuda", torch.float32, 0)
        assert loss.requires_grad
    critic, generator = set(step.params["critic"]), set(step.params["generator"])
    d_loss, g_loss = step.losses[0], step.losses[1]
    assert reached_parameters(d_loss) <= critic, "the critic's loss reaches generator parameters"
    assert generator <= reached_parameters(g_loss), "a generator parameter gets no gradient"
    for values, kwargs in step.logged:
        assert kwargs.get("sync_dist") is True, "losses must be averaged over DDP ranks"
        assert all(v.device.type == "cuda" for v in values.values()), "logged values left the GPU"
    if option != "paper" and "queue" in str(OPTIONS[option].get("memory")):
        queue = module.model.generator.inpainting.memory
        assert (queue.ptr.device.type, queue.memory.dtype) == ("cuda", torch.float32)


@pytest.mark.parametrize("precision", sorted(AUTOCAST_DTYPES))
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_eval_scores_are_fp32(precision: str, option: str) -> None:
    """Validation and predict (anomalib's predict step is the validation step) score in fp32."""
    with fake_cuda() as mode:
        module = fake_module(mode, **OPTIONS[option]).eval()
        recorder = OpRecorder()
        with cuda_autocast(AUTOCAST_DTYPES[precision]), recorder:
            validated = module.validation_step(FakeBatch(images()), 0)
            predicted = module.predict_step(FakeBatch(images()), 0)
    assert not recorder.reduced_precision_ops(), (
        f"reduced precision in scoring: {recorder.reduced_precision_ops()}"
    )
    for batch in (validated, predicted):
        for name in ("pred_score", "anomaly_map"):
            value = batch.fields[name]
            assert (value.device.type, value.dtype) == ("cuda", torch.float32), name
        assert batch.fields["pred_score"].shape == (BATCH,)


@pytest.mark.parametrize("precision", sorted(AUTOCAST_DTYPES))
def test_score_curves_match_validation_precision(precision: str) -> None:
    """ScoreCurves runs outside the step (no autocast) and validation inside it: both must be fp32."""
    from anomalib_simsid.models.simsid.adapters.score_curves import score_tensors

    with fake_cuda() as mode:
        module = fake_module(mode, score="calibrated_residual").eval()
        size = TINY_MODEL["img_size"]
        with torch.device("cpu"):  # a DataLoader yields CPU batches, 0-1 images at the file's size
            loader = [
                FakeBatch(
                    torch.rand(BATCH, 3, size + 8, size + 8), torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"]
                )
            ]
        to_fake_cuda(module.pre_processor, mode)
        curves, validation = OpRecorder(), OpRecorder()
        with curves:
            scores, labels, paths = score_tensors(module, loader)
        with cuda_autocast(AUTOCAST_DTYPES[precision]), validation:
            module.validation_step(FakeBatch(images()), 0)
    assert not curves.reduced_precision_ops()
    assert not validation.reduced_precision_ops()
    assert {"critic_recon", "calibrated_residual"} <= scores.keys()
    assert all(
        v.dtype == torch.float32 and v.device.type == "cuda" and v.shape == (BATCH,) for v in scores.values()
    )
    assert labels.shape == (BATCH,)
    assert paths == ["a", "b", "c", "d"]


@pytest.mark.parametrize("precision", sorted(AUTOCAST_DTYPES))
def test_calibration_pass_is_fp32(precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration line is fitted on fp32 residuals, even when training runs under autocast."""
    from anomalib_simsid.models.simsid.training.calibration import fit_calibration

    # fork_rng saves and restores the GPU's generator: a fake one (there is no CUDA driver here).
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.zeros(16, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": None)
    with fake_cuda() as mode:
        module = fake_module(mode, score="calibrated_residual")
        to_fake_cuda(module.pre_processor, mode)
        with torch.device("cpu"):
            batches = [FakeBatch(torch.rand(BATCH, 3, 64, 64)) for _ in range(2)]
        autocast = AUTOCAST_DTYPES[precision]
        module._trainer = SimpleNamespace(
            world_size=1,
            datamodule=SimpleNamespace(train_dataloader=lambda: batches, train_data=[None] * 2 * BATCH),
            precision_plugin=SimpleNamespace(forward_context=lambda: cuda_autocast(autocast)),
        )
        fitted = []
        monkeypatch.setattr(module.model.calibration, "fit", lambda r, s: fitted.append((r, s)))
        recorder = OpRecorder()
        module.train()
        with recorder:
            fit_calibration(module)
    assert not recorder.reduced_precision_ops()
    ((residual, sharpness),) = fitted
    assert residual.shape == sharpness.shape == (2 * BATCH,)
    assert residual.device.type == "cuda"


def test_lane_catches_a_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``float()`` of a loss inside the step raises here, as it would stall a GPU."""
    from anomalib_simsid.models.simsid import loss as loss_module

    original = loss_module.DiscriminatorLoss.forward

    def syncing(self, output):
        value = original(self, output)
        if float(value) > 1e9:
            raise AssertionError
        return value

    monkeypatch.setattr(loss_module.DiscriminatorLoss, "forward", syncing)
    with fake_cuda() as mode:
        module = fake_module(mode)
        StepRecorder(module)
        with cuda_autocast(torch.float16), pytest.raises(DataDependentOutputException):
            module.training_step(FakeBatch(images()), batch_idx=0)


def test_lane_catches_a_device_mix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor made on the CPU inside the step meets the GPU tensors and raises."""
    with fake_cuda() as mode:
        module = fake_module(mode)
        StepRecorder(module)
        monkeypatch.setattr(
            module.model,
            "to_gray",
            lambda image: image.mean(1, keepdim=True) + torch.zeros(1, 1, 1, 1, device="cpu"),
        )
        with pytest.raises(RuntimeError, match="device"):
            module.training_step(FakeBatch(images()), batch_idx=0)
