"""Measure whether a statistic of the pre-processed batch image changes the matched AUROC (ZhangLab).

    python -m benchmarks.audit.source_check --root datasets/zhanglab-224

anomalib's evaluator sees the batch after the model's pre-processor. For each view of the 624 test
images (the file as the audit defines it; SimSID's batch; the suite's PaDiM batch; anomalib's
default PaDiM batch), with the normalisation undone and the audit's 128 px view taken of it, this
prints the matched pairs and the matched AUROC of the committed PaDiM and SimSID seed-0 scores, and
the median relative change of each statistic. It is why the metrics read the file by default.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_simsid.audit import image_statistics, match_pairs, matched_auroc_ci, path_statistics
from anomalib_simsid.audit.statistics import model_view
from anomalib_simsid.data import read_image
from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_pre_processor

SCORES = "benchmarks/results/zhanglab/scores.csv.gz"
HALF, IMAGENET = ([0.5] * 3, [0.5] * 3), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
VIEWS = {
    "SimSID batch (bicubic 128, [-1, 1])": (simsid_pre_processor((128, 128)).transform, HALF),
    "suite PaDiM batch (bilinear 128, mean/std 0.5)": (
        Compose([Resize((128, 128), antialias=True), Normalize(*HALF)]),
        HALF,
    ),
    "anomalib default PaDiM batch (bilinear 256, ImageNet)": (
        Compose([Resize((256, 256), antialias=True), Normalize(*IMAGENET)]),
        IMAGENET,
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--root", required=True, help="ZhangLab root (holds chest_xray/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scores = pd.read_csv(SCORES)
    scores = scores[scores.entry.isna() & (scores.seed == 0)]
    paths = sorted(scores.image.unique())
    labels = scores.drop_duplicates("image").set_index("image").label.loc[paths].to_numpy()
    files = [f"{args.root}/{p}" for p in paths]
    base = path_statistics(files)
    views = {"file (the audit's definition)": base}
    for name, (transform, (mean, std)) in VIEWS.items():
        rows = []
        for file in files:
            image = transform(read_image(file)[None])[0]
            image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
            rows.append(image_statistics(model_view(image)))
        views[name] = pd.DataFrame(rows)
    print("| statistic taken of | statistic | pairs | PaDiM matched | SimSID matched | median rel. change |")
    print("|---|---|---|---|---|---|")
    for name, stats in views.items():
        for statistic in ("sharpness", "mean"):
            pairs = match_pairs(stats[statistic].to_numpy(), labels)
            cells = [name, statistic, str(len(pairs))]
            for model in ("PaDiM", "SimSID"):
                score = scores[scores.model == model].set_index("image").score.loc[paths].to_numpy()
                value = matched_auroc_ci(score[pairs[:, 0]], score[pairs[:, 1]], draws=0).value
                cells.append(f"{100 * value:.1f}")
            change = np.median(np.abs(stats[statistic] - base[statistic]) / base[statistic])
            cells.append(f"{change:.1e}")
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
