"""Why PatchCore ran out of memory beside SimSID: what reaches it, and what a finished job still holds.

    python -m benchmarks.patchcore_beside_simsid --root <empty folder> [--side 512]
    python -m benchmarks.patchcore_beside_simsid --root <empty folder> --bank 24,48

``--bank`` measures instead how PatchCore's memory grows with the training set: anomalib's default
PatchCore (wide_resnet50_2 layers 2+3 at 256 px, random weights: no download) fitted on anomalib's
``Folder`` (the common form without ``normal_test_dir``) and on ``XRayFolder`` over the same folder,
each in its own process, for each listed number of training normals; it prints the images trained
on, the embedding rows gathered before the coreset, the peak RSS, and the per-image slope that
extrapolates to the chest sets' sizes.

Writes a small random XRayFolder layout under ``--root``, then (1) fits PatchCore (random resnet18,
no download) on anomalib's ``Folder``, on ``XRayFolder``, and on ``XRayFolder`` after a SimSID job,
printing the batch shape PatchCore sees and its memory bank; (2) runs a SimSID and a PaDiM
``BenchmarkJob`` with the cycle collector off and prints whether the job's model is still alive
afterwards, without and with the ``benchmark_results`` fix. CPU only, one thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

SPLITS = (("train", "normal", 8), ("val", "normal", 2), ("val", "abnormal", 2))
SPLITS += (("test", "normal", 2), ("test", "abnormal", 2))
TINY = {"img_size": 64, "num_patch": 2, "level": 3, "base_width": 8}


def write_folders(root: Path, side: int, train: int | None = None) -> None:
    rng = np.random.default_rng(0)
    for split, label, count in SPLITS:
        count = train if train is not None and split == "train" else count
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = rng.integers(0, 255, (side, side), dtype=np.uint8)
            Image.fromarray(image).save(root / split / label / f"{i}.png")


def patchcore_inputs(root: Path) -> None:
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from lightning.pytorch import Callback

    from anomalib_simsid import SimSID, XRayFolder

    class Shapes(Callback):
        def __init__(self) -> None:
            self.shapes: set[tuple[int, ...]] = set()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self.shapes.add(tuple(batch.image.shape[1:]))

    def xray() -> XRayFolder:
        return XRayFolder(root=str(root), train_batch_size=4, eval_batch_size=4)

    def folder() -> Folder:
        return Folder(
            name="f",
            root=str(root),
            normal_dir="train/normal",
            abnormal_dir="test/abnormal",
            normal_test_dir="test/normal",
            train_batch_size=4,
            eval_batch_size=4,
        )

    quiet = {"logger": False, "enable_progress_bar": False, "default_root_dir": root / "out"}
    for name, make, simsid_first in (
        ("Folder", folder, False),
        ("XRayFolder", xray, False),
        ("XRayFolder", xray, True),
    ):
        if simsid_first:
            limits = {"limit_train_batches": 1, "limit_val_batches": 1}
            Engine(max_epochs=1, **quiet, **limits).fit(SimSID(**TINY), datamodule=make())
        shapes = Shapes()
        model = Patchcore(backbone="resnet18", pre_trained=False, layers=["layer2", "layer3"])
        Engine(**quiet, callbacks=[shapes]).fit(model, datamodule=make())
        after = " after a SimSID job" if simsid_first else ""
        bank = tuple(model.model.memory_bank.shape)
        print(f"PatchCore on {name}{after}: batch {shapes.shapes}, memory bank {bank}")


def job_memory(root: Path) -> None:
    import anomalib.pipelines.benchmark.pipeline  # noqa: F401  (the benchmark_results fix's target)
    from anomalib.models import Padim
    from anomalib.pipelines.benchmark.job import BenchmarkJob

    from anomalib_simsid import SimSID, XRayFolder
    from anomalib_simsid.fixes import benchmark

    gc.disable()  # what a GPU's memory sees between two collections
    makers = {"SimSID": lambda: SimSID(**TINY, max_epochs=1)}
    makers["PaDiM"] = lambda: Padim(backbone="resnet18", pre_trained=False, layers=["layer1", "layer2"])
    for fixed in (False, True):
        benchmark._GRID["simsid"] = fixed
        for name, make in makers.items():
            # no local reference to the model or the datamodule (whose trainer holds it), as in the runner
            job = BenchmarkJob(
                accelerator="cpu",
                model=make(),
                datamodule=XRayFolder(root=str(root), train_batch_size=4, eval_batch_size=4),
                seed=0,
                flat_cfg={},
            )
            alive = weakref.ref(job.model.model)
            job.run()
            state = "on" if fixed else "off"
            print(f"{name} job, fix {state}: model alive after the job: {alive() is not None}")
            del job
            gc.collect()
    gc.enable()


def bank_job(root: Path, kind: str) -> dict[str, Any]:
    """Fit default PatchCore on one datamodule (in this process); what it gathered and its peak RSS."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Patchcore

    from anomalib_simsid import XRayFolder

    if kind == "Folder":
        data = Folder(name="f", root=str(root), normal_dir="train/normal", abnormal_dir="test/abnormal")
    else:
        data = XRayFolder(root=str(root))
    layers = ["layer2", "layer3"]
    model = Patchcore(
        backbone="wide_resnet50_2", pre_trained=False, layers=layers, coreset_sampling_ratio=0.01
    )
    gathered: dict[str, int] = {}
    subsample = model.model.subsample_embedding

    def spy(ratio: float, *args: Any, **kwargs: Any) -> Any:
        store = model.model.embedding_store
        gathered.update(rows=sum(e.shape[0] for e in store), dims=int(store[0].shape[1]))
        return subsample(ratio, *args, **kwargs)

    model.model.subsample_embedding = spy
    quiet = {"logger": False, "enable_progress_bar": False, "default_root_dir": root / f"out-{kind}"}
    Engine(devices=1, **quiet).fit(model, datamodule=data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"datamodule": kind, "train_images": len(data.train_data), **gathered, "peak_rss_mb": peak}


