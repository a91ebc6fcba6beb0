"""Training-free floors on the feature grid: per-position Gaussian and linear in-painting (ridge).

Both give a per-position distance map ``(N, P)``; the image score is its mean or max over positions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

EPS = 0.01  # PaDiM's covariance regulariser (added to the diagonal)
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


class PositionGaussian:
    """One Gaussian per grid position (PaDiM's statistics); ``distance`` is the Mahalanobis distance."""

    def __init__(self, train: np.ndarray, eps: float = EPS) -> None:
        x = torch.from_numpy(train).double().transpose(0, 1)  # (P, N, C)
        self.mean = x.mean(1, keepdim=True)
        centred = x - self.mean
        cov = centred.transpose(1, 2) @ centred / (x.shape[1] - 1)
        cov += eps * torch.eye(cov.shape[-1], dtype=cov.dtype)
        self.precision = torch.linalg.inv(cov)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """``(N, P, C)`` -> ``(N, P)`` Mahalanobis distances to each position's Gaussian."""
        d = torch.from_numpy(np.asarray(x)).double().transpose(0, 1) - self.mean
        return torch.einsum("pnc,pcd,pnd->np", d, self.precision, d).clamp_min(0).sqrt().float().numpy()


def neighbour_stack(x: np.ndarray, grid: int) -> np.ndarray:
    """``(N, P, C)`` -> ``(N, P, 8C)``: the 8 neighbours' features of each position, zeros off the grid."""
    t = torch.from_numpy(np.asarray(x)).float().unflatten(1, (grid, grid)).permute(0, 3, 1, 2)
    padded = F.pad(t, (1, 1, 1, 1))
    parts = [padded[:, :, 1 + dy : 1 + dy + grid, 1 + dx : 1 + dx + grid] for dy, dx in NEIGHBOURS]
    return torch.cat(parts, dim=1).flatten(2).transpose(1, 2).contiguous().numpy()


def ridge_fit(
    xs: torch.Tensor, ys: torch.Tensor, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ridge regressions ``ys (p, N, C)`` on ``xs (p, N, D)`` with intercepts, penalty ``ridge * N``.

    Returns the means, the weights ``(p, D, C)`` and the leave-one-out residuals ``(p, N, C)``
    (closed form ``e_i / (1 - h_ii)``, the intercept's ``1/N`` included in the leverage).
    """
    xm, ym = xs.mean(1, keepdim=True), ys.mean(1, keepdim=True)
    xc, yc = xs - xm, ys - ym
    gram = (xc.transpose(1, 2) @ xc).double()
    gram += ridge * xs.shape[1] * torch.eye(gram.shape[-1], dtype=gram.dtype)
    inverse = torch.linalg.inv(gram).float()
    w = inverse @ (xc.transpose(1, 2) @ yc)
    leverage = ((xc @ inverse) * xc).sum(-1, keepdim=True) + 1 / xs.shape[1]
    return xm, ym, w, (yc - xc @ w) / (1 - leverage)


class RidgeInpainting:
    """Predict each position's feature linearly from its 8 neighbours (one ridge per position).

    Features are standardised per channel on training normals (so one ``ridge`` fits every channel;
    the penalty is ``ridge * N``, i.e. per training image). The residual's per-position Gaussian is fit
    on the *leave-one-out* training residuals (closed form for ridge: ``e_i / (1 - h_ii)``), so it
    measures out-of-sample error, not the smaller in-sample one.
    """

    def __init__(self, train: np.ndarray, grid: int, ridge: float = 1.0, chunk: int = 16) -> None:
        self.grid, self.ridge, self.chunk = grid, ridge, chunk
        self.mu = train.mean((0, 1), keepdims=True)
        self.sd = train.std((0, 1), keepdims=True) + 1e-6
        z = (train - self.mu) / self.sd
        nb = torch.from_numpy(neighbour_stack(z, grid)).transpose(0, 1)  # (P, N, 8C)
        y = torch.from_numpy(z).float().transpose(0, 1)  # (P, N, C)
        self.weights, loo = [], []
        for lo in range(0, nb.shape[0], chunk):
            xm, ym, w, residual = ridge_fit(nb[lo : lo + chunk], y[lo : lo + chunk], ridge)
            self.weights.append((xm, ym, w))
            loo.append(residual)
        self.gaussian = PositionGaussian(torch.cat(loo).transpose(0, 1).numpy())

    def _residual(self, z: np.ndarray) -> np.ndarray:
        nb = torch.from_numpy(neighbour_stack(z, self.grid)).transpose(0, 1)
        y = torch.from_numpy(np.asarray(z)).float().transpose(0, 1)
        parts, lo = [], 0
        for xm, ym, w in self.weights:
            p = w.shape[0]
            parts.append(y[lo : lo + p] - ((nb[lo : lo + p] - xm) @ w + ym))
            lo += p
        return torch.cat(parts).transpose(0, 1).numpy()

    def distance(self, x: np.ndarray) -> np.ndarray:
        """``(N, P, C)`` -> ``(N, P)``: Mahalanobis distance of the in-painting residual."""
        return self.gaussian.distance(self._residual(((x - self.mu) / self.sd).astype(np.float32)))


def main() -> None:
    """Floors on validation and test of both sets: Gaussian mean/max, ridge in-painting mean/max."""
    import argparse
    import time
    from pathlib import Path

    import pandas as pd

    from benchmarks.features.data import load
    from benchmarks.features.evaluate import Evaluator

    parser = argparse.ArgumentParser(prog="python -m benchmarks.features.floors")
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument("--layers", default="1,2,3")
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--channels", type=int, default=100, help="random channels drawn (0 = all)")
    parser.add_argument("--ridge", type=float, default=1.0)
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="CSV to append rows to")
    args = parser.parse_args()
    torch.set_num_threads(1)
    layers = tuple(int(v) for v in args.layers.split(","))
    rows = []
    for dataset in args.dataset or ["zhanglab", "adult-cxr-dev"]:
        train = load(dataset, "train", layers, args.grid, args.channels or None)
        start = time.perf_counter()
        models = {"gaussian": PositionGaussian(train.features)}
        fit = {"gaussian": time.perf_counter() - start}
        start = time.perf_counter()
        models["ridge"] = RidgeInpainting(train.features, args.grid, args.ridge)
        fit["ridge"] = time.perf_counter() - start
        for split_name in args.splits.split(","):
            split = load(dataset, split_name, layers, args.grid, args.channels or None)
            evaluate = Evaluator(dataset, split_name, split)
            for name, model in models.items():
                dist = model.distance(split.features)
                for readout, score in (("mean", dist.mean(1)), ("max", dist.max(1))):
                    got = evaluate(score, args.draws if split_name == "test" else 0)
                    rows.append({
                        "dataset": dataset, "split": split_name, "floor": name, "readout": readout,
                        "layers": args.layers, "grid": args.grid, "channels": args.channels,
                        "ridge": args.ridge if name == "ridge" else np.nan,
                        "auroc": got.auroc.value, "auroc_low": got.auroc.low, "auroc_high": got.auroc.high,
                        "matched": got.matched.value, "matched_low": got.matched.low,
                        "matched_high": got.matched.high, "pairs": evaluate.pairs, "fit_s": fit[name],
                    })  # fmt: skip
                    print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    if args.out:
        frame.to_csv(args.out, mode="a", header=not args.out.is_file(), index=False)
    print(frame.round(3).to_string())


if __name__ == "__main__":
    main()
