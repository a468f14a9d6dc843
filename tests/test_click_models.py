"""Click models, samplers and their evaluation: hand-computed probabilities, brute-force
enumeration of the models' joint distributions, EM against scipy.optimize, parameter recovery
from sampled logs, held-out measures, unseen pairs, the registry, and the real Yandex sample
(skipped when the shared data is absent)."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest

from uptrain.clicks.evaluate import ctr_error, evaluate, evaluate_all, log_likelihood, perplexity
from uptrain.clicks.log import ClickLogBuilder, Session, from_arrays
from uptrain.clicks.models import CLICK_MODELS, make
from uptrain.clicks.sampling import sample, sample_cascade, sample_dbn, sample_dcm, sample_pbm, sample_ubm
from uptrain.errors import ConfigError

EPS = 1e-6
ALPHA = {("q", "a"): 0.6, ("q", "b"): 0.3, ("q", "c"): 0.5}
SIGMA = {("q", "a"): 0.5, ("q", "b"): 0.2, ("q", "c"): 0.4}
UBM_GAMMA = [[1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [0.4, 0.5, 0.7, 0]]


def tiny_log():
    """s1: [a, b, c] click at 0; s2: [b, a, c] clicks at 1 and 2; s3: [a, b] (padded to 3) no click."""
    b = ClickLogBuilder(ranks=3)
    b.add(Session("q", ["a", "b", "c"], [0]))
    b.add(Session("q", ["b", "a", "c"], [1, 2]))
    b.add(Session("q", ["a", "b"], []))
    return b.build()


def fixed(name):
    m = make(name)
    if name == "pbm":
        return m.set_params(ALPHA, [1.0, 0.5, 0.25])
    if name == "cm":
        return m.set_params(ALPHA)
    if name == "dcm":
        return m.set_params(ALPHA, [0.5, 0.4, 0.3])
    if name == "ubm":
        return m.set_params(ALPHA, UBM_GAMMA)
    if name == "dbn":
        return m.set_params(ALPHA, SIGMA, 0.9)
    if name == "sdbn":
        return m.set_params(ALPHA, SIGMA)
    if name == "ccm":
        return m.set_params(ALPHA, [0.8, 0.6, 0.3])
    if name == "gctr":
        return m.set_params(0.3)
    if name == "rctr":
        return m.set_params([0.5, 0.3, 0.2])
    if name == "dctr":
        return m.set_params(ALPHA)
    raise AssertionError(name)


def ll_by_hand(observed):
    """Mean over sessions of the mean over shown ranks of ln P(C_r = c_r)."""
    return float(np.mean([np.mean(np.log(row)) for row in observed]))


# ---- hand-computed probabilities ---------------------------------------------------------------
# Each row: the probabilities of session s1, s2, s3 of tiny_log, written out by hand.
HAND = {
    # PBM: P(C_r = 1) = gamma_r alpha; gamma = (1, .5, .25); conditional = marginal.
    "pbm": dict(
        cond=[[0.6, 0.15, 0.125], [0.3, 0.3, 0.125], [0.6, 0.15, 0.0]],
        uncond=[[0.6, 0.15, 0.125], [0.3, 0.3, 0.125], [0.6, 0.15, 0.0]],
    ),
    # CM: marginal alpha_r prod (1 - alpha_j); conditional alpha_r up to the first click, 0 (-> eps) after.
    "cm": dict(
        cond=[[0.6, EPS, EPS], [0.3, 0.6, EPS], [0.6, 0.3, 0.0]],
        uncond=[[0.6, 0.4 * 0.3, 0.4 * 0.7 * 0.5], [0.3, 0.7 * 0.6, 0.7 * 0.4 * 0.5], [0.6, 0.4 * 0.3, 0.0]],
    ),
    # DCM, lambda = (.5, .4, .3). s1: click at 0 -> e1 = .5, p1 = .15; skip -> e2 = .5 * .7 / .85.
    # s2 [b, a, c]: skip at 0 -> e1 = .7 / .7 = 1, p1 = .6; click -> e2 = lambda_1 = .4, p2 = .2.
    # Marginal s1: E1 = 1 - .6 + .6 * .5 = .7, p1 = .21; E2 = .7 (1 - .3 + .3 * .4) = .574, p2 = .287.
    "dcm": dict(
        cond=[[0.6, 0.15, 0.5 * 0.7 / 0.85 * 0.5], [0.3, 0.6, 0.2], [0.6, 0.3, 0.0]],
        uncond=[[0.6, 0.21, 0.287], [0.3, 0.85 * 0.6, 0.85 * (1 - 0.6 + 0.6 * 0.4) * 0.5], [0.6, 0.21, 0.0]],
    ),
    # UBM: s1 conditional: gamma[1][1] * .3 = .24, gamma[2][1] * .5 = .25 (previous click at rank 0).
    # s1 marginal r1: .4 * .6 * .3 + .6 * .8 * .3 = .216; r2: .5 (.328 * .4 + .456 * .5 + .216 * .7) = .2552.
    # s2 [b, a, c]: conditional r1: gamma[1][0] * .6 = .36; r2: previous click at 1: gamma[2][2] * .5 = .35.
    "ubm": dict(
        cond=[[0.6, 0.24, 0.25], [0.3, 0.36, 0.35], [0.6, 0.18, 0.0]],
        uncond=[
            [0.6, 0.216, 0.2552],
            [0.3, 0.7 * 0.6 * 0.6 + 0.3 * 0.8 * 0.6,
             0.5 * (0.7 * (1 - 0.36) * 0.4 + 0.3 * (1 - 0.48) * 0.5 + (0.7 * 0.36 + 0.3 * 0.48) * 0.7)],
            [0.6, 0.216, 0.0],
        ],
    ),
    # DBN, gamma = .9. s1: click at 0 -> e1 = .9 (1 - .5) = .45, p1 = .135; skip ->
    # e2 = .9 * .45 * .7 / (1 - .135), p2 = e2 * .5. Marginal: E1 = .9 (1 - .6 * .5) = .63, p1 = .189,
    # E2 = .63 * .9 (1 - .3 * .2) = .53298, p2 = .26649.
    "dbn": dict(
        cond=[[0.6, 0.135, 0.9 * 0.45 * 0.7 / 0.865 * 0.5], [0.3, 0.9 * 0.6, 0.9 * 0.5 * 0.5], [0.6, 0.9 * 0.3, 0.0]],
        uncond=[[0.6, 0.189, 0.26649], [0.3, 0.9 * 0.94 * 0.6, 0.9 * 0.94 * 0.9 * 0.7 * 0.5], [0.6, 0.189, 0.0]],
    ),
    # SDBN = DBN with gamma = 1: s1 e1 = .5, p1 = .15, e2 = .5 * .7 / .85.
    "sdbn": dict(
        cond=[[0.6, 0.15, 0.5 * 0.7 / 0.85 * 0.5], [0.3, 0.6, 0.5 * 0.5], [0.6, 0.3, 0.0]],
        uncond=[[0.6, 0.7 * 0.3, 0.7 * 0.94 * 0.5], [0.3, 0.94 * 0.6, 0.94 * 0.7 * 0.5], [0.6, 0.7 * 0.3, 0.0]],
    ),
    # CCM, tau = (.8, .6, .3): after a click on alpha go on with .6 (1 - alpha) + .3 alpha, after a skip .8.
    # s1: click on a -> e1 = .6 * .4 + .3 * .6 = .42, p1 = .126; skip -> e2 = .8 * .42 * .7 / (1 - .126), p2 = e2 * .5.
    # s2 [b, a, c]: skip -> e1 = .8, p1 = .48; click on a -> e2 = .42, p2 = .21.
    # Marginal s1: E1 = .4 * .8 + .6 * .42 = .572, p1 = .1716; E2 = .572 (.7 * .8 + .3 * (.6 * .7 + .3 * .3)).
    "ccm": dict(
        cond=[[0.6, 0.126, 0.8 * 0.42 * 0.7 / 0.874 * 0.5], [0.3, 0.48, 0.21], [0.6, 0.8 * 0.3, 0.0]],
        uncond=[[0.6, 0.1716, 0.572 * (0.56 + 0.3 * 0.51) * 0.5],
                [0.3, (0.7 * 0.8 + 0.3 * 0.51) * 0.6, (0.7 * 0.8 + 0.3 * 0.51) * (0.4 * 0.8 + 0.6 * 0.42) * 0.5],
                [0.6, 0.1716, 0.0]],
    ),
    "gctr": dict(cond=[[0.3] * 3, [0.3] * 3, [0.3, 0.3, 0.0]], uncond=[[0.3] * 3, [0.3] * 3, [0.3, 0.3, 0.0]]),
    "rctr": dict(cond=[[0.5, 0.3, 0.2]] * 2 + [[0.5, 0.3, 0.0]], uncond=[[0.5, 0.3, 0.2]] * 2 + [[0.5, 0.3, 0.0]]),
    "dctr": dict(cond=[[0.6, 0.3, 0.5], [0.3, 0.6, 0.5], [0.6, 0.3, 0.0]],
                 uncond=[[0.6, 0.3, 0.5], [0.3, 0.6, 0.5], [0.6, 0.3, 0.0]]),
}
CLICKS = [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_probabilities_and_log_likelihood(name):
    """Catches a wrong filter update (after a click / after a skip), a wrong UBM column, a marginal that
    forgets the examination, or a log-likelihood averaged over the wrong axis."""
    clog = tiny_log()
    model = fixed(name)
    want_c = np.array(HAND[name]["cond"])
    want_u = np.array(HAND[name]["uncond"])
    np.testing.assert_allclose(model.click_probabilities(clog, conditional=True), want_c, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.click_probabilities(clog, conditional=False), want_u, rtol=1e-9, atol=1e-12)
    shown = [3, 3, 2]
    observed = [[p if c else 1 - p for p, c in zip(row[:k], crow[:k])] for row, crow, k in zip(want_c, CLICKS, shown)]
    assert log_likelihood(model, clog) == pytest.approx(ll_by_hand(observed), rel=1e-9)
    # perplexity per rank from the marginals, by hand: rank 2 is shown in two sessions only
    obs_u = [[p if c else 1 - p for p, c in zip(row[:k], crow[:k])] for row, crow, k in zip(want_u, CLICKS, shown)]
    at = [2 ** (-np.mean([math.log2(obs_u[s][r]) for s in range(3) if r < shown[s]])) for r in range(3)]
    overall, per = perplexity(model, clog)
    assert per == pytest.approx(at, rel=1e-9)
    assert overall == pytest.approx(np.mean(at), rel=1e-9)


def test_pbm_log_likelihood_written_out():
    """The PBM log-likelihood of the tiny log with every factor written by hand."""
    ll = np.mean([
        (math.log(0.6) + math.log(0.85) + math.log(0.875)) / 3,
        (math.log(0.7) + math.log(0.3) + math.log(0.125)) / 3,
        (math.log(0.4) + math.log(0.85)) / 2,
    ])
    assert log_likelihood(fixed("pbm"), tiny_log()) == pytest.approx(ll, rel=1e-12)


def test_cm_multi_click_session_is_finite_and_counted():
    """CM gives a second click probability 0: scored with eps (ln 1e-6 once), counted, not -inf."""
    model = fixed("cm")
    clog = tiny_log()
    ll = np.mean([
        (math.log(0.6) + 2 * math.log(1 - EPS)) / 3,
        (math.log(0.7) + math.log(0.6) + math.log(EPS)) / 3,
        (math.log(0.4) + math.log(0.7)) / 2,
    ])
    res = evaluate(model, clog)
    assert res["log_likelihood"] == pytest.approx(ll, rel=1e-9)
    assert res["predict_stats"]["multi_click_sessions"] == 1
    assert res["predict_stats"]["clipped_conditional"] == 3  # s1 ranks 1-2, s2 rank 2


# ---- closed-form fits by hand ----------------------------------------------------------------
def test_closed_form_fits_by_hand():
    """Counts of the book's estimators on the tiny log (pseudo_count=0): catches counting ranks after
    the first (CM) or last (DCM, SDBN) click, or the last click as a continuation."""
    clog = tiny_log()
    cm = make("cm", pseudo_count=0).fit(clog)
    # up to the first click: a clicked in s1 and s2, skipped in s3; b skipped in s2 and s3; c never reached
    assert cm.relevance("q", "a") == pytest.approx(2 / 3)
    assert cm.relevance("q", "b") == pytest.approx(EPS)  # 0 clipped to eps
    assert cm.relevance("q", "c") == pytest.approx(0.5)  # no impression up to a first click: the prior
    dcm = make("dcm", pseudo_count=0).fit(clog)
    assert [dcm.relevance("q", d) for d in "abc"] == pytest.approx([2 / 3, EPS, 1 - EPS])
    # continuation: the click at rank 0 (s1) was the last; the one at 1 (s2) was not; the one at 2 was
    assert dcm.params()["continuation"] == pytest.approx([EPS, 1 - EPS, EPS])
    sdbn = make("sdbn", pseudo_count=0).fit(clog)
    assert sdbn.alpha[sdbn.pairs.index[("q", "a")]] == pytest.approx(2 / 3)
    assert sdbn.sigma[sdbn.pairs.index[("q", "a")]] == pytest.approx(1 / 2)  # last click in s1, not in s2
    assert sdbn.sigma[sdbn.pairs.index[("q", "c")]] == pytest.approx(1 - EPS)
    assert sdbn.sigma[sdbn.pairs.index[("q", "b")]] == pytest.approx(0.5)  # never clicked: prior
    dctr = make("dctr", pseudo_count=0).fit(clog)
    assert [dctr.relevance("q", d) for d in "abc"] == pytest.approx([2 / 3, EPS, 1 / 2])
    assert make("gctr", pseudo_count=0).fit(clog).params()["ctr"] == pytest.approx(3 / 8)
    assert make("rctr", pseudo_count=0).fit(clog).params()["ctr_at"] == pytest.approx([1 / 3, 1 / 3, 1 / 2])
    # the default smoothing: (1 + clicks) / (2 + impressions), PyClick's start of 1/2
    assert make("dctr").fit(clog).relevance("q", "a") == pytest.approx(3 / 5)


# ---- brute-force enumeration of the joint distribution -------------------------------------
R4 = 4
DOCS4 = ["a", "b", "c", "d"]
A4 = {("q", "a"): 0.6, ("q", "b"): 0.35, ("q", "c"): 0.5, ("q", "d"): 0.25}
S4 = {("q", "a"): 0.7, ("q", "b"): 0.2, ("q", "c"): 0.45, ("q", "d"): 0.6}
LAM4 = [0.55, 0.4, 0.7, 0.3]
EXAM4 = [0.95, 0.7, 0.5, 0.3]
TAU4 = [0.85, 0.5, 0.25]
G4 = np.array([[0.95, 0, 0, 0, 0], [0.6, 0.85, 0, 0, 0], [0.45, 0.5, 0.75, 0, 0], [0.3, 0.35, 0.45, 0.8, 0]])


def _branch(p):
    return ((1, p), (0, 1 - p))


def joint(name):
    """{click vector: probability} by enumerating every latent variable of the model's generative
    story (written independently of the models' filters)."""
    a = [A4[("q", d)] for d in DOCS4]
    s = [S4[("q", d)] for d in DOCS4]
    out = {c: 0.0 for c in itertools.product((0, 1), repeat=R4)}

    def rec(r, state, prob, clicks):
        if prob == 0:
            return
        if r == R4:
            out[tuple(clicks)] += prob
            return
        if name == "pbm":
            for e, pe in _branch(EXAM4[r]):
                for at, pa in _branch(a[r]):
                    rec(r + 1, None, prob * pe * pa, clicks + [e & at])
        elif name == "ubm":
            prev = state
            for e, pe in _branch(G4[r, prev]):
                for at, pa in _branch(a[r]):
                    c = e & at
                    rec(r + 1, r + 1 if c else prev, prob * pe * pa, clicks + [c])
        else:  # cascade family: state = examining
            if not state:
                rec(r + 1, False, prob, clicks + [0])
                return
            for at, pa in _branch(a[r]):
                if not at:
                    if name in ("dbn", "ccm"):
                        for k, pk in _branch(0.8 if name == "dbn" else TAU4[0]):
                            rec(r + 1, bool(k), prob * pa * pk, clicks + [0])
                    else:
                        rec(r + 1, True, prob * pa, clicks + [0])
                    continue
                if name == "cm":
                    rec(r + 1, False, prob * pa, clicks + [1])
                elif name == "ccm":  # the clicked document is relevant with alpha: go on with tau_3, else tau_2
                    for rel, prel in _branch(a[r]):
                        for k, pk in _branch(TAU4[2] if rel else TAU4[1]):
                            rec(r + 1, bool(k), prob * pa * prel * pk, clicks + [1])
                elif name == "dcm":
                    for k, pk in _branch(LAM4[r]):
                        rec(r + 1, bool(k), prob * pa * pk, clicks + [1])
                else:  # dbn (gamma .8) / sdbn (gamma 1)
                    g = 0.8 if name == "dbn" else 1.0
                    for sat, ps in _branch(s[r]):
                        if sat:
                            rec(r + 1, False, prob * pa * ps, clicks + [1])
                        else:
                            for k, pk in _branch(g):
                                rec(r + 1, bool(k), prob * pa * ps * pk, clicks + [1])

    rec(0, 0 if name == "ubm" else True, 1.0, [])
    return out


def fixed4(name):
    m = make(name)
    return {
        "pbm": lambda: m.set_params(A4, EXAM4),
        "cm": lambda: m.set_params(A4),
        "dcm": lambda: m.set_params(A4, LAM4),
        "ubm": lambda: m.set_params(A4, G4),
        "dbn": lambda: m.set_params(A4, S4, 0.8),
        "sdbn": lambda: m.set_params(A4, S4),
        "ccm": lambda: m.set_params(A4, TAU4),
    }[name]()


@pytest.mark.parametrize("name", ["pbm", "cm", "dcm", "ubm", "dbn", "sdbn", "ccm"])
def test_brute_force_marginals_and_conditionals(name):
    """All 2^4 click vectors: the enumerated joint gives the marginals of conditional=False and the
    conditionals of conditional=True. Catches a filter that conditions on the wrong event, a UBM
    marginal that ignores the distribution of the previous click, a DBN that continues after
    satisfaction."""
    pj = joint(name)
    assert sum(pj.values()) == pytest.approx(1.0, abs=1e-12)
    vectors = list(pj)
    clicked = np.array(vectors, dtype=bool)
    clog = from_arrays(np.zeros(len(vectors), np.int64), np.tile(np.arange(R4), (len(vectors), 1)), clicked, ["q"], DOCS4)
    model = fixed4(name)
    marg = np.array([sum(p * c[r] for c, p in pj.items()) for r in range(R4)])
    np.testing.assert_allclose(model.click_probabilities(clog, conditional=False), np.tile(marg, (len(vectors), 1)),
                               rtol=1e-9, atol=1e-12)
    cond = model.click_probabilities(clog, conditional=True)
    checked = 0
    for i, c in enumerate(vectors):
        for r in range(R4):
            den = sum(p for v, p in pj.items() if v[:r] == c[:r])
            if den == 0:  # an impossible prefix (CM: two clicks): the model's eps
                assert cond[i, r] == pytest.approx(EPS)
                continue
            num = sum(p for v, p in pj.items() if v[:r] == c[:r] and v[r] == 1)
            want = min(max(num / den, EPS), 1 - EPS)
            assert cond[i, r] == pytest.approx(want, rel=1e-9, abs=1e-12), (c, r)
            checked += 1
    assert checked >= 16
    # the joint likelihood of every vector is the product of its conditionals
    obs = np.where(clicked, cond, 1 - cond).prod(axis=1)
    probs = np.array([pj[v] for v in vectors])
    possible = probs > 0
    np.testing.assert_allclose(obs[possible], probs[possible], rtol=1e-5)  # CM: factors 1 - eps


# ---- samplers against the models' marginals --------------------------------------------------
@pytest.mark.parametrize("name", ["pbm", "cm", "dcm", "ubm", "dbn", "sdbn"])
def test_samplers_match_model_marginals(name):
    """The sampler's click rates per rank equal the model's exact marginals (within 4 standard errors):
    catches a sampler that continues after a click in CM, or reads the UBM column off by one."""
    rng = np.random.default_rng(11)
    n = 60_000
    a = np.tile([A4[("q", d)] for d in DOCS4], (n, 1))
    s = np.tile([S4[("q", d)] for d in DOCS4], (n, 1))
    kw = {"pbm": dict(exam=EXAM4), "cm": {}, "dcm": dict(lam=LAM4), "ubm": dict(gamma=G4),
          "dbn": dict(sat=s, gamma=0.8), "sdbn": dict(sat=s)}[name]
    clicks = sample(name, rng, attr=a, **kw)
    assert clicks.shape == (n, R4) and clicks.dtype == bool
    clog = from_arrays(np.zeros(1, np.int64), np.arange(R4)[None, :], np.zeros((1, R4), bool), ["q"], DOCS4)
    marg = fixed4(name).click_probabilities(clog, conditional=False)[0]
    se = np.sqrt(marg * (1 - marg) / n)
    assert np.all(np.abs(clicks.mean(axis=0) - marg) < 4 * se + 1e-9)
    if name == "cm":
        assert clicks.sum(axis=1).max() == 1


def test_samplers_show_nothing_where_attr_is_zero_and_refuse_bad_input():
    """A rank with nothing shown (attr 0) is never clicked; bad shapes, names and probabilities are
    refused with messages that say what was expected (catches a dispatcher that drops a parameter)."""
    rng = np.random.default_rng(0)
    a = np.array([[0.9, 0.0], [0.9, 0.0]])
    assert not sample_pbm(a, [1, 1], rng)[:, 1].any()
    assert not sample_cascade(a, rng)[:, 1].any()
    assert not sample_dcm(a, [1, 1], rng)[:, 1].any()
    assert not sample_ubm(a, np.ones((2, 3)), rng)[:, 1].any()
    assert not sample_dbn(a, np.zeros((2, 2)), 1.0, rng)[:, 1].any()
    with pytest.raises(ConfigError, match="known: pbm, cm, dcm, ubm, dbn, sdbn"):
        sample("nope", rng, attr=a)
    with pytest.raises(ConfigError, match="missing lam"):
        sample("dcm", rng, attr=a)
    with pytest.raises(ConfigError, match=r"gamma must have shape \(2, 3\)"):
        sample_ubm(a, np.ones((2, 2)), rng)
    with pytest.raises(ConfigError, match="probabilities in"):
        sample_pbm(a + 0.5, [1, 1], rng)


# ---- EM against an independent optimiser --------------------------------------------------------
def small_sampled_log(gen, n, R, Q, D, seed, **params):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, Q, n)
    perm = np.argsort(rng.random((n, D)), axis=1)[:, :R]
    docs = q[:, None] * D + perm
    alpha = rng.uniform(0.1, 0.8, Q * D)
    kw = dict(params)
    if "sat" in kw:
        kw["sat"] = kw["sat"][docs]
    clicks = sample(gen, rng, attr=alpha[docs], **kw)
    clog = from_arrays(q, docs, clicks, [f"q{i}" for i in range(Q)], [f"d{i}" for i in range(Q * D)])
    return clog, alpha


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _beta_prior(x, pc=2.0, prior=0.5):
    return (prior * pc * np.log(x) + (1 - prior) * pc * np.log1p(-x)).sum() if pc else 0.0


