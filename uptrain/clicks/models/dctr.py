"""DCTR, the document-based click-through-rate model (Chuklin, Markov, de Rijke 2015, section 3.3).

Document d shown for query q is clicked with probability rho_qd wherever it is shown:
rho_qd = (prior * pseudo_count + clicks on (q, d)) / (pseudo_count + impressions of (q, d))
(closed-form MLE, smoothed; see :mod:`.base`). Clicks are independent, so the conditional
and marginal click probabilities are both rho_qd. An unseen pair gets ``prior`` (1/2 by
default, as PyClick's ``ParamMLE`` starts at 1/2). :meth:`relevance` is rho_qd.
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel


class DCTR(ClickModel):
    name = "dctr"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rho = np.zeros(0)

    def _fit(self, clog: ClickLog, progress: bool):
        pidx = clog.pairs()[0]
        shown = pidx >= 0
        P = len(self.pairs)
        clicks = np.bincount(pidx[shown], weights=clog.clicked[shown].astype(np.float64), minlength=P)
        imps = np.bincount(pidx[shown], minlength=P)
        self.rho = self._ratio(clicks, imps)
        return 1, True, None

    def set_params(self, ctr) -> "DCTR":
        self.rho = self._set_pairs(ctr, "ctr")
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        idx = self._lookup(clog)
        shown = clog.shown
        return self._finish(self._gather(self.rho, idx, shown, self.prior), shown)

    def relevance(self, query: str, doc: str) -> float:
        return self._pair_value(self.rho, query, doc, self.prior)

    def params(self) -> dict:
        self._require_fitted()
        return {"pairs": len(self.pairs), "ctr_mean": float(self.rho.mean()) if len(self.rho) else None,
                "default": self.prior}
