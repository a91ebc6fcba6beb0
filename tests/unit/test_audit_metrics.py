"""MatchedAUROC / StatisticAUROC: the audit's figures as anomalib metrics, DDP merge, too few pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from anomalib.data import ImageBatch
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_simsid.audit import auroc_ci, matched_auroc, path_statistics
from anomalib_simsid.audit.metrics import AuditMetricWarning, MatchedAUROC, StatisticAUROC, audit_metrics
from anomalib_simsid.data import read_image
from anomalib_simsid.models.simsid.adapters.pre_processing import simsid_pre_processor
from tests.unit.test_audit import SIZE, _blur_confounded_set


@pytest.fixture(scope="module")
def blur_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("blur")
    table = _blur_confounded_set(root, n=60)
    table["path"] = [str(root / i) for i in table.image]
    return root, table


def _batches(table, score, size=16, image=None):
    for start in range(0, len(table), size):
        part = table.iloc[start : start + size]
        images = torch.stack([read_image(p) for p in part.path]) if image is None else image(part)
        yield ImageBatch(
            image=images,
            image_path=list(part.path),
            pred_score=torch.tensor(part[score].to_numpy(), dtype=torch.float32),
            gt_label=torch.tensor(part.label.to_numpy()).bool(),
        )


def _run(metric, table, score, **kwargs):
    for batch in _batches(table, score, **kwargs):
        metric.update(batch)
    return float(metric.compute())


def test_names_and_figures_equal_the_audit(blur_set):
    root, table = blur_set
    matched = MatchedAUROC("sharpness", image_size=SIZE)
    floor = StatisticAUROC("sharpness", image_size=SIZE)
    assert matched.name == "image_AUROC_sharpness_matched"
    assert floor.name == "image_AUROC_sharpness_alone"
    assert [m.name for m in audit_metrics()] == [
        "image_AUROC_sharpness_matched",
        "image_AUROC_sharpness_alone",
        "image_AUROC_intensity_matched",
        "image_AUROC_intensity_alone",
    ]
    value = _run(matched, table, "lesion")
    expected = matched_auroc(table, root, "sharpness", score="lesion", image_size=SIZE, draws=0)
    assert matched.pairs == len(expected.pairs) >= 20
    assert value == pytest.approx(expected.auroc.value, abs=1e-12)
    assert value > 0.95  # the lesion score sees the lesion on pairs of equal blur
    # The floor: sharpness alone separates this blur-confounded set (blurrier = abnormal: the raw
    # AUROC is below 0.5; the metric reports either direction).
    alone = _run(floor, table, "lesion")
    assert alone > 0.9
    # A score that is the statistic itself is at chance on the matched pairs.
    table = table.assign(blur=-path_statistics(table.path, SIZE).sharpness.to_numpy())
    assert abs(_run(MatchedAUROC("sharpness", image_size=SIZE), table, "blur") - 0.5) < 0.12
    assert auroc_ci(table.label, table.blur, draws=0).value == pytest.approx(alone)


def test_distributed_shards_with_padding_repeats_give_the_single_process_figure(blur_set):
    _, table = blur_set
    single = _run(MatchedAUROC("sharpness", image_size=SIZE), table, "lesion")
    # Two ranks: interleaved halves, and a DistributedSampler pads rank 1 with rank 0's first images.
    rank0, rank1 = MatchedAUROC("sharpness", image_size=SIZE), MatchedAUROC("sharpness", image_size=SIZE)
    shard0, shard1 = table.iloc[0::2], table.iloc[1::2]
    for batch in _batches(shard0, "lesion"):
        rank0.update(batch)
    for batch in _batches(pd.concat([shard1, shard0.iloc[:3]]), "lesion"):
        rank1.update(batch)
    rank0.merge_state(rank1)  # what torchmetrics' all-gather ('cat' states) does before compute
    assert float(rank0.compute()) == pytest.approx(single, abs=1e-12)


def test_too_few_pairs_or_one_class_give_nan_and_a_warning(blur_set):
    _, table = blur_set
    few = MatchedAUROC("sharpness", image_size=SIZE, min_pairs=10_000)
    with pytest.warns(AuditMetricWarning, match=r"image_AUROC_sharpness_matched is nan: \d+ matched pair"):
        assert np.isnan(_run(few, table, "lesion"))
    assert few.pairs > 0
    normals = table[table.label == 0]
    for metric in (MatchedAUROC(image_size=SIZE), StatisticAUROC(image_size=SIZE)):
        with pytest.warns(AuditMetricWarning, match="one class only"):
            assert np.isnan(_run(metric, normals, "lesion"))
    with pytest.warns(AuditMetricWarning, match="no images were seen"):
        assert np.isnan(float(MatchedAUROC().compute()))
    with pytest.raises(ValueError, match="nuisance must be one of"):
        MatchedAUROC("contrast")
    with pytest.raises(ValueError, match="source must be one of"):
        MatchedAUROC(source="pixels")


def test_batch_image_source_equals_the_file_after_simsid_pre_processing_not_after_padim(blur_set):
    """At metric time the batch image is the pre-processed one: SimSID's gives the audit's statistic back
    (same resize, [-1, 1] undone); a PaDiM-like 2x bilinear resize + ImageNet normalisation does not.
    """
    _, table = blur_set
    simsid = simsid_pre_processor((SIZE, SIZE)).transform

    def simsid_batch(part):
        return simsid(torch.stack([read_image(p) for p in part.path]))

    by_path = StatisticAUROC("sharpness", image_size=SIZE)
    by_image = StatisticAUROC("sharpness", source="image", image_size=SIZE, image_mean=[0.5] * 3,
                              image_std=[0.5] * 3)  # fmt: skip
    _run(by_path, table, "lesion")
    _run(by_image, table, "lesion", image=simsid_batch)
    np.testing.assert_allclose(torch.cat(by_image.values), torch.cat(by_path.values), rtol=1e-4)

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    padim = Compose([Resize((2 * SIZE, 2 * SIZE), antialias=True), Normalize(mean, std)])
    padim_view = StatisticAUROC("sharpness", source="image", image_size=SIZE, image_mean=mean, image_std=std)
    _run(
        padim_view, table, "lesion", image=lambda part: padim(torch.stack([read_image(p) for p in part.path]))
    )
    difference = (torch.cat(padim_view.values) - torch.cat(by_path.values)).abs() / torch.cat(by_path.values)
    assert difference.median() > 1e-3  # another resize chain, another statistic


def test_simsid_reports_the_audit_at_test_and_selects_on_plain_auroc_at_validation():
    from anomalib_simsid import SimSID

    evaluator = SimSID.configure_evaluator()
    assert [m.name for m in evaluator.val_metrics] == ["image_AUROC"]
    names = [m.name for m in evaluator.test_metrics]
    assert names[:2] == ["image_AUROC", "image_F1Score"]
    assert set(names[2:]) == {
        "image_AUROC_sharpness_matched",
        "image_AUROC_sharpness_alone",
        "image_AUROC_intensity_matched",
        "image_AUROC_intensity_alone",
    }


def test_example_evaluator_config_builds_the_metrics():
    from pathlib import Path

    import yaml
    from jsonargparse import ArgumentParser
    from torch import nn

    path = Path(__file__).resolve().parents[2] / "configs" / "audit_evaluator.yaml"
    parser = ArgumentParser()
    parser.add_argument("--evaluator", type=nn.Module)
    config = parser.parse_object({"evaluator": yaml.safe_load(path.read_text())})
    evaluator = parser.instantiate_classes(config).evaluator
    names = [m.name for m in evaluator.test_metrics]
    assert "image_AUROC" in names
    assert "image_AUROC_sharpness_matched" in names
    assert "image_AUROC_intensity_alone" in names
