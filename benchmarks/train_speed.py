"""Training-speed benchmark: the project's SimSID training path against the plain eager fp32 path.

    python -m benchmarks.train_speed                    # speed of every variant, paper model, batch 16
    python -m benchmarks.train_speed --auroc            # plus the AUROC check (small model, DigitAnatomy)
    python -m benchmarks.train_speed --variants plain-fp32,project-bf16-cl --batches 4

"plain" is what the released code does on every batch: one generator forward *with* autograd and
the teacher, fp32, contiguous (NCHW) weights. The project skips the autograd graph and the teacher on
critic-only batches (their only use is the detached fake image); the speed levers on top of that are
channels-last weights (``SimSID(channels_last=True)``) and bf16 autocast through Lightning
(``Trainer(precision="bf16-mixed")``, which drives ``manual_backward``).

Each variant runs in its own subprocess (a Lightning ``Trainer`` around the real ``training_step``
on in-memory images), so its peak RSS (``ru_maxrss``) is its own. Reported per variant: wall time
and CPU time per generator (D+G) and critic-only batch, training images/s at batch 16, inference
time per image (what per-epoch validation costs), peak RSS, and the projected ZhangLab epoch:
1,284 training normals (1,341 minus the 57 normals drawn into the 200-image validation set with
split_seed 0) = 81 batches, 200 validation images, and the decode/resize/augment cost of those
images. ``--auroc`` trains the small model on DigitAnatomy
with the plain path and with the chosen levers (same seeds) and compares AUROC and loss curves.

The measured tables go between the ``MEASURED`` markers of ``--output``; the text around them is
kept, so the written analysis survives a re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import cpu_info, iter_outputs, run_module

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "train_speed.md"
# ZhangLab copy (the folder holding chest_xray/): --zhanglab-root, else $SIMSID_ZHANGLAB_ROOT, else this.
DEFAULT_ZHANGLAB_ROOT = os.environ.get("SIMSID_ZHANGLAB_ROOT", "datasets/zhanglab-224")
ZHANGLAB_NORMALS = Path("chest_xray", "train", "NORMAL")  # the training normals, under the root
AUROC_SETUPS = {
    "zhanglab": "ZhangLab (1284 train normals, 200 val, 234 + 390 test), model `zhang-small`",
    "digits": "DigitAnatomy (96 px, 40+40 val, 100+100 test), model `small`",
}
BEGIN, END = "<!-- BEGIN MEASURED (benchmarks/train_speed.py) -->", "<!-- END MEASURED -->"

BATCH = 16
# The real split (split_seed 0): validation draws 200 of the pool, 57 of them normal.
ZHANG_TRAIN, ZHANG_VAL, PAPER_EPOCHS = 1341 - 57, 200, 1000
MODELS: dict[str, dict[str, Any]] = {
    # The paper model with the released ZhangLab memory (docs/method.md, "Architecture" and "Memories").
    "paper": {"img_size": 128, "num_patch": 2, "level": 4, "base_width": 32, "memory": "queue"},
    # The DigitAnatomy demo model (configs/digitanatomy.yaml) with the ZhangLab queue memory.
    "small": {"img_size": 96, "num_patch": 3, "level": 3, "base_width": 8, "memory": "queue"},
    # A 64 px ZhangLab model for the AUROC check (the paper model is too slow for it on 2 CPU cores).
    "zhang-small": {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 16, "memory": "queue"},
}


@dataclass(frozen=True)
class Variant:
    """One training configuration: which path, which precision, which weight layout."""

    name: str
    plain: bool
    bf16: bool
    channels_last: bool

    @property
    def precision(self) -> str:
        """Lightning's precision flag for this variant."""
        return "bf16-mixed" if self.bf16 else "32-true"


VARIANTS = {
    v.name: v
    for v in (
        Variant("plain-fp32", plain=True, bf16=False, channels_last=False),
        Variant("project-fp32", plain=False, bf16=False, channels_last=False),
        Variant("project-fp32-cl", plain=False, bf16=False, channels_last=True),
        Variant("project-bf16", plain=False, bf16=True, channels_last=False),
        Variant("project-bf16-cl", plain=False, bf16=True, channels_last=True),
    )
}
BASELINE, OURS = "plain-fp32", "project-bf16-cl"


