"""SimSID's space-aware memory and in-painting block on a frozen feature grid (the product modules).

Each grid position of the cached feature map is one SimSID "patch" of spatial size 1: the product's
:class:`~anomalib_simsid.models.simsid.networks.inpainting.InpaintingBlock` (``num_patch = grid``,
so one :class:`~anomalib_simsid.models.simsid.networks.memory.MemoryMatrix` per position, sparse top-k
read, attention of
each position over its 8 neighbours' memory reads, binary position code) followed by a linear 1x1
head back to the feature width (the pixel model's decoder has no counterpart here: the target is the
feature itself). The model is trained to reproduce each position's standardised feature; the anomaly
map is the per-position error.

``masked=True`` in-paints from context only: each position's own query is replaced by a learned mask
token for its own memory read and for the attention query, while its neighbours' reads still come
from their real features, so one pass in-paints every position from its neighbours' memory reads.
(The product block's ``forward`` reads the centre from the position's own feature; this path reuses
the block's layers in the same order and changes only that query.)
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from anomalib_simsid.models.simsid.networks.inpainting import InpaintingBlock
from anomalib_simsid.models.simsid.networks.memory import MemoryMatrix


class GridMemory(MemoryMatrix):
    """:class:`MemoryMatrix` read for all memories at once (one batched matmul instead of a loop).

    The same parameter, the same read as :func:`~anomalib_simsid.models.simsid.networks.memory.sparse_read`
    (softmax, keep weights strictly above the k-th largest, L1 re-normalise, straight-through), only
    vectorised over the ``num_memory`` positions: with 256 grid positions the product's Python loop
    made a training step ~10x slower. ``tests``-style check: :func:`check_grid_memory`.
    """

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """Read ``query (B, M, d)``: memory ``j`` serves column ``j``."""
        memory = self.slots
        weights = torch.softmax(torch.einsum("bmd,msd->bms", query, memory), dim=-1)
        if self.topk > 0:
            kth = torch.topk(weights, min(self.topk, weights.shape[-1]), dim=-1).values[..., -1:]
            sparse = F.normalize(weights * (weights > kth).to(weights.dtype), p=1, dim=-1)
            weights = (sparse - weights).detach() + weights
        return torch.einsum("bms,msd->bmd", weights, memory)


def check_grid_memory(num_memory: int = 6, num_slots: int = 10, dim: int = 4, topk: int = 5) -> float:
    """Largest difference between :class:`GridMemory` and the product's read, values and gradients."""
    torch.manual_seed(0)
    ref = MemoryMatrix(num_memory, num_slots, dim, topk)
    fast = GridMemory(num_memory, num_slots, dim, topk)
    fast.load_state_dict(ref.state_dict())
    query = torch.randn(3, num_memory, dim, requires_grad=True)
    a, b = ref(query), fast(query)
    ga = torch.autograd.grad(a.square().sum(), [query, ref.weight])
    gb = torch.autograd.grad(b.square().sum(), [query, fast.weight])
    return max((a - b).abs().max().item(), *((x - y).abs().max().item() for x, y in zip(ga, gb, strict=True)))


def heads_for(dim: int, wanted: int = 8) -> int:
    """Return the most attention heads (at most ``wanted``) that divide the memory width ``dim``."""
    return next(h for h in range(min(wanted, dim), 0, -1) if dim % h == 0)


class FeatureSimSID(nn.Module):
    """In-painting block + linear head on a ``grid x grid`` map of ``channels``-wide features."""

    def __init__(
        self, channels: int, grid: int, num_slots: int = 200, topk: int = 5, masked: bool = False
    ) -> None:
        super().__init__()
        self.grid, self.masked = grid, masked
        dim = channels // 4
        self.block = InpaintingBlock(channels, 1, grid, "matrix", num_slots, topk, num_heads=heads_for(dim))
        fast = GridMemory(grid * grid, num_slots, dim, topk)
        fast.load_state_dict(self.block.memory.state_dict())
        self.block.memory = fast  # same parameter and read, vectorised over positions
        self.head = nn.Conv2d(channels, channels, 1)
        self.mask_token = nn.Parameter(torch.zeros(dim)) if masked else None

    def _inpaint_from_context(self, features: torch.Tensor) -> torch.Tensor:
        b = self.block
        n = self.grid * self.grid
        reduced = b.reduce(features)
        query = reduced.flatten(1).unflatten(0, (-1, n))
        tokens = b._neighbours(b.memory(query))
        own = self.mask_token.expand_as(query)
        centre = b.memory(own).flatten(0, 1)
        attended, _ = b.attention(own.flatten(0, 1).unsqueeze(0), tokens, tokens, need_weights=False)
        u = F.relu(b.norm1(attended.squeeze(0)) + centre)
        v = F.relu(b.norm2(b.feed_forward(u)) + u).view_as(reduced)
        code = b.bits.repeat(v.shape[0] // n, 1)[:, :, None, None].to(v.dtype)
        return b.restore(torch.cat([v, code], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, P, C)`` standardised features -> their in-painted reconstruction, same shape."""
        features = x.flatten(0, 1)[:, :, None, None]
        inpainted = self._inpaint_from_context(features) if self.masked else self.block(features)[0]
        return self.head(inpainted).view_as(x)


def train(
    model: FeatureSimSID, optimiser: torch.optim.Optimizer, z: np.ndarray, epochs: int, seed: int,
    batch: int = 32, start_epoch: int = 0,
) -> list[float]:  # fmt: skip
    """Train on standardised features ``z (N, P, C)`` with MSE; returns seconds per epoch.

    The model is initialised under ``seed`` by the caller (``torch.manual_seed`` before building it).
    Epoch ``e`` shuffles with seed ``(seed, e)``, so a run continued with ``start_epoch`` and the same
    optimiser (5 + 5 epochs) equals one of 10 epochs.
    """
    data = torch.from_numpy(z).float()
    times = []
    model.train()
    for epoch in range(start_epoch, start_epoch + epochs):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        start = time.perf_counter()
        for idx in torch.randperm(len(data), generator=generator).split(batch):
            x = data[idx]
            loss = F.mse_loss(model(x), x)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def residuals(model: FeatureSimSID, z: np.ndarray, batch: int = 64) -> np.ndarray:
    """In-painting residual ``x_hat - x`` of standardised features, eval mode, ``(N, P, C)``."""
    model.eval()
    data = torch.from_numpy(z).float()
    return torch.cat([model(x) - x for x in data.split(batch)]).numpy()
