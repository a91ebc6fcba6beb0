"""Resume RNG on GPU machines, with a fake CUDA RNG: fewer visible devices, and one state set per rank.

``torch.cuda``'s RNG functions are replaced by a table of per-device states (:func:`fake_cuda_rng`),
so a machine with any number of GPUs can be played without one; a device index beyond the table
raises ``IndexError`` as ``torch.cuda.default_generators[index]`` does.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from anomalib_simsid.models.simsid.training.resume import RNG_STATE_KEY, collect_rng_states
from tests.helpers import TINY_MODEL


class FakeCudaRNG:
    """Per-device CUDA RNG states of a machine with ``count`` GPUs, this process on ``current``."""

    def __init__(self, count: int, current: int = 0) -> None:
        self.states = [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(count)]
        self.current = current

    def _index(self, device: int | str | torch.device = "cuda") -> int:
        index = torch.device("cuda", device).index if isinstance(device, int) else torch.device(device).index
        index = self.current if index is None else index
        if index >= len(self.states):
            raise IndexError("list index out of range")  # torch.cuda.default_generators[index]
        return index

    def get_rng_state(self, device: int | str | torch.device = "cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        self.states[self._index(device)] = state.clone()


@pytest.fixture
def fake_cuda_rng(monkeypatch: pytest.MonkeyPatch):
    """Install a :class:`FakeCudaRNG` factory: ``machine(count, current)`` switches the visible GPUs."""
    holder: dict[str, FakeCudaRNG] = {}

    def machine(count: int, current: int = 0) -> FakeCudaRNG:
        rng = FakeCudaRNG(count, current)
        holder["rng"] = rng
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, "get_rng_state", rng.get_rng_state)
            monkeypatch.setattr(module, "set_rng_state", rng.set_rng_state)
            monkeypatch.setattr(module, "device_count", lambda: len(holder["rng"].states))
            monkeypatch.setattr(module, "current_device", lambda: holder["rng"].current)
            monkeypatch.setattr(module, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        return rng

    return machine


def fitting_model(rank: int = 0):
    """A tiny SimSID attached to a stand-in trainer that is fitting, as rank ``rank``."""
    from anomalib_simsid import SimSID

    model = SimSID(**TINY_MODEL, visualizer=False)
    model._trainer = SimpleNamespace(
        state=SimpleNamespace(fn="fit"), global_rank=rank, default_root_dir="run"
    )
    return model


def test_resume_on_a_machine_with_fewer_gpus(fake_cuda_rng) -> None:
    """Saved on a 2-GPU machine, resumed on a 1-GPU one: the rank's own CUDA stream continues.

    The old code saved every visible device's state and restored them all (``IndexError``).
    """
    saving = fake_cuda_rng(count=2, current=0)
    saving.states[0] = torch.full((16,), 7, dtype=torch.uint8)
    model = fitting_model()
    checkpoint = model_checkpoint(model)
    model.on_save_checkpoint(checkpoint)
    resuming = fake_cuda_rng(count=1, current=0)
    fitting_model().on_load_checkpoint(checkpoint)
    assert torch.equal(resuming.states[0], torch.full((16,), 7, dtype=torch.uint8))


def test_old_checkpoint_with_every_device_resumes_on_fewer_gpus(fake_cuda_rng) -> None:
    """A checkpoint of the old format (a list of all devices' states) resumes on one GPU."""
    old = collect_rng_states() | {
        "cuda": [torch.full((16,), 3, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)]
    }
    resuming = fake_cuda_rng(count=1, current=0)
    model = fitting_model()
    model.on_load_checkpoint({**model_checkpoint(model), RNG_STATE_KEY: old})
    assert torch.equal(resuming.states[0], torch.full((16,), 3, dtype=torch.uint8))


def test_each_ddp_rank_restores_its_own_states(fake_cuda_rng) -> None:
    """Under DDP rank r continues rank r's CUDA and CPU streams, not rank 0's (the old behaviour)."""
    rank_states = []
    for rank in range(2):
        rng = fake_cuda_rng(count=2, current=rank)
        rng.states[rank] = torch.full((16,), 100 + rank, dtype=torch.uint8)
        torch.default_generator.manual_seed(1000 + rank)
        rank_states.append(collect_rng_states())
    checkpoint = {RNG_STATE_KEY: {"ranks": rank_states}}
    model = fitting_model(rank=1)
    resuming = fake_cuda_rng(count=2, current=1)
    torch.default_generator.manual_seed(0)
    model.on_load_checkpoint({**model_checkpoint(model), **checkpoint})
    assert torch.equal(resuming.states[1], torch.full((16,), 101, dtype=torch.uint8))
    assert torch.equal(torch.get_rng_state(), rank_states[1]["torch"])


def test_more_ranks_than_saved_take_rank_zero_with_a_warning(fake_cuda_rng) -> None:
    from anomalib_simsid.models.simsid.training.resume import gather_rng_states, rank_rng_states

    fake_cuda_rng(count=1)
    saved = gather_rng_states()
    with pytest.warns(UserWarning, match="RNG states of 1 rank"):
        assert rank_rng_states(saved, rank=3) is saved["ranks"][0]


def model_checkpoint(model) -> dict:
    """The keys Lightning's checkpoint of ``model`` holds that SimSID's load hook checks."""
    import lightning

    return {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
