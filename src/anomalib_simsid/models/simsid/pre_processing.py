"""SimSID's pre-processing: the one resize every path uses (training, export, folder scoring, benchmarks).

The network is defined on ``img_size`` square inputs; images reach it through an antialiased bicubic
resize and a [0, 1] -> [-1, 1] scaling. Deploy and benchmark code import :func:`simsid_resize` rather
than rebuilding it, so deployed scores cannot drift from trained ones.
"""

from __future__ import annotations

from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Compose, InterpolationMode, Normalize, Resize


def simsid_resize(size: tuple[int, int]) -> Resize:
    """Build the resize SimSID trains with: bicubic, antialiased (an exported graph's own is not)."""
    return Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)


def simsid_pre_processor(image_size: tuple[int, int]) -> PreProcessor:
    """Resize to the model size and scale [0, 1] to [-1, 1] (``(x - 0.5) / 0.5``).

    Only allow-listed transforms, so the pre-processor is restored from checkpoints and exported.
    """
    return PreProcessor(
        transform=Compose([simsid_resize(image_size), Normalize(mean=[0.5] * 3, std=[0.5] * 3)])
    )