@pytest.mark.parametrize("pseudo_count", [0.0, 2.0])
def test_pbm_em_fixed_point_equals_scipy_maximum(pseudo_count):
    """PBM's EM fixed point maximises the (penalised) likelihood as L-BFGS-B finds it: catches a wrong
    posterior (e.g. P(E|C=0) with alpha in place of 1 - alpha) that converges elsewhere."""
    from scipy.optimize import minimize

    clog, _ = small_sampled_log("pbm", 400, 3, 2, 4, seed=3, exam=[0.9, 0.6, 0.3])
    pidx = clog.pairs()[0]
    P = int(pidx.max()) + 1
    c = clog.clicked
    ranks = np.tile(np.arange(3), (len(clog), 1))

    def nll(x):
        a, g = _sig(x[:P]), _sig(x[P:])
        p = a[pidx] * g[ranks]
        return -(np.log(np.where(c, p, 1 - p)).sum() + _beta_prior(a, pseudo_count) + _beta_prior(g, pseudo_count))

    best = minimize(nll, np.zeros(P + 3), method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    em = make("pbm", iterations=5000, tol=1e-12, pseudo_count=pseudo_count).fit(clog)
    x_em = np.concatenate([_logit(em.alpha), _logit(em.gamma)])
    assert nll(x_em) <= best.fun + 1e-5
    assert em.fit_stats["objective"] * len(clog) == pytest.approx(-nll(x_em), abs=1e-4)
    a_s, g_s = _sig(best.x[:P]), _sig(best.x[P:])
    if pseudo_count == 0:  # the scale gamma * c, alpha / c is free: compare gamma / gamma_0 and alpha gamma_0
        np.testing.assert_allclose(em.gamma / em.gamma[0], g_s / g_s[0], atol=2e-3)
        np.testing.assert_allclose(em.alpha * em.gamma[0], a_s * g_s[0], atol=2e-3)
    else:
        np.testing.assert_allclose(em.gamma, g_s, atol=2e-3)
        np.testing.assert_allclose(em.alpha, a_s, atol=2e-3)


def test_dbn_em_fixed_point_equals_scipy_maximum():
    """DBN's EM (the posteriors of the hidden part after the last click) reaches the penalised maximum
    that L-BFGS-B finds on a forward-algorithm likelihood written here: catches a wrong satisfaction
    posterior or a gamma counted over transitions that could not continue."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(5)
    clog, _ = small_sampled_log("dbn", 600, 3, 2, 3, seed=5, sat=rng.uniform(0.2, 0.8, 6), gamma=0.7)
    pidx = clog.pairs()[0]
    P = int(pidx.max()) + 1
    c = clog.clicked

    def nll(x):
        a, s, g = _sig(x[:P])[pidx], _sig(x[P:2 * P])[pidx], _sig(x[-1])
        f = np.ones(len(clog))  # P(E_r = 1, c_<r)
        L = np.ones(len(clog))  # P(c_<r)
        for r in range(3):
            clicked = c[:, r]
            L = np.where(clicked, f * a[:, r], L - f * a[:, r])
            f = np.where(clicked, f * a[:, r] * (1 - s[:, r]) * g, f * (1 - a[:, r]) * g)
        prior = _beta_prior(_sig(x[:P])) + _beta_prior(_sig(x[P:2 * P])) + _beta_prior(np.array([g]))
        return -(np.log(L).sum() + prior)

    best = min(
        (minimize(nll, x0, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-9})
         for x0 in (np.zeros(2 * P + 1), np.full(2 * P + 1, 0.5))),
        key=lambda r: r.fun,
    )
    em = make("dbn", iterations=3000, tol=1e-12).fit(clog)
    x_em = np.concatenate([_logit(em.alpha), _logit(em.sigma), [_logit(em.gamma)]])
    assert nll(x_em) <= best.fun + 1e-4
    assert em.fit_stats["objective"] * len(clog) == pytest.approx(-nll(x_em), abs=1e-4)
    np.testing.assert_allclose(em.alpha, _sig(best.x[:P]), atol=5e-3)
    np.testing.assert_allclose(em.sigma, _sig(best.x[P:2 * P]), atol=5e-3)
    assert em.gamma == pytest.approx(_sig(best.x[-1]), abs=5e-3)


def test_ccm_em_fixed_point_equals_scipy_maximum():
    """CCM's EM (alpha tied between attractiveness and the clicked document's relevance) reaches the
    penalised maximum L-BFGS-B finds on a forward-algorithm likelihood written here: catches an
    M-step that counts alpha's two roles with the wrong denominators."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(8)
    clog, _ = small_sampled_log("dbn", 600, 3, 2, 3, seed=8, sat=rng.uniform(0.2, 0.8, 6), gamma=0.8)
    pidx = clog.pairs()[0]
    P = int(pidx.max()) + 1
    c = clog.clicked

    def nll(x):
        al, t = _sig(x[:P]), _sig(x[P:])
        a = al[pidx]
        f = np.ones(len(clog))  # P(E_r = 1, c_<r)
        L = np.ones(len(clog))  # P(c_<r)
        for r in range(3):
            clicked = c[:, r]
            L = np.where(clicked, f * a[:, r], L - f * a[:, r])
            f = np.where(clicked, f * a[:, r] * (t[1] * (1 - a[:, r]) + t[2] * a[:, r]), f * (1 - a[:, r]) * t[0])
        return -(np.log(L).sum() + _beta_prior(al) + _beta_prior(t))

    best = min(
        (minimize(nll, x0, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-9})
         for x0 in (np.zeros(P + 3), np.full(P + 3, 0.5))),
        key=lambda r: r.fun,
    )
    em = make("ccm", iterations=5000, tol=1e-12).fit(clog)
    x_em = np.concatenate([_logit(em.alpha), _logit(em.tau)])
    assert nll(x_em) <= best.fun + 1e-4
    assert em.fit_stats["objective"] * len(clog) == pytest.approx(-nll(x_em), abs=1e-4)
    np.testing.assert_allclose(em.alpha, _sig(best.x[:P]), atol=5e-3)
    np.testing.assert_allclose(em.tau, _sig(best.x[P:]), atol=5e-3)


