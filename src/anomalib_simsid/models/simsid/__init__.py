"""SimSID for anomalib.

Paper: "Exploiting Structural Consistency of Chest Anatomy for Unsupervised Anomaly Detection in
Radiography Images" (Xiang et al., IEEE TPAMI 2024, https://arxiv.org/abs/2403.08689).
"""

from .config import SimSIDConfig
from .lightning_model import SimSID
from .torch_model import SimSIDModel

__all__ = ["SimSID", "SimSIDConfig", "SimSIDModel"]
