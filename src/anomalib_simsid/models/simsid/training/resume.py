"""RNG states in checkpoints, so that an interrupted run resumes onto the uninterrupted run's path.

Lightning restores weights, optimizers, schedulers and loop counters, but not the random number
generators. Without them a resumed run shuffles its next epoch differently (the training sampler
draws its permutation from the global torch RNG), draws other augmentations and other in-painting
masks, and ends with other weights than the same seed run in one go.

The states are stored as tensors and plain Python values only, because anomalib 2.7 and
Lightning load checkpoints with ``weights_only=True`` (numpy arrays would be refused).

Every rank draws from its own generators, so a checkpoint holds one state set per rank
(:func:`gather_rng_states`) and each rank restores its own. The CUDA state saved is that of the
rank's own device only: a resume on a machine with fewer (or other) visible GPUs restores it onto
the device the rank runs on, instead of indexing devices that are not there.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import distributed as dist

RNG_STATE_KEY = "simsid_rng_states"
# The run folder (``Engine``'s ``<root>/SimSID/<set>/v<n>``) that saved the checkpoint, so a resumed
# run writes into the same folder.
RUN_DIR_KEY = "simsid_run_dir"


def collect_rng_states() -> dict[str, Any]:
    """Global torch, numpy, Python and (if initialised) the current CUDA device's RNG states.

    Returns:
        The states, as tensors and plain values (checkpoint-safe).
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return states


def gather_rng_states() -> dict[str, Any]:
    """Every rank's :func:`collect_rng_states`, in rank order (one entry outside a process group).

    A collective under DDP: Lightning calls ``on_save_checkpoint`` on every rank, and rank 0 writes.
    """
    states = collect_rng_states()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return {"ranks": [states]}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, states)
    return {"ranks": ranks}


def rank_rng_states(saved: dict[str, Any], rank: int) -> dict[str, Any]:
    """Pick the states rank ``rank`` restores from a checkpoint's ``saved`` entry (old format too).

    A run resumed on more ranks than it was saved with cannot continue the extra ranks' streams;
    they take rank 0's states (with a warning), as every rank did before states were per rank.
    """
    if "ranks" not in saved:  # checkpoints written before states were per rank
        return saved
    ranks = saved["ranks"]
    if rank >= len(ranks):
        rank_zero_warn(
            f"SimSID resume: the checkpoint holds RNG states of {len(ranks)} rank(s), this run has more; "
            "ranks beyond them restore rank 0's states (their random streams do not continue exactly)"
        )
        return ranks[0]
    return ranks[rank]


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`; missing entries are left alone.

    A ``"cuda"`` list (every visible device's state, as checkpoints before per-rank states held)
    restores only the entry of the current device, if the list has one.

    Args:
        states: as :func:`collect_rng_states` returned them.
    """
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "numpy" in states:
        s = states["numpy"]
        keys = s["keys"].numpy().astype(np.uint32)
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "python" in states:
        s = states["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        device = torch.cuda.current_device()
        state = states["cuda"]
        if isinstance(state, (list, tuple)):
            if device >= len(state):
                return
            state = state[device]
        torch.cuda.set_rng_state(state.cpu(), device)
