"""How much of a feature does each in-painting predict beyond its position's mean (normal images).

    python -m benchmarks.features.explained --dataset adult-cxr-dev --model <saved .pt> [--model ...]

Mean squared error per channel (standardised features) on the split's *normal* images of: the
per-position training mean (what the Gaussian floor centres on), the ridge in-painting from 8
neighbours, and each saved feature SimSID. Relative to the first, this is the share of the
position-wise variance a model leaves unexplained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.features.data import load
from benchmarks.features.floors import RidgeInpainting
from benchmarks.features.model import FeatureSimSID, residuals


def main() -> None:
    """Print the table (one torch thread)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.features.explained")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--model", type=Path, action="append", default=[])
    args = p.parse_args()
    torch.set_num_threads(1)
    tr, ev = load(args.dataset, "train"), load(args.dataset, args.split)
    mu, sd = tr.features.mean((0, 1), keepdims=True), tr.features.std((0, 1), keepdims=True) + 1e-6
    z_tr, z = (tr.features - mu) / sd, ((ev.features - mu) / sd)[ev.labels == 0]
    base = ((z - z_tr.mean(0)) ** 2).mean()
    ridge = RidgeInpainting(tr.features, 16)
    r = ridge._residual(((ev.features[ev.labels == 0] - ridge.mu) / ridge.sd).astype(np.float32))
    print("| predictor | MSE per channel | share of the position-mean MSE |\n|---|---|---|")
    print(f"| position mean (train) | {base:.3f} | 1.000 |")
    print(f"| ridge in-painting, 8 neighbours | {(r**2).mean():.3f} | {(r**2).mean() / base:.3f} |")
    for path in args.model:
        saved = torch.load(path, weights_only=False)
        a = saved["args"]
        model = FeatureSimSID(z.shape[-1], a["grid"], a["slots"], a["topk"], masked=a["masked"])
        model.load_state_dict(saved["model"])
        m = (residuals(model, z) ** 2).mean()
        print(f"| feature SimSID {path.stem} | {m:.3f} | {m / base:.3f} |")


if __name__ == "__main__":
    main()
