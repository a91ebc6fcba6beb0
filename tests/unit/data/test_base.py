"""Shared split logic: evaluation sets mix their labels from the first batch on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fixtures import make_zhanglab

from anomalib_simsid.data.base import interleave_labels
from anomalib_simsid.data.zhanglab import ZhangLab


def test_interleave_spreads_labels_and_keeps_their_order() -> None:
    paths = [f"n{i}" for i in range(6)] + ["a0", "a1"]
    rows = pd.DataFrame({"image_path": paths, "label_index": [0] * 6 + [1] * 2})
    ordered = interleave_labels(rows)
    assert sorted(ordered.image_path) == sorted(rows.image_path)
    assert list(ordered.image_path[ordered.label_index == 0]) == [f"n{i}" for i in range(6)]
    assert list(ordered.image_path[ordered.label_index == 1]) == ["a0", "a1"]
    assert list(ordered.label_index.iloc[:2]) == [0, 1]  # one of each label first
    assert list(ordered.label_index.iloc[4:6]) == [0, 1]  # the second abnormal halfway
    assert interleave_labels(rows).equals(ordered)  # deterministic


def test_first_eval_batches_hold_both_labels(tmp_path: Path) -> None:
    """``--trainer.limit_val_batches=1`` / ``limit_test_batches=1`` must still see both classes."""
    root = make_zhanglab(tmp_path, counts={"train": (10, 10), "test": (6, 6)})
    module = ZhangLab(str(root), val_size=8, eval_batch_size=2)
    module.setup()
    for loader in (module.val_dataloader(), module.test_dataloader()):
        assert set(next(iter(loader)).gt_label.tolist()) == {0, 1}
