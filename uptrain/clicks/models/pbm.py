"""PBM, the position-based model (Chuklin, Markov, de Rijke 2015, section 3.4; Craswell et al. 2008).

A document is clicked iff the user examines its rank and finds it attractive, independently:
P(C_r = 1) = gamma_r * alpha_qd, with examination gamma_r per rank and attractiveness
alpha_qd per (query, document). Clicks are independent given the parameters, so the
conditional and marginal click probabilities coincide.

Fit by EM (section 4.3 of the book): for a skipped (unclicked) rank the posteriors are
P(E = 1 | C = 0) = gamma (1 - alpha) / (1 - gamma alpha) and
P(A = 1 | C = 0) = alpha (1 - gamma) / (1 - gamma alpha), a click sets both to 1; each
M-step is ``(prior * pseudo_count + sum of posteriors) / (pseudo_count + impressions)`` over
the pair's (for alpha) or the rank's (for gamma) impressions (:mod:`.base`). Identifiability:
the likelihood only sees products gamma_r alpha_qd, so (c gamma, alpha / c) fits equally
well; the pseudo-count prior picks one scale, and comparisons with known parameters
should compare gamma_r / gamma_0.

Unseen pairs get ``prior`` (1/2 by default) as attractiveness; :meth:`relevance` is alpha_qd.
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel


class PBM(ClickModel):
    name = "pbm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = np.zeros(0)
        self.gamma: np.ndarray | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        pidx = clog.pairs()[0]
        shown = pidx >= 0
        n, R = pidx.shape
        P = len(self.pairs)
        # Sufficient statistics: clicks and skips per (pair, rank) cell, so each EM step costs
        # O(cells) instead of O(sessions x ranks).
        key = (pidx * R + np.arange(R)[None, :])[shown]
        cells, inv = np.unique(key, return_inverse=True)
        clicks = np.bincount(inv, weights=clog.clicked[shown].astype(np.float64))
        skips = np.bincount(inv).astype(np.float64) - clicks
        p_c, r_c = cells // R, cells % R
        imp_pair = np.bincount(p_c, weights=clicks + skips, minlength=P)
        imp_rank = np.bincount(r_c, weights=clicks + skips, minlength=R)
        self.alpha = np.full(P, self.prior)
        self.gamma = np.full(R, self.prior)

        def step() -> float:
            a = self.alpha[p_c]
            g = self.gamma[r_c]
            pc = np.clip(a * g, self.eps, 1 - self.eps)
            skip = 1 - pc
            obj = (float((clicks * np.log(pc) + skips * np.log(skip)).sum()) + self._log_prior(self.alpha, self.gamma)) / n
            post_a = clicks + skips * (a * (1 - g) / skip)
            post_e = clicks + skips * (g * (1 - a) / skip)
            self.alpha = self._ratio(np.bincount(p_c, weights=post_a, minlength=P), imp_pair)
            self.gamma = self._ratio(np.bincount(r_c, weights=post_e, minlength=R), imp_rank)
            return float(obj)

        return self._em(step, progress)

    def set_params(self, attractiveness, examination) -> "PBM":
        self.alpha = self._set_pairs(attractiveness, "attractiveness")
        ex = np.asarray(examination, dtype=np.float64)
        self.gamma = self._rank_array(ex, "examination", (ex.size,)).copy()
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        gamma = self._fit_ranks(clog.n_ranks, self.gamma, "examination")[: clog.n_ranks]
        idx = self._lookup(clog)
        shown = clog.shown
        a = self._gather(self.alpha, idx, shown, self.prior)
        return self._finish(a * gamma[None, :], shown)

    def relevance(self, query: str, doc: str) -> float:
        return self._pair_value(self.alpha, query, doc, self.prior)

    def params(self) -> dict:
        self._require_fitted()
        return {"examination": [float(x) for x in self.gamma], "pairs": len(self.pairs),
                "attractiveness_mean": float(self.alpha.mean()) if len(self.alpha) else None, "default": self.prior}
