"""The in-painting block at the bottleneck: space-aware memory plus neighbour attention.

See ``docs/method.md``, "Architecture".
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .memory import build_memory

# The 8 neighbours of a grid cell, row-major, centre excluded.
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def position_bits(num_positions: int) -> torch.Tensor:
    """Binary code of each grid position, most significant bit first, ``floor(log2 N) + 1`` bits.

    One bit more than needed for N = 4, exactly as released; kept for parameter-count parity.

    Args:
        num_positions: grid positions ``N``.

    Returns:
        ``(N, bits)`` float codes.
    """
    num_bits = math.floor(math.log2(num_positions)) + 1
    return torch.tensor(
        [[(i >> b) & 1 for b in reversed(range(num_bits))] for i in range(num_positions)]
    ).float()


class InpaintingBlock(nn.Module):
    """Replace each patch feature by a sparse read of its position's memory, then refine it.

    The query of the refining attention is the patch's *own* feature; keys and values are the
    memory reads of its 8 grid neighbours (zero vectors beyond the border, as released). The
    result gets a binary position code and is projected back to the bottleneck width.

    Args:
        channels: bottleneck channels ``C`` (the encoder's last width).
        spatial: bottleneck side length ``h`` per patch.
        num_patch: patches per image side; one memory per grid position.
        memory: ``"matrix"`` (learned) or ``"queue"`` (SQUID's FIFO).
        num_slots: slots per memory.
        topk: shrinkage rank (strict, so ``topk - 1`` slots survive).
        num_heads: attention heads.
        mask_ratio: probability that a bottleneck location takes the in-painted feature in training
            (1.0 = always; the rest passes the raw feature through).
    """

    def __init__(
        self,
        channels: int,
        spatial: int,
        num_patch: int,
        memory: str,
        num_slots: int,
        topk: int,
        num_heads: int = 8,
        mask_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        reduced = channels // 4
        self.num_patch = num_patch
        self.dim = reduced * spatial * spatial
        if self.dim % num_heads:
            msg = f"in-painting: memory dimension {self.dim} is not divisible by {num_heads} attention heads"
            raise ValueError(msg)
        self.mask_ratio = mask_ratio
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, reduced, 1, bias=False), nn.BatchNorm2d(reduced), nn.ReLU()
        )
        self.memory = build_memory(memory, num_patch * num_patch, num_slots, self.dim, topk)
        self.attention = nn.MultiheadAttention(self.dim, num_heads)
        self.norm1 = nn.LayerNorm(self.dim)
        self.norm2 = nn.LayerNorm(self.dim)
        hidden = self.dim // 4
        self.feed_forward = nn.Sequential(nn.Linear(self.dim, hidden), nn.ReLU(), nn.Linear(hidden, self.dim))
        self.register_buffer("bits", position_bits(num_patch * num_patch), persistent=False)
        self.restore = nn.Sequential(
            nn.Conv2d(reduced + self.bits.shape[1], channels, 1), nn.BatchNorm2d(channels), nn.ReLU()
        )

    def _neighbours(self, reads: torch.Tensor) -> torch.Tensor:
        """(B, N, d) memory reads -> (8, B*N, d) neighbour tokens, zero-padded at the grid border."""
        g = self.num_patch
        grid = F.pad(reads.unflatten(1, (g, g)), (0, 0, 1, 1, 1, 1))
        tokens = [grid[:, 1 + dy : 1 + dy + g, 1 + dx : 1 + dx + g] for dy, dx in _NEIGHBOURS]
        return torch.stack(tokens, dim=0).flatten(1, 3)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In-paint bottleneck ``features`` of shape ``(B*N, C, h, h)``.

        Returns the new features (same shape) and the memory queries ``(B, N, d)``, which a memory
        queue stores after the generator step.

        Args:
            features: bottleneck features ``(B*N, C, h, h)``.

        Returns:
            The in-painted features and the queries.
        """
        reduced = self.reduce(features)
        n = self.num_patch * self.num_patch
        query = reduced.flatten(1).unflatten(0, (-1, n))
        reads = self.memory(query)
        centre = reads.flatten(0, 1)
        tokens = self._neighbours(reads)
        attended, _ = self.attention(query.flatten(0, 1).unsqueeze(0), tokens, tokens, need_weights=False)
        u = F.relu(self.norm1(attended.squeeze(0)) + centre)
        v = F.relu(self.norm2(self.feed_forward(u)) + u)
        v = v.view_as(reduced)
        code = self.bits.repeat(v.shape[0] // n, 1)[:, :, None, None].expand(-1, -1, *v.shape[-2:])
        inpainted = self.restore(torch.cat([v, code.to(v.dtype)], dim=1))
        if self.training and self.mask_ratio < 1.0:
            keep = torch.bernoulli(torch.full_like(inpainted[:, :1], self.mask_ratio))
            inpainted = keep * inpainted + (1 - keep) * features
        return inpainted, query