def _plain_class() -> type:
    """SimSID whose training step runs the generator as released: autograd and teacher on every batch."""
    from anomalib_simsid import SimSID

    class PlainSimSID(SimSID):
        """The released code's iteration, kept as the benchmark's baseline: the real step, no lean batches.

        ``SimSID.training_step`` runs critic-only batches with ``full_pass=False``; here every batch
        gets the full pass (autograd graph and teacher), as the released code does.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            forward = self.model.forward
            self.model.forward = lambda image, full_pass=True: forward(image, full_pass=True)

    return PlainSimSID


def build_model(variant: Variant, model: str, **kwargs: Any) -> Any:
    """Build the LightningModule of a variant (plain path or the project's ``SimSID``)."""
    from anomalib_simsid import SimSID

    cls = _plain_class() if variant.plain else SimSID
    return cls(**MODELS[model], channels_last=variant.channels_last, **kwargs)


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --------------------------------------------------------------------------------------------
# Workers (one subprocess each)
# --------------------------------------------------------------------------------------------


def worker_speed(
    variant: Variant, model_name: str, batches: int, warmup: int, threads: int
) -> dict[str, Any]:
    """Time ``warmup + batches`` real training steps of one variant, then the eval forward."""
    import torch
    from anomalib.data import ImageBatch, ImageItem
    from lightning.pytorch import Callback, Trainer, seed_everything
    from torch.utils.data import DataLoader, Dataset

    torch.set_num_threads(threads)
    rss_start = _rss_mib()
    seed_everything(0)
    size = MODELS[model_name]["img_size"]
    n_images = BATCH * (warmup + batches)
    images = torch.rand(n_images, 3, size, size)

    class Images(Dataset):
        def __len__(self) -> int:
            return n_images

        def __getitem__(self, index: int) -> ImageItem:
            return ImageItem(image=images[index], gt_label=torch.tensor(0), image_path="")

    class Timer(Callback):
        """Wall and CPU time of each training step (data fetching excluded)."""

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            # By hand, not torch.utils.benchmark.Timer: whole Lightning steps, with process CPU time.
            self._t = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            wall, cpu = time.perf_counter() - self._t[0], time.process_time() - self._t[1]
            kind = "DG" if batch_idx % pl_module.hparams.n_critic == 0 else "D"
            self.rows.append({"batch": batch_idx, "kind": kind, "wall": wall, "cpu": cpu})

    module = build_model(variant, model_name, evaluator=False, visualizer=False)
    seen: dict[str, str] = {}

    def record_dtype(_module: Any, _inputs: Any, output: Any) -> None:
        seen["reconstruction_dtype"] = str(output.reconstruction.dtype)
        seen["autocast_cpu"] = str(torch.is_autocast_enabled("cpu"))

    module.model.generator.register_forward_hook(record_dtype)
    timer = Timer()
    trainer = Trainer(
        accelerator="cpu", devices=1, precision=variant.precision, max_epochs=1, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[timer],
    )  # fmt: skip
    rss_model = _rss_mib()
    trainer.fit(
        module, train_dataloaders=DataLoader(Images(), batch_size=BATCH, collate_fn=ImageBatch.collate)
    )
    param_dtype = str(next(module.model.generator.parameters()).dtype)
    conv_format = (
        "channels_last"
        if module.model.generator.encoder.inc.residual[0].weight.is_contiguous(
            memory_format=torch.channels_last
        )
        else "contiguous"
    )

    # Inference (validation) cost per image at the evaluation batch size, in the same precision.
    module.eval()
    x = module.pre_processor.transform(images[:BATCH])
    inf, inf_cpu = [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.bf16):
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            module.model(x)
            inf.append((time.perf_counter() - t) / BATCH)
            inf_cpu.append((time.process_time() - c) / BATCH)
    timed = timer.rows[warmup:]
    return {
        "variant": variant.name,
        "model": model_name,
        "threads": threads,
        "rows": timer.rows,
        "timed": timed,
        "inference_s_per_image": min(inf[1:]),
        "inference_cpu_s_per_image": min(inf_cpu[1:]),
        "rss_start_mib": rss_start,
        "rss_after_model_mib": rss_model,
        "peak_rss_mib": _peak_rss_mib(),
        "param_dtype": param_dtype,
        "conv_weight_format": conv_format,
        **seen,
        "loadavg": os.getloadavg(),
    }


def worker_auroc(
    variant: Variant,
    seed: int,
    epochs: int,
    threads: int,
    data_root: str,
    num_train: int,
    dataset: str,
    zhanglab_root: str,
) -> dict[str, Any]:
    """Train a small model on ``dataset``; per-epoch losses and val AUROC, final raw-score AUROCs."""
    import torch
    from anomalib.engine import Engine
    from lightning.pytorch import Callback, seed_everything
    from sklearn.metrics import roc_auc_score

    from anomalib_simsid import DigitAnatomy, ZhangLab

    torch.set_num_threads(threads)

    class Recorder(Callback):
        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})

    seed_everything(seed, workers=True)
    loaders = {"train_batch_size": BATCH, "eval_batch_size": 32, "num_workers": 0}
    if dataset == "zhanglab":  # the real protocol: 1284 train normals, 200 val, 234 + 390 test
        module = build_model(variant, "zhang-small", visualizer=False)
        datamodule = ZhangLab(root=zhanglab_root, val_size=ZHANG_VAL, split_seed=0, **loaders)
    else:
        module = build_model(variant, "small", visualizer=False)
        sizes = {
            "image_size": MODELS["small"]["img_size"],
            "num_train": num_train,
            "num_val": 40,
            "num_test": 100,
        }
        datamodule = DigitAnatomy(root=data_root, seed=0, **loaders, **sizes)
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(
            accelerator="cpu",
            devices=1,
            precision=variant.precision,
            max_epochs=epochs,
            callbacks=[recorder],
            default_root_dir=tmp,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = time.perf_counter()
        engine.fit(module, datamodule=datamodule)
        fit_s = time.perf_counter() - start

    # Raw critic scores (anomalib's normalised scores are clipped to [0, 1]), in fp32 and in bf16
    # inference; and the mean reconstruction residual as a second, critic-free score.
    module.eval()
    result: dict[str, Any] = {
        "variant": variant.name,
        "seed": seed,
        "epochs": recorder.epochs,
        "fit_s": fit_s,
        "dataset": dataset,
    }
    for split, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
        for precision in ("fp32", "bf16"):
            scores, residuals, labels = [], [], []
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                for batch, output in iter_outputs(module, loader):
                    scores.append(output.pred_score.float())
                    residuals.append(output.anomaly_map.float().flatten(1).mean(1))
                    labels.append(batch.gt_label.int())
            y = torch.cat(labels).numpy()
            result[f"{split}_auroc_{precision}_eval"] = float(roc_auc_score(y, torch.cat(scores).numpy()))
            result[f"{split}_residual_auroc_{precision}_eval"] = float(
                roc_auc_score(y, torch.cat(residuals).numpy())
            )
    return result


def worker_data(n_images: int, zhanglab_root: str) -> dict[str, Any]:
    """Per-image cost of what every epoch redoes: decode, bicubic resize to 128, training affine."""
    import numpy as np
    import torch
    from PIL import Image

    from anomalib_simsid.data import read_image, simsid_train_augmentation
    from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_resize

    torch.set_num_threads(1)
    normals = Path(zhanglab_root) / ZHANGLAB_NORMALS
    files = sorted(normals.glob("*.jpeg"))[:n_images] if normals.is_dir() else []
    source = f"ZhangLab 224 px JPEG ({ZHANGLAB_NORMALS})"
    tmp = None
    if not files:  # no local copy: 224 px grey PNGs of noise stand in
        tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        for i in range(n_images):
            path = Path(tmp.name) / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (224, 224), dtype=np.uint8)).save(path)
            files.append(path)
        source = "generated 224 px PNG"
    resize = simsid_resize((128, 128))
    augment = simsid_train_augmentation()
    timings = {"decode": 0.0, "resize": 0.0, "augment": 0.0}
    for path in files:
        t0 = time.process_time()
        image = read_image(path)
        t1 = time.process_time()
        image = resize(image)
        t2 = time.process_time()
        augment(image)
        t3 = time.process_time()
        timings["decode"] += t1 - t0
        timings["resize"] += t2 - t1
        timings["augment"] += t3 - t2
    if tmp is not None:
        tmp.cleanup()
    return {"source": source, "n": len(files), **{k: v / len(files) for k, v in timings.items()}}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _run_worker(args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    worker = ["--worker", *args, "--result", str(out)]
    proc = run_module("benchmarks.train_speed", worker, env=env, capture=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        msg = f"worker failed ({proc.returncode}): {' '.join(args)}"
        raise RuntimeError(msg)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def _mean(rows: list[dict[str, Any]], kind: str, key: str) -> float:
    values = [r[key] for r in rows if r["kind"] == kind]
    return statistics.mean(values) if values else math.nan


def summarise_speed(result: dict[str, Any], data: dict[str, Any], cores: int) -> dict[str, Any]:
    """Per-variant numbers and the ZhangLab projection (81 batches: 41 D+G, 40 D-only, last one short).

    With one torch thread the basis is process CPU time divided by ``cores`` (contention-proof:
    other jobs on a shared machine stretch wall time, not the CPU time of a single-threaded
    process; linear scaling over cores is assumed). With more threads it is the measured wall time.
    """
    rows = result["timed"]
    wall_dg, wall_d = _mean(rows, "DG", "wall"), _mean(rows, "D", "wall")
    cpu_dg, cpu_d = _mean(rows, "DG", "cpu"), _mean(rows, "D", "cpu")
    per_core = result["threads"] == 1
    dg, d = (cpu_dg / cores, cpu_d / cores) if per_core else (wall_dg, wall_d)
    inference = result["inference_cpu_s_per_image"] / cores if per_core else result["inference_s_per_image"]
    full, rest = divmod(ZHANG_TRAIN, BATCH)
    n_batches = full + (rest > 0)
    n_dg = math.ceil(n_batches / 2)
    n_d = n_batches - n_dg
    last_fraction = rest / BATCH if rest and n_batches % 2 == 0 else 1.0  # the short last batch is D-only
    train_epoch = n_dg * dg + (n_d - 1 + last_fraction) * d
    val_epoch = ZHANG_VAL * inference
    data_epoch = (ZHANG_TRAIN + ZHANG_VAL) * (data["decode"] + data["resize"]) + ZHANG_TRAIN * data["augment"]
    epoch = train_epoch + val_epoch + data_epoch
    return {
        "variant": result["variant"],
        "basis": f"CPU s / {cores} cores" if per_core else f"wall, {result['threads']} threads",
        "dg_s": dg,
        "d_s": d,
        "images_per_s": 2 * BATCH / (dg + d),
        "inference_ms": 1000 * inference,
        "wall_dg_s": wall_dg,
        "wall_d_s": wall_d,
        "cpu_dg_s": cpu_dg,
        "cpu_d_s": cpu_d,
        "peak_rss_mib": result["peak_rss_mib"],
        "train_rss_mib": result["peak_rss_mib"] - result["rss_start_mib"],
        "train_epoch_s": train_epoch,
        "val_epoch_s": val_epoch,
        "data_epoch_s": data_epoch,
        "epoch_s": epoch,
        "paper_schedule_h": PAPER_EPOCHS * epoch / 3600,
        "check": f"{result['param_dtype']} params, {result['conv_weight_format']} conv weights, "
        f"reconstruction {result.get('reconstruction_dtype')}, autocast {result.get('autocast_cpu')}",
        "loadavg": result["loadavg"][0],
        "threads": result["threads"],
    }


def speed_table(rows: list[dict[str, Any]], model: str) -> str:
    base = next((r for r in rows if r["variant"] == BASELINE), None)
    lines = [
        f"Model `{model}` ({json.dumps(MODELS[model])}), batch {BATCH}. "
        f"Basis of the times: {rows[0]['basis']}.",
        "",
        "| variant | D+G batch s | D-only batch s | train img/s | vs plain | infer ms/img | peak RSS MiB "
        "(+ over imports) | ZhangLab epoch s (train + val + data) | 1000 epochs h |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["images_per_s"] / base["images_per_s"] if base else math.nan
        lines.append(
            f"| {r['variant']} | {r['dg_s']:.2f} | {r['d_s']:.2f} | {r['images_per_s']:.2f} "
            f"| **{ratio:.2f}x** "
            f"| {r['inference_ms']:.0f} | {r['peak_rss_mib']:.0f} (+{r['train_rss_mib']:.0f}) "
            f"| {r['epoch_s']:.0f} ({r['train_epoch_s']:.0f} + {r['val_epoch_s']:.0f} "
            f"+ {r['data_epoch_s']:.1f}) "
            f"| {r['paper_schedule_h']:.1f} |"
        )
    lines += [
        "",
        "Raw measurements (means over the timed batches; wall time depends on the machine's load):",
        "",
        "| variant | threads | CPU s D+G / D-only | wall s D+G / D-only | wall img/s | load avg (1 min) "
        "| ran |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['threads']} | {r['cpu_dg_s']:.2f} / {r['cpu_d_s']:.2f} "
            f"| {r['wall_dg_s']:.2f} / {r['wall_d_s']:.2f} "
            f"| {2 * BATCH / (r['wall_dg_s'] + r['wall_d_s']):.2f} "
            f"| {r['loadavg']:.1f} | {r['check']} |"
        )
    return "\n".join(lines)


def auroc_table(results: list[dict[str, Any]]) -> str:
    """Per-run AUROCs, the seed-paired difference to the plain path, and the per-epoch curves."""
    lines = [
        "| variant | seed | fit s | val AUROC, last epoch | mean val AUROC, all epochs | test AUROC "
        "| test AUROC, bf16 inference | last-epoch recon / g / d loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        last = r["epochs"][-1]
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['fit_s']:.0f} | {last.get('image_AUROC', math.nan):.4f} "
            f"| {statistics.mean(e.get('image_AUROC', math.nan) for e in r['epochs']):.4f} "
            f"| {r['test_auroc_fp32_eval']:.4f} | {r['test_auroc_bf16_eval']:.4f} "
            f"| {last.get('train_recon_loss', math.nan):.4f} / {last.get('train_g_loss', math.nan):.4f} "
            f"/ {last.get('train_d_loss', math.nan):.5f} |"
        )
    by_variant: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], {})[str(r["seed"])] = r
    lines += [
        "",
        "Test AUROC from raw critic scores, fp32 inference (sklearn; anomalib's normalised scores are "
        "clipped). Mean over seeds, and the seed-paired difference to the plain path in AUROC points:",
        "",
    ]
    base = by_variant.get(BASELINE, {})
    for name, runs in by_variant.items():
        test = [r["test_auroc_fp32_eval"] for r in runs.values()]
        val = [statistics.mean(e.get("image_AUROC", math.nan) for e in r["epochs"]) for r in runs.values()]
        line = f"* {name}: test {statistics.mean(test):.4f}, val (all epochs) {statistics.mean(val):.4f}"
        line += f", n={len(test)}"
        paired = [
            100 * (runs[k]["test_auroc_fp32_eval"] - base[k]["test_auroc_fp32_eval"])
            for k in runs
            if k in base
        ]
        if name != BASELINE and paired:
            line += f"; test minus plain per seed: {', '.join(f'{d:+.2f}' for d in paired)} points"
            line += f" (mean {statistics.mean(paired):+.2f})"
        lines.append(line)
    lines += ["", "Per-epoch training reconstruction loss (unweighted MSE) / validation AUROC:", ""]
    lines.append(
        "| variant | seed | " + " | ".join(f"epoch {i}" for i in range(len(results[0]["epochs"]))) + " |"
    )
    lines.append("|---|---|" + "---|" * len(results[0]["epochs"]))
    for r in sorted(results, key=lambda r: (r["seed"], r["variant"])):
        cells = [
            f"{e.get('train_recon_loss', math.nan):.4f} / {e.get('image_AUROC', math.nan):.3f}"
            for e in r["epochs"]
        ]
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_measured(output: Path, text: str) -> None:
    """Replace the measured block of ``output`` (create the file if needed), keep everything else."""
    block = f"{BEGIN}\n{text}\n{END}"
    if output.exists() and BEGIN in output.read_text():
        head, _, rest = output.read_text().partition(BEGIN)
        _, _, tail = rest.partition(END)
        output.write_text(head + block + tail)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(f"# Training speed\n\n{block}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the command line (``--worker`` and its options are internal: one measurement per worker)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="paper")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS)
    )
    parser.add_argument("--batches", type=int, default=6, help="timed batches per variant (even: half D+G)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (one D+G, one D-only)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per worker; 1 = CPU-time basis, robust to a shared machine",
    )
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="cores the 1-thread times scale to"
    )
    parser.add_argument("--auroc", action="store_true", help="also train plain vs ours on DigitAnatomy")
    parser.add_argument("--auroc-variants", default=f"{BASELINE},{OURS}")
    parser.add_argument("--auroc-seeds", default="0,1,2")
    parser.add_argument("--auroc-epochs", type=int, default=10)
    parser.add_argument("--auroc-train", type=int, default=192, help="DigitAnatomy training images")
    parser.add_argument(
        "--auroc-data",
        choices=["zhanglab", "digits"],
        default=None,
        help="default: zhanglab when --zhanglab-root holds the copy, else digits",
    )
    parser.add_argument(
        "--zhanglab-root",
        default=DEFAULT_ZHANGLAB_ROOT,
        help="ZhangLab copy, the folder holding chest_xray/ (default: $SIMSID_ZHANGLAB_ROOT or %(default)s)",
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed runs (only --auroc)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--raw", type=Path, help="also save the raw worker results (JSON) here")
    parser.add_argument(
        "--from-raw", type=Path, help="rebuild the tables from saved raw results, run nothing"
    )
    parser.add_argument("--worker", choices=["speed", "auroc", "data"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data-root", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def run_worker_mode(args: argparse.Namespace) -> None:
    """Inside a worker subprocess: run one measurement and write its JSON result."""
    if args.worker == "speed":
        res = worker_speed(VARIANTS[args.variant], args.model, args.batches, args.warmup, args.threads)
    elif args.worker == "auroc":
        res = worker_auroc(
            VARIANTS[args.variant],
            args.seed,
            args.auroc_epochs,
            args.threads,
            args.data_root,
            args.auroc_train,
            args.auroc_data,
            args.zhanglab_root,
        )
    else:
        res = worker_data(64, args.zhanglab_root)
    args.result.write_text(json.dumps(res))


def measure_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the data cost per image and run one speed worker per variant."""
    raw: dict[str, Any] = {"data": _run_worker(["data", "--zhanglab-root", args.zhanglab_root])}
    print(f"data: {raw['data']}", flush=True)
    raw["speed"] = []
    for name in args.variants.split(","):
        worker_args = ["speed", "--variant", name, "--model", args.model, "--threads", str(args.threads)]
        worker_args += ["--batches", str(args.batches), "--warmup", str(args.warmup)]
        raw["speed"].append(_run_worker(worker_args))
        print(json.dumps(summarise_speed(raw["speed"][-1], raw["data"], args.cores)), flush=True)
    return raw


def measure_auroc(args: argparse.Namespace) -> dict[str, Any]:
    """One training worker per seed and variant (AUROC and loss curves)."""
    raw: dict[str, Any] = {
        "auroc_epochs": args.auroc_epochs,
        "auroc_train": args.auroc_train,
        "auroc_data": args.auroc_data,
        "auroc": [],
    }
    with tempfile.TemporaryDirectory() as data_root:
        for seed in args.auroc_seeds.split(","):
            for name in args.auroc_variants.split(","):
                worker_args = ["auroc", "--variant", name, "--seed", seed, "--threads", str(args.threads)]
                worker_args += ["--auroc-epochs", str(args.auroc_epochs)]
                worker_args += ["--auroc-train", str(args.auroc_train), "--auroc-data", args.auroc_data]
                worker_args += ["--data-root", str(Path(data_root) / "DigitAnatomy")]
                worker_args += ["--zhanglab-root", args.zhanglab_root]
                res = _run_worker(worker_args)
                raw["auroc"].append(res)
                print(json.dumps({k: v for k, v in res.items() if k != "epochs"}), flush=True)
    return raw


def report(raw: dict[str, Any], cores: int) -> str:
    """Format the measured block of the results file: header, speed table, AUROC table."""
    sections = [raw["header"]]
    if raw.get("speed"):
        data = raw["data"]
        rows = [summarise_speed(result, data, cores) for result in raw["speed"]]
        sections += [
            "",
            "### Training speed",
            "",
            speed_table(rows, raw["model"]),
            "",
            f"Data cost per image ({data['source']}, n={data['n']}, 1 thread): decode "
            f"{1000 * data['decode']:.2f} ms, bicubic resize to 128 {1000 * data['resize']:.2f} ms, "
            f"training affine {1000 * data['augment']:.2f} ms.",
        ]
    if raw.get("auroc"):
        sections += [
            "",
            f"### AUROC and loss curves: {AUROC_SETUPS[raw.get('auroc_data', 'digits')]}, "
            f"{raw['auroc_epochs']} epochs",
            "",
            auroc_table(raw["auroc"]),
        ]
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.zhanglab_root = str(Path(args.zhanglab_root).resolve())  # workers run from the repository root
    if args.auroc_data is None:
        args.auroc_data = "zhanglab" if (Path(args.zhanglab_root) / ZHANGLAB_NORMALS).is_dir() else "digits"
    if args.worker:
        run_worker_mode(args)
        return
    if args.from_raw:
        raw: dict[str, Any] = json.loads(args.from_raw.read_text())
    else:
        raw = {
            "header": f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {cpu_info()}, "
            f"Python {platform.python_version()}; command: "
            f"`python -m benchmarks.train_speed {' '.join(sys.argv[1:] if argv is None else argv)}`.",
            "model": args.model,
        }
        if not args.no_speed:
            raw.update(measure_speed(args))
        if args.auroc:
            raw.update(measure_auroc(args))
        if args.raw:
            args.raw.write_text(json.dumps(raw, indent=1))
    write_measured(args.output, report(raw, args.cores))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
