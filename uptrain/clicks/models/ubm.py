"""UBM, the user browsing model (Chuklin, Markov, de Rijke 2015, section 3.7; Dupret and Piwowarski 2008).

C_r = E_r A_r with A_r ~ alpha_qd and P(E_r = 1 | clicks above) = gamma[r, j], where j encodes
the previous click, the nearest clicked rank above r in rank order (as in the book):
**j = 0 when no rank above r was clicked, j = r' + 1 when the previous click is at rank r'**
(0-based). ``gamma`` has shape (R, R + 1); entries with j > r are never used (0 in reports).
The book indexes by the distance r - r' with r' = 0 for "no click"; for a fixed r the two
indexings name the same parameters.

Conditionally on the observed clicks above r the previous click is known, so
P(C_r = 1 | C_<r) = gamma[r, j_r] alpha_qd. The marginal P(C_r = 1) sums over the
distribution of the previous click, computed forward over the ranks:
P(prev_{r+1} = r) = P(C_r = 1) and P(prev_{r+1} = j) = P(prev_r = j)(1 - gamma[r, j] alpha_r).

Fit by EM (section 4.3), the posteriors of a skipped rank are those of PBM with gamma[r, j_r]:
P(E = 1 | C = 0) = g (1 - a) / (1 - g a), P(A = 1 | C = 0) = a (1 - g) / (1 - g a). As for PBM,
(c gamma, alpha / c) fits equally well (scale identifiability): compare gamma / gamma[0, 0].
Unseen pairs get ``prior`` (1/2 by default); :meth:`relevance` is alpha_qd.
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel, previous_click_column


class UBM(ClickModel):
    name = "ubm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = np.zeros(0)
        self.gamma: np.ndarray | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        pidx = clog.pairs()[0]
        shown = pidx >= 0
        n, R = pidx.shape
        P = len(self.pairs)
        clicked = clog.clicked & shown
        col = previous_click_column(clicked)
        # Sufficient statistics: clicks and skips per (pair, rank, previous-click column) cell.
        G = R * (R + 1)
        key = (pidx * G + np.arange(R)[None, :] * (R + 1) + col)[shown]
        cells, inv = np.unique(key, return_inverse=True)
        clicks = np.bincount(inv, weights=clicked[shown].astype(np.float64))
        skips = np.bincount(inv).astype(np.float64) - clicks
        p_c, g_c = cells // G, cells % G
        imp_pair = np.bincount(p_c, weights=clicks + skips, minlength=P)
        imp_cell = np.bincount(g_c, weights=clicks + skips, minlength=G)
        used = imp_cell > 0
        valid = np.tril(np.ones((R, R + 1), dtype=bool))  # j <= r
        self.alpha = np.full(P, self.prior)
        g = np.full(G, self.prior)

        def step() -> float:
            nonlocal g
            a = self.alpha[p_c]
            e = g[g_c]
            pc = np.clip(a * e, self.eps, 1 - self.eps)
            skip = 1 - pc
            obj = (float((clicks * np.log(pc) + skips * np.log(skip)).sum()) + self._log_prior(self.alpha, g[used])) / n
            post_a = clicks + skips * (a * (1 - e) / skip)
            post_e = clicks + skips * (e * (1 - a) / skip)
            self.alpha = self._ratio(np.bincount(p_c, weights=post_a, minlength=P), imp_pair)
            g = self._ratio(np.bincount(g_c, weights=post_e, minlength=G), imp_cell)
            return float(obj)

        out = self._em(step, progress)
        self.gamma = np.where(valid, g.reshape(R, R + 1), 0.0)
        return out

    def set_params(self, attractiveness, gamma) -> "UBM":
        self.alpha = self._set_pairs(attractiveness, "attractiveness")
        g = np.asarray(gamma, dtype=np.float64)
        R = g.shape[0] if g.ndim == 2 else 0
        self.gamma = self._rank_array(g, "gamma", (R, R + 1)).copy()
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        gam = self._fit_ranks(clog.n_ranks, self.gamma, "examination gamma")
        idx = self._lookup(clog)
        shown = clog.shown
        a = self._gather(self.alpha, idx, shown, self.prior)
        n, R = a.shape
        if conditional:
            col = previous_click_column(clog.clicked & shown)
            p = a * gam[np.arange(R)[None, :], col]
        else:
            p = np.zeros((n, R))
            dist = np.zeros((n, R + 1))  # P(previous click column = j)
            dist[:, 0] = 1.0
            for r in range(R):
                pj = dist[:, : r + 1] * gam[r, : r + 1][None, :] * a[:, r : r + 1]
                p[:, r] = pj.sum(axis=1)
                dist[:, : r + 1] -= pj
                dist[:, r + 1] = p[:, r]
        return self._finish(p, shown)

    def relevance(self, query: str, doc: str) -> float:
        return self._pair_value(self.alpha, query, doc, self.prior)

    def params(self) -> dict:
        self._require_fitted()
        return {"gamma": [[float(x) for x in row] for row in self.gamma],
                "gamma_columns": "column 0: no click above the rank; column j: previous click at rank j-1 (0-based)",
                "pairs": len(self.pairs),
                "attractiveness_mean": float(self.alpha.mean()) if len(self.alpha) else None, "default": self.prior}