# ---- parameter recovery from sampled logs -----------------------------------------------------
REC_N, REC_R, REC_Q, REC_D = 150_000, 6, 30, 10
REC_EXAM = np.array([1.0, 0.75, 0.55, 0.4, 0.3, 0.22])


def recovery_log(gen, seed):
    rng = np.random.default_rng(seed)
    n, R, Q, D = REC_N, REC_R, REC_Q, REC_D
    q = rng.integers(0, Q, n)
    docs = q[:, None] * D + np.argsort(rng.random((n, D)), axis=1)[:, :R]
    alpha = rng.uniform(0.1, 0.8, Q * D)
    sat = rng.uniform(0.2, 0.8, Q * D)
    truth = {"alpha": alpha, "sat": sat}
    if gen == "pbm":
        clicks = sample_pbm(alpha[docs], REC_EXAM, rng)
    elif gen == "ubm":
        g = np.zeros((R, R + 1))
        for r in range(R):
            g[r, 0] = REC_EXAM[r]
            for j in range(1, r + 1):  # after a click at j - 1: examination recovers, decays with distance
                g[r, j] = 0.95 * 0.8 ** (r - j)
        truth["gamma"] = g
        clicks = sample_ubm(alpha[docs], g, rng)
    else:
        truth["gamma"] = 0.75
        clicks = sample_dbn(alpha[docs], sat[docs], 0.75, rng)
    clog = from_arrays(q, docs, clicks, [f"q{i}" for i in range(Q)], [f"d{i}" for i in range(Q * D)])
    return clog, truth


