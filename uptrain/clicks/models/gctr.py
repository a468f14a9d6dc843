"""GCTR, the global click-through-rate model (Chuklin, Markov, de Rijke 2015, section 3.1).

Every shown document is clicked with one probability rho, whatever its rank, query or
document: rho = (prior * pseudo_count + clicks) / (pseudo_count + impressions) over all shown
(session, rank) cells of the training log (closed-form MLE, smoothed; see :mod:`.base`).
Clicks are independent, so the conditional and marginal click probabilities are both rho.
:meth:`relevance` is rho for every pair (the model has no per-document parameter).
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel


class GCTR(ClickModel):
    name = "gctr"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rho: float | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        shown = clog.shown
        self.rho = float(self._ratio((clog.clicked & shown).sum(), shown.sum()))
        return 1, True, None

    def set_params(self, ctr: float) -> "GCTR":
        self.rho = float(self._rank_array([ctr], "ctr", (1,))[0])
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        self._lookup(clog)
        shown = clog.shown
        return self._finish(np.full(shown.shape, self.rho), shown)

    def relevance(self, query: str, doc: str) -> float:
        self._require_fitted()
        return float(self.rho)

    def relevance_table(self) -> dict:
        return {k: float(self.rho) for k in self.pairs.keys}

    def params(self) -> dict:
        self._require_fitted()
        return {"ctr": float(self.rho), "pairs": len(self.pairs)}
