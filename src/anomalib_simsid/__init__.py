"""anomalib-simsid: the SimSID chest X-ray anomaly detector as an anomalib 2.7 plugin.

Importing the package registers ``SimSID`` in ``anomalib.models`` and the datamodules in
``anomalib.data``, which ``get_model("SimSID")`` and ``anomalib benchmark`` need. Bare
``--model SimSID`` on the CLI additionally relies on the ``.pth`` autoload hook.
"""

import anomalib.data
import anomalib.models

from .data import DigitAnatomy
from .models import SimSID, SimSIDModel

__all__ = ["DigitAnatomy", "SimSID", "SimSIDModel"]
__version__ = "0.1.0"


def _register() -> None:
    for name in ("SimSID",):
        setattr(anomalib.models, name, globals()[name])
    for name in ("DigitAnatomy",):
        setattr(anomalib.data, name, globals()[name])


_register()
