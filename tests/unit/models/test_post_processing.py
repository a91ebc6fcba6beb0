"""SimSID's post-processor normalises scores without the ties that anomalib's clamp makes."""

from __future__ import annotations

import torch
from anomalib.data import InferenceBatch
from anomalib.post_processing import PostProcessor
from sklearn.metrics import roc_auc_score

from anomalib_simsid import SimSID
from anomalib_simsid.models.simsid.adapters.post_processing import SimSIDPostProcessor


def fitted(post: PostProcessor) -> PostProcessor:
    """As validation leaves it: critic logits in [-1, 1], threshold 0; residual maps in [0, 1]."""
    post._image_threshold.fill_(0.0)
    post.image_min.fill_(-1.0)
    post.image_max.fill_(1.0)
    post._pixel_threshold.fill_(0.5)
    post.pixel_min.fill_(0.0)
    post.pixel_max.fill_(1.0)
    return post


def test_scores_beyond_the_validation_range_keep_their_order_and_labels() -> None:
    raw = torch.tensor([-9.0, -4.0, -2.0, -0.5, 0.5, 2.0, 4.0, 9.0])  # most test scores outside [-1, 1]
    labels = [0, 1, 0, 0, 1, 0, 1, 1]
    batch = InferenceBatch(pred_score=raw, anomaly_map=torch.rand(8, 1, 4, 4))
    ours = fitted(SimSIDPostProcessor(enable_threshold_matching=False))(batch)
    clamped = fitted(PostProcessor(enable_threshold_matching=False))(batch)

    assert ((ours.pred_score >= 0) & (ours.pred_score <= 1)).all()
    assert (ours.pred_score.diff() > 0).all()  # strictly increasing, as the raw scores
    assert roc_auc_score(labels, ours.pred_score) == roc_auc_score(labels, raw)
    assert roc_auc_score(labels, clamped.pred_score) != roc_auc_score(labels, raw)  # anomalib's ties
    torch.testing.assert_close(ours.pred_label, clamped.pred_label)  # same threshold, same labels
    assert float(fitted(SimSIDPostProcessor()).normalized_image_threshold) == 0.5
    # Inside the validation range the logistic follows anomalib's line closely (same slope at 0.5).
    inside = InferenceBatch(pred_score=torch.tensor([-0.1, 0.0, 0.1]), anomaly_map=torch.zeros(3, 1, 2, 2))
    ours_in = fitted(SimSIDPostProcessor())(inside).pred_score
    torch.testing.assert_close(ours_in, fitted(PostProcessor())(inside).pred_score, atol=1e-3, rtol=0)


def test_simsid_uses_the_rank_preserving_post_processor() -> None:
    assert isinstance(SimSID(visualizer=False).post_processor, SimSIDPostProcessor)
