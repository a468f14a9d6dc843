"""SDBN, the simplified DBN (Chuklin, Markov, de Rijke 2015, section 3.8; Chapelle and Zhang 2009).

The DBN with gamma = 1: an unsatisfied user always goes on. Predictions are the DBN's
(:func:`uptrain.clicks.models.dbn.cascade_filter` with gamma = 1).

Fit by the book's closed-form MLE (section 4.2, as PyClick): the user is taken to have
examined every rank up to the last click and to have been satisfied by the last click, so
alpha_qd = clicks / impressions over the ranks up to and including the last click (all ranks
of a session without clicks, which gamma = 1 makes exact) and sigma_qd = (times the pair was
the last click) / (clicks on the pair), smoothed with the pseudo-count prior (:mod:`.base`).
Like the DCM estimator this ignores that an unsatisfied user may have gone on after the last
click and found nothing attractive, so it approximates the SDBN maximum likelihood.

Unseen pairs get ``prior`` for attractiveness and satisfaction; :meth:`relevance` is
alpha_qd sigma_qd (prior^2 for an unseen pair).
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import last_click_rank
from uptrain.clicks.models.dbn import DBN, cascade_filter
from uptrain.errors import ConfigError


class SDBN(DBN):
    name = "sdbn"

    def _gamma(self) -> float:
        return 1.0

    def _fit(self, clog: ClickLog, progress: bool):
        pidx = clog.pairs()[0]
        shown = pidx >= 0
        n, R = pidx.shape
        P = len(self.pairs)
        clicked = clog.clicked & shown
        last = last_click_rank(clicked)
        upto = np.where(last >= 0, last, R - 1)
        use = shown & (np.arange(R)[None, :] <= upto[:, None])
        self.alpha = self._ratio(
            np.bincount(pidx[use], weights=clicked[use].astype(np.float64), minlength=P), np.bincount(pidx[use], minlength=P)
        )
        is_last = np.zeros((n, R), dtype=bool)
        has = last >= 0
        is_last[np.nonzero(has)[0], last[has]] = True
        self.sigma = self._ratio(
            np.bincount(pidx[is_last], minlength=P).astype(np.float64), np.bincount(pidx[clicked], minlength=P)
        )
        self.gamma = 1.0
        a = np.where(shown, self.alpha[np.maximum(pidx, 0)], 0.0)
        s = np.where(shown, self.sigma[np.maximum(pidx, 0)], 0.0)
        p = np.clip(cascade_filter(a, s, 1.0, clicked, True), self.eps, 1 - self.eps)
        obj = np.log(np.where(clicked, p, 1 - p)[shown]).sum() + self._log_prior(self.alpha, self.sigma)
        return 1, True, float(obj / n)

    def set_params(self, attractiveness, satisfaction, gamma: float = 1.0) -> "SDBN":
        if float(gamma) != 1.0:
            raise ConfigError(f"SDBN is the DBN with gamma = 1; got gamma = {gamma} (use the dbn model)")
        super().set_params(attractiveness, satisfaction, 1.0)
        return self

    def params(self) -> dict:
        out = super().params()
        out["gamma"] = 1.0
        return out
