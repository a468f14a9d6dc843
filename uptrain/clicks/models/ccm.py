"""CCM, the click chain model (Chuklin, Markov, de Rijke 2015, section 3.9; Guo et al. 2009).

E_0 = 1; C_r = E_r A_r with A_r ~ alpha_qd. After a skip the user goes on with tau_1; after a
click on a document of relevance alpha_qd they go on with tau_2 (1 - alpha_qd) + tau_3 alpha_qd:

    P(E_{r+1} = 1 | E_r = 1, C_r = 0) = tau_1,
    P(E_{r+1} = 1 | C_r = 1)          = tau_2 (1 - alpha_r) + tau_3 alpha_r.

Predictions. Marginal: P(E_{r+1}) = P(E_r) [(1 - alpha_r) tau_1 + alpha_r (tau_2 (1 - alpha_r) + tau_3 alpha_r)],
P(C_r = 1) = P(E_r) alpha_r. Conditional (forward filter e_r = P(E_r = 1 | C_<r)): after a click
e_{r+1} = tau_2 (1 - alpha_r) + tau_3 alpha_r, after a skip e_{r+1} = tau_1 e_r (1 - alpha_r) / (1 - e_r alpha_r).

Fit by EM. The continuation after a click is written with a hidden S_r ~ Bernoulli(alpha_qd)
given the click (the clicked document "was relevant"), K_r ~ tau_3 if S_r else tau_2; then
P(K_r = 1 | C_r = 1) = tau_2 (1 - alpha) + tau_3 alpha as above, and alpha is estimated from the
expected A (per impression) and the expected S (per click followed by a shown rank) together.
With l the last click and N_r = P(no click at r..R-1 | E_r = 1) (N_R = 1,
N_r = (1 - alpha_r)(1 - tau_1 + tau_1 N_{r+1})), c_l = tau_2 (1 - alpha_l) + tau_3 alpha_l and
z = 1 - c_l (1 - N_{l+1}): P(S_l = 1 | C) = alpha_l (1 - tau_3 + tau_3 N_{l+1}) / z,
P(S_l = 1, K_l = 1 | C) = alpha_l tau_3 N_{l+1} / z, P(S_l = 0, K_l = 1 | C) = (1 - alpha_l) tau_2 N_{l+1} / z;
a click before l continued, so P(S_r = 1 | C) = alpha_r tau_3 / c_r; ranks after l follow the
DBN's hidden tail with tau_1 in place of gamma (:mod:`.dbn`). Every M-step is smoothed (:mod:`.base`).

Unseen pairs get ``prior`` (1/2 by default); :meth:`relevance` is alpha_qd (the book's CCM relevance).
"""

from __future__ import annotations

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.clicks.models.base import ClickModel, DistinctSessions


def ccm_filter(a: np.ndarray, tau: np.ndarray, clicked: np.ndarray, conditional: bool) -> np.ndarray:
    """CCM click probabilities (n, R) from per-(session, rank) attractiveness ``a`` and (tau_1, tau_2, tau_3)."""
    t1, t2, t3 = (float(x) for x in tau)
    n, R = a.shape
    p = np.zeros((n, R))
    e = np.ones(n)
    for r in range(R):
        ar = a[:, r]
        p[:, r] = e * ar
        after_click = t2 * (1 - ar) + t3 * ar
        if conditional:
            with np.errstate(invalid="ignore", divide="ignore"):
                skip = np.where(p[:, r] < 1, t1 * e * (1 - ar) / (1 - p[:, r]), 0.0)
            e = np.where(clicked[:, r], after_click, skip)
        else:
            e = e * ((1 - ar) * t1 + ar * after_click)
    return p


