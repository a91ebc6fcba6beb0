"""OpenVINO export of a trained SimSID: parity with PyTorch, FP16/INT8, calibration data, bad input.

One tiny SimSID is trained for one epoch on the session's DigitAnatomy and exported once (FP32,
FP16, INT8 from one ONNX trace); :func:`tests.helpers.tiny_deployment` caches it per process, so
``test_score_folder.py`` reuses it. The slow tests re-export through ``Engine.export`` and the
``anomalib export`` CLI.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
from anomalib.deploy import CompressionType, ExportType
from anomalib.engine import Engine

from anomalib_simsid import SimSID
from anomalib_simsid.deploy import (
    NotSimSIDError,
    TrainNormalsCalibration,
    export_openvino,
    load_simsid,
    read_metadata,
    torch_reference,
)
from anomalib_simsid.deploy.export_cli import main as export_cli
from anomalib_simsid.deploy.predictor import SimSIDPredictor
from anomalib_simsid.models.simsid.adapters import openvino
from anomalib_simsid.models.simsid.adapters.openvino import parity_bar, quantize_int8
from tests.helpers import (
    MAP_ATOL,
    TINY_DATA,
    TINY_MODEL,
    TinyDeployment,
    tiny_deployment,
)

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the CPU plugin defaults to bf16 on AVX-512-BF16 CPUs


@pytest.fixture(scope="module")
def deployment(digit_root: Path) -> TinyDeployment:
    return tiny_deployment(digit_root)


def run_ir(path: Path, images: torch.Tensor, config: dict | None = None) -> dict[str, np.ndarray]:
    compiled = ov.Core().compile_model(str(path), "CPU", F32 if config is None else config)
    return {out.get_any_name(): value for out, value in compiled(images.numpy()).items()}


def assert_parity(
    ov_out: dict[str, np.ndarray], ref: dict[str, np.ndarray], model: SimSID
) -> dict[str, float]:
    bar = parity_bar(model)
    value_range = float(model.post_processor.image_max - model.post_processor.image_min)
    diffs = {
        k: float(np.abs(ov_out[k].astype(np.float64) - ref[k]).max()) for k in ("pred_score", "anomaly_map")
    }
    diffs["logit"] = diffs["pred_score"] * value_range
    print(f"parity max abs diff {diffs}, validation range {value_range:.4f}, score bar {bar:.2e}")
    assert ov_out["pred_score"].shape == ref["pred_score"].shape
    assert ov_out["anomaly_map"].shape == ref["anomaly_map"].shape
    assert diffs["pred_score"] <= bar
    assert diffs["anomaly_map"] <= MAP_ATOL
    decisive = np.abs(ref["pred_score"] - 0.5) > bar  # a label may only flip on the threshold itself
    np.testing.assert_array_equal(ov_out["pred_label"][decisive], ref["pred_label"][decisive])
    return diffs


def test_openvino_fp32_matches_model_forward(deployment: TinyDeployment) -> None:
    """IR (f32 hint) against ``model.forward`` (pre-processor, network, post-processor) on the same tensor."""
    ref = torch_reference(deployment.model, deployment.images)
    assert 0.0 < ref["anomaly_map"].max() <= 1.0
    assert ref["anomaly_map"].min() < 1.0
    assert_parity(run_ir(deployment.irs["fp32"], deployment.images), ref, deployment.model)


def test_openvino_fp32_matches_reloaded_checkpoint(deployment: TinyDeployment) -> None:
    """The checkpoint reloaded by ``SimSID.load_from_checkpoint`` matches the trained model and the IR."""
    reloaded = load_simsid(deployment.ckpt)
    ref = torch_reference(reloaded, deployment.images)
    live = torch_reference(deployment.model, deployment.images)
    for key in ("pred_score", "anomaly_map", "pred_label"):
        np.testing.assert_array_equal(ref[key], live[key])
    plain = SimSID.load_from_checkpoint(deployment.ckpt).eval()  # the stock Lightning call
    with torch.no_grad():
        np.testing.assert_array_equal(plain(deployment.images).pred_score.numpy(), ref["pred_score"])
    assert_parity(run_ir(deployment.irs["fp32"], deployment.images), ref, reloaded)


def test_scores_do_not_depend_on_the_batch(deployment: TinyDeployment) -> None:
    """Per-sample critic normalisation: one image scores the same alone as in a batch."""
    batch = run_ir(deployment.irs["fp32"], deployment.images)["pred_score"]
    alone = np.concatenate(
        [run_ir(deployment.irs["fp32"], img[None])["pred_score"] for img in deployment.images[:3]]
    )
    np.testing.assert_allclose(alone, batch[:3], atol=parity_bar(deployment.model))  # kernels differ by batch


@pytest.mark.parametrize("compression", ["fp16", "int8"])
def test_compressed_irs_run_and_carry_metadata(deployment: TinyDeployment, compression: str) -> None:
    out = run_ir(deployment.irs[compression], deployment.images)
    assert out["pred_score"].shape == (len(deployment.images),)
    assert np.isfinite(out["pred_score"]).all()
    assert ((out["pred_score"] >= 0) & (out["pred_score"] <= 1)).all()
    assert out["anomaly_map"].shape == (len(deployment.images), 1, *deployment.images.shape[-2:])
    metadata = read_metadata(ov.Core().read_model(str(deployment.irs[compression])))
    assert metadata["model_type"] == "SimSID"
    assert metadata["compression"] == compression
    assert metadata["img_size"] == str(TINY_MODEL["img_size"])
    if compression == "int8":
        assert "normal training images" in metadata["calibration"]
        types = {op.get_type_name() for op in ov.Core().read_model(str(deployment.irs["int8"])).get_ops()}
        assert "FakeQuantize" in types  # really quantised, not a renamed FP32 graph


def _quantised_input_counts(xml: Path) -> dict[str, tuple[int, int]]:
    """Per op type: (ops, ops with a FakeQuantize directly on an input)."""
    counts: dict[str, tuple[int, int]] = {}
    for op in ov.Core().read_model(str(xml)).get_ops():
        fed = any(inp.get_source_output().get_node().get_type_name() == "FakeQuantize" for inp in op.inputs())
        total, quantised = counts.get(op.get_type_name(), (0, 0))
        counts[op.get_type_name()] = (total + 1, quantised + int(fed))
    return counts


def test_int8_quantises_convolutions_and_keeps_memory_reads_in_float(deployment: TinyDeployment) -> None:
    """INT8_DEFAULTS ignores MatMuls: the top-k memory reads flip under INT8 rounding (README, INT8)."""
    counts = _quantised_input_counts(deployment.irs["int8"])
    assert counts["Convolution"][1] > 0
    assert counts["MatMul"][0] > 0
    assert counts["MatMul"][1] == 0


def test_int8_stores_matmul_weights_as_int8(deployment: TinyDeployment) -> None:
    """The float MatMul weights (memory matrices) are INT8 too, so the INT8 IR is about a quarter of FP32."""
    sizes = {name: path.with_suffix(".bin").stat().st_size for name, path in deployment.irs.items()}
    assert sizes["int8"] < 0.32 * sizes["fp32"], sizes
    metadata = read_metadata(ov.Core().read_model(str(deployment.irs["int8"])))
    assert metadata["matmul_weights"] == "int8_asym"


def test_int8_quantisation_log_is_short(
    deployment: TinyDeployment, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """NNCF's per-node INFO lines (~80 for the demo model) are held back; SimSID's step lines remain."""
    fp32 = ov.Core().read_model(str(deployment.irs["fp32"]))
    calibration = [deployment.images[i : i + 1].numpy() for i in range(2)]
    level = logging.getLogger("nncf").level
    with caplog.at_level(logging.INFO):
        quantize_int8(fp32, calibration)
    printed = capfd.readouterr()
    assert "Not adding activation input quantizer" not in printed.out + printed.err
    assert not [r for r in caplog.records if r.name.startswith("nncf") and r.levelno < logging.WARNING]
    steps = [r.getMessage() for r in caplog.records if r.name == openvino.__name__]
    assert any("calibrating on 2" in m for m in steps)
    assert any("MatMul weights" in m for m in steps)
    assert logging.getLogger("nncf").level == level  # restored


def test_ir_has_no_random_or_stateful_ops(deployment: TinyDeployment) -> None:
    types = {op.get_type_name() for op in ov.Core().read_model(str(deployment.irs["fp32"])).get_ops()}
    assert not types & {"RandomUniform", "Multinomial", "Assign", "ReadValue", "If", "Loop", "NonZero"}


@pytest.mark.parametrize("memory", ["matrix", "queue"])
def test_eval_forward_is_deterministic_and_writes_nothing(memory: str) -> None:
    """Export traces the eval forward: no random masks, no memory-queue writes, no BN statistic updates."""
    model = SimSID(**TINY_MODEL, memory=memory, inpaint_mask_ratio=0.5, visualizer=False).model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(2, 3, TINY_MODEL["img_size"], TINY_MODEL["img_size"])
    with torch.no_grad():
        first, second = model(images), model(images)
    torch.testing.assert_close(first.pred_score, second.pred_score, rtol=0, atol=0)
    torch.testing.assert_close(first.anomaly_map, second.anomaly_map, rtol=0, atol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=f"eval forward changed {key}")


def test_calibration_uses_training_normals_only(deployment: TinyDeployment) -> None:
    """anomalib's INT8_PTQ reads val_dataloader(); the wrapper feeds it un-augmented training normals."""
    calibration = TrainNormalsCalibration(deployment.datamodule, image_size=(TINY_MODEL["img_size"],) * 2)
    calibration.setup("fit")
    batches = list(calibration.val_dataloader())
    assert len(batches) == TINY_DATA["num_train"]
    assert all(not batch.gt_label.any() for batch in batches)
    train_paths = set(deployment.datamodule.train_data.samples.image_path)
    assert {p for batch in batches for p in batch.image_path} == train_paths
    again = next(iter(calibration.val_dataloader())).image
    torch.testing.assert_close(batches[0].image, again)  # no random augmentation


