"""The interface every click model implements, and the parameter plumbing they share.

Definitions follow Chuklin, Markov, de Rijke, "Click Models for Web Search" (2015), ranks
0-based. A model's per-(query, document) parameters live in one table keyed by the string
pair ``(query key, doc id)``, so a model fitted on one log predicts on another log with its
own query and document tables (a test log read from another file): the test log's unique
pairs are looked up once in a dict and the result is spread over its (session, rank)
array with numpy.

Defaults every model shares (``__init__``):

``iterations=50``     the most EM iterations (closed-form models run one pass).
``prior=0.5``         the initial value of every probability parameter for EM, and the value
                      of a (query, document) pair the model never saw in training. PyClick's
                      parameters start at 1/2 (its ``ParamMLE``: numerator 1, denominator 2),
                      so an unseen pair gets 1/2 there too.
``pseudo_count=2.0``  smoothing: each probability parameter is estimated as
                      ``(prior * pseudo_count + expected successes) / (pseudo_count + trials)``,
                      which is PyClick's start of one success in two trials (prior 1/2, two
                      pseudo trials) and the MAP estimate under a Beta(prior * pc + 1,
                      (1 - prior) * pc + 1) prior. ``pseudo_count=0`` gives the plain MLE.
``tol=1e-6``          EM stops when the mean per-session log-likelihood (the EM objective,
                      prior included) improves by less than ``tol``.
``eps=1e-6``          predicted click probabilities are clipped to [eps, 1 - eps] (PyClick's
                      ``PROB_MIN``) so that every log-likelihood is finite; every clipped
                      probability is counted in ``predict_stats["clipped"]``. Fitted
                      probability parameters are kept in [eps, 1 - eps] too (an estimate of
                      0 / n becomes eps).

After ``fit``: ``fit_stats`` holds ``iterations``, ``converged``, ``log_likelihood`` (the
held-out measure of :mod:`uptrain.clicks.evaluate` computed on the training log),
``objective`` (mean per-session joint log-likelihood plus the log-prior per session, the
quantity EM increases), ``seconds``, ``sessions`` and ``pairs``. After each
``click_probabilities`` call, ``predict_stats`` counts ``impressions``, ``unseen_pairs``,
``unseen_impressions`` (shown documents whose pair the model never fitted: they got the
default) and ``clipped``, and whatever the model adds (CM: ``multi_click_sessions``).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Iterable, Mapping, Sequence

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.errors import ConfigError

log = logging.getLogger("uptrain")

Pair = tuple[str, str]


def _check_prob(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0 or v != v:
        raise ConfigError(f"click model setting {name} must be a probability in [0, 1], got {value!r}")
    return v


class PairTable:
    """The fitted (query key, doc id) pairs in a fixed order, and their lookup from any log."""

    def __init__(self, keys: Iterable[Pair] = ()):
        self.keys: list[Pair] = [(str(q), str(d)) for q, d in keys]
        self.index: dict[Pair, int] = {k: i for i, k in enumerate(self.keys)}
        if len(self.index) != len(self.keys):
            raise ConfigError("a click model's parameter table names the same (query, document) pair twice")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_log(cls, clog: ClickLog) -> "PairTable":
        """The log's own pairs in the order of ``clog.pairs()`` (so its pair index is the table's)."""
        _, pq, pd = clog.pairs()
        return cls((clog.queries[q], clog.doc_ids[d]) for q, d in zip(pq.tolist(), pd.tolist()))

    def lookup(self, clog: ClickLog) -> tuple[np.ndarray, np.ndarray]:
        """(n, R) index into this table for every shown (session, rank), -1 where the pair is unseen
        or nothing is shown; and per unique pair of the log its table index (-1 unseen)."""
        pidx, pq, pd = clog.pairs()
        queries, docs = clog.queries, clog.doc_ids
        get = self.index.get
        per_pair = np.fromiter(
            (get((queries[q], docs[d]), -1) for q, d in zip(pq.tolist(), pd.tolist())), dtype=np.int64, count=len(pq)
        )
        out = np.full(pidx.shape, -1, dtype=np.int64)
        shown = pidx >= 0
        out[shown] = per_pair[pidx[shown]]
        return out, per_pair


class ClickModel(ABC):
    """A click model: fit on a :class:`ClickLog`, predict click probabilities on any log."""

    name: str = ""
    #: per-pair parameter names (each an array aligned with ``self.pairs``) and rank-level ones
    pair_params: tuple[str, ...] = ()

    def __init__(
        self,
        iterations: int = 50,
        prior: float = 0.5,
        tol: float = 1e-6,
        pseudo_count: float = 2.0,
        eps: float = 1e-6,
    ):
        if int(iterations) < 1:
            raise ConfigError(f"click model iterations must be at least 1, got {iterations}")
        if float(pseudo_count) < 0:
            raise ConfigError(f"click model pseudo_count must be >= 0, got {pseudo_count}")
        if not 0 < float(eps) < 0.5:
            raise ConfigError(f"click model eps must be in (0, 0.5), got {eps}")
        if float(tol) < 0:
            raise ConfigError(f"click model tol must be >= 0, got {tol}")
        self.iterations = int(iterations)
        self.prior = _check_prob("prior", prior)
        self.tol = float(tol)
        self.pseudo_count = float(pseudo_count)
        self.eps = float(eps)
        self.pairs = PairTable()
        self.fit_stats: dict = {}
        self.predict_stats: dict = {}
        self._fitted = False

    # ---- estimation helpers ------------------------------------------------------------
    def _ratio(self, num, den) -> np.ndarray:
        """The smoothed estimate ``(prior * pc + num) / (pc + den)``, clipped to [eps, 1 - eps]; ``prior``
        where there is nothing to count."""
        num = np.asarray(num, dtype=np.float64)
        den = np.asarray(den, dtype=np.float64)
        pc = self.pseudo_count
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (self.prior * pc + num) / (pc + den)
        out = np.where(pc + den > 0, out, self.prior)
        return np.clip(out, self.eps, 1 - self.eps)

    def _log_prior(self, *arrays) -> float:
        """ln of the Beta pseudo-count prior over the given parameter arrays (0 when pseudo_count is 0)."""
        pc = self.pseudo_count
        if pc == 0:
            return 0.0
        a, b = self.prior * pc, (1 - self.prior) * pc
        total = 0.0
        for x in arrays:
            x = np.clip(np.asarray(x, dtype=np.float64), self.eps, 1 - self.eps)
            total += float((a * np.log(x) + b * np.log1p(-x)).sum())
        return total

    def _gather(self, values: np.ndarray, idx: np.ndarray, shown: np.ndarray, default: float) -> np.ndarray:
        """(n, R) per-(session, rank) values of a per-pair parameter: ``default`` for unseen pairs, 0 where nothing is shown."""
        if len(values):
            out = np.where(idx >= 0, values[np.maximum(idx, 0)], default)
        else:
            out = np.full(idx.shape, default, dtype=np.float64)
        return np.where(shown, out, 0.0)

    def _lookup(self, clog: ClickLog) -> np.ndarray:
        """The table index of every shown (session, rank) (see :meth:`PairTable.lookup`), counting unseen pairs."""
        idx, per_pair = self.pairs.lookup(clog)
        shown = clog.shown
        unseen_imp = int((shown & (idx < 0)).sum())
        self.predict_stats = {
            "sessions": len(clog),
            "impressions": int(shown.sum()),
            "unseen_pairs": int((per_pair < 0).sum()),
            "unseen_impressions": unseen_imp,
            "clipped": 0,
        }
        return idx

    def _finish(self, p: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """Clip shown probabilities to [eps, 1 - eps] (counted), 0 where nothing is shown."""
        low, high = self.eps, 1 - self.eps
        clipped = int((shown & ((p < low) | (p > high))).sum())
        self.predict_stats["clipped"] = self.predict_stats.get("clipped", 0) + clipped
        return np.where(shown, np.clip(p, low, high), 0.0)

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise ConfigError(f"click model {self.name} is used before it was fitted (call fit(log) or set_params first)")

    def _check_log(self, clog: ClickLog) -> None:
        if not isinstance(clog, ClickLog):
            raise ConfigError(f"click model {self.name} needs a ClickLog, got {type(clog).__name__}")
        if len(clog) == 0:
            raise ConfigError(f"click model {self.name} cannot be fitted on an empty log (no sessions)")

    # ---- the interface -----------------------------------------------------------------
    def fit(self, clog: ClickLog, progress: bool = False) -> "ClickModel":
        """Estimate the parameters on ``clog`` (EM or closed-form MLE, vectorised); fills ``fit_stats``."""
        self._check_log(clog)
        t0 = time.perf_counter()
        self.pairs = PairTable.from_log(clog)
        iterations, converged, objective = self._fit(clog, progress)
        self._fitted = True
        seconds = time.perf_counter() - t0
        from uptrain.clicks.evaluate import log_likelihood

        saved = dict(self.predict_stats)
        ll = log_likelihood(self, clog)
        self.predict_stats = saved
        self.fit_stats = {
            "iterations": int(iterations),
            "converged": bool(converged),
            "log_likelihood": float(ll),
            "objective": None if objective is None else float(objective),
            "seconds": round(seconds, 4),
            "sessions": len(clog),
            "pairs": len(self.pairs),
        }
        if not converged:
            log.warning(
                "click model %s: EM stopped after %d iterations without converging (tol %g); raise iterations to go on",
                self.name, iterations, self.tol,
            )
        return self

    def _em(self, step, progress: bool) -> tuple[int, bool, float]:
        """Run ``step()`` (one E+M step returning the objective before its update) until the objective
        improves by less than ``tol`` or ``iterations`` is reached."""
        prev = -np.inf
        obj = -np.inf
        for it in range(1, self.iterations + 1):
            obj = step()
            if progress:
                log.info("click model %s: EM iteration %d, objective %.6f", self.name, it, obj)
            if abs(obj - prev) < self.tol:
                return it, True, obj
            prev = obj
        return self.iterations, False, obj

    @abstractmethod
    def _fit(self, clog: ClickLog, progress: bool) -> tuple[int, bool, float | None]:
        """Fit the parameters; return (iterations, converged, objective)."""

    @abstractmethod
    def click_probabilities(self, clog: ClickLog, conditional: bool) -> np.ndarray:
        """(n, R): P(C_r = 1 | the session's observed clicks above r) when ``conditional``, else the marginal
        P(C_r = 1); 0 where nothing is shown; shown values clipped to [eps, 1 - eps]."""

    @abstractmethod
    def relevance(self, query: str, doc: str) -> float:
        """The model's relevance estimate of the pair (the default for an unseen pair)."""

    def relevance_table(self) -> dict[Pair, float]:
        """Every fitted (query key, doc id) pair and its :meth:`relevance`."""
        self._require_fitted()
        return {k: self.relevance(*k) for k in self.pairs.keys}

    @abstractmethod
    def params(self) -> dict:
        """The fitted parameters in plain Python for reports."""

    # ---- helpers for subclasses --------------------------------------------------------
    def _pair_value(self, values: np.ndarray, query: str, doc: str, default: float) -> float:
        self._require_fitted()
        i = self.pairs.index.get((str(query), str(doc)))
        return float(default if i is None else values[i])

    def _set_pairs(self, table: Mapping[Pair, float], name: str) -> np.ndarray:
        """Install the pair table from ``{(query, doc): value}`` (parameters set by hand); returns the values."""
        if not isinstance(table, Mapping):
            raise ConfigError(f"{self.name}.set_params: {name} must be a mapping (query, doc) -> probability")
        self.pairs = PairTable(table.keys())
        vals = np.array([_check_prob(f"{name}[{k}]", v) for k, v in table.items()], dtype=np.float64)
        return vals

    def _align(self, table: Mapping[Pair, float], name: str) -> np.ndarray:
        """Values of a second per-pair table in the order of the installed pairs (same keys required)."""
        keys = set((str(q), str(d)) for q, d in table)
        if keys != set(self.pairs.keys):
            raise ConfigError(f"{self.name}.set_params: {name} must name the same (query, doc) pairs as attractiveness")
        t = {(str(q), str(d)): v for (q, d), v in table.items()}
        return np.array([_check_prob(f"{name}[{k}]", t[k]) for k in self.pairs.keys], dtype=np.float64)

    def _done_setting(self) -> "ClickModel":
        self._fitted = True
        self.fit_stats = {"iterations": 0, "converged": True, "log_likelihood": None, "objective": None,
                          "seconds": 0.0, "sessions": 0, "pairs": len(self.pairs), "set_by_hand": True}
        return self

    def _rank_array(self, values: Sequence[float], name: str, shape: tuple) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != shape:
            raise ConfigError(f"{self.name}.set_params: {name} must have shape {shape}, got {arr.shape}")
        if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
            raise ConfigError(f"{self.name}.set_params: {name} must hold probabilities in [0, 1]")
        return arr

    def _fit_ranks(self, n_ranks: int, arr: np.ndarray | None, name: str) -> np.ndarray:
        """A rank-level parameter for a log of ``n_ranks`` ranks (a log longer than the fitted one is refused)."""
        if arr is None:
            raise ConfigError(f"click model {self.name} has no {name} (fit it first)")
        if n_ranks > arr.shape[0]:
            raise ConfigError(
                f"click model {self.name} was fitted on {arr.shape[0]} ranks and cannot predict a log of {n_ranks} ranks"
            )
        return arr

    def __repr__(self) -> str:
        return f"{type(self).__name__}(iterations={self.iterations}, prior={self.prior}, pseudo_count={self.pseudo_count})"


def first_click_rank(clicked: np.ndarray) -> np.ndarray:
    """(n,) the first clicked rank of each session, R where there is none."""
    n, R = clicked.shape
    any_ = clicked.any(axis=1)
    return np.where(any_, clicked.argmax(axis=1), R)


def last_click_rank(clicked: np.ndarray) -> np.ndarray:
    """(n,) the last clicked rank of each session, -1 where there is none."""
    n, R = clicked.shape
    any_ = clicked.any(axis=1)
    return np.where(any_, R - 1 - clicked[:, ::-1].argmax(axis=1), -1)


class DistinctSessions:
    """The distinct sessions of a log (the same pairs at the same ranks with the same clicks), each
    processed once and weighted by how often it occurs: what the cascade EM models (DBN, CCM) iterate over.

    ``pidx`` (m, R) pair index (-1: not shown), ``shown``, ``clicked`` (m, R) bool, ``w`` (m,) counts,
    ``last`` (m,) last clicked rank (-1: none), ``has`` (m,) a click, ``lc`` = max(last, 0),
    ``safe`` = max(pidx, 0), ``ranks`` (1, R), ``srow`` (m,), ``W`` (m, R) the counts per cell;
    ``n`` sessions and ``R`` ranks of the log.
    """

    def __init__(self, clog: ClickLog):
        pidx0 = clog.pairs()[0]
        self.n, self.R = pidx0.shape
        R = self.R
        rows = np.concatenate([pidx0, (clog.clicked & (pidx0 >= 0)).astype(np.int64)], axis=1)
        uniq, w = np.unique(rows, axis=0, return_counts=True)
        self.w = w.astype(np.float64)
        self.m = len(uniq)
        self.pidx = uniq[:, :R]
        self.shown = self.pidx >= 0
        self.clicked = uniq[:, R:].astype(bool)
        self.safe = np.maximum(self.pidx, 0)
        self.ranks = np.arange(R)[None, :]
        self.last = last_click_rank(self.clicked)
        self.has = self.last >= 0
        self.lc = np.maximum(self.last, 0)
        self.srow = np.arange(self.m)
        self.W = np.broadcast_to(self.w[:, None], (self.m, R))


def previous_click_column(clicked: np.ndarray) -> np.ndarray:
    """(n, R) the UBM column of each rank: 0 when no rank above it was clicked, r' + 1 when the nearest
    clicked rank above it is r'."""
    n, R = clicked.shape
    out = np.zeros((n, R), dtype=np.int64)
    prev = np.zeros(n, dtype=np.int64)
    for r in range(R):
        out[:, r] = prev
        prev = np.where(clicked[:, r], r + 1, prev)
    return out
