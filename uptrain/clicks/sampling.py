"""Vectorised click samplers: one (n sessions, R ranks) bool click matrix per call.

Every sampler takes ``attr`` (n, R), the attractiveness P(A_r = 1) of the document shown
at each (session, rank), with 0 where nothing is shown, and a ``numpy.random.Generator``.
Ranks are 0-based. Sessions are sampled together (one pass over the R ranks, never a
Python loop over sessions). The definitions are those of Chuklin, Markov, de Rijke,
"Click Models for Web Search" (2015), chapter 3:

``pbm``     C_r = E_r A_r with E_r ~ Bernoulli(exam_r) independent of A_r.
``cm``      the cascade model: E_0 = 1, C_r = E_r A_r, E_{r+1} = E_r (1 - C_r): the user
            examines top-down and stops after the first click.
``dcm``     the dependent click model: E_0 = 1, C_r = E_r A_r, after a click the user goes
            on with probability lam_r, after a skip always: P(E_{r+1} | E_r, C_r = 1) = lam_r.
``ubm``     the user browsing model: P(E_r = 1 | previous click) = gamma[r, j] where the
            column j encodes the nearest clicked rank above r: **j = 0 means no click above r,
            j = r' + 1 means the previous click was at rank r'** (0 <= r' < r). ``gamma`` has
            shape (R, R + 1); entries with j > r are never read.
``dbn``     the dynamic Bayesian network model: E_0 = 1, C_r = E_r A_r, a click satisfies
            with probability sat (S_r ~ Bernoulli(sat[s, r]) given C_r = 1, S_r = 0 without a
            click) and E_{r+1} = E_r (1 - S_r) K_r with K_r ~ Bernoulli(gamma): an unsatisfied
            user continues with probability gamma whether or not they clicked.
``sdbn``    the simplified DBN: ``dbn`` with gamma = 1.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from uptrain.errors import ConfigError

__all__ = ["sample_pbm", "sample_cascade", "sample_dcm", "sample_ubm", "sample_dbn", "sample", "SAMPLERS"]


def _attr(attr) -> np.ndarray:
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim != 2:
        raise ConfigError(f"attr must be a (sessions, ranks) array of attractiveness probabilities, got shape {a.shape}")
    if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
        raise ConfigError("attr must hold probabilities in [0, 1] (0 where nothing is shown); it has values outside or NaN")
    return a


def _prob(x, name: str, shape: tuple) -> np.ndarray:
    p = np.asarray(x, dtype=np.float64)
    if p.shape != shape:
        try:
            p = np.broadcast_to(p, shape)
        except ValueError:
            raise ConfigError(f"{name} must have shape {shape} (or broadcast to it), got {np.shape(x)}") from None
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ConfigError(f"{name} must hold probabilities in [0, 1]; it has values outside or NaN")
    return p


def sample_pbm(attr, exam, rng: np.random.Generator) -> np.ndarray:
    """Position-based model: click = E & A, E_r ~ Bernoulli(exam[r]), A ~ Bernoulli(attr)."""
    a = _attr(attr)
    e = _prob(exam, "exam", (a.shape[1],))
    u = rng.random(a.shape)
    v = rng.random(a.shape)
    return (u < e[None, :]) & (v < a)


def sample_cascade(attr, rng: np.random.Generator) -> np.ndarray:
    """Cascade model: examine top-down, stop after the first click (at most one click per session)."""
    a = _attr(attr)
    n, R = a.shape
    out = np.zeros((n, R), dtype=bool)
    going = np.ones(n, dtype=bool)
    u = rng.random(a.shape)
    for r in range(R):
        c = going & (u[:, r] < a[:, r])
        out[:, r] = c
        going &= ~c
    return out


def sample_dcm(attr, lam, rng: np.random.Generator) -> np.ndarray:
    """Dependent click model: after a click at rank r continue with probability lam[r], after a skip always."""
    a = _attr(attr)
    n, R = a.shape
    lam = _prob(lam, "lam", (R,))
    out = np.zeros((n, R), dtype=bool)
    going = np.ones(n, dtype=bool)
    u = rng.random(a.shape)
    w = rng.random(a.shape)
    for r in range(R):
        c = going & (u[:, r] < a[:, r])
        out[:, r] = c
        going &= ~c | (w[:, r] < lam[r])
    return out


def sample_ubm(attr, gamma, rng: np.random.Generator) -> np.ndarray:
    """User browsing model: P(E_r = 1) = gamma[r, j], j = 0 without a click above r, j = r' + 1 after a click at r'."""
    a = _attr(attr)
    n, R = a.shape
    g = _prob(gamma, "gamma", (R, R + 1))
    out = np.zeros((n, R), dtype=bool)
    prev = np.zeros(n, dtype=np.int64)  # column of gamma: 0 = no click yet
    u = rng.random(a.shape)
    v = rng.random(a.shape)
    for r in range(R):
        c = (u[:, r] < g[r, prev]) & (v[:, r] < a[:, r])
        out[:, r] = c
        prev = np.where(c, r + 1, prev)
    return out


def sample_dbn(attr, sat, gamma, rng: np.random.Generator) -> np.ndarray:
    """Dynamic Bayesian network model (SDBN with gamma = 1): a satisfied user stops, an unsatisfied one
    continues with probability gamma."""
    a = _attr(attr)
    n, R = a.shape
    s = _prob(sat, "sat", (n, R))
    g = float(gamma)
    if not 0 <= g <= 1:
        raise ConfigError(f"gamma (the DBN continuation probability) must be in [0, 1], got {gamma}")
    out = np.zeros((n, R), dtype=bool)
    going = np.ones(n, dtype=bool)
    u = rng.random(a.shape)
    w = rng.random(a.shape)
    k = rng.random(a.shape)
    for r in range(R):
        c = going & (u[:, r] < a[:, r])
        out[:, r] = c
        satisfied = c & (w[:, r] < s[:, r])
        going &= ~satisfied & (k[:, r] < g)
    return out


def _sdbn(attr, sat, rng):
    return sample_dbn(attr, sat, 1.0, rng)


SAMPLERS: dict[str, Callable] = {
    "pbm": sample_pbm,
    "cm": sample_cascade,
    "dcm": sample_dcm,
    "ubm": sample_ubm,
    "dbn": sample_dbn,
    "sdbn": _sdbn,
}

_PARAMS = {
    "pbm": ("attr", "exam"),
    "cm": ("attr",),
    "dcm": ("attr", "lam"),
    "ubm": ("attr", "gamma"),
    "dbn": ("attr", "sat", "gamma"),
    "sdbn": ("attr", "sat"),
}


def sample(model: str, rng: np.random.Generator, **params) -> np.ndarray:
    """Sample clicks from the named model ("pbm", "cm", "dcm", "ubm", "dbn", "sdbn") with its parameters
    by keyword: pbm(attr, exam), cm(attr), dcm(attr, lam), ubm(attr, gamma), dbn(attr, sat, gamma), sdbn(attr, sat)."""
    key = str(model).lower()
    if key not in SAMPLERS:
        raise ConfigError(f"unknown click model {model!r} for sampling; known: {', '.join(SAMPLERS)}")
    need = _PARAMS[key]
    missing = [p for p in need if p not in params]
    extra = [p for p in params if p not in need]
    if missing or extra:
        raise ConfigError(
            f"sampling from {key} takes the parameters {', '.join(need)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    return SAMPLERS[key](*(params[p] for p in need), rng=rng)
