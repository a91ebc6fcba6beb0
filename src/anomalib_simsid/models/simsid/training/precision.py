"""fp32 scoring under any training precision: scores, thresholds and statistics match the export."""

from __future__ import annotations

import contextlib

import torch


def full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """Switch autocast off where it is on, so that scores are fp32 whatever the training precision.

    Under ``16-mixed``/``bf16-mixed`` Lightning runs validation, test and predict inside autocast; the
    memory read's top-k then flips on near-ties and the score, threshold and min/max would come from
    other numbers than the exported fp32 graph computes. Where autocast is off (CPU fp32, export
    tracing) this is a no-op and leaves no trace in a graph.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.

    Returns:
        A context manager.
    """
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
