"""Kill-and-resume: a run SIGKILLed mid-epoch and resumed from ``last.ckpt`` ends where the same-seed
uninterrupted run ends (weights, memory queue and its pointer, optimizer and cosine-schedule state,
per-epoch validation AUROC and training losses). A resumed ``Engine.train`` tests the model it trained.

The file is also the worker script: ``python test_resume.py MODE WORKDIR`` trains the small SimSID on
a small DigitAnatomy, so the SIGKILL hits a real process (not a simulated stop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

EPOCHS = 4
KILL_EPOCH = 2  # killed at the second batch of this (0-based) epoch, after the checkpoint of epoch 1
SEED = 7


def _train(mode: str, workdir: Path) -> None:
    """Worker: ``full`` trains EPOCHS epochs, ``killed`` dies in KILL_EPOCH, ``resume`` continues it."""
    from anomalib.callbacks import ModelCheckpoint  # the Engine adds its own unless it sees this class
    from anomalib.engine import Engine
    from lightning.pytorch import Callback, seed_everything

    from anomalib_simsid import DigitAnatomy, SimSID

    torch.set_num_threads(1)  # two workers share the 2 CPU cores; also fixes the op order
    run = "full" if mode == "full" else "interrupted"
    out = workdir / run
    out.mkdir(parents=True, exist_ok=True)

    class Recorder(Callback):
        """Per-epoch metrics, collected after validation and the module's epoch-end hook."""

        def __init__(self) -> None:
            self.epochs: dict[int, dict[str, float]] = {}

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            keys = ("image_AUROC", "train_d_loss", "train_g_loss")
            metrics = {k: float(trainer.callback_metrics[k]) for k in keys if k in trainer.callback_metrics}
            self.epochs[trainer.current_epoch] = metrics

    class Killer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.current_epoch == KILL_EPOCH and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    seed_everything(SEED, workers=True)
    # Small queue (24 slots, 16-row writes) so the pointer wraps; short cosine period so the
    # learning rate changes every epoch: both must be restored exactly.
    model = SimSID(
        img_size=64, num_patch=2, level=3, base_width=8, memory="queue", num_slots=24, cosine_period=2,
        visualizer=False,
    )  # fmt: skip
    datamodule = DigitAnatomy(
        root=str(workdir / f"data-{mode}"), image_size=64, num_train=40, num_val=8, num_test=2, seed=0,
        train_batch_size=16, eval_batch_size=16, num_workers=0,
    )  # fmt: skip
    recorder = Recorder()
    callbacks = [ModelCheckpoint(dirpath=out / "ckpt", save_last=True, every_n_epochs=1), recorder]
    if mode == "killed":
        callbacks.append(Killer())
    engine = Engine(
        accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=callbacks, default_root_dir=out,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    ckpt_path = str(out / "ckpt" / "last.ckpt") if mode == "resume" else None
    engine.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    (out / f"metrics-{mode}.json").write_text(json.dumps(recorder.epochs))


def test_resumed_train_tests_the_trained_model_not_the_resume_checkpoint(
    tmp_path: Path, digit_root: Path
) -> None:
    """``Engine.train(ckpt_path=X)`` reports the test metrics of the model it trained, not those of X."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback

    from anomalib_simsid import DigitAnatomy, SimSID
    from tests.helpers import TINY_DATA, TINY_MODEL

    class TestedWeights(Callback):
        """The critic's output-layer weights at the start of every test run."""

        def __init__(self) -> None:
            self.seen: list[torch.Tensor] = []

        def on_test_start(self, trainer, pl_module) -> None:
            self.seen.append(pl_module.model.discriminator.fc.weight.detach().clone())

    def data() -> DigitAnatomy:
        return DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=8)

    def engine(epochs: int, *callbacks: Callback) -> Engine:
        return Engine(
            default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
        )  # fmt: skip

    first = engine(1)
    first.fit(SimSID(**TINY_MODEL, visualizer=False), datamodule=data())
    start = tmp_path / "epoch1.ckpt"
    first.trainer.save_checkpoint(start)
    start_weights = torch.load(start, weights_only=False)["state_dict"]["model.discriminator.fc.weight"]

    tested = TestedWeights()
    model = SimSID(**TINY_MODEL, visualizer=False)
    resumed = engine(2, tested)
    reported = resumed.train(model, datamodule=data(), ckpt_path=start)
    assert resumed.trainer.current_epoch == 2
    trained = model.model.discriminator.fc.weight.detach()
    assert not torch.equal(trained, start_weights)
    assert torch.equal(tested.seen[-1], trained)
    expected = resumed.test(model, datamodule=data())
    # The audit metrics are nan on this tiny test set (too few matched pairs): nan equals nan here.
    assert len(reported) == len(expected)
    assert all(got == pytest.approx(want, nan_ok=True) for got, want in zip(reported, expected, strict=True))


