"""SimSID's generator: per-patch encoder, bottleneck in-painting, student decoder with memories, teacher.

See ``docs/method.md``, "Architecture".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import SKIP_LEVELS, SimSIDConfig
from .blocks import ResBlock, UpBlock, patchify, stitch
from .inpainting import InpaintingBlock
from .memory import MemoryQueue, WindowMemory


class Encoder(nn.Module):
    """Per-patch CNN shared by all patches: an input ResBlock, then ``level`` stride-2 ResBlocks."""

    def __init__(self, channels: list[int], grid: int, full_image_skips: int) -> None:
        super().__init__()
        self.grid = grid
        self.full_image_skips = full_image_skips
        self.inc = ResBlock(1, channels[0])
        self.downs = nn.ModuleList(
            ResBlock(channels[i], channels[i + 1], stride=2) for i in range(len(channels) - 1)
        )

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``(B*N, 1, P, P)`` patches; the first ``full_image_skips`` skips are stitched.

        Args:
            patches: the patch batch.

        Returns:
            The bottleneck feature and the skip of every stage.
        """
        x = self.inc(patches)
        skips = []
        for i, down in enumerate(self.downs):
            skips.append(stitch(x, self.grid) if i < self.full_image_skips else x)
            x = down(x)
        return x, skips


class Decoder(nn.Module):
    """U-Net-style decoder: skip concatenation on the ``skip_levels`` lowest levels, size-only above.

    The student owns a :class:`WindowMemory` after each concatenating level; the teacher has none.
    Per-patch maps are stitched into full images after the last concatenating level.
    """

    def __init__(
        self,
        channels: list[int],
        bottleneck: int,
        grid: int,
        skip_levels: int,
        num_slots: int,
        topk: int | None,
    ) -> None:
        super().__init__()
        level = len(channels) - 1
        self.grid = grid
        self.skip_levels = skip_levels
        self.ups = nn.ModuleList()
        self.memories = nn.ModuleList()
        spatial = bottleneck
        for j in range(level):
            s = level - 1 - j
            spatial *= 2
            concat = j < skip_levels
            self.ups.append(UpBlock(channels[s + 1], channels[s], channels[s], concat=concat))
            if concat and topk is not None:
                self.memories.append(WindowMemory(channels[s], spatial, num_slots, topk))
        self.out = nn.Conv2d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decode; returns the reconstruction in [-1, 1] and the feature after every level.

        Args:
            x: the bottleneck feature (in-painted for the student, raw for the teacher).
            skips: the encoder's skips, shallowest first.

        Returns:
            The reconstruction and the feature after every level.
        """
        features = []
        for j, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 1 - j])
            if j < len(self.memories):
                x = self.memories[j](x)
            if j == self.skip_levels - 1:
                x = stitch(x, self.grid)
            features.append(x)
        return torch.tanh(self.out(x)), features


@dataclass
class GeneratorOutput:
    """One generator pass: the student's reconstruction and features, bottleneck queries, the teacher's."""

    reconstruction: torch.Tensor
    features: list[torch.Tensor]
    queries: torch.Tensor
    teacher_reconstruction: torch.Tensor | None = None
    teacher_features: list[torch.Tensor] | None = None


class Generator(nn.Module):
    """Encoder, in-painting block, student decoder with memories and (training-only) teacher decoder.

    Args:
        config: the sizes (patch grid, depth, width) and the memory settings.
    """

    def __init__(self, config: SimSIDConfig) -> None:
        super().__init__()
        channels, bottleneck, grid = config.channels, config.bottleneck, config.num_patch
        self.grid = grid
        self.encoder = Encoder(channels, grid, full_image_skips=config.level - SKIP_LEVELS)
        self.inpainting = InpaintingBlock(
            channels[-1],
            bottleneck,
            grid,
            config.memory,
            config.num_slots,
            config.topk,
            mask_ratio=config.inpaint_mask_ratio,
        )
        self.student = Decoder(channels, bottleneck, grid, SKIP_LEVELS, config.num_slots, config.topk)
        self.teacher = Decoder(channels, bottleneck, grid, SKIP_LEVELS, config.num_slots, topk=None)

    def forward(self, image: torch.Tensor, teacher: bool = False) -> GeneratorOutput:
        """Reconstruct a 1-channel image in [-1, 1].

        Args:
            image: ``(B, 1, H, W)`` in [-1, 1].
            teacher: also run the teacher decoder (training losses and diagnostics only).

        Returns:
            The reconstruction, the student's features, the bottleneck queries and, if asked, the
            teacher's reconstruction and features.
        """
        bottleneck, skips = self.encoder(patchify(image, self.grid))
        inpainted, queries = self.inpainting(bottleneck)
        reconstruction, features = self.student(inpainted, skips)
        output = GeneratorOutput(reconstruction, features, queries)
        if teacher:
            output.teacher_reconstruction, output.teacher_features = self.teacher(
                bottleneck.detach(), [s.detach() for s in skips]
            )
        return output

    def write_memory(self, queries: torch.Tensor) -> None:
        """Store the bottleneck queries of a generator step in the queue (a no-op for a learned matrix).

        Args:
            queries: ``(B, N, d)`` bottleneck queries of the generator step.
        """
        if isinstance(self.inpainting.memory, MemoryQueue):
            self.inpainting.memory.write(queries)
