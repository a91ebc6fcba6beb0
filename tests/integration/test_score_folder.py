"""Scoring a folder with an exported SimSID: CSV, heatmaps, odd images, bad files and bad models.

Fast input checks that need no trained model are in ``test_deploy_inputs.py``.

Reuses the tiny trained and exported SimSID of ``test_export.py`` (built once per process).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
from openvino import opset13
from PIL import Image

from anomalib_simsid.data.image_io import ImageReadError, read_image
from anomalib_simsid.deploy import NotSimSIDError, parity_bar, torch_reference
from anomalib_simsid.deploy.score_folder import main, score_folder
from anomalib_simsid.models.simsid.adapters.predictions import COLUMNS, FILE_NAME, folder_ground_truth
from tests.helpers import TINY_MODEL, TinyDeployment, tiny_deployment
from tests.unit.data.fixtures import write_dicom

SIZE = TINY_MODEL["img_size"]


@pytest.fixture(scope="module")
def deployment(digit_root: Path) -> TinyDeployment:
    return tiny_deployment(digit_root)


@pytest.fixture
def xray_folder(deployment: TinyDeployment, tmp_path: Path) -> Path:
    """The test images in ZhangLab-style class folders: NORMAL/ and PNEUMONIA/."""
    root = tmp_path / "xrays"
    for path in deployment.image_paths:
        target = root / ("NORMAL" if path.parent.name == "good" else "PNEUMONIA") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def lightning_scores(deployment: TinyDeployment, paths: list[Path]) -> np.ndarray:
    """Score files as a Lightning test loop does: antialiased dataset resize, pre-processor, model, post."""
    model = deployment.model.eval()
    images = torch.stack([model.pre_processor.transform(read_image(p)) for p in paths])
    with torch.no_grad():
        return model.post_processor(model.model(images)).pred_score.numpy()


def test_scores_csv_heatmaps_and_ground_truth(
    deployment: TinyDeployment, xray_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = score_folder(deployment.irs["fp32"], xray_folder, out, batch_size=5, progress=False)
    rows = read_csv(out / FILE_NAME)
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == len(deployment.image_paths) == len(result.rows)
    assert {r["ground_truth"] for r in rows} == {"normal", "anomalous"}
    assert all(
        r["ground_truth"] == ("normal" if Path(r["image_path"]).parent.name == "NORMAL" else "anomalous")
        for r in rows
    )
    assert {r["label"] for r in rows} <= {"normal", "anomalous"}
    for row in rows:
        with Image.open(out / row["overlay"]) as heatmap:
            assert heatmap.mode == "RGB"
            assert heatmap.size == (SIZE, SIZE)
    assert result.auroc() is not None
    assert 0.0 <= result.auroc() <= 1.0

    # Same numbers as model.forward on the same files (batch size does not matter: per-sample norm).
    files = [Path(r["image_path"]) for r in rows]
    ref = torch_reference(deployment.model, torch.stack([read_image(p) for p in files]))
    scores = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(scores, ref["pred_score"], atol=parity_bar(deployment.model) + 1e-6)
    decisive = np.abs(ref["pred_score"] - 0.5) > parity_bar(deployment.model)
    labels = np.array([r["label"] == "anomalous" for r in rows])
    np.testing.assert_array_equal(labels[decisive], ref["pred_label"][decisive])

    # The checkpoint gives the same CSV through PyTorch.
    ckpt_rows = read_csv(
        score_folder(deployment.ckpt, xray_folder, tmp_path / "ckpt", progress=False).csv_path
    )
    assert [r["image_path"] for r in ckpt_rows] == [r["image_path"] for r in rows]
    np.testing.assert_allclose(
        [float(r["score"]) for r in ckpt_rows], scores, atol=parity_bar(deployment.model) + 1e-6
    )


def _variants(base: Path, folder: Path) -> dict[str, Path]:
    """The same picture as 8-bit grey, RGB, opaque RGBA, 16-bit grey and DICOM, plus other sizes."""
    folder.mkdir(parents=True)
    grey = np.asarray(Image.open(base).convert("L"))  # a DICOM without window is scaled by bit depth too
    paths = {name: folder / f"{name}.png" for name in ("grey", "rgb", "rgba", "grey16", "big", "wide")}
    Image.fromarray(grey).save(paths["grey"])
    Image.fromarray(grey).convert("RGB").save(paths["rgb"])
    Image.fromarray(grey).convert("RGBA").save(paths["rgba"])
    Image.fromarray(grey.astype(np.uint16) * 257).save(paths["grey16"])
    Image.fromarray(grey).resize((2 * SIZE, 2 * SIZE), Image.Resampling.BICUBIC).save(paths["big"])
    Image.fromarray(grey).resize((SIZE + 36, SIZE - 9), Image.Resampling.BICUBIC).convert("RGB").save(
        paths["wide"]
    )
    paths["dicom"] = write_dicom(folder / "grey.dcm", grey)
    return paths


def test_other_sizes_channels_and_formats(deployment: TinyDeployment, tmp_path: Path) -> None:
    paths = _variants(deployment.image_paths[0], tmp_path / "variants")
    result = score_folder(deployment.irs["fp32"], tmp_path / "variants", tmp_path / "out", progress=False)
    scores = {Path(r["image_path"]).name: r["score"] for r in result.rows}
    assert len(scores) == len(paths)

    # Channel count and bit depth do not change the pixels, so they do not change the score.
    for name in ("rgb.png", "rgba.png", "grey16.png", "grey.dcm"):
        assert scores[name] == pytest.approx(scores["grey.png"], abs=1e-5), name

    # Another size gets the score a Lightning test loop gives that file (antialiased resize, as trained).
    for name in ("big.png", "wide.png"):
        expected = lightning_scores(deployment, [paths[name.removesuffix(".png")]])[0]
        assert scores[name] == pytest.approx(expected, abs=parity_bar(deployment.model) + 1e-6), name
    with Image.open(tmp_path / "out" / "heatmaps" / "wide.png.png") as heatmap:
        assert heatmap.size == (SIZE + 36, SIZE - 9)  # overlays come back at the original size


def test_graph_resizes_any_input_itself(deployment: TinyDeployment) -> None:
    """Fed straight to the IR, an off-size image is resized in-graph (no antialiasing there)."""
    image = read_image(deployment.image_paths[0])
    big = torch.nn.functional.interpolate(image[None], scale_factor=2, mode="bilinear")
    compiled = ov.Core().compile_model(
        str(deployment.irs["fp32"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    out = {o.get_any_name(): v for o, v in compiled(big.numpy()).items()}
    assert out["anomaly_map"].shape == (1, 1, SIZE, SIZE)
    with torch.no_grad():
        expected = deployment.model(big).pred_score.numpy()  # model.forward also uses the export resize
    np.testing.assert_allclose(out["pred_score"], expected, atol=parity_bar(deployment.model) + 1e-6)


def _bad_folder(xray_folder: Path) -> list[Path]:
    bad = [xray_folder / "NORMAL" / "broken.png", xray_folder / "PNEUMONIA" / "cut.jpg"]
    bad[0].write_text("this is not an image\n")
    Image.new("L", (SIZE, SIZE), 128).save(bad[1], format="JPEG")
    bad[1].write_bytes(bad[1].read_bytes()[:200])
    return bad


def test_unreadable_files_stop_the_run_or_are_skipped(
    deployment: TinyDeployment, xray_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _bad_folder(xray_folder)
    (tmp_path / "strict").mkdir()
    (tmp_path / "strict" / FILE_NAME).write_text("file,score\nold.png,0.1\n")  # from an earlier run
    with pytest.raises(ImageReadError, match=r"(?s)broken\.png.*cut\.jpg"):  # every bad file, at once
        score_folder(deployment.irs["fp32"], xray_folder, tmp_path / "strict", progress=False)
    assert sorted(p.name for p in (tmp_path / "strict").iterdir()) == [FILE_NAME]  # nothing new written
    assert (tmp_path / "strict" / FILE_NAME).read_text() == "file,score\nold.png,0.1\n"

    with pytest.warns(UserWarning, match="skipping") as caught:
        result = score_folder(
            deployment.irs["fp32"], xray_folder, tmp_path / "lenient", skip_bad=True, progress=False
        )
    assert {Path(f).name for f, _ in result.skipped} == {p.name for p in bad}
    assert any("cut.jpg" in str(w.message) for w in caught)
    assert len(read_csv(result.csv_path)) == len(deployment.image_paths)
    assert {Path(r["file"]).name for r in read_csv(tmp_path / "lenient" / "skipped.csv")} == {
        p.name for p in bad
    }

    code = main([str(deployment.irs["fp32"]), str(xray_folder), "-o", str(tmp_path / "cli"), "--quiet"])
    assert code == 2
    assert "broken.png" in capsys.readouterr().err


def test_models_that_are_not_simsid_are_refused(
    deployment: TinyDeployment, xray_folder: Path, tmp_path: Path
) -> None:
    torch.save({"weights": torch.randn(4)}, tmp_path / "random.ckpt")
    (tmp_path / "garbage.xml").write_bytes(os.urandom(64))
    image = opset13.parameter([1, 3, 8, 8], name="input")
    ov.save_model(ov.Model([opset13.relu(image)], [image], "not_simsid"), tmp_path / "relu.xml")
    padim_like = ov.Core().read_model(str(deployment.irs["fp32"]))
    padim_like.set_rt_info("Padim", ["simsid", "model_type"])
    ov.save_model(padim_like, tmp_path / "padim.xml", compress_to_fp16=False)
    cases = {
        "random.ckpt": "not a Lightning checkpoint",
        "garbage.xml": "cannot read OpenVINO model",
        "relu.xml": "not an exported anomalib SimSID",
        "padim.xml": "'Padim' model, not SimSID",
    }
    for name, message in cases.items():
        with pytest.raises(NotSimSIDError, match=message):
            score_folder(tmp_path / name, xray_folder, tmp_path / "out", progress=False)
        assert not (tmp_path / "out" / FILE_NAME).exists(), name
    assert (
        main([str(tmp_path / "random.ckpt"), str(xray_folder), "-o", str(tmp_path / "cli"), "--quiet"]) == 2
    )


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("NORMAL/a.png", "normal"),
        ("test/PNEUMONIA/a.jpeg", "anomalous"),
        ("test/good/a.png", "normal"),
        ("anomalous/sub/a.png", "anomalous"),
        ("batch1/a.png", ""),
        ("a.png", ""),
    ],
)
def test_ground_truth_from_class_folders(relative: str, expected: str) -> None:
    assert folder_ground_truth(Path(relative)) == expected


def test_fixed_other_input_size_is_refused(
    deployment: TinyDeployment, xray_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An IR reshaped to a fixed input other than the model size is refused with one clear line."""
    model = ov.Core().read_model(str(deployment.irs["fp32"]))
    model.reshape([1, 3, SIZE // 2, SIZE // 2])
    ov.save_model(model, tmp_path / "fixed.xml", compress_to_fp16=False)
    with pytest.raises(NotSimSIDError, match=f"fixed input of {SIZE // 2} x {SIZE // 2} .* {SIZE} x {SIZE}"):
        score_folder(tmp_path / "fixed.xml", xray_folder, tmp_path / "out", progress=False)
    assert main([str(tmp_path / "fixed.xml"), str(xray_folder), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_module_entry_point(deployment: TinyDeployment, xray_folder: Path, tmp_path: Path) -> None:
    """``python -m anomalib_simsid.deploy.score_folder`` as a user runs it (progress bar on stderr)."""
    args = [sys.executable, "-m", "anomalib_simsid.deploy.score_folder", str(deployment.irs["int8"])]
    args += [str(xray_folder), "--output", str(tmp_path / "cli")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"scored {len(deployment.image_paths)} images" in result.stdout
    assert "image AUROC" in result.stdout
    assert "SimSID scoring" not in result.stderr  # no progress bar in a log: stderr is not a terminal
    assert len(read_csv(tmp_path / "cli" / FILE_NAME)) == len(deployment.image_paths)


def test_missing_weights_keep_openvinos_reason(
    deployment: TinyDeployment, xray_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(deployment.irs["fp32"], tmp_path / "model.xml")  # without its model.bin
    assert main([str(tmp_path / "model.xml"), str(xray_folder), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bin file cannot be found" in err
    assert str(tmp_path / "model.xml") in err


def test_read_only_output_folder_is_named(
    deployment: TinyDeployment,
    xray_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import anomalib_simsid.models.simsid.adapters.openvino as export

    def read_only(*_args: object, **_kwargs: object) -> None:  # the tests run as root: simulate it
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.x"))

    monkeypatch.setattr(export, "TemporaryDirectory", read_only)
    assert main([str(deployment.irs["fp32"]), str(xray_folder), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot write the output folder {tmp_path / 'out'} ({tmp_path} is not writable" in err
