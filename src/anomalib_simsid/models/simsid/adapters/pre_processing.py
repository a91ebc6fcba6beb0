"""SimSID's pre-processing: the one resize every path uses (training, export, folder scoring, benchmarks).

The network is defined on ``img_size`` square inputs; images reach it through an antialiased bicubic
resize and a [0, 1] -> [-1, 1] scaling. A user's own pre-processor must resize to the same size
(:func:`check_pre_processor_size`). Deploy and benchmark code import :func:`simsid_resize` rather
than rebuilding it, so deployed scores cannot drift from trained ones.
"""

from __future__ import annotations

from anomalib.data.transforms.utils import extract_transforms_by_type
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Compose, InterpolationMode, Normalize, Resize


def simsid_resize(size: tuple[int, int]) -> Resize:
    """Build the resize SimSID trains with: bicubic, antialiased (an exported graph's own is not).

    Args:
        size: ``(height, width)``.

    Returns:
        The torchvision transform.
    """
    return Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)


def simsid_pre_processor(image_size: tuple[int, int]) -> PreProcessor:
    """Resize to the model size and scale [0, 1] to [-1, 1] (``(x - 0.5) / 0.5``).

    Only allow-listed transforms, so the pre-processor is restored from checkpoints and exported.

    Args:
        image_size: ``(height, width)``, the model's ``img_size`` square.

    Returns:
        The pre-processor.
    """
    return PreProcessor(
        transform=Compose([simsid_resize(image_size), Normalize(mean=[0.5] * 3, std=[0.5] * 3)])
    )


def check_pre_processor_size(pre_processor: PreProcessor, img_size: int) -> None:
    """Raise a clear error when a user-given pre-processor resizes to another size than the network's.

    Without the check a mismatched resize would fail deep inside the patch grid, or (for a size the
    grid accepts) train on one size and deploy on another.

    Args:
        pre_processor: the user's pre-processor.
        img_size: the model's input side.
    """
    for resize in extract_transforms_by_type(pre_processor.transform, Resize):
        size = [resize.size] if isinstance(resize.size, int) else list(resize.size)
        if any(side != img_size for side in size):
            msg = (
                f"pre_processor resizes to {tuple(size)}, but the model's img_size is {img_size}: set "
                f"img_size to the pre-processor's size, or build the pre-processor with "
                f"SimSID.configure_pre_processor(({img_size}, {img_size}))"
            )
            raise ValueError(msg)
