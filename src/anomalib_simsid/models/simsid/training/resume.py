"""RNG states in checkpoints, so that an interrupted run resumes onto the uninterrupted run's path.

Lightning restores weights, optimizers, schedulers and loop counters, but not the random number
generators. Without them a resumed run shuffles its next epoch differently (the training sampler
draws its permutation from the global torch RNG), draws other augmentations and other in-painting
masks, and ends with other weights than the same seed run in one go.

The states are stored as tensors and plain Python values only, because anomalib 2.7 and
Lightning load checkpoints with ``weights_only=True`` (numpy arrays would be refused).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RNG_STATE_KEY = "simsid_rng_states"
# The run folder (``Engine``'s ``<root>/SimSID/<set>/v<n>``) that saved the checkpoint, so a resumed
# run writes into the same folder.
RUN_DIR_KEY = "simsid_run_dir"


def collect_rng_states() -> dict[str, Any]:
    """Global torch (and CUDA, if initialised), numpy and Python RNG states, checkpoint-safe.

    Returns:
        The states, as tensors and plain values.
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
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`; missing entries are left alone.

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
        torch.cuda.set_rng_state_all(states["cuda"])
