"""DCM, the dependent click model (Chuklin, Markov, de Rijke 2015, section 3.6; Guo et al. 2009).

The cascade model with more than one click: E_0 = 1, C_r = E_r A_r (A_r ~ alpha_qd); after a
skip the user goes on (P(E_{r+1} = 1 | E_r = 1, C_r = 0) = 1), after a click at rank r they go
on with the rank's continuation probability lambda_r (1 - lambda_r is the satisfaction).
Marginals: P(E_{r+1}) = P(E_r) (1 - alpha_r + alpha_r lambda_r), P(C_r = 1) = P(E_r) alpha_r.
Conditionally on the clicks above, filtering the examination: after a click at r,
P(E_{r+1} = 1 | C_<=r) = lambda_r; after a skip, P(E_{r+1} = 1 | C_<=r) = e_r (1 - alpha_r) / (1 - e_r alpha_r).

Fit by the book's closed-form MLE (section 4.2, as Guo et al. and PyClick): the user is taken
to have examined every rank up to the last click and to have left after it, so
alpha_qd = clicks / impressions over the ranks up to and including the last click (all ranks
of a session without clicks) and lambda_r = 1 - (sessions whose last click is at r) /
(clicks at r), both smoothed with the pseudo-count prior (:mod:`.base`). This is an
approximation: it ignores the chance that the user went on after the last click and found
nothing attractive below, so it is not the exact maximum of the DCM likelihood (the book says so).

Unseen pairs get ``prior`` (1/2 by default); :meth:`relevance` is alpha_qd.
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel, last_click_rank


class DCM(ClickModel):
    name = "dcm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = np.zeros(0)
        self.lam: np.ndarray | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        pidx = clog.pairs()[0]
        n, R = pidx.shape
        clicked = clog.clicked & (pidx >= 0)
        last = last_click_rank(clicked)
        upto = np.where(last >= 0, last, R - 1)
        ranks = np.arange(R)[None, :]
        use = (pidx >= 0) & (ranks <= upto[:, None])
        P = len(self.pairs)
        clicks = np.bincount(pidx[use], weights=clicked[use].astype(np.float64), minlength=P)
        imps = np.bincount(pidx[use], minlength=P)
        self.alpha = self._ratio(clicks, imps)
        clicks_at = clicked.sum(axis=0).astype(np.float64)
        last_at = np.bincount(last[last >= 0], minlength=R).astype(np.float64)
        self.lam = self._ratio(clicks_at - last_at, clicks_at)
        p = self.click_probabilities_from(self._arrays(clog, self.alpha[np.maximum(pidx, 0)] * (pidx >= 0)), clicked, True)
        obj = np.log(np.where(clicked, p, 1 - p)[pidx >= 0]).sum() + self._log_prior(self.alpha, self.lam)
        return 1, True, float(obj / n)

    def _arrays(self, clog, a):
        return a, self.lam[: clog.n_ranks]

    def set_params(self, attractiveness, continuation) -> "DCM":
        self.alpha = self._set_pairs(attractiveness, "attractiveness")
        lam = np.asarray(continuation, dtype=np.float64)
        self.lam = self._rank_array(lam, "continuation", (lam.size,)).copy()
        return self._done_setting()

    @staticmethod
    def click_probabilities_from(arrays, clicked: np.ndarray, conditional: bool) -> np.ndarray:
        a, lam = arrays
        n, R = a.shape
        p = np.zeros((n, R))
        e = np.ones(n)
        for r in range(R):
            p[:, r] = e * a[:, r]
            if conditional:
                with np.errstate(invalid="ignore", divide="ignore"):
                    skip = np.where(p[:, r] < 1, e * (1 - a[:, r]) / (1 - p[:, r]), 0.0)
                e = np.where(clicked[:, r], lam[r], skip)
            else:
                e = e * (1 - a[:, r] + a[:, r] * lam[r])
        return p

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        self._fit_ranks(clog.n_ranks, self.lam, "continuation")
        idx = self._lookup(clog)
        shown = clog.shown
        a = self._gather(self.alpha, idx, shown, self.prior)
        p = self.click_probabilities_from(self._arrays(clog, a), clog.clicked & shown, conditional)
        return self._finish(p, shown)

    def relevance(self, query: str, doc: str) -> float:
        return self._pair_value(self.alpha, query, doc, self.prior)

    def params(self) -> dict:
        self._require_fitted()
        return {"continuation": [float(x) for x in self.lam], "pairs": len(self.pairs),
                "attractiveness_mean": float(self.alpha.mean()) if len(self.alpha) else None, "default": self.prior}