def bank_memory(root: Path, counts: list[int], side: int) -> None:
    """Run :func:`bank_job` for each training-set size and datamodule; print rows and the slope."""
    rows = []
    for count in counts:
        folder = root / f"train{count}"
        write_folders(folder, side, train=count)
        for kind in ("Folder", "XRayFolder"):
            command = [sys.executable, "-m", "benchmarks.patchcore_beside_simsid", "--root", str(folder)]
            done = subprocess.run([*command, "--bank-job", kind], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    xray = sorted((r for r in rows if r["datamodule"] == "XRayFolder"), key=lambda r: r["train_images"])
    small, large = xray[0], xray[-1]
    slope = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (large["train_images"] - small["train_images"])
    bank = large["rows"] / large["train_images"] * large["dims"] * 4 / 2**20
    print(
        f"peak RSS grows {slope:.1f} MB per training image (XRayFolder); embeddings: {bank:.1f} MB per image"
    )
    for name, images in (("ZhangLab train", 1284), ("adult-cxr-dev train", 2000)):
        for kind, share in (("XRayFolder (all normals)", 1.0), ("Folder (80%: 20% moved to test)", 0.8)):
            n = int(images * share)
            print(f"{name}, {kind}: {n} images -> {n * slope / 1024:.1f} GB above the model's own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--bank", help="comma-separated training-set sizes: PatchCore's memory against them")
    parser.add_argument("--bank-job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.bank_job:
        print(json.dumps(bank_job(args.root, args.bank_job)))
        return
    if args.bank:
        bank_memory(args.root, [int(n) for n in args.bank.split(",")], args.side)
        return
    write_folders(args.root, args.side)
    patchcore_inputs(args.root)
    job_memory(args.root)


if __name__ == "__main__":
    main()
