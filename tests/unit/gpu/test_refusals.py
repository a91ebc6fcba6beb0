"""What SimSID refuses before the first step on a GPU machine, and what every Engine in the repo passes.

Each refusal is one clear error at ``setup("fit")`` instead of a crash inside the first batch.
"""

from __future__ import annotations

import ast
import re
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from anomalib_simsid import SimSID
from anomalib_simsid.models.simsid.networks.blocks import patchify, stitch
from tests.helpers import REPO, TINY_MODEL


def setup_fit(strategy: object) -> None:
    model = SimSID(**TINY_MODEL, visualizer=False)
    model._trainer = SimpleNamespace(strategy=strategy)
    model.setup("fit")


@pytest.fixture
def deterministic():
    """``--trainer.deterministic`` as Lightning applies it (``True`` or ``"warn"``), restored after."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )

    def apply(mode: bool | str) -> None:
        torch.use_deterministic_algorithms(bool(mode), warn_only=mode == "warn")

    yield apply
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_deterministic_on_cuda_is_refused(deterministic) -> None:
    """The decoder's bilinear upsampling has no deterministic CUDA backward: say so before step one."""
    deterministic(True)
    with pytest.raises(ValueError, match="deterministic true on CUDA: the decoder's bilinear upsampling"):
        setup_fit(SimpleNamespace(root_device=torch.device("cuda", 0)))


@pytest.mark.parametrize(("mode", "device"), [(True, "cpu"), ("warn", "cuda"), (False, "cuda")])
def test_deterministic_allowed_where_it_runs(deterministic, mode: bool | str, device: str) -> None:
    deterministic(mode)
    setup_fit(SimpleNamespace(root_device=torch.device(device)))


@pytest.mark.parametrize("find_unused", [False, True])
def test_static_graph_is_refused(find_unused: bool) -> None:
    """Critic-only and generator batches have different graphs: DDP's static graph would be wrong."""
    strategy = DDPStrategy(static_graph=True, find_unused_parameters=find_unused)
    with pytest.raises(ValueError, match="cannot use static_graph=True"):
        setup_fit(strategy)


def test_find_unused_parameters_is_accepted() -> None:
    setup_fit(DDPStrategy(find_unused_parameters=True, parallel_devices=[torch.device("cpu")]))


def _engine_calls_without_devices(path) -> list[str]:
    text = path.read_text()
    found = []
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):
            name = getattr(node, "func", None)
            is_engine = (
                isinstance(node, ast.Call) and getattr(name, "id", getattr(name, "attr", "")) == "Engine"
            )
            if is_engine and not any(k.arg in {"devices", None} for k in node.keywords):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    # Docstring and Markdown examples: ``Engine(...)`` on one line.
    for number, line in enumerate(text.splitlines(), 1):
        if (
            re.search(r"(>>>|engine = |^\s*)Engine\([^)]*\)", line)
            and "devices=" not in line
            and path.suffix != ".py"
        ):
            found.append(f"{path.relative_to(REPO)}:{number}")
        if ">>>" in line and "Engine(" in line and "devices=" not in line:
            found.append(f"{path.relative_to(REPO)}:{number}")
    return found


def test_every_engine_in_tests_and_examples_runs_on_one_device() -> None:
    """On a multi-GPU host ``Engine()`` picks plain DDP, which SimSID refuses: pass devices=1."""
    paths = [
        *REPO.glob("tests/**/*.py"),
        *REPO.glob("src/**/*.py"),
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
    ]
    missing = [hit for path in paths for hit in _engine_calls_without_devices(path)]
    assert not missing, f"Engine(...) without devices=: {missing}"


@pytest.mark.parametrize("grid", [2, 3])
def test_patchify_and_stitch_keep_channels_last(grid: int) -> None:
    """A channels-last model's activations stay NHWC through the patch grid (no NCHW copy in between)."""
    x = torch.randn(2, 8, 12 * grid, 12 * grid)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    patches = patchify(x_cl, grid)
    assert patches.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(patches, patchify(x, grid))
    back = stitch(patches, grid)
    assert back.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(back, x)
    assert patchify(x, grid).is_contiguous()
    assert stitch(patchify(x, grid), grid).is_contiguous()


def test_cudnn_autotuning_is_on_for_a_cuda_fit_and_restored_after() -> None:
    """Fixed-size batches: cuDNN's autotuner picks the fastest kernels; other models keep their setting."""
    model = SimSID(**TINY_MODEL, visualizer=False)
    model._device = torch.device("cuda", 0)
    model._trainer = SimpleNamespace(precision="16-mixed", callback_metrics={})
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        model.on_fit_start()
        assert torch.backends.cudnn.benchmark is True
        model.on_fit_end()
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
