"""Models of the plugin."""

from .simsid import SimSID, SimSIDModel

__all__ = ["SimSID", "SimSIDModel"]
