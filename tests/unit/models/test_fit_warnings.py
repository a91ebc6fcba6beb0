"""The undertrained-score warning never says "0.500, below 0.5"."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from anomalib_simsid import SimSID
from tests.helpers import TINY_MODEL


@pytest.mark.parametrize(("auroc", "shown"), [(0.4996, "0.499"), (0.3, "0.300")])
def test_auroc_below_half_is_shown_below_half(auroc: float, shown: str) -> None:
    model = SimSID(**TINY_MODEL)
    model._trainer = SimpleNamespace(callback_metrics={"image_AUROC": torch.tensor(auroc)})
    with pytest.warns(UserWarning, match=f"after fitting is {shown}, below 0.5"):
        model.on_fit_end()
