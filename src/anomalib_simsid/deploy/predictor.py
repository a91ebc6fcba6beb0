"""Load an exported SimSID (OpenVINO IR) or a SimSID checkpoint and score batches of images.

The predictor is what a deployment needs and nothing more: it refuses any model that is not
SimSID, knows the model's input side from the export's metadata, reads an image with the package's
reader and resizes it with the training resize (:func:`simsid_resize`), and runs a batch. Folder
discovery, CSV and overlays live in :mod:`~anomalib_simsid.deploy.score_folder`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalib_simsid.data.image_io import ImageReadError, read_image
from anomalib_simsid.models.simsid.adapters.checkpoint import REQUIRED_PREFIXES, NotSimSIDError, load_simsid
from anomalib_simsid.models.simsid.adapters.openvino import MODEL_TYPE, read_metadata
from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_resize

REQUIRED_OUTPUTS = ("pred_score", "pred_label", "anomaly_map")
PRECISIONS = ("f32", "bf16", "f16", "auto")

RunBatch = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class SimSIDPredictor:
    """A loaded SimSID and its input side: ``predictor(batch)`` gives anomalib's output fields.

    Build it with :meth:`load`. ``img_size`` is ``None`` only for an IR without SimSID metadata whose
    graph resizes to a dynamic size; images then go to the graph unresized.
    """

    path: Path
    img_size: int | None
    run: RunBatch

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        device: str = "CPU",
        precision: str = "f32",
        input_size: int | None = None,
    ) -> SimSIDPredictor:
        """Load an OpenVINO ``.xml``/``.onnx`` or a Lightning checkpoint, refusing anything but SimSID.

        ``input_size`` is only for exports that do not record their size; one that disagrees with the
        model's own size is refused, since the scores would silently differ from training.
        """
        path = Path(model_path)
        if path.suffix == ".bin" and path.with_suffix(".xml").is_file():
            path = path.with_suffix(".xml")
        if not path.is_file():
            msg = f"model {path} does not exist"
            raise FileNotFoundError(msg)
        if path.suffix.lower() in {".xml", ".onnx"}:
            run, img_size = _openvino(path, device, precision)
        else:
            run, img_size = _checkpoint(path)
        if input_size is not None and img_size is not None and input_size != img_size:
            msg = (
                f"--input-size {input_size} disagrees with the model {path}, which was trained at "
                f"{img_size} x {img_size}; drop --input-size (the model's own size is used)"
            )
            raise ValueError(msg)
        return cls(path, img_size if img_size is not None else input_size, run)

    def preprocess(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        """Read one image as ``(3, S, S)`` in [0, 1] at the model size, and its original ``(H, W)``.

        The host resize is the training one (antialiased bicubic); the graph's own resize is not
        antialiased, so a large X-ray would otherwise get different pixels than in training.
        """
        image = read_image(path)
        if image.ndim != 3 or image.shape[0] != 3:
            msg = f"cannot use image {path}: read as shape {tuple(image.shape)}, expected (3, H, W)"
            raise ImageReadError(msg)
        size = (int(image.shape[1]), int(image.shape[2]))
        if self.img_size is not None and size != (self.img_size, self.img_size):
            image = simsid_resize((self.img_size, self.img_size))(image)
        return image, size

    def __call__(self, batch: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Score an ``(N, 3, H, W)`` batch in [0, 1]: ``pred_score``, ``pred_label``, ``anomaly_map``."""
        array = batch.numpy() if isinstance(batch, torch.Tensor) else batch
        return self.run(np.ascontiguousarray(array, dtype=np.float32))


