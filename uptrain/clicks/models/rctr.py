"""RCTR, the rank-based click-through-rate model (Chuklin, Markov, de Rijke 2015, section 3.2).

A document shown at rank r is clicked with probability rho_r, independently of the query,
the document and the other clicks: rho_r = (prior * pseudo_count + clicks at r) /
(pseudo_count + impressions at r) (closed-form MLE, smoothed; see :mod:`.base`). Conditional
and marginal click probabilities are both rho_r. The model has no per-document parameter:
:meth:`relevance` is the global CTR of the training log (the impression-weighted mean of
rho_r) for every pair.
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel


class RCTR(ClickModel):
    name = "rctr"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rho: np.ndarray | None = None
        self.global_ctr: float | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        shown = clog.shown
        clicks = (clog.clicked & shown).sum(axis=0)
        self.rho = self._ratio(clicks, shown.sum(axis=0))
        self.global_ctr = float(self._ratio(clicks.sum(), shown.sum()))
        return 1, True, None

    def set_params(self, ctr) -> "RCTR":
        arr = np.asarray(ctr, dtype=np.float64)
        self.rho = self._rank_array(arr, "ctr", (arr.size,)).copy()
        self.global_ctr = float(self.rho.mean())
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        rho = self._fit_ranks(clog.n_ranks, self.rho, "rank CTR")[: clog.n_ranks]
        self._lookup(clog)
        shown = clog.shown
        return self._finish(np.broadcast_to(rho[None, :], shown.shape), shown)

    def relevance(self, query: str, doc: str) -> float:
        self._require_fitted()
        return float(self.global_ctr)

    def relevance_table(self) -> dict:
        return {k: float(self.global_ctr) for k in self.pairs.keys}

    def params(self) -> dict:
        self._require_fitted()
        return {"ctr_at": [float(x) for x in self.rho], "ctr": float(self.global_ctr), "pairs": len(self.pairs)}
