"""The judge's measures and its agreement with human labels, against hand computations and
independent references: sDCG@K (the paper's shifted gains and the raw cwl normalisation), the
identity between them, ir_measures' SDCG and nDCG, Cohen's kappa from p_o and p_e, Kendall's tau
from concordant pairs, Spearman's rho from rank differences, linear percentiles, paired
differences, the system ranking, the Figure 3 PNG and the Markdown tables."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest

from uptrain.judge.agreement import (PAPER, agreement_markdown, error_histograms, label_agreement,
                                     paired_difference_errors, query_agreement, system_agreement)
from uptrain.judge.measures import ir_measures_sdcg, ndcg, query_sdcg, sdcg

L3 = 1 / math.log2(3)  # the discount of rank 2
L5 = 1 / math.log2(5)  # of rank 4
D4 = 1 + L3 + 0.5 + L5  # discount sum over 4 ranks
D5 = D4 + 1 / math.log2(6)


# ---- sDCG ----------------------------------------------------------------------------------

def test_sdcg_hand_values_shift_and_raw_short_page_and_unlabelled():
    # grades 2, 0, unlabelled on a page of 3 with K = 4 on a 0-3 scale
    # shift: gains 3, 1, 0, (missing rank 4: 0) over 4 * D4
    assert sdcg([2, 0, None], 4, 3) == pytest.approx((3 + 1 * L3) / (4 * D4), abs=1e-12)
    # raw: gains 2, 0, 0 over 3 * D4 (ir_measures' SDCG normalisation)
    assert sdcg([2, 0, None], 4, 3, shift=False) == pytest.approx(2 / (3 * D4), abs=1e-12)
    # a full page of top grades is 1 under both; a page of zeros is 0 raw but 1/L shifted
    assert sdcg([3, 3, 3, 3], 4, 3) == pytest.approx(1.0)
    assert sdcg([3, 3, 3, 3], 4, 3, shift=False) == pytest.approx(1.0)
    assert sdcg([0, 0, 0, 0], 4, 3) == pytest.approx(1 / 4)
    assert sdcg([0, 0, 0, 0], 4, 3, shift=False) == 0.0
    # the denominator runs over K: a short page of top grades is penalised (catches a min(K, len) ideal)
    assert sdcg([3], 4, 3) == pytest.approx(1 / D4)
    # ranks beyond K do not count
    assert sdcg([0, 0, 0, 0, 3, 3], 4, 3, shift=False) == 0.0
    # a 5-point scale (grades 0..4 -> the paper's 1..5)
    assert sdcg([4, 0], 2, 4) == pytest.approx((5 + 1 * L3) / (5 * (1 + L3)))


def test_sdcg_refuses_bad_grades_and_cutoffs():
    with pytest.raises(ValueError, match="0..3"):
        sdcg([4], 3, 3)
    with pytest.raises(ValueError, match="0..3"):
        sdcg([-1], 3, 3)
    with pytest.raises(ValueError, match="integer"):
        sdcg([1.5], 3, 3)
    with pytest.raises(ValueError, match="cutoff"):
        sdcg([1], 0, 3)
    with pytest.raises(ValueError, match="max_grade"):
        sdcg([1], 3, 0)


def test_shift_raw_identity():
    """sDCG_shift = (G sDCG_raw + D_filled / D_K) / (G + 1), D_filled over the labelled ranks <= K."""
    rng = random.Random(7)
    for _ in range(200):
        G = rng.choice([1, 3, 4])
        K = rng.randint(1, 12)
        n = rng.randint(0, 15)
        grades = [None if rng.random() < 0.2 else rng.randint(0, G) for _ in range(n)]
        d_k = sum(1 / math.log2(1 + r) for r in range(1, K + 1))
        d_filled = sum(1 / math.log2(1 + r) for r, g in enumerate(grades[:K], start=1) if g is not None)
        raw = sdcg(grades, K, G, shift=False)
        assert sdcg(grades, K, G) == pytest.approx((G * raw + d_filled / d_k) / (G + 1), abs=1e-12)
    # full, fully labelled pages: a difference is compressed by G / (G + 1)
    a, b = [3, 2, 0, 1], [0, 1, 1, 0]
    assert sdcg(a, 4, 3) - sdcg(b, 4, 3) == pytest.approx(0.75 * (sdcg(a, 4, 3, False) - sdcg(b, 4, 3, False)))


def test_query_sdcg_counts():
    run = {"q1": ["a", "b", "a", "c"], "q2": ["x"], "q3": [], "extra": ["e"]}
    labels = {"q1": {"a": 3, "c": 1}, "q2": {"x": 0}}
    values, counts = query_sdcg(run, labels, 3, 3, queries=["q1", "q2", "q3", "q4"])
    # q1: the repeat of a dropped -> a (3), b (unlabelled), c (1): gains 4, 0, 2 over 4 * D3
    d3 = 1 + L3 + 0.5
    assert values["q1"] == pytest.approx((4 + 2 * 0.5) / (4 * d3))
    assert values["q2"] == pytest.approx(1 / (4 * d3))  # a short page: 1 of 3 ranks filled
    assert values["q3"] == 0.0 and values["q4"] == 0.0
    assert set(values) == {"q1", "q2", "q3", "q4"}
    assert counts["queries"] == 4
    assert counts["queries_without_ranking"] == 2  # q3 (empty) and q4 (absent)
    assert counts["run_queries_not_evaluated"] == 1  # extra
    assert counts["duplicate_documents"] == 1
    assert counts["short_rankings"] == 1  # q2 (q1 has 3 after the repeat is dropped)
    assert counts["labelled"] == 3 and counts["unlabelled"] == 1
    assert counts["judged_at_k"] == pytest.approx((2 / 3 + 1) / 2)
    # the default query set is the run's
    values, counts = query_sdcg(run, labels, 3, 3)
    assert set(values) == set(run) and counts["queries_without_ranking"] == 1


def _random_example(seed: int, n_queries: int = 6, G: int = 3):
    rng = random.Random(seed)
    run, labels = {}, {}
    for i in range(n_queries):
        q = f"q{i}"
        docs = [f"d{j}" for j in rng.sample(range(40), rng.randint(1, 15))]
        run[q] = docs
        labels[q] = {d: rng.randint(0, G) for d in docs if rng.random() < 0.8}
        labels[q].update({f"u{j}": rng.randint(0, G) for j in range(3)})  # labelled, never ranked
    return run, labels


def test_ir_measures_sdcg_matches_raw_sdcg():
    run, labels = _random_example(3)
    ref = ir_measures_sdcg(run, labels, 10, 3)
    if ref is None:
        pytest.skip("ir_measures' cwl_eval provider (package cwl-eval) is unavailable")
    ours, _ = query_sdcg(run, labels, 10, 3, shift=False)
    assert set(ref) == set(ours)
    for q in ours:
        assert ours[q] == pytest.approx(ref[q], abs=1e-9), q
    # one value by hand: a (3), c (0), b (1), z (unlabelled) at K = 5: (3 + 0 + 1/2) / (3 D5)
    one = ir_measures_sdcg({"q": ["a", "c", "b", "z"]}, {"q": {"a": 3, "b": 1, "c": 0}}, 5, 3)
    assert one["q"] == pytest.approx(3.5 / (3 * D5), abs=1e-12)
    # a run query without any label: 0 (the provider skips it)
    assert ir_measures_sdcg({"q": ["a"], "r": ["b"]}, {"q": {"a": 2}}, 2, 3)["r"] == 0.0


def test_ndcg_hand_value():
    run = {"q1": ["a", "c", "b"], "q2": ["x"]}
    labels = {"q1": {"a": 3, "b": 1, "c": 0}, "q2": {"x": 0}}
    values = ndcg(run, labels, 5)
    # DCG = 3/1 + 0 + 1/2; ideal = 3/1 + 1/log2(3)
    assert values["q1"] == pytest.approx(3.5 / (3 + L3), abs=1e-9)
    assert values["q2"] == 0.0  # no positive label: ir_measures gives 0


# ---- label level ---------------------------------------------------------------------------

HUMAN = {"q1": {"a": 0, "b": 1, "c": 2, "d": 3}, "q2": {"x": 1, "y": 0}}
JUDGE = {"q1": {"a": 0, "b": 2, "c": 2, "d": 1, "e": 1}, "q2": {"y": 0}}


def test_label_agreement_hand_example():
    out = label_agreement(HUMAN, JUDGE, 3, segments={"q1": "head", "q2": "tail"})
    # common pairs (human, judge): (0,0) (1,2) (2,2) (3,1) | (0,0)
    assert out["pairs"] == 5 and out["human_only"] == 1 and out["judge_only"] == 1
    assert out["exact"] == pytest.approx(3 / 5)
    assert out["within_one"] == pytest.approx(4 / 5)
    # Cohen's kappa: p_o = 3/5; marginals human (2,1,1,1)/5, judge (2,1,2,0)/5
    p_o = 3 / 5
    p_e = (2 * 2 + 1 * 1 + 1 * 2 + 1 * 0) / 25
    assert out["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-6)
    # linearly weighted kappa: 1 - sum |i-j| O_ij / sum |i-j| E_ij
    ph, pj = [0.4, 0.2, 0.2, 0.2], [0.4, 0.2, 0.4, 0.0]
    observed = (0 + 1 + 0 + 2 + 0) / 5
    expected = sum(abs(i - j) * ph[i] * pj[j] for i in range(4) for j in range(4))
    assert out["weighted_kappa"] == pytest.approx(1 - observed / expected, abs=1e-6)
    assert out["confusion"][1][2] == 1 and out["confusion"][3][1] == 1 and out["confusion"][0][0] == 2
    seg = out["segments"]
    assert seg["head"]["pairs"] == 4 and seg["head"]["exact"] == pytest.approx(0.5)
    assert seg["tail"]["pairs"] == 1 and seg["tail"]["exact"] == 1.0
    assert seg["tail"]["kappa"] is None  # a single category: undefined
    assert out["pairs_without_segment"] == 0
    assert label_agreement(HUMAN, JUDGE, 3, segments={"q1": "head"})["pairs_without_segment"] == 1


# ---- query level ---------------------------------------------------------------------------

def test_query_agreement_against_definitions():
    judge = {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.8, "e": 0.5, "judge_only": 0.2}
    human = {"a": 0.2, "b": 0.3, "c": 0.5, "d": 0.7, "e": 0.6, "human_only": 0.9}
    out = query_agreement(judge, human)
    qs = sorted("abcde")
    n = len(qs)
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (judge[qs[i]] - judge[qs[j]]) * (human[qs[i]] - human[qs[j]])
            concordant += s > 0
            discordant += s < 0
    assert out["queries"] == 5 and out["judge_only"] == 1 and out["human_only"] == 1
    assert out["kendall_tau"] == pytest.approx((concordant - discordant) / (n * (n - 1) / 2))
    rank_j = {q: r for r, q in enumerate(sorted(qs, key=judge.get))}
    rank_h = {q: r for r, q in enumerate(sorted(qs, key=human.get))}
    d2 = sum((rank_j[q] - rank_h[q]) ** 2 for q in qs)
    assert out["spearman_rho"] == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))
    # errors judge - human: -0.1, 0.1, -0.2, 0.1, -0.1; sorted -0.2 -0.1 -0.1 0.1 0.1
    assert out["error_mean"] == pytest.approx(-0.04)
    assert out["error_p10"] == pytest.approx(-0.2 + 0.4 * 0.1)  # position 0.4 of 4
    assert out["error_median"] == pytest.approx(-0.1)
    assert out["error_p90"] == pytest.approx(0.1)
    assert out["error_abs_mean"] == pytest.approx(0.12)
    assert 0 <= out["kendall_p"] <= 1 and 0 <= out["spearman_p"] <= 1


def test_query_agreement_segments_and_small_segments():
    judge = {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.8, "e": 0.5}
    human = {"a": 0.2, "b": 0.3, "c": 0.5, "d": 0.7, "e": 0.6}
    out = query_agreement(judge, human, segments={"a": "x", "b": "x", "c": "x", "d": "y"})
    assert out["segments"]["x"]["queries"] == 3
    # x: judge 0.1 0.4 0.3 vs human 0.2 0.3 0.5: pairs (a,b)+ (a,c)+ (b,c)- -> tau 1/3
    assert out["segments"]["x"]["kendall_tau"] == pytest.approx(1 / 3)
    assert out["segments"]["y"]["kendall_tau"] is None and out["segments"]["y"]["spearman_rho"] is None
    assert out["segments"]["y"]["error_mean"] == pytest.approx(0.1)
    assert out["segments_too_small"] == 1 and out["queries_without_segment"] == 1


def test_constant_inputs_give_none_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = query_agreement({"a": 0.5, "b": 0.5, "c": 0.5}, {"a": 0.1, "b": 0.2, "c": 0.3})
        assert out["kendall_tau"] is None and out["spearman_rho"] is None and out["kendall_p"] is None
        assert out["error_mean"] == pytest.approx(0.3)
        sysout = system_agreement({"A": {"q": 0.5}, "B": {"q": 0.5}, "C": {"q": 0.5}},
                                  {"A": {"q": 0.1}, "B": {"q": 0.2}, "C": {"q": 0.3}})
        assert sysout["kendall_tau"] is None and sysout["significant_pairs"] == 0
        assert sysout["significant_sign_agreement"] is None


def test_query_agreement_refusals():
    with pytest.raises(ValueError, match="share no query"):
        query_agreement({"a": 0.1}, {"b": 0.2})
    with pytest.raises(ValueError, match="non-finite"):
        query_agreement({"a": float("nan"), "b": 0.1}, {"a": 0.1, "b": 0.2})


# ---- system level --------------------------------------------------------------------------

def test_paired_difference_errors_hand_example():
    judge = {"A": {"q1": 0.5, "q2": 0.4, "q3": 0.3}, "B": {"q1": 0.4, "q2": 0.4, "q3": 0.5},
             "C": {"q1": 0.1, "q2": 0.1}}
    human = {"A": {"q1": 0.6, "q2": 0.5, "q3": 0.2}, "B": {"q1": 0.3, "q2": 0.5, "q3": 0.1},
             "C": {"q1": 0.1, "q2": 0.2, "q3": 0.3}, "D": {"q1": 0.0}}
    out = paired_difference_errors(judge, human)
    assert out["systems"] == ["A", "B", "C"] and out["human_only_systems"] == ["D"]
    ab = out["pairs"]["A vs B"]
    # judge differences 0.1, 0, -0.2; human 0.3, 0, 0.1; errors -0.2, 0, -0.3
    assert ab["n"] == 3
    assert ab["error_mean"] == pytest.approx(-0.5 / 3)
    assert ab["error_median"] == pytest.approx(-0.2)
    assert ab["error_p10"] == pytest.approx(-0.3 + 0.2 * 0.1)
    assert ab["error_p90"] == pytest.approx(-0.2 + 0.8 * 0.2)
    assert ab["sign_agreement"] == pytest.approx(2 / 3)  # q1 agrees, q2 tie = tie, q3 disagrees
    assert out["pairs"]["A vs C"]["n"] == 2  # C has no judge value on q3
    assert set(out["pairs"]) == {"A vs B", "A vs C", "B vs C"}
    assert out["pooled"]["n"] == 3 + 2 + 2 == len(out["pooled"]["errors"])
    # A vs C on q1: (0.5 - 0.1) - (0.6 - 0.1) = -0.1
    assert -0.1 == pytest.approx(out["pooled"]["errors"][3])
    # a judge tie against a human difference disagrees, whichever the human's sign
    tie = paired_difference_errors({"A": {"q": 0.3, "r": 0.3}, "B": {"q": 0.3, "r": 0.3}},
                                   {"A": {"q": 0.4, "r": 0.1}, "B": {"q": 0.2, "r": 0.2}})
    assert tie["pairs"]["A vs B"]["sign_agreement"] == 0.0 and tie["pooled"]["sign_agreement"] == 0.0


def _systems_example():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.5, size=12)
    noise = lambda: rng.normal(0, 0.005, size=12)  # noqa: E731
    human = {"S1": base + noise(), "S2": base + 0.05 + noise(), "S3": base + 0.10 + noise()}
    # S4 - S3: a tiny mean difference under large alternating noise: not significant
    human["S4"] = human["S3"] + 0.005 + np.array([0.06, -0.06] * 6)
    judge = {"S1": human["S1"], "S2": human["S2"], "S3": human["S4"] + 0.01, "S4": human["S3"]}
    to = lambda d: {s: {f"q{i}": float(v) for i, v in enumerate(x)} for s, x in d.items()}  # noqa: E731
    return to(judge), to(human)


def test_system_agreement_one_reversed_pair():
    from scipy import stats

    judge, human = _systems_example()
    out = system_agreement(judge, human)
    hm = out["human_means"]
    assert hm["S1"] < hm["S2"] < hm["S3"] < hm["S4"]
    assert out["judge_means"]["S4"] < out["judge_means"]["S3"]
    # 4 systems, 6 pairs, one discordant: tau = (5 - 1) / 6
    assert out["kendall_tau"] == pytest.approx(4 / 6)
    assert out["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # ranks 1 2 4 3 vs 1 2 3 4
    assert out["pairs"] == 6 and out["sign_agreement"] == pytest.approx(5 / 6)
    p34 = stats.ttest_rel([human["S3"][q] for q in sorted(human["S3"])],
                          [human["S4"][q] for q in sorted(human["S4"])]).pvalue
    assert p34 > 0.05  # the reversed pair is not significant under the humans ...
    assert out["significant_pairs"] == 5
    assert out["significant_sign_agreement"] == 1.0  # ... so every significant pair is ordered right
    assert out["queries"] == 12 and out["queries_left_out"] == 0


def test_system_agreement_two_systems_and_refusal():
    judge = {"A": {"q": 0.2, "r": 0.3}, "B": {"q": 0.4, "r": 0.2, "s": 0.3}}
    human = {"A": {"q": 0.1, "r": 0.1}, "B": {"q": 0.5, "r": 0.2}}
    out = system_agreement(judge, human)
    assert out["kendall_tau"] == pytest.approx(1.0)  # both put B above A
    assert out["queries"] == 2 and out["queries_left_out"] == 1
    with pytest.raises(ValueError, match="at least 2 systems"):
        system_agreement({"A": {"q": 0.1}}, {"A": {"q": 0.1}, "B": {"q": 0.2}})


# ---- the figure and the tables -------------------------------------------------------------

def test_error_histograms_png(tmp_path):
    path = error_histograms([0.01, -0.02, 0.03, 0.0], [0.1, -0.1], tmp_path / "fig" / "errors.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = error_histograms([], [], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_agreement_markdown():
    label = label_agreement(HUMAN, JUDGE, 3)
    judge = {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.8}
    human = {"a": 0.2, "b": 0.3, "c": 0.5, "d": 0.7}
    query = query_agreement(judge, human, segments={"a": "x", "b": "x", "c": "x", "d": "y"})
    system = system_agreement(*_systems_example())
    md = agreement_markdown(label, query, system)
    assert "| judge | 60.0% | 80.0% |" in md
    assert "73.7%" in md and "91.7%" in md
    assert "| paper, overall (sDCG@25) | 0.6520 | 0.8170 | 0.0050 | -0.0470 | n/a | 0.0590 | n/a |" in md
    assert "| x |" in md and "| y | n/a | n/a |" in md
    assert "| 0.6667 |" in md and "(6)" in md
    assert PAPER["citation"] in md
    bare = agreement_markdown(label, None, None, paper=False)
    assert "73.7%" not in bare and "Query level" not in bare