def _truth_of(model, values):
    return np.array([values[int(d[1:])] for _, d in model.pairs.keys])


@pytest.mark.parametrize("gen", ["pbm", "ubm", "dbn"])
def test_parameter_recovery_and_generator_wins_held_out(gen):
    """Fit on 150k sampled sessions (6 ranks, 300 pairs, ~3000 impressions a pair). Tolerances: PBM/UBM
    examination within 0.02 absolute after fixing the scale (gamma / gamma[0] for PBM, gamma /
    gamma[0, 0] for UBM; the truth has gamma[0] = 1), attractiveness (times the fitted scale) within
    0.02 on average and 0.08 at worst; DBN gamma within 0.02, attractiveness 0.02 / 0.08, satisfaction
    0.04 / 0.15 (on average / worst pair; fewer clicks than impressions inform it). Then the
    generating model has the best held-out perplexity among all registered models (the nesting
    models, UBM over PBM, may tie within 2e-4)."""
    clog, truth = recovery_log(gen, seed={"pbm": 1, "ubm": 2, "dbn": 3}[gen])
    train, test = clog.split(0.25)
    model = make(gen).fit(train)
    if gen == "pbm":
        scale = model.gamma[0]
        np.testing.assert_allclose(model.gamma / scale, REC_EXAM, atol=0.02)
        err = np.abs(model.alpha * scale - _truth_of(model, truth["alpha"]))
        assert err.mean() < 0.02 and err.max() < 0.08
    elif gen == "ubm":
        scale = model.gamma[0, 0]
        valid = np.tril(np.ones((REC_R, REC_R + 1), dtype=bool))
        np.testing.assert_allclose((model.gamma / scale)[valid], truth["gamma"][valid], atol=0.02)
        err = np.abs(model.alpha * scale - _truth_of(model, truth["alpha"]))
        assert err.mean() < 0.02 and err.max() < 0.08
    else:
        assert model.gamma == pytest.approx(0.75, abs=0.02)
        err = np.abs(model.alpha - _truth_of(model, truth["alpha"]))
        assert err.mean() < 0.02 and err.max() < 0.08
        err = np.abs(model.sigma - _truth_of(model, truth["sat"]))
        assert err.mean() < 0.04 and err.max() < 0.15
    ppl = {}
    for name in CLICK_MODELS:
        m = model if name == gen else make(name).fit(train)
        ppl[name] = perplexity(m, test)[0]
    others = {k: v for k, v in ppl.items() if k != gen}
    best_other = min(others, key=others.get)
    tie = 2e-4 if (gen == "pbm" and best_other == "ubm") else 0.0
    assert ppl[gen] <= ppl[best_other] + tie, ppl


