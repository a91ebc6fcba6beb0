"""Inference cost of a trained feature SimSID as one graph: image -> score (encoder included).

    python -m benchmarks.features.speed --checkpoint benchmarks/work/features/models/<file>.pt

Builds the whole path (EfficientNet-Lite0 up to ``blocks.3``, grid resize, channel draw,
standardisation, in-painting, residual Mahalanobis per position, mean or max), times it eager at
batch 1 on one torch thread (median of ``--repeats``), converts it to OpenVINO IR and times that too,
and prints the IR size. The residual Gaussian is fit on the cached training features.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.features.cache import WORK, encoder
from benchmarks.features.data import channel_draw, load
from benchmarks.features.floors import PositionGaussian
from benchmarks.features.model import FeatureSimSID, residuals


class FeatureScorer(nn.Module):
    """Normalised image ``(B, 3, 128, 128)`` -> anomaly score ``(B,)``: the deployable graph."""

    def __init__(
        self, model: FeatureSimSID, layers: tuple[int, ...], grid: int, pick: np.ndarray | None,
        mu: np.ndarray, sd: np.ndarray, gaussian: PositionGaussian, readout: str,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder, self.model, self.layers, self.grid = encoder(), model.eval(), layers, grid
        self.register_buffer("pick", torch.as_tensor(pick if pick is not None else np.arange(mu.shape[-1])))
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32).view(1, 1, -1))
        self.register_buffer("sd", torch.as_tensor(sd, dtype=torch.float32).view(1, 1, -1))
        self.register_buffer("mean", gaussian.mean.float().squeeze(1))  # (P, C)
        self.register_buffer("precision", gaussian.precision.float())  # (P, C, C)
        self.reduce = torch.amax if readout.endswith("max") else torch.mean

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Score a batch of normalised images (higher = more anomalous)."""
        x = self.encoder.bn1(self.encoder.conv_stem(image))
        maps = []
        for i, block in enumerate(self.encoder.blocks[: max(self.layers) + 1]):
            x = block(x)
            if i in self.layers:
                if x.shape[-1] > self.grid:
                    maps.append(F.adaptive_avg_pool2d(x, self.grid))
                elif x.shape[-1] < self.grid:
                    maps.append(
                        F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
                    )
                else:
                    maps.append(x)
        f = torch.cat(maps, 1).flatten(2).transpose(1, 2)[..., self.pick]
        z = (f - self.mu) / self.sd
        d = self.model(z) - z - self.mean
        mahal = torch.einsum("bpc,pcd,bpd->bp", d, self.precision, d).clamp_min(0).sqrt()
        return self.reduce(mahal, dim=1)


def main() -> None:
    """Time the eager graph and its OpenVINO IR at batch 1 (one thread)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.features.speed")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--readout", default="white_mean")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    saved = torch.load(args.checkpoint, weights_only=False)
    v = argparse.Namespace(**saved["args"])
    layers, channels = tuple(int(x) for x in v.layers.split(",")), v.channels or None
    tr = load(v.dataset, "train", layers, v.grid, channels)
    model = FeatureSimSID(tr.features.shape[-1], v.grid, v.slots, v.topk, masked=v.masked)
    model.load_state_dict(saved["model"])
    z = (tr.features - saved["mu"]) / saved["sd"]
    gaussian = PositionGaussian(residuals(model, z))
    total = np.load(WORK / v.dataset / "train" / "blocks.1.npy", mmap_mode="r").shape[1]
    total += sum(np.load(WORK / v.dataset / "train" / f"blocks.{b}.npy",
                         mmap_mode="r").shape[1] for b in layers[1:])  # fmt: skip
    scorer = FeatureScorer(model, layers, v.grid, channel_draw(total, channels), saved["mu"].ravel(),
                           saved["sd"].ravel(), gaussian, args.readout).eval()  # fmt: skip
    image = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for _ in range(3):
            scorer(image)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scorer(image)
            times.append(time.perf_counter() - start)
    print(f"eager torch, batch 1, 1 thread: {1000 * statistics.median(times):.1f} ms/image")
    params = sum(t.numel() for t in scorer.model.parameters())
    print(f"in-painting model parameters: {params:,}; buffers (Gaussian): {scorer.precision.numel():,}")
    import openvino as ov

    ir = ov.convert_model(scorer, example_input=image)
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(ir, Path(tmp) / "model.xml", compress_to_fp16=False)
        size = (Path(tmp) / "model.bin").stat().st_size
    compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_NUM_THREADS": 1})
    ref = scorer(image).item()
    got = float(compiled(image.numpy())[0][0])
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        compiled(image.numpy())
        times.append(time.perf_counter() - start)
    print(f"OpenVINO IR (fp32): {size / 2**20:.1f} MiB; {1000 * statistics.median(times):.1f} ms/image "
          f"(1 thread); score eager {ref:.4f} vs IR {got:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
