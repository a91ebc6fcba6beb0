"""Deployment tools refuse bad input early and clearly, and never leave half-written outputs.

No training: a tiny SimSID gets a hand-fitted post-processor, which is all the deploy checks need.
"""

from __future__ import annotations

import argparse
import logging
from importlib import import_module
from pathlib import Path

import lightning
import numpy as np
import onnx
import openvino as ov
import pytest
import tomllib
import torch
from anomalib.deploy import CompressionType, ExportType
from anomalib.engine import Engine
from openvino import opset13
from PIL import Image

from anomalib_simsid import SimSID
from anomalib_simsid.data.image_io import ImageReadError
from anomalib_simsid.deploy import NotSimSIDError, export_openvino, read_checkpoint
from anomalib_simsid.deploy.export_cli import main as export_cli
from anomalib_simsid.deploy.predictor import SimSIDPredictor
from anomalib_simsid.deploy.score_folder import main as score_cli
from anomalib_simsid.deploy.score_folder import score_folder
from anomalib_simsid.models.simsid.adapters import openvino as export_module
from tests.helpers import REPO, TINY_DATA, TINY_MODEL

SIZE = TINY_MODEL["img_size"]


def fitted_model() -> SimSID:
    """A tiny SimSID whose threshold and normalisation are set as validation would set them."""
    torch.manual_seed(0)
    model = SimSID(**TINY_MODEL, visualizer=False)
    post = model.post_processor
    post._image_threshold.fill_(0.0)
    post.image_min.fill_(-1.0)
    post.image_max.fill_(1.0)
    for name in ("_pixel_threshold", "pixel_min", "pixel_max"):
        getattr(post, name).fill_({"_pixel_threshold": 0.5, "pixel_min": 0.0, "pixel_max": 1.0}[name])
    return model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fitted_model()
    path = tmp_path_factory.mktemp("ckpt") / "simsid.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "epoch": 0,
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "xrays"
    rng = np.random.default_rng(0)
    for i, folder in enumerate(("NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIZE + 8 * i, SIZE), dtype=np.uint8)).save(
            root / folder / f"{i}.png"
        )
    return root


# ----------------------------------------------------------------------------------- entry points


def test_console_scripts_point_at_the_cli_mains() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {
        "simsid-export",
        "simsid-score",
        "simsid-config",
        "simsid-backbones",
        "simsid-audit",
    }
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(import_module(module), name))
    assert scripts["simsid-export"] == "anomalib_simsid.deploy.export_cli:main"
    assert scripts["simsid-score"] == "anomalib_simsid.deploy.score_folder:main"


def test_cli_usage_names_the_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    for cli, prog in ((export_cli, "simsid-export"), (score_cli, "simsid-score")):
        with pytest.raises(SystemExit):
            cli(["--help"])
        assert capsys.readouterr().out.startswith(f"usage: {prog}")


# ------------------------------------------------------------------------------------- checkpoint