def openvino_reason(error: BaseException) -> str:
    r"""OpenVINO's own reason from its multi-line error, without the C++ source locations.

    ``read_model`` raises "Exception from src/inference/src/cpp/core.cpp:84:\nCheck '...' failed at
    ...:\nEmpty weights data in bin file or bin file cannot be found!": the first line names only
    OpenVINO's source file, the reason is the last line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return " ".join(reasons) if reasons else (lines[-1] if lines else type(error).__name__)


def _openvino(path: Path, device: str, precision: str) -> tuple[RunBatch, int | None]:
    """Compile an IR (or ONNX) file, refusing it unless it is SimSID's; return runner and model size.

    ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32`` reproduces PyTorch; the CPU
    plugin's default on AVX-512-BF16 CPUs is ``bf16``, which shifts normalised scores); ``auto``
    keeps the plugin default.
    """
    import openvino as ov

    if precision not in PRECISIONS:
        msg = f"precision {precision!r} is not one of {PRECISIONS}"
        raise ValueError(msg)
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        msg = f"cannot read OpenVINO model {path}: {openvino_reason(err)}"
        raise NotSimSIDError(msg) from err
    metadata = read_metadata(model)
    if metadata and metadata.get("model_type") != MODEL_TYPE:
        msg = f"{path} is an exported {metadata.get('model_type')!r} model, not SimSID"
        raise NotSimSIDError(msg)
    outputs = {name for output in model.outputs for name in output.get_names()}
    shape = model.input(0).get_partial_shape() if len(model.inputs) == 1 else None
    image_input = (
        shape is not None and shape.rank.is_static and shape.rank.get_length() == 4 and shape[1] == 3
    )
    if not image_input or not set(REQUIRED_OUTPUTS) <= outputs:
        msg = (
            f"{path} is not an exported anomalib SimSID: expected one 3-channel image input and outputs "
            f"{REQUIRED_OUTPUTS}, got {len(model.inputs)} input(s) and outputs {sorted(outputs)}"
        )
        raise NotSimSIDError(msg)
    if not metadata:
        _check_unlabelled_graph(model, path)
        warnings.warn(
            f"{path} has no SimSID metadata (exported with plain `anomalib export`): it passed the "
            "structural check of a SimSID graph. `simsid-export` embeds the metadata.",
            stacklevel=3,
        )
    img_size = int(metadata["img_size"]) if "img_size" in metadata else _graph_resize_size(model)
    fixed = [shape[i].get_length() for i in (2, 3) if shape[i].is_static]
    if fixed and img_size is not None and fixed != [img_size, img_size]:
        msg = (
            f"{path} was exported with a fixed input of {' x '.join(map(str, fixed))} pixels but the model "
            f"is {img_size} x {img_size}; re-export it without --input_size (or with the model's size)"
        )
        raise NotSimSIDError(msg)
    config = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(model, device, config)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        result = compiled(batch)
        return {output.get_any_name(): value for output, value in result.items()}

    return run, img_size


def _check_unlabelled_graph(model: Any, path: Path) -> None:
    """Refuse an IR without metadata unless its weights are SimSID's generator and critic.

    anomalib's other models export the same inputs and outputs, but the IR's weight constants keep
    their state-dict names, so the checkpoint check's prefixes tell SimSID from PaDiM or PatchCore.
    """
    names = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Constant"]
    missing = [prefix for prefix in REQUIRED_PREFIXES if not any(n.startswith(prefix) for n in names)]
    if missing:
        msg = (
            f"{path} is an anomalib export but not SimSID's (no {', '.join(missing)} weights): score it "
            "with the anomalib model that trained it"
        )
        raise NotSimSIDError(msg)


def _graph_resize_size(model: Any) -> int | None:
    """Find the square output side of the graph's first resize (anomalib's in-graph pre-processing)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Interpolate":
            shape = op.get_output_partial_shape(0)
            if shape.rank.is_static and shape[2].is_static and shape[2] == shape[3]:
                return shape[2].get_length()
    return None


def _checkpoint(path: Path) -> tuple[RunBatch, int]:
    """Load a SimSID checkpoint (checked) and run ``model.forward``, the function the IR exports."""
    model = load_simsid(path)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            output = model(torch.from_numpy(batch))
        return {k: v.numpy() for k, v in output._asdict().items() if v is not None}

    return run, int(model.hparams.img_size)
