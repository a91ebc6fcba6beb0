"""The research options that change inference (benchmarks/research) are inside the exported OpenVINO graph."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_simsid import DigitAnatomy, SimSID
from anomalib_simsid.deploy import export_openvino, torch_reference
from benchmarks.research.simsid_options import SimSIDResearch
from tests.helpers import TINY_DATA, TINY_MODEL
from tests.integration.test_export import assert_parity, run_ir

# Every option that changes inference (nuisance augmentation is training-only).
ROBUST = {
    "critic_blur_sigma": 1.0,
    "intensity_standardise": True,
    "score": "calibrated_residual",
    "ema_decay": 0.5,
    "nuisance_strength": 0.5,
}


def test_openvino_matches_pytorch_with_every_inference_option_on(digit_root: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="simsid_robust_", dir=digit_root.parent))
    seed_everything(0)
    datamodule = DigitAnatomy(root=str(digit_root), **TINY_DATA, train_batch_size=8, eval_batch_size=12)
    model = SimSIDResearch(**TINY_MODEL, **ROBUST, lr=1e-3, disc_lr=1e-3, visualizer=False)
    Engine(default_root_dir=work, devices=1, max_epochs=1, logger=False, enable_progress_bar=False).fit(
        model, datamodule=datamodule
    )
    assert float(model.model.calibration.slope) != 0.0
    irs = export_openvino(model, work / "export", ("fp32",))
    datamodule.setup("test")
    images = torch.stack([datamodule.test_data[i].image for i in range(len(datamodule.test_data))])
    # Intensities changed by a positive affine map: standardised in-graph, so the IR scores them alike.
    changed = (images * 0.8 + 0.1).clamp(0, 1)
    ref, ref_changed = torch_reference(model, images), torch_reference(model, changed)
    out, out_changed = run_ir(irs["fp32"], images), run_ir(irs["fp32"], changed)
    assert_parity(out, ref, model)
    assert_parity(out_changed, ref_changed, model)
    np.testing.assert_allclose(out["pred_score"], out_changed["pred_score"], atol=1e-3)
    # The parity is not vacuous: without the calibration or the critic blur the scores differ.
    model.model.calibration.slope.zero_()
    assert np.abs(torch_reference(model, images)["pred_score"] - out["pred_score"]).max() > 1e-2


def _set_post_processor(model: SimSID, low: float, high: float) -> None:
    """Stand in for validation: a threshold and range, so an untrained model can be exported."""
    post = model.post_processor
    post._image_threshold.fill_((low + high) / 2)
    post.image_min.fill_(low)
    post.image_max.fill_(high)
    post._pixel_threshold.fill_(0.5)
    post.pixel_min.fill_(0.0)
    post.pixel_max.fill_(1.0)


def test_openvino_graph_holds_the_critic_blur_and_the_lowpass_score(tmp_path: Path) -> None:
    images = torch.rand(4, 3, 64, 64)
    outputs = {}
    for name, options in {
        "critic_blur": {"critic_blur_sigma": 2.0},
        "lowpass": {"score": "lowpass_residual", "lowpass_sigma": 2.0},
    }.items():
        torch.manual_seed(0)
        model = SimSIDResearch(**TINY_MODEL, **options, visualizer=False).eval()
        with torch.no_grad():
            raw = model.model(model.pre_processor(images)).pred_score
        _set_post_processor(model, float(raw.min()), float(raw.max()))
        irs = export_openvino(model, tmp_path / name, ("fp32",))
        outputs[name] = run_ir(irs["fp32"], images)
        assert_parity(outputs[name], torch_reference(model, images), model)
        # The same weights without the option score differently, so the graph holds it.
        torch.manual_seed(0)
        paper = SimSID(**TINY_MODEL, visualizer=False).eval()
        paper.model.load_state_dict(model.model.state_dict())
        paper.post_processor.load_state_dict(model.post_processor.state_dict())
        assert np.abs(torch_reference(paper, images)["pred_score"] - outputs[name]["pred_score"]).max() > 1e-2
