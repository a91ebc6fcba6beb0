"""anomalib-simsid: the SimSID chest X-ray anomaly detector as an anomalib 2.7 plugin.

Importing the package registers ``SimSID`` in ``anomalib.models`` and the datamodules in
``anomalib.data``, which ``get_model("SimSID")`` and ``anomalib benchmark`` need. Bare
``--model SimSID`` on the CLI additionally relies on the ``.pth`` autoload hook. It also applies the
SimSID-scoped fixes of anomalib 2.7 (:mod:`anomalib_simsid.fixes`); other models are untouched.
"""

import importlib
import warnings

with warnings.catch_warnings():
    # When this import is the first of anomalib.models, anomalib 2.7's Dinomaly emits two
    # FutureWarnings about its own imports (timm.models.layers, components.dinov2): not the user's.
    warnings.filterwarnings("ignore", r"Importing from timm\.models\.layers", FutureWarning)
    warnings.filterwarnings("ignore", r"The anomalib\.models\.components\.dinov2 package", FutureWarning)
    from .data import CheXpert, COVIDx, DigitAnatomy, XRayFolder, ZhangLab
    from .models import SimSID, SimSIDModel

__all__ = ["COVIDx", "CheXpert", "DigitAnatomy", "SimSID", "SimSIDModel", "XRayFolder", "ZhangLab"]
__version__ = "0.1.0"

_EXPORTS = {
    "anomalib.models": ["SimSID"],
    "anomalib.data": ["COVIDx", "CheXpert", "DigitAnatomy", "XRayFolder", "ZhangLab"],
}


def _register() -> None:
    # import_module, not attribute access: the autoload hook runs while ``anomalib.models`` is
    # still being bound to its parent package.
    for module_name, names in _EXPORTS.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, globals()[name])


_register()

from .fixes import apply_pending as _apply_fixes  # noqa: E402  (after registration)

_apply_fixes(import_missing=True)
