"""Datamodules: the built-in DigitAnatomy and the chest X-ray sets with the paper's protocols."""

from .digit_anatomy import DigitAnatomy

__all__ = ["DigitAnatomy"]
