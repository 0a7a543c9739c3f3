"""Named training recipes: ``TrainConfig`` defaults chosen for one kind of data (``train --recipe NAME``).

A recipe changes only the defaults: whatever a caller gives explicitly (an option on the command line, a
keyword in Python) wins. ``ct`` was chosen by grouped cross-validation on the UCSD COVID-CT subset
(``benchmarks/ct_recipe_cv.py``; the table and the commands are in docs/CT.md)::

    python -m covid_tf train ~/data/covid-ct --out runs/ct --recipe ct
    cfg = TrainConfig.from_recipe("ct", data="~/data/covid-ct", epochs=10)   # epochs=10 wins over the recipe
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

LR_SCHEDULES = ("plateau", "cosine")

RECIPES: Mapping[str, Mapping[str, object]] = MappingProxyType({
    # The best pooled out-of-fold ROC-AUC of the confirmed candidates (0.709 against 0.705 for train's defaults,
    # paired difference +0.005 [-0.045, +0.056]: not separable from the defaults on 522 slices), with the lowest
    # spread over folds (SD 0.047 against 0.071), at the defaults' cost.
    "ct": MappingProxyType({"augmentation": "ct", "label_smoothing": 0.1, "lr_schedule": "cosine"}),
})


def recipe_overrides(name: str | None) -> dict[str, object]:
    """The ``TrainConfig`` fields that recipe ``name`` sets (an empty dict for ``None``), with ``recipe`` itself."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return {**RECIPES[name], "recipe": name}