# ---- measures, defaults, segments ------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled():
    clog, _ = small_sampled_log("dbn", 6000, 5, 8, 8, seed=9, sat=np.random.default_rng(9).uniform(0.2, 0.8, 64), gamma=0.8)
    return clog.split(0.25)


@pytest.mark.parametrize("name", list(CLICK_MODELS))
def test_measures_are_in_range(name, sampled):
    """Log-likelihood <= 0, perplexity in [1, 2], ctr_error >= 0 for every model; per rank the perplexity
    is >= 1, and <= 2 for the models that know the rank (GCTR and DCTR predict rank 0's click rate of
    about 0.5 with the log's mean, worse than a coin flip there: above 2 at that rank)."""
    train, test = sampled
    model = make(name).fit(train)
    res = evaluate(model, test)
    assert res["log_likelihood"] <= 0
    assert 1 <= res["perplexity"] <= 2
    assert all(x >= 1 for x in res["perplexity_at"]) and len(res["perplexity_at"]) == 5
    if name not in ("gctr", "dctr"):
        assert all(x <= 2 for x in res["perplexity_at"])
    assert res["ctr_error"] >= 0
    assert res["sessions"] == len(test)
    assert res["log_likelihood"] == pytest.approx(log_likelihood(model, test))
    overall, at = perplexity(model, test)
    assert res["perplexity"] == pytest.approx(overall) and res["perplexity_at"] == pytest.approx(at)
    assert res["ctr_error"] == pytest.approx(ctr_error(model, test))
    fs = model.fit_stats
    assert {"iterations", "converged", "log_likelihood", "seconds"} <= set(fs) and fs["log_likelihood"] <= 0
    assert isinstance(model.params(), dict) and model.params()["pairs"] == len(model.pairs)


