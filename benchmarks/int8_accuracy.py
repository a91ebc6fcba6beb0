r"""What INT8 costs in accuracy: image AUROC of the FP32 and INT8 OpenVINO exports of one checkpoint.

Both IRs come from :func:`anomalib_simsid.deploy.export_openvino` (one trace; INT8 calibrated on
the datamodule's normal training images) and score the datamodule's test split exactly as
``score_folder`` would: each file read with ``read_image``, resized like training (antialiased
bicubic), then run through the graph with ``INFERENCE_PRECISION_HINT=f32``. The PyTorch
``model.forward`` AUROC on the same tensors is reported too, as the reference. ``--irs`` scores two
IRs made elsewhere instead, e.g. the FP32 and ``INT8_PTQ`` models written by ``anomalib export``.

    python benchmarks/int8_accuracy.py --ckpt model.ckpt --data anomalib_simsid.DigitAnatomy \\
        --data-args '{"root": "datasets/DigitAnatomy", "image_size": 128}'
    python benchmarks/int8_accuracy.py --ckpt model.ckpt --data anomalib_simsid.DigitAnatomy \\
        --data-args '{"root": "datasets/DigitAnatomy"}' --irs <model.xml> <model_int8.xml>
    python benchmarks/int8_accuracy.py --ckpt zhanglab.ckpt --data anomalib_simsid.data.zhanglab.ZhangLab \\
        --data-args '{"root": "<folder holding chest_xray/>"}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if __package__ in {None, ""}:  # run as a file (python benchmarks/<name>.py): make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import openvino as ov
import torch
from anomalib.data import AnomalibDataModule
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from anomalib_simsid.deploy import export_openvino, load_simsid, torch_reference
from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_resize
from benchmarks.common import instantiate


def load_test_split(
    datamodule: AnomalibDataModule, img_size: int, limit: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """Load the test split as one ``(N, 3, S, S)`` tensor resized like training, and its labels."""
    datamodule.setup("test")
    data = datamodule.test_data
    resize = simsid_resize((img_size, img_size))
    count = len(data) if limit is None else min(limit, len(data))
    images, labels = [], []
    for index in range(count):
        item = data[index]
        image = item.image
        images.append(image if tuple(image.shape[-2:]) == (img_size, img_size) else resize(image))
        labels.append(int(item.gt_label))
    return torch.stack(images), np.asarray(labels)


def run_ir(path: Path, images: torch.Tensor, batch_size: int = 16) -> dict[str, np.ndarray]:
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        for output, value in compiled(images[start : start + batch_size].numpy()).items():
            parts.setdefault(output.get_any_name(), []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def int8_auroc(
    ckpt: str | Path,
    datamodule: AnomalibDataModule,
    work_dir: str | Path | None = None,
    calibration_size: int = 300,
    limit: int | None = None,
    irs: dict[str, Path] | None = None,
    int8_options: dict[str, Any] | None = None,
    weight_compression: bool = True,
) -> dict[str, Any]:
    """FP32 vs INT8 image AUROC (in AUROC points, i.e. x100) on ``datamodule``'s test split.

    ``irs`` skips the export (``{"fp32": xml, "int8": xml}`` made earlier from the same checkpoint).
    ``int8_options`` are ``nncf.quantize`` keywords (default: ``export.INT8_DEFAULTS``; ``{}`` gives
    NNCF's defaults, which anomalib's ``INT8_PTQ`` uses).
    """
    if irs is not None and int8_options is not None:
        msg = "int8_options apply only when this script exports; the given IRs were quantised already"
        raise ValueError(msg)
    model = load_simsid(ckpt)
    img_size = int(model.hparams.img_size)
    with tempfile.TemporaryDirectory() as tmp:
        if irs is None:
            start = time.perf_counter()
            irs = export_openvino(
                model,
                Path(work_dir or tmp),
                ("fp32", "int8"),
                datamodule=datamodule,
                calibration_size=calibration_size,
                int8_options=int8_options,
                int8_weight_compression=weight_compression,
            )
            export_seconds = time.perf_counter() - start
            # What made the IRs: this script's options, or files it was given (never re-quantised).
            provenance = {
                "int8_options": "default" if int8_options is None else int8_options,
                "int8_weight_compression": weight_compression,
                "irs": None,
            }
        else:
            export_seconds = None
            provenance = {"int8_options": None, "irs": {name: str(path) for name, path in irs.items()}}
        sizes = {f"ir_mb_{name}": Path(irs[name]).with_suffix(".bin").stat().st_size / 1e6 for name in irs}
        images, labels = load_test_split(datamodule, img_size, limit)
        outputs = {name: run_ir(irs[name], images) for name in ("fp32", "int8")}
    outputs["torch"] = torch_reference(model, images)
    if len(set(labels.tolist())) < 2:
        msg = "the test split needs normal and abnormal images for an AUROC"
        raise ValueError(msg)
    auroc = {name: 100 * float(roc_auc_score(labels, out["pred_score"])) for name, out in outputs.items()}
    fp32, int8 = outputs["fp32"], outputs["int8"]
    return {
        "checkpoint": str(ckpt),
        "datamodule": datamodule.name,
        "test_images": len(labels),
        "abnormal": int(labels.sum()),
        "auroc_torch": auroc["torch"],
        "auroc_fp32": auroc["fp32"],
        "auroc_int8": auroc["int8"],
        "delta_points": auroc["int8"] - auroc["fp32"],
        "fp32_vs_torch_max_score_diff": float(
            np.abs(fp32["pred_score"] - outputs["torch"]["pred_score"]).max()
        ),
        "int8_vs_fp32_max_score_diff": float(np.abs(int8["pred_score"] - fp32["pred_score"]).max()),
        "mean_abs_score_diff_int8_fp32": float(np.abs(int8["pred_score"] - fp32["pred_score"]).mean()),
        "label_agreement_int8_fp32": float((int8["pred_label"] == fp32["pred_label"]).mean()),
        # Rank agreement bounds the AUROC change for any labelling: 1.0 means INT8 ranks like FP32.
        "spearman_int8_fp32": float(spearmanr(int8["pred_score"], fp32["pred_score"]).statistic),
        **sizes,
        **provenance,
        "export_seconds": export_seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="trained SimSID Lightning checkpoint")
    parser.add_argument("--data", default="anomalib_simsid.DigitAnatomy", help="datamodule class path")
    parser.add_argument("--data-args", default="{}", help="datamodule init args as JSON")
    parser.add_argument("--calibration-size", type=int, default=300, help="normal training images for INT8")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test images")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the IRs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument(
        "--irs",
        nargs=2,
        type=Path,
        metavar=("FP32_XML", "INT8_XML"),
        help="score these IRs of the checkpoint (e.g. written by `anomalib export`) instead of exporting",
    )
    parser.add_argument(
        "--int8-options",
        default=None,
        help='nncf.quantize keywords as JSON; "{}" = NNCF defaults (anomalib\'s)',
    )
    parser.add_argument(
        "--int8-float-matmul-weights", action="store_true", help="keep the INT8 IR's MatMul weights in float"
    )
    args = parser.parse_args(argv)
    datamodule = instantiate({"class_path": args.data, "init_args": json.loads(args.data_args)})
    options = None if args.int8_options is None else json.loads(args.int8_options)
    irs = dict(zip(("fp32", "int8"), args.irs, strict=True)) if args.irs else None
    result = int8_auroc(
        args.ckpt,
        datamodule,
        args.work_dir,
        args.calibration_size,
        args.limit,
        irs=irs,
        int8_options=options,
        weight_compression=not args.int8_float_matmul_weights,
    )
    print(json.dumps(result, indent=2))
    print(
        f"| {result['datamodule']} | {result['test_images']} | {result['auroc_torch']:.2f} "
        f"| {result['auroc_fp32']:.2f} "
        f"| {result['auroc_int8']:.2f} | {result['delta_points']:+.2f} |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
