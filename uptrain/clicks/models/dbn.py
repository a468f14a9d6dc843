"""DBN, the dynamic Bayesian network model (Chuklin, Markov, de Rijke 2015, section 3.8; Chapelle and Zhang 2009).

E_0 = 1; C_r = E_r A_r with A_r ~ alpha_qd; a click satisfies with S_r ~ sigma_qd (S_r = 0
without a click); E_{r+1} = E_r (1 - S_r) K_r with K_r ~ gamma (one continuation probability
for all ranks): an unsatisfied user goes on with probability gamma, clicked or not.

Predictions. Marginal: P(E_{r+1}) = P(E_r) gamma (1 - alpha_r sigma_r), P(C_r = 1) = P(E_r) alpha_r.
Conditional on the clicks above (forward filter of the examination e_r = P(E_r = 1 | C_<r)):
P(C_r = 1 | C_<r) = e_r alpha_r; after a click e_{r+1} = gamma (1 - sigma_r), after a skip
e_{r+1} = gamma e_r (1 - alpha_r) / (1 - e_r alpha_r).

Fit by EM (section 4.3, the posteriors written for this parameterisation). With l the last
click of a session, every rank up to l was examined, every click before l left the user
unsatisfied and continuing; what happened after l is hidden. With
N_r = P(no click at r, ..., R-1 | E_r = 1) from the backward recursion
N_R = 1, N_r = (1 - alpha_r)(1 - gamma + gamma N_{r+1}) and
z = P(no click after l | C_l = 1) = 1 - gamma (1 - sigma_l)(1 - N_{l+1}):

    P(S_l = 1 | C) = sigma_l / z,  P(E_{l+1} = 1 | C) = gamma (1 - sigma_l) N_{l+1} / z,
    P(E_{r+1} = 1 | C) = P(E_r = 1 | C) gamma N_{r+1} / (1 - gamma + gamma N_{r+1})  for r > l

(a session without clicks starts from P(E_0 = 1) = 1). The M-step: alpha_qd from
P(A_r = 1 | C) = C_r + (1 - C_r)(1 - P(E_r = 1 | C)) alpha_r over the pair's impressions,
sigma_qd from P(S_r = 1 | C) over the pair's clicks, gamma = sum P(E_{r+1} = 1 | C) /
sum P(E_r = 1, S_r = 0 | C) over the transitions into shown ranks; all smoothed (:mod:`.base`).

Unseen pairs get ``prior`` for both attractiveness and satisfaction; :meth:`relevance` is
alpha_qd sigma_qd (the book's relevance of a DBN), prior^2 for an unseen pair.
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel, DistinctSessions


def cascade_filter(a: np.ndarray, s: np.ndarray, gamma: float, clicked: np.ndarray, conditional: bool) -> np.ndarray:
    """DBN click probabilities (n, R) from per-(session, rank) attractiveness ``a`` and satisfaction ``s``."""
    n, R = a.shape
    p = np.zeros((n, R))
    e = np.ones(n)
    for r in range(R):
        p[:, r] = e * a[:, r]
        if conditional:
            with np.errstate(invalid="ignore", divide="ignore"):
                skip = np.where(p[:, r] < 1, gamma * e * (1 - a[:, r]) / (1 - p[:, r]), 0.0)
            e = np.where(clicked[:, r], gamma * (1 - s[:, r]), skip)
        else:
            e = e * gamma * (1 - a[:, r] * s[:, r])
    return p


class DBN(ClickModel):
    name = "dbn"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = np.zeros(0)
        self.sigma = np.zeros(0)
        self.gamma: float | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        # Identical sessions (same pairs at the same ranks, same clicks) share their posteriors:
        # each distinct session is processed once, weighted by how often it occurs.
        d = DistinctSessions(clog)
        n, R, m, w, P = d.n, d.R, d.m, d.w, len(self.pairs)
        pidx, shown, clicked, safe, ranks = d.pidx, d.shown, d.clicked, d.safe, d.ranks
        last, has, lc, srow, W = d.last, d.has, d.lc, d.srow, d.W
        # What the clicks fix: every rank up to the last click was examined, its attractiveness is
        # its click, every transition before the last click continued.
        before = shown & (ranks < last[:, None])
        cb = before & clicked
        sb = before & ~clicked
        nb_click = np.bincount(pidx[cb], weights=W[cb], minlength=P)
        nb_skip = np.bincount(pidx[sb], weights=W[sb], minlength=P)
        imp_pair = np.bincount(pidx[shown], weights=W[shown], minlength=P)
        clk_pair = np.bincount(pidx[clicked], weights=W[clicked], minlength=P)
        a_num_fixed = clk_pair  # clicked impressions: A = 1
        into = np.zeros((m, R), dtype=bool)  # transitions r -> r+1 into a shown rank, stored at r
        into[:, :-1] = shown[:, 1:]
        trans_before = float((W * (into & (ranks < last[:, None]))).sum())
        # The hidden part of each session, as flat indices into rank-major (R, m) arrays.
        shownT = np.ascontiguousarray(shown.T)
        safeT = np.ascontiguousarray(safe.T)
        WT = np.broadcast_to(w[None, :], (R, m))
        rk = np.arange(R)[:, None]
        afterT = shownT & (rk > last[None, :])
        i_after = np.flatnonzero(afterT)
        p_after, w_after = safeT.ravel()[i_after], WT.ravel()[i_after]
        intoT = np.ascontiguousarray(into.T)
        i_num = np.flatnonzero(intoT & (rk >= last[None, :])) + m  # exam at r + 1 of transitions from r >= l
        w_num = WT.ravel()[i_num - m]
        i_den = np.flatnonzero(intoT & (rk > last[None, :]))  # exam at r of transitions from r > l
        w_den = WT.ravel()[i_den]
        p_last, w_last = pidx[srow[has], last[has]], w[has]
        l_into = has & into[srow, lc]  # the transition out of the last click leads to a shown rank
        self.alpha = np.full(P, self.prior)
        self.sigma = np.full(P, self.prior)
        self.gamma = self.prior

        def step() -> float:
            eps = self.eps
            al = np.clip(self.alpha, eps, 1 - eps)
            sg = np.clip(self.sigma, eps, 1 - eps)
            g = float(np.clip(self.gamma, eps, 1 - eps))
            aT = np.where(shownT, al[safeT], 0.0)  # rank-major: each rank's sessions contiguous
            # backward: N[r] = P(no click at r..R-1 | E_r = 1)
            N = np.empty((R + 1, m))
            N[R] = 1.0
            for r in range(R - 1, -1, -1):
                N[r] = (1 - aT[r]) * (1 - g + g * N[r + 1])
            s_l = sg[pidx[srow, lc]]
            n_next = N[lc + 1, srow]
            z = 1 - g * (1 - s_l) * (1 - n_next)
            e_start = np.where(has, g * (1 - s_l) * n_next / z, 1.0)
            # forward: posterior examination of the hidden ranks (r > last click)
            examT = np.ones((R, m))
            e = np.ones(m)
            for r in range(R):
                if r > 0:
                    e = e * (g * N[r] / (1 - g + g * N[r]))
                e = np.where(last + 1 == r, e_start, e)
                np.copyto(examT[r], e, where=last < r)
            sat_l = s_l / z
            ll = (
                float((nb_click * (np.log(al) + np.log1p(-sg)) + nb_skip * np.log1p(-al)).sum())
                + trans_before * np.log(g)
                + float((w * np.where(has, np.log(al[pidx[srow, lc]]) + np.log(z), np.log(N[0]))).sum())
            )
            obj = (ll + self._log_prior(self.alpha, self.sigma, [self.gamma])) / n
            ex = examT.ravel()
            a_num = a_num_fixed + np.bincount(p_after, weights=w_after * (1 - ex[i_after]) * aT.ravel()[i_after], minlength=P)
            self.alpha = self._ratio(a_num, imp_pair)
            self.sigma = self._ratio(np.bincount(p_last, weights=w_last * sat_l[has], minlength=P), clk_pair)
            # gamma: continued transitions over transitions that could continue (E_r = 1, S_r = 0)
            num = trans_before + float((ex[i_num] * w_num).sum())
            den = trans_before + float((w * np.where(l_into, 1 - sat_l, 0.0)).sum()) + float((ex[i_den] * w_den).sum())
            self.gamma = float(self._ratio(num, den))
            return float(obj)

        return self._em(step, progress)

    def set_params(self, attractiveness, satisfaction, gamma: float) -> "DBN":
        self.alpha = self._set_pairs(attractiveness, "attractiveness")
        self.sigma = self._align(satisfaction, "satisfaction")
        self.gamma = float(self._rank_array([gamma], "gamma", (1,))[0])
        return self._done_setting()

    def _gamma(self) -> float:
        return float(self.gamma)

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        idx = self._lookup(clog)
        shown = clog.shown
        a = self._gather(self.alpha, idx, shown, self.prior)
        s = self._gather(self.sigma, idx, shown, self.prior)
        p = cascade_filter(a, s, self._gamma(), clog.clicked & shown, conditional)
        return self._finish(p, shown)

    def relevance(self, query: str, doc: str) -> float:
        self._require_fitted()
        i = self.pairs.index.get((str(query), str(doc)))
        if i is None:
            return float(self.prior * self.prior)
        return float(self.alpha[i] * self.sigma[i])

    def params(self) -> dict:
        self._require_fitted()
        return {"gamma": float(self._gamma()), "pairs": len(self.pairs),
                "attractiveness_mean": float(self.alpha.mean()) if len(self.alpha) else None,
                "satisfaction_mean": float(self.sigma.mean()) if len(self.sigma) else None,
                "default": self.prior}
