"""The feature-space SimSID research code (benchmarks/features): its pieces do what they claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.features.data import channel_draw, grid_features
from benchmarks.features.floors import PositionGaussian, RidgeInpainting, neighbour_stack, ridge_fit
from benchmarks.features.model import FeatureSimSID, check_grid_memory, residuals, train


def test_grid_memory_equals_the_product_read() -> None:
    assert check_grid_memory() < 1e-5


def test_grid_features_resizes_every_block_to_one_grid() -> None:
    blocks = {1: np.ones((2, 3, 8, 8), np.float16), 3: np.zeros((2, 5, 2, 2), np.float16)}
    out = grid_features(blocks, 4)
    assert out.shape == (2, 16, 8)
    assert np.allclose(out[..., :3], 1)
    assert np.allclose(out[..., 3:], 0)
    assert channel_draw(8, None) is None
    assert channel_draw(8, 0) is None  # 0 = all, as on the command line
    drawn = list(channel_draw(10, 4))
    assert drawn == sorted(set(drawn))
    assert len(drawn) == 4


def test_neighbour_stack_is_zero_beyond_the_border() -> None:
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 9, 1)  # 3x3 grid, one channel
    nb = neighbour_stack(x, 3)
    assert nb.shape == (1, 9, 8)
    assert list(nb[0, 4]) == [1, 2, 3, 4, 6, 7, 8, 9]  # the centre sees all 8
    assert list(nb[0, 0]) == [0, 0, 0, 0, 2, 0, 4, 5]  # the corner sees 3


def test_ridge_leave_one_out_residuals_match_refitting() -> None:
    rng = np.random.default_rng(0)
    xs = torch.from_numpy(rng.normal(size=(2, 30, 5)).astype(np.float32))
    ys = torch.from_numpy(rng.normal(size=(2, 30, 3)).astype(np.float32))
    _, _, _, loo = ridge_fit(xs, ys, ridge=0.1)
    for p, i in ((0, 7), (1, 29)):
        keep = torch.arange(30) != i
        x, y = xs[p, keep].double(), ys[p, keep].double()
        xm, ym = x.mean(0), y.mean(0)
        gram = (x - xm).T @ (x - xm) + 0.1 * 30 * torch.eye(5, dtype=torch.float64)  # the full fit's penalty
        w = torch.linalg.solve(gram, (x - xm).T @ (y - ym))
        refit = ys[p, i].double() - ((xs[p, i].double() - xm) @ w + ym)
        assert torch.allclose(loo[p, i].double(), refit, atol=1e-4)


def test_ridge_inpainting_scores_a_broken_neighbourhood_higher() -> None:
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(300, 1, 1, 2)).repeat(16, axis=1).reshape(300, 16, 2)  # constant 4x4 maps
    train_x = (smooth + 0.05 * rng.normal(size=smooth.shape)).astype(np.float32)
    model = RidgeInpainting(train_x, grid=4, ridge=0.01)
    test = train_x[:2].copy()
    test[1, 5] += 3.0
    d = model.distance(test)
    assert d[1, 5] > 5 * d[0, 5]


def test_gaussian_scores_an_outlier_higher() -> None:
    rng = np.random.default_rng(1)
    train_x = rng.normal(size=(200, 4, 3))
    gaussian = PositionGaussian(train_x)
    test = rng.normal(size=(2, 4, 3))
    test[1, 2] += 8.0
    d = gaussian.distance(test)
    assert d[1, 2] > 3 * d[0, 2]
    assert d[1].max() == d[1, 2]


@pytest.mark.parametrize("masked", [False, True])
def test_feature_simsid_trains_and_keeps_shapes(masked: bool) -> None:
    torch.manual_seed(0)
    z = np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32)
    model = FeatureSimSID(16, 4, num_slots=6, masked=masked)
    seconds = train(model, torch.optim.Adam(model.parameters(), lr=1e-3), z, epochs=2, seed=0, batch=4)
    assert len(seconds) == 2
    r = residuals(model, z)
    assert r.shape == z.shape
    assert np.isfinite(r).all()


def test_masked_feature_simsid_does_not_see_the_position_it_inpaints() -> None:
    torch.manual_seed(0)
    model = FeatureSimSID(16, 4, num_slots=6, masked=True).eval()
    x = torch.randn(1, 16, 16)
    changed = x.clone()
    changed[0, 5] += 10.0
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.allclose(a[0, 5], b[0, 5], atol=1e-5)  # its own output ignores its own feature
    assert not torch.allclose(a[0, 6], b[0, 6])  # a neighbour's output uses it
    unmasked = FeatureSimSID(16, 4, num_slots=6, masked=False).eval()
    with torch.no_grad():
        assert not torch.allclose(unmasked(x)[0, 5], unmasked(changed)[0, 5])


def test_a_continued_run_equals_one_run() -> None:
    z = np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32)
    states = []
    for split in ((2,), (1, 1)):
        torch.manual_seed(0)
        model = FeatureSimSID(16, 4, num_slots=6)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        done = 0
        for epochs in split:
            train(model, optimiser, z, epochs, seed=3, batch=4, start_epoch=done)
            done += epochs
        states.append(residuals(model, z))
    assert np.allclose(states[0], states[1], atol=1e-6)


def _write_cache(work, dataset: str, split: str, images: list[str], rng: np.random.Generator) -> None:
    import json

    folder = work / dataset / split
    folder.mkdir(parents=True)
    for block, (channels, side) in {1: (4, 8), 2: (4, 4), 3: (4, 2)}.items():
        features = rng.normal(size=(len(images), channels, side, side)).astype(np.float16)
        np.save(folder / f"blocks.{block}.npy", features)
    np.save(folder / "labels.npy", np.zeros(len(images), np.int8))
    (folder / "images.json").write_text(json.dumps({"root": "data", "images": images}))


@pytest.mark.parametrize("method", ["simsid", "ridge"])
def test_suite_feature_model_scores_the_datamodules_images_and_refuses_another_cache(tmp_path, method):
    from benchmarks.features.suite import FeatureModel

    rng = np.random.default_rng(0)
    train_images = [f"train/normal/{i}.png" for i in range(40)]
    test_images = ["test/normal/0.png", "test/abnormal/0.png", "test/abnormal/1.png"]
    _write_cache(tmp_path, "set", "train", train_images, rng)
    _write_cache(tmp_path, "set", "test", test_images, rng)
    model = FeatureModel(method, "set", epochs=1, grid=4, channels=8, slots=10, topk=2)
    model.work = tmp_path
    root = tmp_path / "data"
    train = model.split("train", str(root), [str(root / p) for p in train_images])
    assert model.fit(train, seed=0)["epochs"] == (1 if method == "simsid" else 0)
    scores = model.score(model.split("test", str(root), [str(root / p) for p in test_images]))
    assert scores.shape == (3,)
    assert np.isfinite(scores).all()
    # the datamodule's order wins: each score stays with its image
    shuffled = model.split("test", str(root), [str(root / p) for p in test_images[::-1]])
    assert shuffled.images == test_images[::-1]
    assert np.allclose(model.score(shuffled), scores[::-1])
    with pytest.raises(ValueError, match="not the datamodule's 2 test images"):
        model.split("test", str(root), [str(root / p) for p in test_images[:2]])
