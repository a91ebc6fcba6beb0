"""Memories of normal patterns and their sparse read-out (see ``docs/method.md``, "Memories").

Every memory in SimSID is read the same way: dot-product logits against ``S`` slots, a softmax,
"Gumbel shrinkage" that keeps only the weights strictly above the k-th largest (so ``topk = 5``
keeps 4 slots, as in the released code), L1 re-normalisation, and a straight-through estimator
that sends the dense softmax gradient to all ``S`` logits.

Two storage kinds share that read:

* :class:`MemoryMatrix` -- a learned parameter (SimSID's "space-aware memory matrix");
* :class:`MemoryQueue` -- SQUID's FIFO queue of past normal queries, a non-trainable buffer that
  is written only after a generator step (never in validation, test or export).

:class:`WindowMemory` is the decoder's hierarchical memory built from a :class:`MemoryMatrix`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import patchify, stitch


def sparse_read(query: torch.Tensor, memory: torch.Tensor, topk: int) -> torch.Tensor:
    """Read ``memory`` (S x d) with ``query`` (B x d) through top-k shrinkage and straight-through.

    The forward weights are the softmax weights strictly above the ``topk``-th largest, L1
    normalised; the backward pass uses the dense softmax (``stopgrad(p_sparse - p) + p``). With
    ``topk <= 0`` the dense softmax is used as is. No data-dependent control flow, so it exports.

    Args:
        query: ``(B, d)``.
        memory: ``(S, d)``.
        topk: shrinkage rank; ``<= 0`` reads densely.

    Returns:
        ``(B, d)`` reads.
    """
    weights = torch.softmax(query @ memory.t(), dim=-1)
    if topk > 0:
        kth = torch.topk(weights, min(topk, weights.shape[-1]), dim=-1).values[..., -1:]
        sparse = weights * (weights > kth).to(weights.dtype)
        sparse = F.normalize(sparse, p=1, dim=-1)
        weights = (sparse - weights).detach() + weights
    return weights @ memory


def _uniform_slots(num_slots: int, slot_dim: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(slot_dim)
    return torch.empty(num_slots, slot_dim).uniform_(-bound, bound)


class MemoryMatrix(nn.Module):
    """A bank of ``num_memory`` learned memories, each ``num_slots`` x ``slot_dim``.

    Query ``j`` of a group reads memory ``j``: that is what makes the memory "space-aware".
    """

    def __init__(self, num_memory: int, num_slots: int, slot_dim: int, topk: int) -> None:
        super().__init__()
        self.topk = topk
        self.weight = nn.Parameter(
            torch.stack([_uniform_slots(num_slots, slot_dim) for _ in range(num_memory)])
        )

    @property
    def slots(self) -> torch.Tensor:
        """Memory contents, ``(num_memory, num_slots, slot_dim)``.

        Returns:
            The slots.
        """
        return self.weight

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """Read ``query`` of shape ``(B, num_memory, slot_dim)``; memory ``j`` serves column ``j``.

        Args:
            query: ``(B, num_memory, slot_dim)``.

        Returns:
            The reads, same shape.
        """
        return torch.stack(
            [sparse_read(query[:, j], mem, self.topk) for j, mem in enumerate(self.slots)], dim=1
        )


class MemoryQueue(MemoryMatrix):
    """SQUID's memory queue: the same read, but slots are recent normal queries, not parameters.

    Reads detach the memory, so gradient reaches only the query. :meth:`write` stores a batch of
    queries first-in-first-out with a circular pointer. Unlike the released code, the pointer is a
    persistent buffer, so a resumed run continues writing where it stopped.
    """

    def __init__(self, num_memory: int, num_slots: int, slot_dim: int, topk: int) -> None:
        nn.Module.__init__(self)
        self.topk = topk
        self.register_buffer(
            "memory", torch.stack([_uniform_slots(num_slots, slot_dim) for _ in range(num_memory)])
        )
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def slots(self) -> torch.Tensor:
        """Memory contents, detached: the queue never receives gradient.

        Returns:
            The queue's slots.
        """
        return self.memory.detach()

    @torch.no_grad()
    def write(self, queries: torch.Tensor) -> None:
        """Write ``queries`` of shape ``(B, num_memory, slot_dim)`` FIFO, ``B`` rows per memory.

        Args:
            queries: ``(B, num_memory, slot_dim)``.
        """
        num_slots = self.memory.shape[1]
        queries = queries.detach().to(self.memory.dtype)[-num_slots:]
        idx = (self.ptr + torch.arange(queries.shape[0], device=self.memory.device)) % num_slots
        self.memory[:, idx] = queries.transpose(0, 1)
        self.ptr.copy_((self.ptr + queries.shape[0]) % num_slots)


class WindowMemory(nn.Module):
    """Hierarchical decoder memory ("V1"): each 2x2 sub-window of a per-patch map reads its own memory.

    The memory index is the sub-window's position *inside the patch* and the same memories serve
    every patch, as in the released code (not the window's place in the whole image). The read always
    replaces the feature (mask ratio 1.0).
    """

    def __init__(self, channels: int, spatial: int, num_slots: int, topk: int) -> None:
        super().__init__()
        self.memory = MemoryMatrix(4, num_slots, channels * (spatial // 2) ** 2, topk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Read every sub-window of ``x`` (M, C, h, h) from memory and put the reads back in place.

        Args:
            x: per-patch feature maps ``(M, C, h, h)``.

        Returns:
            The reads, same shape.
        """
        windows = patchify(x, 2)
        reads = self.memory(windows.flatten(1).unflatten(0, (-1, 4)))
        return stitch(reads.reshape(windows.shape), 2)


def build_memory(kind: str, num_memory: int, num_slots: int, slot_dim: int, topk: int) -> MemoryMatrix:
    """Memory of the configured kind: ``"matrix"`` (learned) or ``"queue"`` (SQUID's FIFO).

    Args:
        kind: ``"matrix"`` or ``"queue"``.
        num_memory: memories (one per grid position).
        num_slots: slots per memory.
        slot_dim: length of a slot.
        topk: shrinkage rank of the read.

    Returns:
        The memory.
    """
    kinds = {"matrix": MemoryMatrix, "queue": MemoryQueue}
    if kind not in kinds:
        msg = f"memory kind must be one of {sorted(kinds)}, got {kind!r}"
        raise ValueError(msg)
    return kinds[kind](num_memory, num_slots, slot_dim, topk)