def test_failed_run_leaves_latest_on_the_previous_run(tmp_path: Path, digit_root: Path) -> None:
    """A run that fails before writing a checkpoint must not re-point ``latest`` to its empty folder."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback

    from anomalib_simsid import DigitAnatomy, SimSID
    from tests.helpers import TINY_DATA, TINY_MODEL

    class Fail(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            raise RuntimeError("simulated failure")

    run_root = tmp_path / "SimSID" / "DigitAnatomy"
    previous = run_root / "v0"
    (previous / "weights").mkdir(parents=True)
    (previous / "weights" / "model.ckpt").write_bytes(b"previous good run")
    (run_root / "latest").symlink_to(previous, target_is_directory=True)

    engine = Engine(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False,
        enable_progress_bar=False, callbacks=[Fail()],
    )  # fmt: skip
    data = DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=8)
    with pytest.raises(RuntimeError, match="simulated failure"):
        engine.train(SimSID(**TINY_MODEL, visualizer=False), datamodule=data)
    assert not (run_root / "v1").exists()  # the failed run left it empty: removed
    assert (run_root / "latest").resolve() == previous.resolve()
    assert (run_root / "latest" / "weights" / "model.ckpt").read_bytes() == b"previous good run"


def test_interrupted_run_with_checkpoints_keeps_latest(tmp_path: Path, digit_root: Path) -> None:
    """A run that saved checkpoints (here outside its ``v<n>``) and then failed keeps ``latest`` on it."""
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.engine import Engine
    from lightning.pytorch import Callback

    from anomalib_simsid import DigitAnatomy, SimSID
    from tests.helpers import TINY_DATA, TINY_MODEL

    class FailInSecondEpoch(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt  # Lightning turns it into a graceful stop and SystemExit

    run_root = tmp_path / "SimSID" / "DigitAnatomy"
    checkpoints = tmp_path / "logs" / "checkpoints"
    engine = Engine(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=3, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, save_last=True), FailInSecondEpoch()],
    )  # fmt: skip
    data = DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=8)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        engine.fit(SimSID(**TINY_MODEL, visualizer=False), datamodule=data)
    assert (checkpoints / "last.ckpt").is_file()
    assert (run_root / "latest").resolve() == (run_root / "v0").resolve()


def _spawn(mode: str, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = (workdir / f"{mode}.log").open("w")
    return subprocess.Popen(
        [sys.executable, __file__, mode, str(workdir)], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _wait(proc: subprocess.Popen, mode: str, workdir: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{mode} run timed out:\n{(workdir / f'{mode}.log').read_text()[-3000:]}")


def _assert_identical(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{name}: {m}")


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    start = time.monotonic()
    full, killed = _spawn("full", tmp_path), _spawn("killed", tmp_path)
    assert _wait(full, "full", tmp_path, 240) == 0, (tmp_path / "full.log").read_text()[-3000:]
    assert _wait(killed, "killed", tmp_path, 240) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[
        -3000:
    ]

    interrupted = torch.load(tmp_path / "interrupted" / "ckpt" / "last.ckpt", weights_only=True)
    assert interrupted["epoch"] == KILL_EPOCH - 1  # the kill came after epoch KILL_EPOCH - 1 was saved

    resumed = _spawn("resume", tmp_path)
    assert _wait(resumed, "resume", tmp_path, 240) == 0, (tmp_path / "resume.log").read_text()[-3000:]

    ref = torch.load(tmp_path / "full" / "ckpt" / "last.ckpt", weights_only=True)
    res = torch.load(tmp_path / "interrupted" / "ckpt" / "last.ckpt", weights_only=True)
    assert res["epoch"] == ref["epoch"] == EPOCHS - 1
    assert res["global_step"] == ref["global_step"]

    # Weights and buffers, the memory queue and its pointer included: bit for bit.
    assert ref["state_dict"].keys() == res["state_dict"].keys()
    assert any(k.endswith("memory.ptr") for k in ref["state_dict"])
    for key, value in ref["state_dict"].items():
        _assert_identical(value, res["state_dict"][key], key)

    # Optimizer moments and the cosine schedule.
    for opt_ref, opt_res in zip(ref["optimizer_states"], res["optimizer_states"], strict=True):
        for pid, state in opt_ref["state"].items():
            for name, value in state.items():
                _assert_identical(torch.as_tensor(value), torch.as_tensor(opt_res["state"][pid][name]), name)
        assert [g["lr"] for g in opt_ref["param_groups"]] == [g["lr"] for g in opt_res["param_groups"]]
    assert ref["lr_schedulers"] == res["lr_schedulers"]

    # Per-epoch validation AUROC and training losses after the resume point.
    full_metrics = json.loads((tmp_path / "full" / "metrics-full.json").read_text())
    res_metrics = json.loads((tmp_path / "interrupted" / "metrics-resume.json").read_text())
    assert sorted(res_metrics) == [str(e) for e in range(KILL_EPOCH, EPOCHS)]
    for epoch, metrics in res_metrics.items():
        assert "image_AUROC" in metrics
        assert metrics == full_metrics[epoch], epoch
    print(f"kill-and-resume test: {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    _train(sys.argv[1], Path(sys.argv[2]))
