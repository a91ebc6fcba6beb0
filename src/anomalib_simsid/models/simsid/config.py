"""What a SimSID torch model is built from: one frozen record, passed once from the Lightning module down.

Every network size derives from ``img_size``, ``num_patch``, ``level`` and ``base_width``, so the
paper model (128 px, 2x2 patches, level 4, width 32) and a small demo model are one line apart.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORES = ("critic", "calibrated_residual")
# Decoder levels that concatenate encoder skips and read decoder memories (the released model's 2).
SKIP_LEVELS = 2


@dataclass(frozen=True)
class SimSIDConfig:
    """Sizes and options of the generator, the critic and the score (see :class:`~.SimSID` for each).

    Raises:
        ValueError: a size the patch grid, the encoder or the critic cannot take, or an unknown score.
    """

    img_size: int = 128
    num_patch: int = 2
    level: int = 4
    base_width: int = 32
    memory: str = "matrix"
    num_slots: int = 200
    topk: int = 5
    inpaint_mask_ratio: float = 1.0
    disc_eval_norm: str = "per_sample"
    score: str = "critic"

    def __post_init__(self) -> None:
        if self.img_size % 32:
            msg = f"img_size must be a multiple of 32 (the critic halves it 5 times), got {self.img_size}"
            raise ValueError(msg)
        if self.score not in SCORES:
            msg = f"score must be one of {SCORES}, got {self.score!r}"
            raise ValueError(msg)
        size, grid, level = self.img_size, self.num_patch, self.level
        patch = size // grid
        if size % grid or patch % 2**level or patch // 2**level < 1:
            msg = (
                f"img_size {size} cannot be cut into a {grid}x{grid} patch grid whose patches "
                f"halve {level} times: img_size must be a multiple of "
                f"num_patch * 2**level = {grid * 2**level}"
            )
            raise ValueError(msg)
        if level < SKIP_LEVELS:
            msg = f"level must be at least {SKIP_LEVELS} (the decoder's skip levels), got {level}"
            raise ValueError(msg)

    @property
    def channels(self) -> list[int]:
        """Encoder widths: ``base_width`` doubled at each of the ``level`` stages."""
        return [self.base_width * 2**i for i in range(self.level + 1)]

    @property
    def bottleneck(self) -> int:
        """Side of a patch's bottleneck feature map."""
        return self.img_size // self.num_patch // 2**self.level