class CCM(ClickModel):
    name = "ccm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = np.zeros(0)
        self.tau: np.ndarray | None = None

    def _fit(self, clog: ClickLog, progress: bool):
        # Identical sessions (same pairs at the same ranks, same clicks) share their posteriors:
        # each distinct session is processed once, weighted by how often it occurs.
        d = DistinctSessions(clog)
        n, R, m, w, P = d.n, d.R, d.m, d.w, len(self.pairs)
        pidx, shown, clicked, safe, ranks = d.pidx, d.shown, d.clicked, d.safe, d.ranks
        last, has, lc, srow, W = d.last, d.has, d.lc, d.srow, d.W
        before = shown & (ranks < last[:, None])  # examined, and the user went on
        cb, sb = before & clicked, before & ~clicked
        nb_click = np.bincount(pidx[cb], weights=W[cb], minlength=P)
        nb_skip = np.bincount(pidx[sb], weights=W[sb], minlength=P)
        skips_before = float(nb_skip.sum())
        imp_pair = np.bincount(pidx[shown], weights=W[shown], minlength=P)
        clk_pair = np.bincount(pidx[clicked], weights=W[clicked], minlength=P)
        next_shown = np.zeros((m, R), dtype=bool)
        next_shown[:, :-1] = shown[:, 1:]
        l_next = has & next_shown[srow, lc]  # the last click is followed by a shown rank
        p_l = pidx[srow, lc]
        w_l = np.where(l_next, w, 0.0)
        s_den = imp_pair + nb_click + np.bincount(p_l, weights=w_l, minlength=P)
        shownT = np.ascontiguousarray(shown.T)
        safeT = np.ascontiguousarray(safe.T)
        WT = np.broadcast_to(w[None, :], (R, m))
        rk = np.arange(R)[:, None]
        i_after = np.flatnonzero(shownT & (rk > last[None, :]))
        p_after, w_after = safeT.ravel()[i_after], WT.ravel()[i_after]
        tail_trans = np.ascontiguousarray(next_shown.T) & (rk > last[None, :])  # skip transitions after l
        i_den = np.flatnonzero(tail_trans)
        i_num = i_den + m
        w_tr = WT.ravel()[i_den]
        self.alpha = np.full(P, self.prior)
        self.tau = np.full(3, self.prior)

        def step() -> float:
            eps = self.eps
            al = np.clip(self.alpha, eps, 1 - eps)
            t1, t2, t3 = np.clip(self.tau, eps, 1 - eps)
            aT = np.where(shownT, al[safeT], 0.0)
            N = np.empty((R + 1, m))
            N[R] = 1.0
            for r in range(R - 1, -1, -1):
                N[r] = (1 - aT[r]) * (1 - t1 + t1 * N[r + 1])
            a_l = al[p_l]
            c_l = t2 * (1 - a_l) + t3 * a_l
            n_next = N[lc + 1, srow]
            z = np.where(has, 1 - c_l * (1 - n_next), 1.0)
            e_start = np.where(has, c_l * n_next / z, 1.0)
            examT = np.ones((R, m))
            e = np.ones(m)
            for r in range(R):
                if r > 0:
                    e = e * (t1 * N[r] / (1 - t1 + t1 * N[r]))
                e = np.where(last + 1 == r, e_start, e)
                np.copyto(examT[r], e, where=last < r)
            ex = examT.ravel()
            c_pair = t2 * (1 - al) + t3 * al
            ll = (
                float((nb_click * (np.log(al) + np.log(c_pair)) + nb_skip * np.log1p(-al)).sum())
                + skips_before * np.log(t1)
                + float((w * np.where(has, np.log(a_l) + np.log(z), np.log(N[0]))).sum())
            )
            obj = (ll + self._log_prior(self.alpha, self.tau)) / n
            # the clicks' hidden relevance S and continuation K
            s1_before = nb_click * al * t3 / c_pair  # P(S = 1) of the clicks before l, per pair
            s0_before = nb_click * (1 - al) * t2 / c_pair
            s1_l = w_l * a_l * (1 - t3 + t3 * n_next) / z
            s1k_l = w_l * a_l * t3 * n_next / z
            s0_l = w_l * (1 - a_l) * (1 - t2 + t2 * n_next) / z
            s0k_l = w_l * (1 - a_l) * t2 * n_next / z
            a_num = (
                clk_pair
                + np.bincount(p_after, weights=w_after * (1 - ex[i_after]) * aT.ravel()[i_after], minlength=P)
                + s1_before
                + np.bincount(p_l, weights=s1_l, minlength=P)
            )
            self.alpha = self._ratio(a_num, s_den)
            tau1 = self._ratio(skips_before + float((ex[i_num] * w_tr).sum()), skips_before + float((ex[i_den] * w_tr).sum()))
            tau2 = self._ratio(s0_before.sum() + s0k_l.sum(), s0_before.sum() + s0_l.sum())
            tau3 = self._ratio(s1_before.sum() + s1k_l.sum(), s1_before.sum() + s1_l.sum())
            self.tau = np.array([float(tau1), float(tau2), float(tau3)])
            return float(obj)

        return self._em(step, progress)

    def set_params(self, attractiveness, tau) -> "CCM":
        self.alpha = self._set_pairs(attractiveness, "attractiveness")
        self.tau = self._rank_array(tau, "tau", (3,)).copy()
        return self._done_setting()

    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        self._require_fitted()
        idx = self._lookup(clog)
        shown = clog.shown
        a = self._gather(self.alpha, idx, shown, self.prior)
        return self._finish(ccm_filter(a, self.tau, clog.clicked & shown, conditional), shown)

    def relevance(self, query: str, doc: str) -> float:
        return self._pair_value(self.alpha, query, doc, self.prior)

    def params(self) -> dict:
        self._require_fitted()
        return {"tau": [float(x) for x in self.tau], "pairs": len(self.pairs),
                "attractiveness_mean": float(self.alpha.mean()) if len(self.alpha) else None, "default": self.prior}