def test_ctr_error_by_hand():
    """Mean over (query, rank) cells of |mean predicted - observed CTR|: GCTR 0.3 on the tiny log
    (catches a mean over sessions instead of cells, or padded ranks counted as impressions)."""
    # cells (q, 0): CTR 1/3, (q, 1): 1/3, (q, 2): 1/2 -> (|.3 - 1/3| + |.3 - 1/3| + |.3 - .5|) / 3
    assert ctr_error(fixed("gctr"), tiny_log()) == pytest.approx((2 / 30 + 0.2) / 3)


@pytest.mark.parametrize("name", list(CLICK_MODELS))
def test_unseen_pairs_get_the_documented_default(name):
    """A test log with a new document (and a new query): the model's default (prior 0.5 for pair
    parameters; GCTR / RCTR have none), counted as unseen (catches a lookup by integer index, which
    would give the new document some other document's parameters)."""
    b = ClickLogBuilder(ranks=2)
    b.add(Session("q", ["a", "new"], []))
    b.add(Session("other", ["a", "b"], [0]))
    test = b.build()
    model = make(name, pseudo_count=0).fit(tiny_log())
    p = model.click_probabilities(test, conditional=False)
    assert model.predict_stats["unseen_pairs"] == 3 and model.predict_stats["unseen_impressions"] == 3
    if name in ("gctr", "rctr"):
        assert model.relevance("q", "new") == model.relevance("q", "a")
        return
    assert model.relevance("q", "new") == pytest.approx(0.25 if name in ("dbn", "sdbn") else 0.5)
    assert ("q", "new") not in model.relevance_table() and ("q", "a") in model.relevance_table()
    # the whole second session is unseen: its first rank gets the default attractiveness 0.5 x examination
    if name == "pbm":
        assert p[1, 0] == pytest.approx(0.5 * model.gamma[0])
    elif name == "ubm":
        assert p[1, 0] == pytest.approx(0.5 * model.gamma[0, 0])
    else:
        assert p[1, 0] == pytest.approx(0.5)


