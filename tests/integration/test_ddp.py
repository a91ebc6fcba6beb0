"""Data-parallel SimSID through Lightning's own DDP (two CPU processes, gloo): after every training
step both ranks hold the same weights and the same memory queue (contents and pointer), because each
rank writes the queries of *all* ranks (``SimSID._gather_queries``); at the end every buffer matches.
The end-of-epoch calibration (``score="calibrated_residual"``) reads each training image on one rank
only and fits on all of them; the checkpoint holds both ranks' RNG states (issue 31).

The file is also the worker script: ``python test_ddp.py WORKDIR`` runs
``Engine(strategy="ddp_find_unused_parameters_true", accelerator="cpu", devices=2)``; Lightning
re-launches it as rank 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

EPOCHS = 2
SEED = 3


def _train(workdir: Path) -> None:
    """Worker: both ranks snapshot their state after every training batch and at the end."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback, seed_everything

    from anomalib_simsid import DigitAnatomy, SimSID

    torch.set_num_threads(1)  # one core per rank

    class Snapshots(Callback):
        """Parameters and memory-queue buffers after each training batch (BN statistics are rank-local
        between forwards: DDP broadcasts rank 0's buffers at the start of the next forward)."""

        def __init__(self) -> None:
            self.steps: list[dict[str, torch.Tensor]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            state = {f"param.{k}": v.detach().clone() for k, v in pl_module.named_parameters()}
            state.update({k: v.clone() for k, v in pl_module.state_dict().items() if ".memory." in k})
            self.steps.append(state)

    from anomalib.callbacks import ModelCheckpoint

    from anomalib_simsid.models.simsid.training import calibration as epoch_end

    calibration_rows = []
    sharpness = epoch_end.mean_abs_gradient

    def counting(gray: torch.Tensor) -> torch.Tensor:
        calibration_rows.append(gray.shape[0])
        return sharpness(gray)

    epoch_end.mean_abs_gradient = counting  # the calibration pass computes it once per image
    seed_everything(SEED, workers=True)
    model = SimSID(
        img_size=64, num_patch=2, level=3, base_width=8, memory="queue", num_slots=24,
        score="calibrated_residual", visualizer=False,
    )  # fmt: skip
    datamodule = DigitAnatomy(
        root=str(workdir / "data"), image_size=64, num_train=36, num_val=8, num_test=2, seed=0,
        train_batch_size=8, eval_batch_size=8, num_workers=0,
    )  # fmt: skip
    snapshots = Snapshots()
    engine = Engine(
        accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", max_epochs=EPOCHS,
        callbacks=[snapshots, ModelCheckpoint(dirpath=workdir / "ckpt", save_last=True)],
        default_root_dir=workdir / "run", logger=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    engine.fit(model, datamodule=datamodule)
    trainer = engine.trainer
    torch.save(
        {
            "world_size": trainer.world_size,
            "steps": snapshots.steps,
            "final": {k: v.clone() for k, v in model.state_dict().items()},
            "image_AUROC": float(trainer.callback_metrics["image_AUROC"]),
            "calibration_rows": sum(calibration_rows),
        },
        workdir / f"rank{trainer.global_rank}.pt.tmp",
    )
    # Atomic: the test waits for the file to exist, so it must never see half of it.
    os.replace(workdir / f"rank{trainer.global_rank}.pt.tmp", workdir / f"rank{trainer.global_rank}.pt")


def test_ddp_ranks_hold_identical_queue_and_weights(tmp_path: Path) -> None:
    start = time.monotonic()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1"}
    env.pop("MASTER_PORT", None)  # Lightning picks a free port (other test runs may share the machine)
    log = tmp_path / "ddp.log"
    with log.open("w") as handle:
        proc = subprocess.run(
            [sys.executable, __file__, str(tmp_path)], env=env, stdout=handle, stderr=subprocess.STDOUT,
            timeout=300, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, log.read_text()[-4000:]

    # Rank 0 (the launching process) can return before rank 1 has written its file: wait for it.
    files = [tmp_path / f"rank{r}.pt" for r in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(f.exists() for f in files) and time.monotonic() < deadline:
        time.sleep(0.5)
    ranks = [torch.load(f, weights_only=True) for f in files]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    # 36 images -> 18 per rank -> batches of 8, 8 and 2 per rank and epoch.
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == 3 * EPOCHS
    queue_keys = [k for k in ranks[0]["steps"][0] if k.endswith("memory.memory")]
    assert queue_keys, "the model under test must use a memory queue"

    first_queue = ranks[0]["steps"][0][queue_keys[0]]
    for step, (a, b) in enumerate(zip(ranks[0]["steps"], ranks[1]["steps"], strict=True)):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"step {step}: {key} differs between ranks"
    # The queue took every rank's rows: generator steps on batches 0 and 2, i.e. 2 x 8 + 2 x 2 rows
    # per epoch (a rank-local write would advance the pointer by half of that).
    last = ranks[0]["steps"][-1]
    assert not torch.equal(last[queue_keys[0]], first_queue)
    ptr_key = queue_keys[0].replace("memory.memory", "memory.ptr")
    assert int(last[ptr_key]) == (EPOCHS * (2 * 8 + 2 * 2)) % 24

    final0, final1 = ranks[0]["final"], ranks[1]["final"]
    assert final0.keys() == final1.keys()
    for key in final0:
        torch.testing.assert_close(final0[key], final1[key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert ranks[0]["image_AUROC"] == ranks[1]["image_AUROC"]
    # Calibration: each rank read its 18 of the 36 training images per epoch (not all 36), and the
    # fitted line (in "final", compared above) is the same on both ranks.
    assert ranks[0]["calibration_rows"] == ranks[1]["calibration_rows"] == EPOCHS * 18
    assert float(final0["model.calibration.slope"]) != 0.0
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True, map_location="cpu")
    assert len(checkpoint["simsid_rng_states"]["ranks"]) == 2  # each rank resumes its own streams
    print(f"ddp test: {time.monotonic() - start:.1f} s")


def test_lightning_sync_batchnorm_converts_every_batchnorm() -> None:
    """``--trainer.sync_batchnorm true`` (Lightning's ``TorchSyncBatchNorm``) reaches every BN of SimSID.

    PyTorch's SyncBatchNorm only runs on GPU/XPU tensors, so CPU DDP cannot train with it; the
    conversion itself is what can be checked here.
    """
    from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
    from torch import nn

    from anomalib_simsid import SimSID

    model = SimSID(img_size=64, num_patch=2, level=3, base_width=8, memory="queue", visualizer=False)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    converted = TorchSyncBatchNorm().apply(model)
    assert n_bn > 0
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())


def test_critic_per_sample_norm_survives_sync_batchnorm() -> None:
    """The critic's per-sample inference norm (instance norm with the BN affine) must not change."""
    import copy

    from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm

    from anomalib_simsid.models.simsid.networks.critic import Discriminator

    torch.manual_seed(0)
    critic = Discriminator(64, final_size=2).eval()
    x = torch.randn(4, 1, 64, 64)
    converted = TorchSyncBatchNorm().apply(copy.deepcopy(critic)).eval()
    torch.testing.assert_close(converted(x), critic(x))


if __name__ == "__main__":
    _train(Path(sys.argv[1]))
