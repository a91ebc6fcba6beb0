"""Datamodules: the built-in DigitAnatomy and the chest X-ray sets with the paper's protocols."""

from .augmentation import simsid_train_augmentation
from .chexpert import CheXpert
from .covidx import COVIDx
from .digit_anatomy import DigitAnatomy
from .image_io import ImageReadError, read_image
from .xray_folder import XRayFolder
from .zhanglab import ZhangLab

__all__ = [
    "COVIDx",
    "CheXpert",
    "DigitAnatomy",
    "ImageReadError",
    "XRayFolder",
    "ZhangLab",
    "read_image",
    "simsid_train_augmentation",
]