def _fake_checkpoint(path: Path, state_dict: dict, hparams: dict) -> Path:
    torch.save({"state_dict": state_dict, "hyper_parameters": hparams, "epoch": 0}, path)
    return path


def test_non_simsid_checkpoints_are_refused(tmp_path: Path) -> None:
    from anomalib.models import Padim

    padim = Padim(backbone="resnet18", pre_trained=False)
    cases = {
        "padim.ckpt": (
            _fake_checkpoint(tmp_path / "padim.ckpt", padim.state_dict(), dict(padim.hparams)),
            "not a SimSID",
        ),
        "random.pt": (tmp_path / "random.pt", "not a Lightning checkpoint"),
        "garbage.ckpt": (tmp_path / "garbage.ckpt", "torch.load failed"),
    }
    torch.save({"weights": torch.randn(3)}, tmp_path / "random.pt")
    (tmp_path / "garbage.ckpt").write_bytes(os.urandom(256))
    untrained = SimSID(**TINY_MODEL, visualizer=False)
    cases["untrained.ckpt"] = (
        _fake_checkpoint(tmp_path / "untrained.ckpt", untrained.state_dict(), dict(untrained.hparams)),
        "without a fitted threshold",
    )
    for name, (path, message) in cases.items():
        with pytest.raises(NotSimSIDError, match=message):
            export_openvino(path, tmp_path / "export")
        assert not (tmp_path / "export").exists(), name
    assert export_cli([str(cases["padim.ckpt"][0]), "-o", str(tmp_path / "export")]) == 2
    untrained_ckpt = str(cases["untrained.ckpt"][0])
    assert (
        export_cli([untrained_ckpt, "-o", str(tmp_path / "export"), "--compression", "int8"]) == 2
    )  # no data
    with pytest.raises(NotSimSIDError, match="not fitted"):
        export_openvino(untrained, tmp_path / "export")
    with pytest.raises(ValueError, match="needs a datamodule"):
        export_openvino(untrained, tmp_path / "export", ("int8",))