def test_segments_equal_evaluating_the_subset(sampled):
    """A segment's measures are those of the log restricted to its queries; queries outside the
    mapping are 'unassigned' (catches segment masks applied to the wrong axis or a lost bucket)."""
    train, test = sampled
    model = make("pbm").fit(train)
    buckets = {q: ("high" if i < 3 else "low") for i, q in enumerate(test.queries[:6])}
    res = evaluate(model, test, buckets)
    assert set(res["segments"]) == {"high", "low", "unassigned"}
    assert sum(s["sessions"] for s in res["segments"].values()) == len(test)
    for seg in ("high", "unassigned"):
        rows = np.array([buckets.get(test.queries[q], "unassigned") == seg for q in test.query])
        sub = evaluate(model, test.subset(np.flatnonzero(rows)))
        for key in ("log_likelihood", "perplexity", "ctr_error", "sessions"):
            assert res["segments"][seg][key] == pytest.approx(sub[key]), (seg, key)


def test_evaluate_all_and_registry(sampled):
    """evaluate_all passes settings to every model and reports fit_stats and params; the registry
    names every model and refuses unknown names and settings with a message listing the known ones."""
    train, test = sampled
    res = evaluate_all(["pbm", "DBN"], train, test, progress=False, iterations=5)
    assert set(res) == {"pbm", "dbn"}
    assert res["pbm"]["fit_stats"]["iterations"] == 5 and not res["pbm"]["fit_stats"]["converged"]
    assert len(res["pbm"]["params"]["examination"]) == 5 and isinstance(res["dbn"]["params"]["gamma"], float)
    assert set(CLICK_MODELS) == {"gctr", "rctr", "dctr", "pbm", "cm", "dcm", "ubm", "dbn", "sdbn", "ccm"}
    with pytest.raises(ConfigError, match="known click models: gctr, rctr, dctr, pbm, cm, dcm, ubm, dbn, sdbn, ccm"):
        make("ubn")
    with pytest.raises(ConfigError, match="iterations"):
        make("pbm", iterations=0)
    with pytest.raises(ConfigError, match="does not take"):
        make("pbm", nonsense=1)
    with pytest.raises(ConfigError, match="before it was fitted"):
        make("pbm").click_probabilities(test, conditional=True)


