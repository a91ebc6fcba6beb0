"""Export a trained SimSID to OpenVINO IR: FP32, FP16 and INT8 from one trace, with metadata.

anomalib's own path (``Engine.export`` / ``anomalib export``) works for SimSID and is what these
helpers build on, with three differences that matter for deployment:

* **INT8 calibration data.** ``CompressionType.INT8_PTQ`` calibrates on ``datamodule.val_dataloader()``
  (see ``ExportMixin._post_training_quantization_ov`` in anomalib 2.7.0), and SimSID's validation split
  holds normal *and* abnormal images. SimSID is a one-class model, so we calibrate on the training
  normals instead: :class:`TrainNormalsCalibration` wraps any datamodule so that its "validation"
  loader yields the un-augmented, normal-only training images, and works with ``Engine.export`` too.
* **One trace.** The ONNX trace is the slow part of an export (tens of seconds); FP16 and INT8 are
  derived from the same converted FP32 model instead of re-tracing per precision.
* **Metadata.** The IR carries ``rt_info`` (``simsid/model_type``, ``img_size``, ``compression``, ...)
  so :class:`~anomalib_simsid.deploy.predictor.SimSIDPredictor` can refuse a model that is not SimSID
  and resize inputs exactly as training did.

This module owns SimSID's export: ``SimSID.to_openvino`` (:mod:`.export`) delegates INT8 here, and
``anomalib_simsid.deploy`` (``simsid-export``, the predictor, folder scoring) imports it; nothing in
``models`` imports ``deploy``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
from anomalib.data import AnomalibDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from ..lightning_model import SimSID
from .checkpoint import NotSimSIDError, load_simsid, prepare_for_deployment
from .export import OPSET, check_input_size, quiet_loggers
from .pre_processing import simsid_resize

logger = logging.getLogger(__name__)

COMPRESSIONS = ("fp32", "fp16", "int8")
METADATA_SECTION = "simsid"
MODEL_TYPE = "SimSID"
# NNCF settings for SimSID's INT8. The transformer scheme keeps the in-painting attention's softmax,
# layer norms and residual adds in float, and full bias correction replaces the fast one; on a
# DigitAnatomy checkpoint this cut the mean INT8-vs-FP32 normalised score change ~4x against NNCF's
# defaults (which anomalib's INT8_PTQ uses). MatMuls stay in float: they are the memory reads, whose
# top-k choice flips under INT8 rounding, plus the attention and the critic's last layer (7.9 % of the
# paper model's FLOPs; convolutions are the other 92.1 %). On the 1-epoch ZhangLab checkpoint this cut
# the INT8 AUROC loss from 0.55 to 0.20 points. Pass ``int8_options={}`` for NNCF's defaults.
INT8_DEFAULTS: dict[str, Any] = {
    "model_type": "transformer",
    "fast_bias_correction": False,
    "ignored_scope": {"types": ["MatMul"]},
}
# The MatMuls kept out of activation quantisation above still hold float weights: the memory matrices
# (and the attention and critic linears), most of a SimSID's bytes, so without this the INT8 IR was
# only 18 % smaller than FP32. Their *weights* are stored as per-channel asymmetric INT8 and
# dequantised at run time (NNCF ``compress_weights``), which keeps the memory reads' activations in
# float: the INT8 IR is about a quarter of FP32. ``int8_weight_compression=False`` leaves them float.
INT8_WEIGHT_MODE = "int8_asym"
NNCF_LOGGER = "nncf"


def normal_training_subset(
    datamodule: AnomalibDataModule, max_images: int = 300, image_size: tuple[int, int] | None = None
) -> Subset:
    """Select the training split's normal images, without random augmentation, evenly sub-sampled.

    ``image_size`` pre-resizes like training (antialiased bicubic), so calibration sees the same
    pixels as deployment through :class:`~anomalib_simsid.deploy.predictor.SimSIDPredictor`.

    Args:
        datamodule: the training datamodule.
        max_images: at most this many images.
        image_size: pre-resize to this size, or ``None``.

    Returns:
        The subset of the training split.
    """
    if getattr(datamodule, "train_data", None) is None:
        datamodule.setup("fit")
    dataset = copy.copy(datamodule.train_data)
    dataset.augmentations = simsid_resize(image_size) if image_size else None
    samples = getattr(dataset, "samples", None)
    if samples is not None and "label_index" in samples:
        labels = np.asarray(samples["label_index"], dtype=int)
    else:
        labels = np.zeros(len(dataset), dtype=int)
    normal = np.flatnonzero(labels == 0)
    if len(normal) < len(labels):
        logger.warning("calibration: skipping %d abnormal training images", len(labels) - len(normal))
    if len(normal) == 0:
        msg = f"{datamodule.name}: the training split has no normal images to calibrate INT8 on"
        raise ValueError(msg)
    if len(normal) > max_images:
        normal = normal[np.linspace(0, len(normal) - 1, max_images).round().astype(int)]
    return Subset(dataset, normal.tolist())


class TrainNormalsCalibration(AnomalibDataModule):
    """Wrap a datamodule so INT8 calibration sees its training normals, not its validation split.

    anomalib's ``INT8_PTQ`` reads ``val_dataloader()``; this wrapper returns the normal training
    images there (batch 1, no augmentation), so it can be passed to ``Engine.export`` directly::

        engine.export(model, ExportType.OPENVINO, compression_type=CompressionType.INT8_PTQ,
                      datamodule=TrainNormalsCalibration(DigitAnatomy(root=...), image_size=(96, 96)))

    Args:
        datamodule: the datamodule the model was trained with (its train split is normal-only).
        max_images: calibration images (evenly spaced over the training split); NNCF uses up to 300.
        image_size: pre-resize like training (the model's ``img_size``); ``None`` leaves it to the graph.
    """

    def __init__(
        self, datamodule: AnomalibDataModule, max_images: int = 300, image_size: Sequence[int] | None = None
    ) -> None:
        super().__init__(train_batch_size=1, eval_batch_size=1, num_workers=0)
        self.datamodule = datamodule
        self.max_images = max_images
        self.image_size = tuple(image_size) if image_size else None
        self.calibration_data: Subset | None = None

    @property
    def name(self) -> str:
        """Named after the wrapped datamodule.

        Returns:
            ``<wrapped name>TrainNormals``.
        """
        return f"{self.datamodule.name}TrainNormals"

    def _setup(self, _stage: str | None = None) -> None:
        self.calibration_data = normal_training_subset(self.datamodule, self.max_images, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the calibration subset once; anomalib's split logic does not apply here.

        Args:
            stage: ignored.
        """
        del stage
        if self.calibration_data is None:
            self._setup()

    def val_dataloader(self) -> DataLoader:
        """Yield the calibration images, one per batch (raw sizes may differ; the graph resizes).

        Returns:
            A loader over the calibration subset.
        """
        self.setup()
        assert self.calibration_data is not None
        collate = getattr(self.calibration_data.dataset, "collate_fn", None)
        return DataLoader(self.calibration_data, batch_size=1, shuffle=False, collate_fn=collate)

    train_dataloader = val_dataloader
    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader


def calibration_arrays(data: Dataset, limit: int | None = None) -> list[np.ndarray]:
    """Calibration inputs as ``(1, 3, H, W)`` float32 arrays in [0, 1] (the exported graph's input).

    Args:
        data: the calibration dataset.
        limit: at most this many images.

    Returns:
        One array per image.
    """
    arrays = []
    for index in range(len(data) if limit is None else min(limit, len(data))):
        image = data[index].image
        arrays.append(image.unsqueeze(0).numpy().astype(np.float32))
    return arrays


def quantize_int8(
    ov_model: Any,
    calibration: Sequence[np.ndarray],
    options: dict[str, Any] | None = None,
    weight_compression: bool = True,
) -> Any:
    """Post-training INT8 quantisation, then INT8 weights for the float MatMuls (:data:`INT8_WEIGHT_MODE`).

    ``options`` are ``nncf.quantize`` keywords (default :data:`INT8_DEFAULTS`). NNCF's INFO log (one
    line per skipped node, ~80 lines) is held back; NNCF's progress bars and one line per step stay.

    Args:
        ov_model: the FP32 OpenVINO model.
        calibration: its input arrays.
        options: ``nncf.quantize`` keywords, or ``None`` for :data:`INT8_DEFAULTS`.
        weight_compression: also store the float MatMul weights as INT8.

    Returns:
        The INT8 model.
    """
    import nncf

    options = dict(INT8_DEFAULTS if options is None else options)
    if isinstance(options.get("model_type"), str):
        options["model_type"] = nncf.ModelType(options["model_type"])
    if isinstance(options.get("ignored_scope"), dict):  # JSON-friendly form, e.g. {"types": ["MatMul"]}
        options["ignored_scope"] = nncf.IgnoredScope(**options["ignored_scope"])
    dataset = nncf.Dataset(list(calibration))
    with quiet_loggers(NNCF_LOGGER):
        logger.info("SimSID INT8: calibrating on %d normal training images (NNCF)", len(calibration))
        quantized = nncf.quantize(ov_model, dataset, subset_size=len(calibration), **options)
        if weight_compression:
            logger.info("SimSID INT8: storing the float MatMul weights (memory matrices) as INT8")
            quantized = nncf.compress_weights(quantized, mode=nncf.CompressWeightsMode(INT8_WEIGHT_MODE))
    return quantized


def set_metadata(ov_model: Any, info: dict[str, Any]) -> None:
    """Write ``info`` into the IR's ``rt_info`` under ``simsid/``.

    Args:
        ov_model: the OpenVINO model.
        info: key -> value (stored as strings).
    """
    for key, value in info.items():
        ov_model.set_rt_info(str(value), [METADATA_SECTION, key])


def read_metadata(ov_model: Any) -> dict[str, str]:
    """Read the ``simsid/`` ``rt_info`` of an IR, empty when it was exported without these helpers.

    Args:
        ov_model: the OpenVINO model.

    Returns:
        key -> value.
    """
    if not ov_model.has_rt_info([METADATA_SECTION]):
        return {}
    section = ov_model.get_rt_info()[METADATA_SECTION]
    return {key: section[key].astype(str) for key in section}


def staging_folder(target: Path) -> TemporaryDirectory:
    """Make a hidden temporary folder on ``target``'s file system, in its nearest existing ancestor.

    Outputs are written there and renamed into ``target`` only on success, so a failed run creates
    nothing, not even ``target``'s parent folders.

    Args:
        target: the final output folder.

    Returns:
        The temporary folder (a context manager).
    """
    anchor = next(folder for folder in target.absolute().parents if folder.is_dir())
    try:
        return TemporaryDirectory(prefix=f".{target.name}.", dir=anchor)
    except OSError as err:  # read-only: name the user's folder, not the hidden staging one
        msg = f"cannot write the output folder {target} ({anchor} is not writable: {err.strerror})"
        raise PermissionError(msg) from None


def export_openvino(
    model: SimSID | str | Path,
    export_root: str | Path,
    compressions: Sequence[str] = ("fp32",),
    datamodule: AnomalibDataModule | None = None,
    calibration_size: int = 300,
    input_size: tuple[int, int] | None = None,
    model_file_name: str = "model",
    int8_options: dict[str, Any] | None = None,
    int8_weight_compression: bool = True,
) -> dict[str, Path]:
    """Export a trained SimSID (model or checkpoint path) to OpenVINO IR in each of ``compressions``.

    Files go where anomalib puts them: ``<export_root>/weights/openvino/model.xml`` for FP32, and
    ``model_fp16.xml`` / ``model_int8.xml`` beside it. INT8 needs ``datamodule``, whose normal
    training images calibrate the quantiser (see :class:`TrainNormalsCalibration`) with
    ``int8_options`` (``nncf.quantize`` keywords; default :data:`INT8_DEFAULTS`, ``{}`` = NNCF's own);
    ``int8_weight_compression`` also stores the float MatMul weights as INT8 (:data:`INT8_WEIGHT_MODE`).
    Everything that can be checked is checked before the (slow) trace, and the files are written to
    a staging folder and moved into place only when every compression succeeded.

    Returns:
        the ``.xml`` path per compression.

    Args:
        model: a trained SimSID or its checkpoint path.
        export_root: folder of the export.
        compressions: any of ``fp32``, ``fp16``, ``int8``.
        datamodule: the training datamodule (INT8 calibration).
        calibration_size: INT8 calibration images.
        input_size: ``None`` (dynamic) or ``img_size`` square.
        model_file_name: file name without suffix.
        int8_options: ``nncf.quantize`` keywords.
        int8_weight_compression: store the float MatMul weights as INT8.
    """
    import openvino as ov

    unknown = set(compressions) - set(COMPRESSIONS)
    if unknown:
        msg = f"unknown compression {sorted(unknown)}; choose from {COMPRESSIONS}"
        raise ValueError(msg)
    if "int8" in compressions and datamodule is None:
        msg = "INT8 export needs a datamodule: its normal training images calibrate the quantiser"
        raise ValueError(msg)
    if isinstance(model, str | Path):
        model = load_simsid(model)
    if not isinstance(model, SimSID):
        msg = f"export_openvino exports SimSID models only, got {type(model).__name__}"
        raise NotSimSIDError(msg)
    model = prepare_for_deployment(model).cpu()
    img_size = int(model.hparams.img_size)
    check_input_size(img_size, input_size)
    calibration = None
    if "int8" in compressions:
        assert datamodule is not None
        subset = normal_training_subset(datamodule, calibration_size, (img_size, img_size))
        calibration = (calibration_arrays(subset), _calibration_note(datamodule, subset))

    with TemporaryDirectory() as tmp:
        onnx_path = model.to_onnx(tmp, model_file_name, input_size=input_size, opset_version=OPSET)
        fp32 = ov.convert_model(onnx_path)
    base = {
        "model_type": MODEL_TYPE,
        "img_size": img_size,
        "hparams": {k: model.hparams[k] for k in ("img_size", "num_patch", "level", "base_width", "memory")},
        "anomalib_simsid_version": version("anomalib-simsid"),
        "input": "RGB float32 [0,1], NCHW, any size (resized in-graph); grey replicated to 3 channels",
    }

    out_dir = Path(export_root) / "weights" / "openvino"
    with staging_folder(out_dir) as staging:
        names: dict[str, str] = {}
        for compression in compressions:
            names[compression] = (
                f"{model_file_name}.xml" if compression == "fp32" else f"{model_file_name}_{compression}.xml"
            )
            if compression == "int8":
                assert calibration is not None
                options = INT8_DEFAULTS if int8_options is None else int8_options
                ov_model = quantize_int8(fp32.clone(), calibration[0], options, int8_weight_compression)
                weights = INT8_WEIGHT_MODE if int8_weight_compression else "float"
                info = {"compression": "int8", "calibration": calibration[1], "nncf": options}
                info["matmul_weights"] = weights
            else:
                ov_model = fp32.clone()  # save_model's FP16 compression must not touch the FP32 model
                info = {"compression": compression}
            set_metadata(ov_model, base | info)
            ov.save_model(
                ov_model, Path(staging) / names[compression], compress_to_fp16=compression == "fp16"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for compression, name in names.items():
            for suffix in (".bin", ".xml"):  # the .xml last: a reader never sees one without its weights
                Path(staging, name).with_suffix(suffix).replace((out_dir / name).with_suffix(suffix))
            paths[compression] = out_dir / name
            logger.info("exported %s SimSID to %s", compression, paths[compression])
    return paths


def _calibration_note(datamodule: AnomalibDataModule, subset: Subset) -> str:
    return f"{len(subset)} normal training images of {datamodule.name}, antialiased resize, no augmentation"


# The parity bars of an export. Normalised scores are (logit - threshold) / (validation max - min) + 0.5.
# After one epoch that range is only ~0.005-0.05 (a trained model's is far wider), and the critic's
# per-sample normalisation of a 2x2 map turns fp32 rounding into ~1e-5 on its logit (PyTorch's own
# fp32-vs-fp64 error is of that size too; kernels differ by CPU), so the bar is 1e-4 on normalised
# scores or 2e-5 on the logit, whichever is looser; for a validation range of at least 0.2 it is 1e-4.
SCORE_ATOL = 1e-4
LOGIT_ATOL = 2e-5


def parity_bar(model: SimSID) -> float:
    """Largest normalised-score difference an fp32 export of ``model`` may show against the checkpoint.

    Args:
        model: the trained SimSID (its post-processor holds the validation range).

    Returns:
        The bar on normalised scores (see ``SCORE_ATOL`` and ``LOGIT_ATOL``).
    """
    value_range = float(model.post_processor.image_max - model.post_processor.image_min)
    return max(SCORE_ATOL, LOGIT_ATOL / value_range)


def torch_reference(model: SimSID, images: torch.Tensor) -> dict[str, np.ndarray]:
    """``model.forward`` (pre-processor, network, post-processor) in eval mode: what the IR must reproduce.

    Args:
        model: the trained SimSID.
        images: ``(B, 3, H, W)`` in [0, 1].

    Returns:
        The output fields as arrays.
    """
    model.eval()
    with torch.no_grad():
        output = model(images)
    return {k: v.cpu().numpy() for k, v in output._asdict().items() if v is not None}