@pytest.mark.slow
def test_engine_export_int8_ptq_calibrated_on_training_normals(deployment: TinyDeployment) -> None:
    """anomalib's own path: Engine.export with INT8_PTQ and the training-normals wrapper."""
    calibration = TrainNormalsCalibration(deployment.datamodule, image_size=(TINY_MODEL["img_size"],) * 2)
    xml = Engine(default_root_dir=deployment.work, devices=1, logger=False).export(
        model=deployment.model,
        export_type=ExportType.OPENVINO,
        export_root=deployment.work / "engine_int8",
        compression_type=CompressionType.INT8_PTQ,
        datamodule=calibration,
        onnx_kwargs={"opset_version": 18},
    )
    out = run_ir(xml, deployment.images)
    assert np.isfinite(out["pred_score"]).all()
    types = {op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ops()}
    assert "FakeQuantize" in types


@pytest.mark.slow
def test_anomalib_export_cli(deployment: TinyDeployment, anomalib_bin: str, tmp_path: Path) -> None:
    """``anomalib export --model SimSID --ckpt_path ...``: the model is rebuilt from the checkpoint."""
    args = [anomalib_bin, "export", "--model", "SimSID", "--ckpt_path", str(deployment.ckpt)]
    args += ["--export_type", "openvino", "--default_root_dir", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    xml = tmp_path / "weights" / "openvino" / "model.xml"
    out = run_ir(xml, deployment.images)
    ref = torch_reference(SimSID.load_from_checkpoint(deployment.ckpt), deployment.images)
    np.testing.assert_allclose(out["pred_score"], ref["pred_score"], atol=parity_bar(deployment.model) + 1e-6)
    # Without our metadata, score_folder warns and reads the model size off the graph's resize.
    with pytest.warns(UserWarning, match="no SimSID metadata"):
        predictor = SimSIDPredictor.load(xml)
    assert predictor.img_size == TINY_MODEL["img_size"]


@pytest.mark.slow
def test_anomalib_export_int8_ptq_calibrates_on_training_normals(
    deployment: TinyDeployment, digit_root: Path, anomalib_bin: str, tmp_path: Path
) -> None:
    """``anomalib export --compression_type INT8_PTQ``: refused at once without --data; SimSID INT8 with."""
    args = [anomalib_bin, "export", "--model", "SimSID", "--ckpt_path", str(deployment.ckpt)]
    args += [
        "--export_type",
        "openvino",
        "--compression_type",
        "INT8_PTQ",
        "--default_root_dir",
        str(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

    def run(extra: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args + extra, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    refused = run([])
    assert refused.returncode != 0
    assert "simsid-export <ckpt> --compression int8 --data" in " ".join(refused.stderr.split())  # rich wraps
    assert "[torch.onnx]" not in refused.stdout + refused.stderr  # refused before the trace
    assert not (tmp_path / "weights").exists()

    data = ["--data", "anomalib_simsid.DigitAnatomy", "--data.root", str(digit_root)]
    data += [f"--data.{key}={value}" for key, value in TINY_DATA.items()]
    result = run(data)
    assert result.returncode == 0, result.stderr[-3000:]
    xml = tmp_path / "weights" / "openvino" / "model_int8.xml"
    metadata = read_metadata(ov.Core().read_model(str(xml)))
    assert metadata["compression"] == "int8"
    assert f"{TINY_DATA['num_train']} normal training images" in metadata["calibration"]
    counts = _quantised_input_counts(xml)
    assert counts["Convolution"][1] > 0
    assert counts["MatMul"][1] == 0  # SimSID's INT8 settings, not NNCF's defaults
    assert np.isfinite(run_ir(xml, deployment.images)["pred_score"]).all()


def test_int8_accuracy_benchmark_runs(deployment: TinyDeployment) -> None:
    """Smoke test of benchmarks/int8_accuracy.py on the tiny model: it runs and gives finite AUROCs."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_accuracy.py"
    spec = importlib.util.spec_from_file_location("int8_accuracy", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.int8_auroc(deployment.ckpt, deployment.datamodule, irs=deployment.irs)
    for key in ("auroc_torch", "auroc_fp32", "auroc_int8", "delta_points"):
        assert np.isfinite(result[key]), key
    assert 0 <= result["auroc_int8"] <= 100
    assert result["test_images"] == len(deployment.images)
    assert result["auroc_fp32"] == pytest.approx(result["auroc_torch"], abs=100 / len(deployment.images))
    # Given IRs are reported as such, not as an export with default options.
    assert result["int8_options"] is None
    assert result["export_seconds"] is None
    assert result["irs"] == {name: str(path) for name, path in deployment.irs.items()}
    with pytest.raises(ValueError, match="int8_options apply only"):
        module.int8_auroc(deployment.ckpt, deployment.datamodule, irs=deployment.irs, int8_options={})
