"""The shortcut audit: matching, matched AUROC on a blur-confounded set, bootstrap coverage, the files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import norm

from anomalib_simsid.audit import auroc_ci, match_pairs, matched_auroc, matched_auroc_ci
from benchmarks.audit import StatisticBaseline, main

SIZE = 64  # the generated images' size, also the statistics' size (no resampling in the way)


def test_matching_is_deterministic_balanced_and_within_the_caliper():
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.4).astype(int)
    values = rng.normal(size=400) + 0.8 * labels
    pairs = match_pairs(values, labels, caliper_sd=0.1)
    assert len(pairs) > 50
    np.testing.assert_array_equal(pairs, match_pairs(values, labels, caliper_sd=0.1))
    assert (labels[pairs[:, 0]] == 0).all()  # one of each class
    assert (labels[pairs[:, 1]] == 1).all()
    assert len(set(pairs[:, 0])) == len(pairs) == len(set(pairs[:, 1]))  # without replacement
    assert np.abs(values[pairs[:, 0]] - values[pairs[:, 1]]).max() <= 0.1 * values.std(ddof=1)
    # The pairs depend on the images, not on the order they are listed in.
    order = rng.permutation(400)
    shuffled = match_pairs(values[order], labels[order], caliper_sd=0.1)
    as_values = {(values[i], values[j]) for i, j in pairs}
    assert {(values[order][i], values[order][j]) for i, j in shuffled} == as_values
    assert len(match_pairs(values, labels, caliper_sd=0.0)) == 0


def _blur_confounded_set(root, n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Normals and abnormals of the same texture; abnormals are blurrier and carry a bright disc (the lesion).

    Blur widths overlap (normals 0.5-2, abnormals 1.5-3 px) so that pairs of equal sharpness exist.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    rows = []
    for label in (0, 1):
        for i in range(n):
            sigma = rng.uniform(0.5, 2.0) if label == 0 else rng.uniform(1.5, 3.0)
            texture = gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma)
            image = 0.4 + 0.08 * (texture - texture.mean()) / texture.std()
            if label:
                cy, cx = rng.integers(12, SIZE - 12, size=2)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = 0.95
            name = f"{'abnormal' if label else 'normal'}/{i:03d}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(image * 255, 0, 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / name)
            # A score that sees the lesion (the brightest pixel), plus noise; blind to blur.
            lesion_score = pixels.max() / 255 + rng.normal(scale=0.02)
            rows.append({"image": name, "label": label, "lesion": lesion_score})
    return pd.DataFrame(rows)


def test_blur_statistic_is_at_chance_on_sharpness_matched_pairs_and_a_lesion_score_is_not(tmp_path):
    table = _blur_confounded_set(tmp_path)
    blur = StatisticBaseline("sharpness", image_size=SIZE)
    table["blur"] = -blur.values([tmp_path / i for i in table.image])  # blurrier = higher

    everything = auroc_ci(table.label, table.blur, draws=0).value
    matched = matched_auroc(table, tmp_path, "sharpness", score="blur", image_size=SIZE)
    assert everything > 0.9
    assert len(matched.pairs) >= 30
    assert abs(matched.auroc.value - 0.5) < 0.12
    assert matched.auroc.low < 0.5 < matched.auroc.high

    lesion_all = auroc_ci(table.label, table.lesion, draws=0).value
    lesion = matched_auroc(table, tmp_path, "sharpness", score="lesion", image_size=SIZE)
    assert lesion_all > 0.95
    assert lesion.auroc.value > 0.95
    assert abs(lesion.auroc.value - lesion_all) < 0.05
    pd.testing.assert_frame_equal(lesion.pairs, matched.pairs)  # every score judged on the same images


def test_bootstrap_intervals_cover_the_true_auroc_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    shift = 1.0
    truth = norm.cdf(shift / np.sqrt(2))  # AUROC of N(shift, 1) against N(0, 1)
    covered, covered_pairs, reps = 0, 0, 200
    for rep in range(reps):
        labels = np.r_[np.zeros(60), np.ones(60)]
        scores = rng.normal(size=120) + shift * labels
        ci = auroc_ci(labels, scores, seed=rep)
        covered += ci.low <= truth <= ci.high
        pair = matched_auroc_ci(rng.normal(size=60), rng.normal(size=60) + shift, seed=rep)
        covered_pairs += pair.low <= truth <= pair.high
    assert 0.89 <= covered / reps <= 0.99
    assert 0.89 <= covered_pairs / reps <= 0.99


def test_auroc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    assert auroc_ci(labels, scores, draws=0).value == pytest.approx(roc_auc_score(labels, scores))


def test_statistic_baseline_chooses_its_sign_on_validation(tmp_path):
    table = _blur_confounded_set(tmp_path, n=20)
    baseline = StatisticBaseline("sharpness", image_size=SIZE)
    paths = [tmp_path / i for i in table.image]
    val_auroc = baseline.fit(paths, table.label)
    assert baseline.sign == -1.0  # abnormal = blurrier = lower sharpness
    assert val_auroc > 0.5
    assert auroc_ci(table.label, baseline.score(paths), draws=0).value == pytest.approx(val_auroc)
    with pytest.raises(ValueError, match="statistic must be one of"):
        StatisticBaseline("contrast")


def test_audit_command_writes_table_plot_and_matched_lists(tmp_path):
    root = tmp_path / "data"
    table = _blur_confounded_set(root, n=40)
    scores = pd.concat([
        table.assign(dataset="d", model="Lesion", seed=0, score=table.lesion),
        table.assign(dataset="d", model="stat: sharpness", seed=0, score=-np.arange(len(table))),
    ])  # fmt: skip
    scores.to_csv(tmp_path / "scores.csv", index=False)
    assert (
        main(["--scores", str(tmp_path / "scores.csv"), "--root", f"d={root}", "--image-size", str(SIZE)])
        == 0
    )

    audit = (tmp_path / "audit.md").read_text()
    header = next(line for line in audit.splitlines() if line.startswith("| model |"))
    for column in ("model", "test AUROC", "95% CI", "sharpness-matched AUROC", "intensity-matched AUROC",
                   "rho sharpness"):  # fmt: skip
        assert f"| {column} |" in header
    assert "### Statistic baselines" in audit
    assert (
        audit.index("| Lesion | 0 |")
        < audit.index("### Statistic baselines")
        < audit.index("| stat: sharpness |")
    )
    assert (tmp_path / "audit_d.png").stat().st_size > 10_000
    pairs = pd.read_csv(tmp_path / "matched_d_sharpness.csv")
    assert set(pairs.columns) >= {"normal", "abnormal", "normal_sharpness", "abnormal_sharpness"}
    assert pairs.normal.str.startswith("normal/").all()
    assert pairs.abnormal.str.startswith("abnormal/").all()

    (root / table.image[0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) not found .*normal/000.png"):
        main(["--scores", str(tmp_path / "scores.csv"), "--root", f"d={root}"])
    with pytest.raises(ValueError, match=r"no dataset root given for \['d'\]"):
        main(["--scores", str(tmp_path / "scores.csv"), "--root", f"other={root}"])


def test_plot_labels_name_the_seed_only_where_rows_hold_several() -> None:
    from anomalib_simsid.audit.report import row_labels

    one_seed = pd.DataFrame({"model": ["PaDiM", "stat: sharpness"], "seed": [0, 0]})
    assert row_labels(one_seed) == ["PaDiM", "stat: sharpness"]  # a user's audit: no "(seed 0)"
    seeds = pd.DataFrame({"model": ["PaDiM", "PaDiM"], "seed": [0, 1]})
    assert row_labels(seeds) == ["PaDiM (seed 0)", "PaDiM (seed 1)"]