def test_longer_log_than_fitted_is_refused():
    """A log with more ranks than the fitted examination is refused, not silently indexed out of range."""
    model = make("pbm").fit(tiny_log())
    b = ClickLogBuilder(ranks=4)
    b.add(Session("q", ["a", "b", "c", "d"], [3]))
    with pytest.raises(ConfigError, match="fitted on 3 ranks"):
        model.click_probabilities(b.build(), conditional=True)


# ---- the real Yandex sample -----------------------------------------------------------------
def _yandex_path() -> Path | None:
    root = os.environ.get("UPTRAIN_DATA")
    if not root:
        return None
    path = Path(root) / "raw" / "yandex_wscd_clicks_pyclick" / "trainSample"
    return path if path.is_file() else None


def test_yandex_sample_model_families_rank_as_reported():
    """On the real Yandex WSCD sample (PyClick's trainSample), split 75/25 by session order
    (``log.split(0.25)``: the last quarter of each query's sessions, the file groups sessions by query): PBM,
    UBM and DBN have a lower held-out perplexity than GCTR, RCTR and DCTR (Chuklin et al. 2015, ch. 5;
    Grotov et al. 2015)."""
    path = _yandex_path()
    if path is None:
        pytest.skip("UPTRAIN_DATA is unset or the Yandex sample (raw/yandex_wscd_clicks_pyclick/trainSample) is absent")
    from uptrain.clicks.readers import read_log

    clog = read_log(path, format="pyclick_yandex")
    assert len(clog) > 30_000 and clog.n_ranks == 10
    assert clog.n_clicks > int(clog.clicked.sum())  # repeated clicks are kept in the log
    train, test = clog.split(0.25)
    res = evaluate_all(list(CLICK_MODELS), train, test, progress=False)
    for good in ("pbm", "ubm", "dbn"):
        for ctr in ("gctr", "rctr", "dctr"):
            assert res[good]["perplexity"] < res[ctr]["perplexity"], (good, ctr)
    for r in res.values():
        assert r["log_likelihood"] < 0 and 1 < r["perplexity"] < 2
