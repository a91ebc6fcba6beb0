"""GPU smoke test of SimSID: one command, a pass/fail table (issue 31). Also runs on the CPU, tiny.

    python benchmarks/gpu_smoke.py                 # CUDA: DigitAnatomy and the paper model (<= 10 min)
    python benchmarks/gpu_smoke.py --device cpu    # tiny sizes, end to end (CI runs it)

Checks, in order (each row: PASS / FAIL / SKIP, what it measured, seconds):

* ``device``: the trainer picks the requested device (CUDA by default).
* ``fit <precision>``: DigitAnatomy fits at ``32-true``, ``16-mixed`` and ``bf16-mixed`` (``16-mixed``
  is skipped on the CPU, which Lightning does not run it on); validation AUROC finite, scores fp32.
* ``all options``: memory queue, ``calibrated_residual`` score and channels-last together at
  ``16-mixed`` (CPU: ``bf16-mixed``).
* ``resume``: a run stopped after one epoch resumes from ``last.ckpt`` to the second.
* ``export parity``: the device checkpoint exported to OpenVINO in a process with CUDA hidden; its
  scores against the checkpoint's own (fp32, CPU).
* ``scores fp32``: eval scores under autocast (fp16 and bf16 on CUDA; bf16 on CPU) equal fp32 ones.
* ``paper steps``: the paper model, 200 steps at ``16-mixed`` (CPU: 10 at ``bf16-mixed``, tiny), with
  finite memory logits afterwards.
* ``throughput ...``: training images/s of the paper model at ``32-true`` and ``bf16-mixed``, with and
  without channels-last; with ``--zhanglab ROOT``, one epoch of the loader with and without the
  image cache. The ``32-true`` figure projects the paper's 1,000 ZhangLab epochs (``make paper-schedule``).

Throughput here is synthetic (DigitAnatomy images at the model's size, no decoding); say on which
card, and with how many CPU threads, a figure was measured.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# ZhangLab's training normals after the paper's 200 validation draws (configs/zhanglab.yaml, split_seed 0).
ZHANGLAB_TRAIN_IMAGES = 1284
PAPER_EPOCHS = 1000


@dataclass
class Sizes:
    """Everything the smoke test sizes from the device: CUDA runs the real models, the CPU tiny ones."""

    digit: dict
    digit_data: dict
    paper: dict
    epochs: int
    paper_steps: int
    throughput_steps: int
    batch: int


SIZES = {
    "cuda": Sizes(
        digit={
            "img_size": 96,
            "num_patch": 3,
            "level": 3,
            "base_width": 8,
            "n_critic": 1,
            "lr": 1e-3,
            "disc_lr": 1e-3,
        },
        digit_data={"image_size": 96, "num_train": 320, "num_val": 64, "num_test": 64},
        paper={},
        epochs=3,
        paper_steps=200,
        throughput_steps=30,
        batch=16,
    ),
    "cpu": Sizes(
        digit={"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8, "lr": 1e-3, "disc_lr": 1e-3},
        digit_data={"image_size": 64, "num_train": 16, "num_val": 6, "num_test": 6},
        paper={"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8},
        epochs=1,
        paper_steps=10,
        throughput_steps=4,
        batch=8,
    ),
}


@dataclass
class Row:
    """One line of the table."""

    name: str
    status: str
    detail: str
    seconds: float


class Smoke:
    """Runs the checks and collects one :class:`Row` each."""

    def __init__(self, device: str, work: Path, zhanglab: str | None) -> None:
        self.device = device
        self.sizes = SIZES[device]
        self.work = work
        self.zhanglab = zhanglab
        self.rows: list[Row] = []
        self.checkpoint: Path | None = None
        self.paper_throughput = False

    def check(self, name: str, fn: Callable[[], str]) -> None:
        """Run one check; an exception is a FAIL with its message, ``"SKIP: why"`` a skip."""
        start = time.perf_counter()
        try:
            detail = fn()
            status = "SKIP" if detail.startswith("SKIP") else "PASS"
            detail = detail.removeprefix("SKIP: ")
        except Exception as err:
            status, detail = (
                "FAIL",
                f"{type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}",
            )
        self.rows.append(Row(name, status, detail, time.perf_counter() - start))
        print(f"{status:4}  {name:28} {detail}", flush=True)

    # --- helpers -------------------------------------------------------------------------------
    def _datamodule(self, name: str = "digits"):
        from anomalib_simsid import DigitAnatomy

        return DigitAnatomy(
            root=str(self.work / name), seed=0, train_batch_size=self.sizes.batch, eval_batch_size=32,
            num_workers=0, **self.sizes.digit_data,
        )  # fmt: skip

    def _engine(self, precision: str, root: str, **kwargs):
        from anomalib.engine import Engine

        return Engine(
            accelerator=self.device, devices=1, precision=precision, default_root_dir=self.work / root,
            logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs,
        )  # fmt: skip

    def _fit(self, precision: str, root: str, epochs: int | None = None, **options) -> tuple:
        from anomalib_simsid import SimSID

        torch.manual_seed(0)
        model = SimSID(**{**self.sizes.digit, **options}, visualizer=False)
        engine = self._engine(precision, root, max_epochs=epochs or self.sizes.epochs)
        engine.fit(model, datamodule=self._datamodule())
        auroc = engine.trainer.callback_metrics.get("image_AUROC")
        if auroc is None or not math.isfinite(float(auroc)):
            msg = f"validation image_AUROC is {auroc}"
            raise AssertionError(msg)
        return model, engine, float(auroc)

    # --- checks --------------------------------------------------------------------------------
    def _check_device(self) -> str:
        if self.device == "cuda" and not torch.cuda.is_available():
            msg = "CUDA requested but torch.cuda.is_available() is False"
            raise AssertionError(msg)
        name = torch.cuda.get_device_name() if self.device == "cuda" else "cpu"
        return f"{name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"

    def _check_fit(self, precision: str) -> str:
        if self.device == "cpu" and precision == "16-mixed":
            return "SKIP: Lightning runs 16-mixed on CUDA only"
        model, engine, auroc = self._fit(precision, f"fit-{precision}")
        if model.device.type != self.device:
            msg = f"model ended on {model.device}"
            raise AssertionError(msg)
        if precision == "32-true":
            self.checkpoint = Path(engine.trainer.checkpoint_callback.best_model_path)
        return f"val image_AUROC {auroc:.3f} after {self.sizes.epochs} epoch(s)"

    def _check_options(self) -> str:
        precision = "16-mixed" if self.device == "cuda" else "bf16-mixed"
        options = {"memory": "queue", "num_slots": 48, "score": "calibrated_residual", "channels_last": True}
        model, _, auroc = self._fit(precision, "options", **options)
        if float(model.model.calibration.slope) == 0.0:
            msg = "the calibration line was not fitted"
            raise AssertionError(msg)
        return f"{precision}, queue + calibrated_residual + channels_last: val AUROC {auroc:.3f}"

    def _check_resume(self) -> str:
        from anomalib.callbacks import ModelCheckpoint

        from anomalib_simsid import SimSID

        ckpt_dir = self.work / "resume" / "ckpt"
        for epochs, ckpt in ((1, None), (2, ckpt_dir / "last.ckpt")):
            torch.manual_seed(0)
            model = SimSID(**self.sizes.digit, visualizer=False)
            callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
            engine = self._engine("32-true", "resume", max_epochs=epochs, callbacks=callbacks)
            engine.fit(model, datamodule=self._datamodule(), ckpt_path=ckpt)
        if engine.trainer.current_epoch != 2:
            msg = f"resumed run ended at epoch {engine.trainer.current_epoch}, expected 2"
            raise AssertionError(msg)
        return "stopped after epoch 1, resumed from last.ckpt, ended after epoch 2"

    def _check_export(self) -> str:
        if self.checkpoint is None:
            msg = "no checkpoint: the 32-true fit failed"
            raise AssertionError(msg)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        command = [
            sys.executable,
            __file__,
            "--export-parity",
            str(self.checkpoint),
            str(self.work / "export"),
        ]
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if out.returncode != 0:
            raise AssertionError((out.stderr.strip().splitlines() or ["export failed"])[-1])
        diff, bar = (float(v) for v in out.stdout.strip().splitlines()[-1].split())
        if diff > bar:
            msg = f"OpenVINO fp32 vs checkpoint: max normalised score difference {diff:.2e} > {bar:.2e}"
            raise AssertionError(msg)
        return f"CUDA hidden, OpenVINO fp32 vs checkpoint: max score difference {diff:.1e} (bar {bar:.1e})"

    def _check_scores_fp32(self) -> str:
        from anomalib_simsid import SimSID

        torch.manual_seed(0)
        model = SimSID(**self.sizes.digit, visualizer=False).to(self.device).eval()
        image = torch.rand(
            8, 3, self.sizes.digit["img_size"], self.sizes.digit["img_size"], device=self.device
        )
        dtypes = [torch.float16, torch.bfloat16] if self.device == "cuda" else [torch.bfloat16]
        with torch.no_grad():
            reference = model.model(image * 2 - 1).pred_score
            changes = []
            for dtype in dtypes:
                with torch.autocast(self.device, dtype=dtype):
                    score = model.model(image * 2 - 1).pred_score
                if score.dtype != torch.float32:
                    msg = f"score under {dtype} autocast is {score.dtype}"
                    raise AssertionError(msg)
                changes.append(
                    f"{str(dtype).removeprefix('torch.')} {float((score - reference).abs().max()):.1e}"
                )
        if any(not c.endswith("0.0e+00") for c in changes):
            msg = f"scores under autocast differ from fp32: {changes}"
            raise AssertionError(msg)
        return "max change vs fp32: " + ", ".join(changes)

    def _train_steps(self, steps: int, precision: str, channels_last: bool = False, full_size: bool = False):
        """Fit ``steps`` training batches; return the model and the training images/s after warm-up.

        The model is the paper's on CUDA (or with ``full_size``), a tiny one on the CPU.
        """
        from lightning.pytorch import Callback

        from anomalib_simsid import SimSID

        class Clock(Callback):
            def __init__(self) -> None:
                self.start, self.images = 0.0, 0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if batch_idx == 2:  # after cuDNN autotuning and allocator warm-up
                    if self.device_is_cuda:
                        torch.cuda.synchronize()
                    self.start = time.perf_counter()
                if batch_idx >= 2:
                    self.images += len(batch.image)

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                if self.device_is_cuda:
                    torch.cuda.synchronize()
                self.seconds = time.perf_counter() - self.start

        torch.manual_seed(0)
        model = SimSID(
            **({} if full_size else self.sizes.paper), channels_last=channels_last, visualizer=False
        )
        side = model.hparams.img_size
        data = {"image_size": side, "num_train": (steps + 2) * self.sizes.batch, "num_val": 4, "num_test": 4}
        from anomalib_simsid import DigitAnatomy

        datamodule = DigitAnatomy(
            root=str(self.work / f"steps-{side}"), seed=0, train_batch_size=self.sizes.batch,
            eval_batch_size=8,
            num_workers=0, **data,
        )  # fmt: skip
        clock = Clock()
        clock.device_is_cuda = self.device == "cuda"
        engine = self._engine(precision, "steps", max_epochs=1, callbacks=[clock], limit_val_batches=0)
        engine.fit(model, datamodule=datamodule)
        return model, clock.images / clock.seconds

    def _check_paper_steps(self) -> str:
        precision = "16-mixed" if self.device == "cuda" else "bf16-mixed"
        model, _ = self._train_steps(self.sizes.paper_steps, precision)
        memory = model.model.generator.inpainting.memory
        query = torch.randn(4, memory.slots.shape[-1], device=memory.slots.device)
        logits = torch.stack([query @ slots.t() for slots in memory.slots])
        if not torch.isfinite(logits).all() or not all(torch.isfinite(p).all() for p in model.parameters()):
            msg = "non-finite memory logits or weights"
            raise AssertionError(msg)
        return f"{self.sizes.paper_steps} steps at {precision}: memory logits and weights finite"

    def _check_throughput(self, precision: str, channels_last: bool) -> str:
        if self.device == "cpu" and precision == "bf16-mixed":
            from anomalib_simsid.models.simsid.lightning_model import cpu_has_fast_bf16

            if not cpu_has_fast_bf16():
                return "SKIP: this CPU has no native bf16"
        _, per_s = self._train_steps(
            self.sizes.throughput_steps, precision, channels_last, self.paper_throughput
        )
        detail = f"{per_s:.1f} training images/s"
        if precision == "32-true" and not channels_last:
            hours = PAPER_EPOCHS * ZHANGLAB_TRAIN_IMAGES / per_s / 3600
            paper = self.paper_throughput or not self.sizes.paper
            model = "paper model" if paper else "TINY model (not the paper's)"
            detail += f"; {model}: 1,000 ZhangLab epochs ~ {hours:.1f} h of training steps"
        return detail

    def _check_cache(self) -> str:
        if self.zhanglab is None:
            return "SKIP: pass --zhanglab ROOT to time the ZhangLab loader with and without the cache"
        from anomalib_simsid import ZhangLab
        from benchmarks.data_cache import epoch_seconds

        times = {}
        for mode in (None, "memory"):
            module = ZhangLab(
                root=self.zhanglab, val_source="draw", num_workers=2, image_cache=mode, image_cache_size=128
            )
            module.setup("fit")
            times[mode or "none"], images = epoch_seconds(module)
        none, cached = times["none"], times["memory"]
        return f"loader epoch ({images} images): {none:.1f} s without cache, {cached:.1f} s with"

    def run(self, only_throughput: bool = False) -> int:
        """Run every check (or only the throughput ones), print the table; 1 if any check failed."""
        self.check("device", self._check_device)
        for precision in () if only_throughput else ("32-true", "16-mixed", "bf16-mixed"):
            self.check(f"fit {precision}", lambda p=precision: self._check_fit(p))
        if not only_throughput:
            self.check("all options", self._check_options)
            self.check("resume", self._check_resume)
            self.check("export parity (CUDA hidden)", self._check_export)
            self.check("scores fp32 under autocast", self._check_scores_fp32)
            self.check("paper steps", self._check_paper_steps)
        for precision in ("32-true", "bf16-mixed"):
            for channels_last in (False, True):
                name = f"throughput {precision}{' CL' if channels_last else ''}"
                self.check(name, lambda p=precision, c=channels_last: self._check_throughput(p, c))
        self.check("throughput image cache", self._check_cache)
        print()
        print("| check | result | detail | s |\n|---|---|---|---|")
        for row in self.rows:
            print(f"| {row.name} | {row.status} | {row.detail} | {row.seconds:.0f} |")
        failed = [row.name for row in self.rows if row.status == "FAIL"]
        print(
            f"\n{len(self.rows) - len(failed)}/{len(self.rows)} checks passed or skipped; "
            f"failed: {failed or 'none'}"
        )
        return 1 if failed else 0


def export_parity(ckpt: str, out: str) -> None:
    """Child process (CUDA hidden): export ``ckpt`` to OpenVINO fp32; print the max difference and the bar."""
    from anomalib_simsid import SimSID
    from anomalib_simsid.deploy import SimSIDPredictor, export_openvino, parity_bar, torch_reference

    assert not torch.cuda.is_available()
    model = SimSID.load_from_checkpoint(ckpt, map_location="cpu")
    irs = export_openvino(model, out, ("fp32",))
    torch.manual_seed(1)
    side = model.hparams.img_size
    images = torch.rand(6, 3, side, side)
    reference = torch_reference(model, images)["pred_score"]
    exported = SimSIDPredictor.load(irs["fp32"])(images)["pred_score"]
    print(float(abs(exported - reference).max()), parity_bar(model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--zhanglab", help="ZhangLab root, to time the image cache on real files")
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    parser.add_argument(
        "--paper-throughput", action="store_true", help="time the paper model on the CPU too (slow)"
    )
    parser.add_argument("--only-throughput", action="store_true", help="run only the throughput checks")
    parser.add_argument("--export-parity", nargs=2, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.export_parity:
        export_parity(*args.export_parity)
        return
    with tempfile.TemporaryDirectory(prefix="simsid-gpu-smoke-") as tmp:
        work = Path(args.work or tmp)
        smoke = Smoke(args.device, work, args.zhanglab)
        smoke.paper_throughput = args.paper_throughput
        sys.exit(smoke.run(only_throughput=args.only_throughput))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
