"""Epoch time of the data path with and without the uint8 image cache (``image_cache``), on the CPU.

Times one pass over the ZhangLab training loader as training runs it (the SimSID training
augmentation included, batches of 16) and the cache's one-off build. The model step is not included:
this is what the loader costs per epoch, the part the cache removes.

    python benchmarks/data_cache.py --root datasets/zhanglab-224 [--size 128] [--workers 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from anomalib_simsid import ZhangLab


def epoch_seconds(module: ZhangLab) -> tuple[float, int]:
    """Seconds for one pass over the training loader, and the images it served."""
    start, images = time.perf_counter(), 0
    for batch in module.train_dataloader():
        images += len(batch.image)
    return time.perf_counter() - start, images


def main() -> None:
    """Print the epoch times as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--size", type=int, default=128, help="the model's img_size (paper: 128)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "workers": args.workers, "size": args.size}
    for mode in (None, "memory"):
        module = ZhangLab(
            root=args.root,
            val_source="draw",
            num_workers=args.workers,
            image_cache=mode,
            image_cache_size=args.size,
        )
        start = time.perf_counter()
        module.setup("fit")
        setup = time.perf_counter() - start
        seconds, images = epoch_seconds(module)
        result[str(mode or "no cache")] = {
            "setup_s": round(setup, 1),
            "epoch_s": round(seconds, 1),
            "images": images,
            "images_per_s": round(images / seconds, 1),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
