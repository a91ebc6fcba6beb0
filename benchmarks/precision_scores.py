"""How far do mixed-precision scores move from fp32? One trained checkpoint, every val and test image.

Scores each image with the model's eval forward in fp32 and inside ``torch.autocast`` at bf16 (the
context Lightning's ``bf16-mixed`` puts around validation, test and predict), and prints the largest
change relative to the validation score range, the images whose label at the fitted threshold flips,
and both AUROCs. Issue 31: before the fix the eval forward ran in bf16 under autocast; now it runs
in fp32 whatever the autocast, so the change is 0.

    python benchmarks/precision_scores.py CKPT --data-root DIR [--device cpu] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import json

import torch
from sklearn.metrics import roc_auc_score

from anomalib_simsid import DigitAnatomy, SimSID

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def scores(
    model: SimSID, loader, device: str, dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred_score`` of every image of ``loader`` (fp32 unless ``dtype``: autocast at that type)."""
    values, labels = [], []
    for batch in loader:
        image = model.pre_processor.transform(batch.image.to(device))
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            values.append(model.model(image).pred_score.float().cpu())
        labels.append(batch.gt_label)
    return torch.cat(values), torch.cat(labels)


def main() -> None:
    """Print the fp32-vs-reduced-precision score change as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    args = parser.parse_args()
    model = SimSID.load_from_checkpoint(args.ckpt, map_location=args.device).eval().to(args.device)
    size = model.hparams.img_size
    datamodule = DigitAnatomy(root=args.data_root, image_size=size, seed=0, eval_batch_size=32)
    datamodule.setup("fit")
    datamodule.setup("test")
    result = {"ckpt": args.ckpt, "dtype": args.dtype, "threads": torch.get_num_threads()}
    val32, _ = scores(model, datamodule.val_dataloader(), args.device, None)
    value_range = float(val32.max() - val32.min())
    threshold = float(model.post_processor.image_threshold)
    for split, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
        fp32, labels = scores(model, loader, args.device, None)
        low, _ = scores(model, loader, args.device, DTYPES[args.dtype])
        change = (low - fp32).abs()
        result[split] = {
            "images": len(fp32),
            "max_abs_change": round(float(change.max()), 5),
            "max_change_pct_of_val_range": round(100 * float(change.max()) / value_range, 3),
            "labels_flipped_at_threshold": int(((fp32 > threshold) != (low > threshold)).sum()),
            "auroc_fp32": round(float(roc_auc_score(labels, fp32)), 5),
            f"auroc_{args.dtype}": round(float(roc_auc_score(labels, low)), 5),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
