"""Train feature SimSID variants on cached features and score them (validation while exploring).

    python -m benchmarks.features.explore --dataset zhanglab --name base --seeds 0,1 --epochs 5,10,20

Every read-out is scored at each listed epoch (one training run, checkpoints along it): the in-painting
error per position (``mse``: mean squared error over channels; ``white``: Mahalanobis distance of the
residual under a per-position Gaussian fit on the training residuals), reduced to the image by
``mean`` or ``max`` over positions. Rows (one per dataset, variant, seed, epoch, read-out, split) are
appended to ``--out`` (default ``benchmarks/results/features/explore.csv``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.features.data import load
from benchmarks.features.evaluate import Evaluator
from benchmarks.features.floors import PositionGaussian
from benchmarks.features.model import FeatureSimSID, residuals, train

OUT = Path("benchmarks/results/features/explore.csv")


def readouts(model: FeatureSimSID, train_z: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image scores of standardised features ``z`` under each read-out."""
    r = residuals(model, z)
    white = PositionGaussian(residuals(model, train_z)).distance(r)
    mse = (r**2).mean(-1)
    return {
        "mse_mean": mse.mean(1),
        "mse_max": mse.max(1),
        "white_mean": white.mean(1),
        "white_max": white.max(1),
    }


def run(args: argparse.Namespace, seed: int, splits: list[str]) -> list[dict]:
    """One training run of a variant; rows for every checkpoint epoch, read-out and split."""
    layers = tuple(int(v) for v in args.layers.split(","))
    channels = args.channels or None
    tr = load(args.dataset, "train", layers, args.grid, channels)
    mu, sd = tr.features.mean((0, 1), keepdims=True), tr.features.std((0, 1), keepdims=True) + 1e-6
    train_z = (tr.features - mu) / sd
    evals = {}
    for name in splits:
        split = load(args.dataset, name, layers, args.grid, channels)
        evals[name] = ((split.features - mu) / sd, Evaluator(args.dataset, name, split), split)
    torch.manual_seed(seed)
    model = FeatureSimSID(train_z.shape[-1], args.grid, args.slots, args.topk, masked=args.masked)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    rows, done, seconds = [], 0, []
    for epoch in sorted(int(e) for e in args.epochs.split(",")):
        seconds += train(model, optimiser, train_z, epoch - done, seed, start_epoch=done)
        done = epoch
        for name, (z, evaluate, _) in evals.items():
            start = time.perf_counter()
            scores = readouts(model, train_z, z)
            score_s = time.perf_counter() - start
            for readout, score in scores.items():
                got = evaluate(score, args.draws if name == "test" else 0)
                rows.append({
                    "dataset": args.dataset, "variant": args.name, "seed": seed, "epoch": epoch,
                    "readout": readout, "split": name, "auroc": got.auroc.value, "auroc_low": got.auroc.low,
                    "auroc_high": got.auroc.high, "matched": got.matched.value,
                    "matched_low": got.matched.low, "matched_high": got.matched.high,
                    "s_per_epoch": float(np.mean(seconds)), "fit_s": float(np.sum(seconds)),
                    "score_ms_per_image": 1000 * score_s / len(z), "layers": args.layers, "grid": args.grid,
                    "channels": args.channels, "slots": args.slots, "topk": args.topk, "masked": args.masked,
                    "lr": args.lr,
                })  # fmt: skip
            best = max(
                (r for r in rows if r["epoch"] == epoch and r["split"] == name), key=lambda r: r["auroc"]
            )
            print(f"{args.dataset} {args.name} seed {seed} epoch {epoch} {name}: " + ", ".join(
                f"{r['readout']} {r['auroc']:.3f}/{r['matched']:.3f}" for r in rows
                if r["epoch"] == epoch and r["split"] == name
            ) + f"  ({np.mean(seconds):.1f} s/epoch; best {best['readout']})", flush=True)  # fmt: skip
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "mu": mu, "sd": sd, "args": vars(args) | {"save": None}},
                       args.save / f"{args.dataset}_{args.name}_seed{seed}_epoch{epoch}.pt")  # fmt: skip
    return rows


def parser() -> argparse.ArgumentParser:
    """Command-line options of a variant."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.features.explore")
    p.add_argument("--dataset", required=True)
    p.add_argument("--name", required=True, help="variant name in the table")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", default="5,10,20", help="checkpoint epochs, scored along one run")
    p.add_argument("--layers", default="1,2,3")
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--channels", type=int, default=100, help="random channels drawn (0 = all)")
    p.add_argument("--slots", type=int, default=200)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--masked", action="store_true", help="in-paint from context only (own query masked)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--splits", default="val")
    p.add_argument("--draws", type=int, default=1000, help="bootstrap draws on test")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--save", type=Path, default=None, help="folder for model state at each epoch")
    return p


def main() -> None:
    """Run the variant for each seed (one torch thread) and append its rows."""
    args = parser().parse_args()
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = run(args, seed, args.splits.split(","))
        frame = pd.DataFrame(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, mode="a", header=not args.out.is_file(), index=False)
    print(json.dumps(vars(args), default=str))


if __name__ == "__main__":
    main()
