"""simsid-audit: the suite's figures for any scores CSV, DICOM tags and metadata groups, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomalib_simsid.audit.cli import main
from anomalib_simsid.audit.metadata import audit_attribute
from anomalib_simsid.audit.report import write_audit
from tests.unit.data.fixtures import write_dicom
from tests.unit.test_audit import SIZE, _blur_confounded_set


def _foldered_set(root, n=40):
    """The blur-confounded set in normal/ and abnormal/ folders; scores of a lesion-seeing model."""
    return _blur_confounded_set(root, n=n)  # writes normal/NNN.png and abnormal/NNN.png


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _model_row(markdown: str, name: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))


def test_figures_equal_the_suite_audit_for_every_csv_layout(tmp_path, capsys):
    images = tmp_path / "images"
    table = _foldered_set(images, n=80)
    suite = table.assign(dataset="d", model="Lesion", seed=0, score=table.lesion)
    suite.to_csv(tmp_path / "suite.csv", index=False)
    expected = _model_row(
        write_audit(tmp_path / "suite.csv", {"d": images}, tmp_path / "suite", SIZE).read_text(), "Lesion"
    )
    layouts = {  # anomalib predict's predictions.csv (absolute paths), simsid-score's, a bare one
        "predictions.csv": pd.DataFrame({
            "image_path": [str(images / i) for i in table.image], "score": table.lesion, "label": "normal"
        }),
        "scores.csv": pd.DataFrame({
            "file": table.image, "score": table.lesion, "label": 0, "ground_truth": 1, "heatmap": ""
        }),
        "other.csv": pd.DataFrame({"image_path": "elsewhere/images/" + table.image, "score": table.lesion}),
    }  # fmt: skip
    for name, frame in layouts.items():
        frame.to_csv(tmp_path / name, index=False)
        out = tmp_path / f"out-{name}"
        code, stdout, err = _run(
            capsys,
            images,
            "--scores",
            tmp_path / name,
            "--name",
            "Lesion",
            "--out",
            out,
            "--image-size",
            SIZE,
        )
        assert code == 0, err
        assert _model_row((out / "audit.md").read_text(), "Lesion") == expected, name
        assert "| stat: sharpness |" in stdout
    report = json.loads((out / "audit.json").read_text())
    assert report["images"] == {"normal": 80, "abnormal": 80}
    assert report["rows"][0]["model"] == "Lesion"
    assert report["rows"][0]["sharpness_matched"]["n"] == report["matched_pairs"]["sharpness"] >= 20
    assert (out / "audit.png").stat().st_size > 10_000
    pairs = pd.read_csv(out / "matched_sharpness.csv")
    assert pairs.normal.str.startswith("normal/").all()
    assert not list(out.glob(".simsid-audit-*"))  # no staging left behind


def _write_tagged_dicom(path, pixels, **tags):
    import pydicom

    write_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def scanner_confounded_dicoms(root, n=60, seed=0):
    """Two scanners: 'Acme' holds 80 % of the abnormals (and gives blurrier 16-bit images), 'Borealis'
    the rest; half the files have no suffix. Returns (file, label, lesion score, blur score) rows."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    rows = []
    for label in (0, 1):
        for i in range(n):
            acme = rng.random() < (0.8 if label else 0.2)
            texture = gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2.5 if acme else 0.8)
            image = 0.4 + 0.05 * (texture - texture.mean()) / texture.std()
            if label:
                image[20:28, 20:28] = 0.9
            pixels = (np.clip(image, 0, 1) * 65535).astype(np.uint16)
            name = f"{'abnormal' if label else 'normal'}/{i:03d}" + (".dcm" if i % 2 else "")
            tags = {
                "Manufacturer": "Acme" if acme else "Borealis",
                "KVP": "110" if acme else "120",
                "ViewPosition": "PA",
            }
            _write_tagged_dicom(root / name, pixels, **tags)
            rows.append({
                "image_path": name,
                "label": label,
                "lesion": float(pixels.max()) / 65535 + rng.normal(scale=0.02),
                "scanner": float(acme) + rng.normal(scale=0.3),  # a model that learnt the scanner
                "site": "north" if i % 3 else "south",
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_dicom_tags_one_manufacturer_holding_most_abnormals(tmp_path, capsys):
    images = tmp_path / "dicoms"
    table = scanner_confounded_dicoms(images)
    for model in ("lesion", "scanner"):
        table.rename(columns={model: "score"})[["image_path", "score"]].to_csv(tmp_path / f"{model}.csv")
        code, _, err = _run(capsys, images, "--scores", tmp_path / f"{model}.csv", "--out", tmp_path / model,
                            "--image-size", SIZE, "--min-pairs", 5)  # fmt: skip
        assert code == 0, err
    report = {m: json.loads((tmp_path / m / "audit.json").read_text()) for m in ("lesion", "scanner")}
    tags = {a["attribute"]: a for a in report["scanner"]["metadata"]}
    assert set(tags) == {"Manufacturer", "KVP"}  # ViewPosition, Rows, Columns... do not vary
    manufacturer = tags["Manufacturer"]
    assert manufacturer["source"] == "DICOM tags"
    counts = {g["value"]: (g["normal"], g["abnormal"]) for g in manufacturer["groups"]}
    # The tag alone: the AUROC of each image's group abnormal fraction.
    n_a, a_a = counts["Acme"]
    n_b, a_b = counts["Borealis"]
    expected = (a_a * n_b + 0.5 * (a_a * n_a + a_b * n_b)) / ((a_a + a_b) * (n_a + n_b))
    assert manufacturer["auroc_alone"] == pytest.approx(expected)
    assert manufacturer["auroc_alone"] > 0.7
    # Within each manufacturer the scanner-model is at chance, the lesion-model is not.
    for group in manufacturer["groups"]:
        assert abs(group["model"]["auroc"] - 0.5) < 0.25
    lesion = {a["attribute"]: a for a in report["lesion"]["metadata"]}["Manufacturer"]
    assert all(g["model"]["auroc"] > 0.9 for g in lesion["groups"])
    assert "| Manufacturer |" in (tmp_path / "lesion" / "audit.md").read_text()

    # A user's metadata CSV works the same way.
    table[["image_path", "site"]].to_csv(tmp_path / "sites.csv", index=False)
    argv = ["--metadata", tmp_path / "sites.csv", "--out", tmp_path / "sites", "--image-size", SIZE]
    code, _, err = _run(capsys, images, "--scores", tmp_path / "lesion.csv", *argv, "--min-pairs", 5)
    assert code == 0, err
    site = next(a for a in json.loads((tmp_path / "sites" / "audit.json").read_text())["metadata"]
                if a["attribute"] == "site")  # fmt: skip
    assert site["source"] == "sites.csv"
    assert {g["value"] for g in site["groups"]} == {"north", "south"}


def test_numeric_attribute_with_many_values_scores_by_value_and_bins_in_quartiles():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(50), np.ones(50)].astype(int)
    spacing = pd.Series(0.1 + 0.05 * labels + rng.normal(scale=0.01, size=100)).map("{:.4f}".format)
    audit = audit_attribute("PixelSpacing", spacing, labels, rng.normal(size=100), "DICOM tags")
    assert audit.numeric
    assert len(audit.groups) == 4
    assert audit.auroc > 0.95
    assert audit_attribute("x", pd.Series(["a"] * 100), labels, np.zeros(100), "csv") is None


def _error(capsys, *argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("simsid-audit: error: ")
    return lines[0]


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys):
    images = tmp_path / "images"
    table = _foldered_set(images, n=25)
    scores = table.rename(columns={"image": "image_path", "lesion": "score"})[["image_path", "score"]]
    scores.to_csv(tmp_path / "scores.csv", index=False)
    out = tmp_path / "out"

    flat = tmp_path / "flat"
    flat.mkdir()
    for i, name in enumerate(table.image[:6]):
        Image.open(images / name).save(flat / f"{i}.png")
    pd.DataFrame({"image_path": [f"{i}.png" for i in range(6)], "score": range(6)}).to_csv(
        tmp_path / "flat.csv", index=False
    )
    assert "under no class folder" in _error(capsys, flat, "--scores", tmp_path / "flat.csv", "--out", out)
    # ... fine with a labels CSV
    pd.DataFrame(
        {"image_path": [f"{i}.png" for i in range(6)], "label": ["normal"] * 3 + ["abnormal"] * 3}
    ).to_csv(tmp_path / "labels.csv", index=False)
    code, _, err = _run(capsys, flat, "--scores", tmp_path / "flat.csv", "--labels", tmp_path / "labels.csv",
                        "--out", tmp_path / "flat-out", "--image-size", SIZE, "--name", "Flat")  # fmt: skip
    assert code == 0, err
    assert "matched pair(s) within the caliper" in err  # 6 images: too few pairs, said so
    flat_report = json.loads((tmp_path / "flat-out" / "audit.json").read_text())
    assert flat_report["rows"][0]["sharpness_matched"]["auroc"] is None  # no number, no CI
    assert "n/a" in _model_row((tmp_path / "flat-out" / "audit.md").read_text(), "Flat")

    ghost = pd.concat([scores, pd.DataFrame({"image_path": ["normal/999.png"], "score": [0.1]})])
    ghost.to_csv(tmp_path / "ghost.csv", index=False)
    line = _error(capsys, images, "--scores", tmp_path / "ghost.csv", "--out", out)
    assert "ghost.csv: 1 of 51 scores path(s) name no image" in line
    assert "normal/999.png" in line

    one = scores[(scores.image_path.str.startswith("normal")) | (scores.image_path == "abnormal/000.png")]
    one.to_csv(tmp_path / "one.csv", index=False)
    assert "1 abnormal image(s) scored; the audit needs at least 2" in _error(
        capsys, images, "--scores", tmp_path / "one.csv", "--out", out
    )
    scores.rename(columns={"score": "value"}).to_csv(tmp_path / "noscore.csv", index=False)
    assert "no score column" in _error(capsys, images, "--scores", tmp_path / "noscore.csv", "--out", out)
    assert "scores file not found" in _error(capsys, images, "--scores", tmp_path / "nope.csv", "--out", out)
    assert not out.exists() or not any(out.iterdir())

    # DICOM without the acquisition tags: a note, and the rest of the audit.
    bare = tmp_path / "bare"
    rng = np.random.default_rng(0)
    for k in range(6):
        write_dicom(
            bare / ("normal" if k < 3 else "abnormal") / f"{k}.dcm",
            rng.integers(0, 4000, (SIZE, SIZE)).astype(np.uint16),
        )
    names = [f"{'normal' if k < 3 else 'abnormal'}/{k}.dcm" for k in range(6)]
    dicom_scores = pd.DataFrame({"image_path": names, "score": range(6)})
    dicom_scores.to_csv(tmp_path / "bare.csv", index=False)
    code, _, err = _run(capsys, bare, "--scores", tmp_path / "bare.csv", "--out", tmp_path / "bare-out")
    assert code == 0
    assert "no DICOM acquisition tag varies" in err  # Rows/Columns/BitsStored equal; no Manufacturer
