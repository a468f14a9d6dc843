"""CM, the cascade model (Chuklin, Markov, de Rijke 2015, section 3.5; Craswell et al. 2008).

The user examines the SERP top-down and clicks a document with its attractiveness alpha_qd;
after the first click they stop: E_0 = 1, C_r = E_r A_r, E_{r+1} = E_r (1 - C_r). So
P(C_r = 1) = alpha_r prod_{j < r} (1 - alpha_j), and conditionally on the clicks above,
P(C_r = 1 | C_<r) = alpha_r when nothing above r was clicked, 0 after a click.

Fit by the book's closed-form MLE (section 4.2): alpha_qd = clicks / impressions over the
ranks up to and including the first click (all ranks of a session without clicks), smoothed
with the pseudo-count prior (:mod:`.base`). Ranks after the first click are ignored in the
fit: the model says they were not examined.

Known limitation: a session with more than one click has probability 0 under the CM. Here
every conditional probability of a click below the first click is 0 and is clipped to eps
(counted in ``predict_stats["clipped"]``), so such a session's log-likelihood is finite but
contains ln(eps) (about -13.8 with eps = 1e-6) once per extra click;
``predict_stats["multi_click_sessions"]`` counts these sessions and a warning names the count.

Unseen pairs get ``prior`` (1/2 by default); :meth:`relevance` is alpha_qd.
"""

from __future__ import annotations

import logging

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel, first_click_rank

log = logging.getLogger("uptrain")


class CM(ClickModel):
    name = "cm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = np.zeros(0)

    def _fit(self, clog: ClickLog, progress: bool):
        pidx = clog.pairs()[0]
        n, R = pidx.shape
        first = first_click_rank(clog.clicked)
        use = (pidx >= 0) & (np.arange(R)[None, :] <= first[:, None])
        P = len(self.pairs)
        clicks = np.bincount(pidx[use], weights=clog.clicked[use].astype(np.float64), minlength=P)
        imps = np.bincount(pidx[use], minlength=P)
        self.alpha = self._ratio(clicks, imps)
        # The objective: the CM log-likelihood of the ranks it models (up to the first click).
        a = self.alpha[pidx[use]]
        obj = np.log(np.where(clog.clicked[use], a, 1 - a)).sum() + self._log_prior(self.alpha)
        return 1, True, float(obj / n)

    def set_params(self, attractiveness) -> "CM":
        self.alpha = self._set_pairs(attractiveness, "attractiveness")
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        idx = self._lookup(clog)
        shown = clog.shown
        a = self._gather(self.alpha, idx, shown, self.prior)
        if conditional:
            clicked = clog.clicked & shown
            first = first_click_rank(clicked)
            R = a.shape[1]
            p = np.where(np.arange(R)[None, :] <= first[:, None], a, 0.0)
            multi = int((clicked.sum(axis=1) > 1).sum())
            self.predict_stats["multi_click_sessions"] = multi
            if multi:
                log.warning(
                    "click model cm: %d of %d sessions have more than one click, which the cascade model gives "
                    "probability 0; each click after the first is scored with eps = %g",
                    multi, len(clog), self.eps,
                )
        else:
            exam = np.cumprod(np.concatenate([np.ones((a.shape[0], 1)), 1 - a[:, :-1]], axis=1), axis=1)
            p = a * exam
        return self._finish(p, shown)

    def relevance(self, query: str, doc: str) -> float:
        return self._pair_value(self.alpha, query, doc, self.prior)

    def params(self) -> dict:
        self._require_fitted()
        return {"pairs": len(self.pairs), "attractiveness_mean": float(self.alpha.mean()) if len(self.alpha) else None,
                "default": self.prior}