def test_non_checkpoint_pickle_gets_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "namespace.ckpt"
    torch.save(argparse.Namespace(weights=1), path)
    with pytest.raises(NotSimSIDError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert "namespace.ckpt" in message
    assert "weights_only" not in message
    assert "\n" not in message
    assert len(message) < 300


# ------------------------------------------------------------------------------------- export CLI


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data", "anomalib_simsid.NoSuchData"], "--data 'anomalib_simsid.NoSuchData' cannot be imported"),
        (["--data", "DigitAnatomy"], "is not a class path"),
        (["--data", "anomalib_simsid.SimSID"], "is not an anomalib datamodule"),
        (
            ["--data", "anomalib_simsid.DigitAnatomy", "--data-args", "{root: x}"],
            "--data-args is not valid JSON",
        ),
        (["--data", "anomalib_simsid.DigitAnatomy", "--data-args", "[1]"], "must be a JSON object"),
        (
            ["--data", "anomalib_simsid.DigitAnatomy", "--data-args", '{"root": "/no/such"}'],
            "root '/no/such'",
        ),
        ([], "--compression int8 needs --data"),
    ],
)
def test_export_cli_checks_data_arguments_before_the_trace(
    ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    expected: str,
) -> None:
    def no_trace(*_args: object, **_kwargs: object) -> None:
        pytest.fail("the model was traced before the arguments were checked")

    monkeypatch.setattr(SimSID, "to_onnx", no_trace)
    code = export_cli([str(ckpt), "-o", str(tmp_path / "out"), "--compression", "fp32", "int8", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_failed_int8_calibration_leaves_no_fp32_or_fp16(
    ckpt: Path, digit_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib_simsid import DigitAnatomy

    def broken(*_args: object, **_kwargs: object) -> None:
        msg = "calibration failed"
        raise RuntimeError(msg)

    monkeypatch.setattr(export_module, "quantize_int8", broken)
    datamodule = DigitAnatomy(root=str(digit_root), **TINY_DATA)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="calibration failed"):
        export_openvino(ckpt, tmp_path / "out", ("fp32", "fp16", "int8"), datamodule=datamodule)
    assert list((tmp_path / "out").iterdir()) == []  # no files, no empty weights/openvino folders


def test_export_refuses_another_input_size(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"does not match the SimSID model's img_size {SIZE}"):
        export_openvino(ckpt, tmp_path / "out", input_size=(SIZE // 2, SIZE // 2))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- anomalib's Engine.export


def test_engine_export_int8_ptq_without_data_is_refused_before_the_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_trace(*_args: object, **_kwargs: object) -> None:
        pytest.fail("traced before refusing")

    monkeypatch.setattr(torch.onnx, "export", no_trace)
    engine = Engine(default_root_dir=tmp_path, devices=1, logger=False)
    with pytest.raises(ValueError, match="simsid-export <ckpt> --compression int8 --data"):
        engine.export(fitted_model(), ExportType.OPENVINO, compression_type=CompressionType.INT8_PTQ)
    assert not (tmp_path / "weights").exists()


@pytest.mark.parametrize("export_type", [ExportType.OPENVINO, ExportType.ONNX])
def test_engine_export_refuses_another_input_size(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export_type: ExportType
) -> None:
    def no_trace(*_args: object, **_kwargs: object) -> None:
        pytest.fail("traced before refusing")

    monkeypatch.setattr(torch.onnx, "export", no_trace)
    engine = Engine(default_root_dir=tmp_path, devices=1, logger=False)
    # The CLI builds the model with default hyper-parameters; the checkpoint's img_size is the one checked.
    with pytest.raises(ValueError, match=f"input size \\[{SIZE * 2}, {SIZE * 2}\\] does not match .* {SIZE}"):
        engine.export(SimSID(visualizer=False), export_type, input_size=(SIZE * 2, SIZE * 2), ckpt_path=ckpt)


def test_engine_export_traces_quietly_at_the_exporters_opset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``anomalib export`` printed ~4,100 lines: a failed opset-14 down-conversion and every ONNX pass."""
    caplog.set_level(logging.INFO)  # as the anomalib CLI configures logging
    engine = Engine(default_root_dir=tmp_path, devices=1, logger=False)
    path = engine.export(fitted_model(), ExportType.ONNX)
    onnx_logs = [r for r in caplog.records if r.name.split(".")[0] in {"onnxscript", "onnx_ir"}]
    assert not [r for r in onnx_logs if r.levelno < logging.WARNING or "version" in r.name]
    assert onnx.load(str(path), load_external_data=False).opset_import[0].version == export_module.OPSET
    assert logging.getLogger("onnxscript").level == logging.NOTSET  # restored after the trace


# ---------------------------------------------------------------------------------- folder scorer


def test_unlabelled_export_of_another_model_is_refused(images: Path, tmp_path: Path) -> None:
    """An anomalib export without SimSID metadata (as ``anomalib export`` writes) of, e.g., PaDiM."""
    image = opset13.parameter([-1, 3, -1, -1], np.float32, name="input")
    mean = opset13.constant(np.zeros((1, 3, 1, 1), np.float32), name="model.gaussian.mean")
    score_map = opset13.reduce_mean(opset13.subtract(image, mean), [1], keep_dims=True)
    score = opset13.reduce_max(score_map, [1, 2, 3])
    outputs = {
        "anomaly_map": score_map,
        "pred_score": score,
        "pred_label": opset13.greater(score, np.float32(0.5)),
    }
    results = []
    for name, node in outputs.items():
        node.output(0).get_tensor().set_names({name})
        results.append(node)
    ov.save_model(ov.Model(results, [image], "padim_like"), tmp_path / "padim.xml")
    with pytest.raises(NotSimSIDError, match="not SimSID's"):
        score_folder(tmp_path / "padim.xml", images, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _bad(images: Path) -> list[Path]:
    bad = [images / "NORMAL" / "broken.png", images / "PNEUMONIA" / "cut.jpg", images / "empty.png"]
    bad[0].write_text("this is not an image\n")
    Image.new("L", (SIZE, SIZE), 128).save(bad[1], format="JPEG")
    bad[1].write_bytes(bad[1].read_bytes()[:200])
    bad[2].write_bytes(b"")
    return bad


def test_every_bad_file_is_named_and_nothing_is_written(ckpt: Path, images: Path, tmp_path: Path) -> None:
    bad = _bad(images)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("file,score\nold.png,0.1\n")  # an earlier run's result stays intact
    with pytest.raises(ImageReadError) as caught:
        score_folder(ckpt, images, out, progress=False)
    for path in bad:
        assert path.name in str(caught.value)
    assert "3 of the images" in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]
    assert (out / "predictions.csv").read_text() == "file,score\nold.png,0.1\n"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind

    with pytest.warns(UserWarning, match="skipping"):
        result = score_folder(ckpt, images, out, skip_bad=True, progress=False)
    assert {Path(f).name for f, _ in result.skipped} == {p.name for p in bad}
    assert len(result.rows) == 4
    assert (out / "skipped.csv").is_file()
    assert len(list((out / "heatmaps").rglob("*.png"))) == 4


def test_non_finite_scores_fail_the_run_without_creating_anything(
    ckpt: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while scoring (after every check passed) leaves no output and no new parent folders."""
    real_call = SimSIDPredictor.__call__

    def nan_scores(self: SimSIDPredictor, batch: torch.Tensor) -> dict[str, np.ndarray]:
        outputs = real_call(self, batch)
        return {**outputs, "pred_score": np.full_like(outputs["pred_score"], np.nan)}

    monkeypatch.setattr(SimSIDPredictor, "__call__", nan_scores)
    with pytest.raises(ImageReadError, match=r"(?s)4 of the images.*NORMAL/0\.png.*non-finite score"):
        score_folder(ckpt, images, tmp_path / "new" / "deeper" / "out", progress=False)
    assert not (tmp_path / "new").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_output_inside_the_input_is_not_rescored(ckpt: Path, images: Path) -> None:
    out = images / "scores"
    first = score_folder(ckpt, images, out, progress=False)
    second = score_folder(ckpt, images, out, progress=False)
    assert len(first.rows) == len(second.rows) == 4
    assert not any(Path(row["image_path"]).parent.name == "scores" for row in second.rows)


def test_input_size_that_disagrees_with_the_model_is_refused(
    ckpt: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=f"--input-size 32 disagrees .* {SIZE} x {SIZE}"):
        score_folder(ckpt, images, tmp_path / "out", input_size=32, progress=False)
    assert score_cli([str(ckpt), str(images), "-o", str(tmp_path / "out"), "--input-size", "32"]) == 2
    assert "disagrees" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert len(score_folder(ckpt, images, tmp_path / "out", input_size=SIZE, progress=False).rows) == 4


def test_cli_output_has_no_terminal_codes_when_piped(
    ckpt: Path, images: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert score_cli([str(ckpt), str(images), "-o", str(tmp_path / "out")]) == 0
    out, err = capfd.readouterr()
    assert "scored 4 images" in out
    assert "\x1b[" not in out + err
    assert "\r" not in err  # no progress bar redraws in a log
