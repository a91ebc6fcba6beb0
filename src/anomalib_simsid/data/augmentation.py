"""Training augmentations shared by the datamodules.

SimSID trains on normals only and relies on a fixed anatomical layout, so its training augmentation is
deliberately mild: a few percent of shift and zoom, no rotation or flip (which would change the layout
it is meant to learn). Nearest interpolation and black fill keep the grey levels of the input.
"""

from __future__ import annotations

from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import RandomAffine, Transform


def simsid_train_augmentation() -> Transform:
    """Return the SimSID training augmentation: random shift of up to 5 % and zoom of 0.95-1.05."""
    return RandomAffine(
        degrees=0,
        translate=(0.05, 0.05),
        scale=(0.95, 1.05),
        interpolation=InterpolationMode.NEAREST,
        fill=0,
    )
