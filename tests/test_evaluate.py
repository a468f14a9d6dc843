"""Metrics, significance tests and run files, checked against hand computation and
independent implementations."""

from __future__ import annotations

import json
import math
import random
import warnings

import pytest
from scipy import stats

from uptrain.evaluate.metrics import EvalResult, evaluate_run
from uptrain.evaluate.significance import TTest, compare, marker, paired_ttest
from uptrain.retrieve.runfile import read_trec_run, write_trec_run


def ranking(*docs: str) -> dict[str, float]:
    """Scores that put ``docs`` in the given order."""
    return {d: float(len(docs) - i) for i, d in enumerate(docs)}


# ---------------------------------------------------------------- metrics by hand


def test_rr_at_10_by_hand_and_cutoff_applied():
    docs = [f"d{i}" for i in range(1, 21)]
    run = {"q1": ranking(*docs), "q2": ranking(*docs)}
    qrels = {"q1": {"d3": 1, "d1": 0}, "q2": {"d11": 1}}
    res = evaluate_run(run, qrels, ["RR@10", "RR"])
    assert res.per_query["RR@10"]["q1"] == pytest.approx(1 / 3)
    # first relevant at rank 11: RR@10 is 0, while RR without cutoff is 1/11
    assert res.per_query["RR@10"]["q2"] == 0.0
    assert res.per_query["RR"]["q2"] == pytest.approx(1 / 11)
    assert res.aggregate["RR@10"] == pytest.approx((1 / 3 + 0) / 2)
    assert res.num_queries == 2


def test_recall_at_k_by_hand():
    docs = [f"d{i}" for i in range(1, 21)]
    run = {"q1": ranking(*docs)}
    # 4 relevant: ranks 2 and 5 (in the top 5), rank 9 (top 10), one never retrieved
    qrels = {"q1": {"d2": 1, "d5": 2, "d9": 1, "zz": 1, "d1": 0}}
    res = evaluate_run(run, qrels, ["R@5", "R@10", "R@50"])
    assert res.aggregate["R@5"] == pytest.approx(2 / 4)
    assert res.aggregate["R@10"] == pytest.approx(3 / 4)
    assert res.aggregate["R@50"] == pytest.approx(3 / 4)


def test_ndcg_at_10_graded_by_hand():
    run = {"q1": ranking("a", "b", "c", "d", "e")}
    # grades in ranked order: a=0, b=2, c=1, d=0, e=3; "f" (grade 2) is never retrieved
    qrels = {"q1": {"a": 0, "b": 2, "c": 1, "d": 0, "e": 3, "f": 2}}
    res = evaluate_run(run, qrels, ["nDCG@10"])
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4) + 0 / math.log2(5) + 3 / math.log2(6)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 2 / math.log2(4) + 1 / math.log2(5)
    assert res.aggregate["nDCG@10"] == pytest.approx(dcg / idcg)


def test_ndcg_cutoff_ignores_rank_11():
    docs = [f"n{i}" for i in range(10)] + ["rel"]
    run = {"q1": ranking(*docs)}
    res = evaluate_run(run, {"q1": {"rel": 1}}, ["nDCG@10"])
    assert res.aggregate["nDCG@10"] == 0.0


def test_negative_grade_is_zero_gain():
    run = {"q1": ranking("b", "a", "c")}
    qrels = {"q1": {"a": 2, "b": -1, "c": 1}}
    res = evaluate_run(run, qrels, ["nDCG@10", "RR@10"])
    # b (-1) contributes nothing at rank 1 and is not part of the ideal ranking
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert res.aggregate["nDCG@10"] == pytest.approx(dcg / idcg)
    # a negative gain would have lowered the score below the zero-gain value
    assert res.aggregate["nDCG@10"] == pytest.approx(
        evaluate_run(run, {"q1": {"a": 2, "b": 0, "c": 1}}, ["nDCG@10"]).aggregate["nDCG@10"]
    )
    assert res.aggregate["RR@10"] == pytest.approx(1 / 2)


def test_query_set_missing_empty_and_extra_queries():
    run = {
        "q1": ranking("x", "a"),  # RR@10 = 1/2
        "q2": {},  # empty ranking: counts 0
        # q3 missing from the run: counts 0
        "q4": ranking("z"),  # only non-relevant judgments: not evaluated
        "q9": ranking("a"),  # not in the qrels: ignored
    }
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 2}, "q4": {"z": 0, "y": -1}}
    res = evaluate_run(run, qrels, ["RR@10", "R@10"])
    assert res.num_queries == 3
    assert set(res.per_query["RR@10"]) == {"q1", "q2", "q3"}
    assert res.per_query["RR@10"]["q2"] == 0.0
    assert res.per_query["RR@10"]["q3"] == 0.0
    assert res.aggregate["RR@10"] == pytest.approx(0.5 / 3)
    assert res.aggregate["R@10"] == pytest.approx(1 / 3)


def test_run_with_no_evaluated_query_scores_zero():
    res = evaluate_run({"other": ranking("a")}, {"q1": {"a": 1}}, ["RR@10", "nDCG@10"])
    assert res.aggregate == {"RR@10": 0.0, "nDCG@10": 0.0}
    assert res.num_queries == 1


def test_ties_broken_by_doc_id_for_every_provider():
    # a and b tie; doc id order puts a first, so the relevant b is at rank 2
    run = {"q1": {"b": 1.0, "a": 1.0, "c": 0.5}}
    res = evaluate_run(run, {"q1": {"b": 1}}, ["RR@10", "RR", "R@1"])
    assert res.aggregate["RR@10"] == pytest.approx(0.5)  # MS MARCO provider
    assert res.aggregate["RR"] == pytest.approx(0.5)  # pytrec_eval provider
    assert res.aggregate["R@1"] == 0.0


def test_unparseable_measure_lists_bad_names():
    with pytest.raises(ValueError) as err:
        evaluate_run({"q1": ranking("a")}, {"q1": {"a": 1}}, ["RR@10", "foo@10", "nDCG@x", "Bpref@10"])
    msg = str(err.value)
    assert "'foo@10'" in msg and "'nDCG@x'" in msg and "'Bpref@10'" in msg
    # the valid name is not reported (the hint after "expected" names examples)
    assert "'RR@10'" not in msg.split("expected")[0]


def test_no_judged_query_is_an_error():
    with pytest.raises(ValueError, match="relevance > 0"):
        evaluate_run({"q1": ranking("a")}, {"q1": {"a": 0}}, ["RR@10"])


def test_measure_names_kept_as_given():
    res = evaluate_run({"q1": ranking("a")}, {"q1": {"a": 1}}, ["RR(rel=1)@10", "RR@10"])
    assert res.measures == ["RR(rel=1)@10", "RR@10"]
    assert res.aggregate == {"RR(rel=1)@10": 1.0, "RR@10": 1.0}


# ---------------------------------------------------------------- independent references


def ref_ranked(scores):
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def ref_ndcg(ranked, rels, k):
    gain = lambda g: max(g, 0)  # noqa: E731
    dcg = sum(gain(rels.get(d, 0)) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((gain(g) for g in rels.values()), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def ref_rr(ranked, rels, k):
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1 / (i + 1)
    return 0.0


def ref_recall(ranked, rels, k):
    relevant = {d for d, g in rels.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant)


def test_agreement_with_pure_python_reference_on_random_run():
    rng = random.Random(7)
    docs = [f"D{i:03d}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(40):
        qid = f"Q{q}"
        judged = rng.sample(docs, 15)
        qrels[qid] = {d: rng.choice([-1, 0, 0, 1, 2, 3]) for d in judged}
        if q % 7 == 0:
            continue  # some queries have no ranking at all
        # one decimal makes ties common, so the tie-break is exercised too
        run[qid] = {d: round(rng.random(), 1) for d in rng.sample(docs, 30)}
    res = evaluate_run(run, qrels, ["nDCG@10", "RR@10", "R@20"])

    evaluated = [q for q, r in qrels.items() if any(g > 0 for g in r.values())]
    assert res.num_queries == len(evaluated)
    for name, fn, k in [("nDCG@10", ref_ndcg, 10), ("RR@10", ref_rr, 10), ("R@20", ref_recall, 20)]:
        expected = {q: fn(ref_ranked(run.get(q, {})), qrels[q], k) for q in evaluated}
        for q in evaluated:
            assert res.per_query[name][q] == pytest.approx(expected[q], abs=1e-9), (name, q)
        assert res.aggregate[name] == pytest.approx(sum(expected.values()) / len(evaluated))


# ---------------------------------------------------------------- significance


def test_paired_ttest_by_hand_four_queries():
    a = {"q1": 0.5, "q2": 0.7, "q3": 0.2, "q4": 0.9}
    b = {"q1": 0.4, "q2": 0.3, "q3": 0.2, "q4": 0.6}
    # differences 0.1, 0.4, 0.0, 0.3: mean 0.2, sample sd sqrt(0.1 / 3)
    mean = 0.2
    sd = math.sqrt(((0.1 - mean) ** 2 + (0.4 - mean) ** 2 + (0.0 - mean) ** 2 + (0.3 - mean) ** 2) / 3)
    t = mean / (sd / math.sqrt(4))
    res = paired_ttest(a, b)
    assert res.n == 4
    assert res.mean_diff == pytest.approx(mean)
    assert res.t == pytest.approx(t)
    assert res.t == pytest.approx(2.1908902300206643)
    assert res.p == pytest.approx(2 * stats.t.sf(t, df=3))


def test_paired_ttest_matches_scipy_on_common_queries():
    rng = random.Random(3)
    a = {f"q{i}": rng.random() for i in range(50)}
    b = {f"q{i}": rng.random() for i in range(10, 60)}  # 40 queries in common
    common = [q for q in a if q in b]
    ref = stats.ttest_rel([a[q] for q in common], [b[q] for q in common])
    res = paired_ttest(a, b)
    assert res.n == 40
    assert res.t == pytest.approx(float(ref.statistic))
    assert res.p == pytest.approx(float(ref.pvalue))


def test_zero_variance_is_p_one_without_warnings():
    a = {"q1": 0.3, "q2": 0.5, "q3": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = paired_ttest(a, dict(a))
        single = paired_ttest({"q1": 1.0}, {"q1": 0.0})
        shifted = paired_ttest({"q1": 0.5, "q2": 0.7}, {"q1": 0.25, "q2": 0.45})
    assert res == TTest(t=0.0, p=1.0, n=3, mean_diff=0.0)
    assert marker(a, dict(a)) == ""
    assert single.p == 1.0 and single.t == 0.0
    # a constant non-zero difference has zero variance too, but is the limit t -> inf
    assert shifted.t == math.inf and shifted.p == 0.0


def test_marker_directions():
    rng = random.Random(11)
    base = {f"q{i}": rng.random() * 0.5 for i in range(30)}
    better = {q: v + 0.3 + rng.random() * 0.05 for q, v in base.items()}
    noisy = {q: v + rng.uniform(-0.01, 0.01) for q, v in base.items()}
    assert marker(better, base) == "+"
    assert marker(base, better) == "-"
    assert marker(better, base, better="†") == "†"
    assert marker(base, better, worse="") == ""
    assert paired_ttest(noisy, base).p >= 0.05
    assert marker(noisy, base) == ""


def test_compare_eval_results():
    qs = [f"q{i}" for i in range(20)]
    a = EvalResult(["RR@10", "R@10"], {}, {"RR@10": {q: 0.9 - 0.01 * i for i, q in enumerate(qs)},
                                         "R@10": {q: 0.5 for q in qs}}, 20)
    b = EvalResult(["RR@10", "R@10"], {}, {"RR@10": {q: (0.1 if i % 2 else 0.2) for i, q in enumerate(qs)},
                                         "R@10": {q: 0.5 for q in qs}}, 20)
    assert compare(a, b) == {"RR@10": "+", "R@10": ""}
    assert compare(b, a) == {"RR@10": "-", "R@10": ""}


# ---------------------------------------------------------------- EvalResult and run files


def test_eval_result_json_round_trip():
    res = evaluate_run({"q1": ranking("x", "a"), "q2": ranking("b")}, {"q1": {"a": 1}, "q2": {"b": 2}},
                       ["RR@10", "nDCG@10"])
    back = EvalResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back == res


def test_run_file_round_trip_rank_order_and_tie_break(tmp_path):
    run = {
        "q2": {"d9": 0.5, "d1": 2.25, "d3": 0.5, "d2": 0.5, "d7": -1.0},
        "q10": {"x": 1e-12, "y": 3.0},
    }
    path = tmp_path / "sub" / "run.trec"
    write_trec_run(path, run, tag="sys1")
    lines = [line.split() for line in path.read_text().splitlines()]
    assert [l[0] for l in lines] == ["q2"] * 5 + ["q10"] * 2
    # descending score; the three 0.5 ties by ascending doc id
    assert [(l[2], l[3]) for l in lines[:5]] == [("d1", "1"), ("d2", "2"), ("d3", "3"), ("d9", "4"), ("d7", "5")]
    assert all(l[1] == "Q0" and l[5] == "sys1" and len(l) == 6 for l in lines)
    assert read_trec_run(path) == run
    # only the finished file remains in the directory
    assert [p.name for p in path.parent.iterdir()] == ["run.trec"]


def test_run_file_depth(tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run(path, {"q1": {f"d{i}": float(i) for i in range(10)}}, tag="t", depth=3)
    assert read_trec_run(path) == {"q1": {"d9": 9.0, "d8": 8.0, "d7": 7.0}}


def test_run_file_malformed_line(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq1 Q0 d3 3 t\n")
    with pytest.raises(ValueError, match=r"bad\.trec:3"):
        read_trec_run(path)
    path.write_text("q1 Q0 d1 1 high t\n")
    with pytest.raises(ValueError, match=r"bad\.trec:1.*score"):
        read_trec_run(path)
    path.write_text("q1 Q0 d1 1 2.0 t\n\nq1 Q0 d1 2 1.0 t\n")
    with pytest.raises(ValueError, match=r"bad\.trec:3.*twice"):
        read_trec_run(path)


def test_run_file_rejects_whitespace_ids(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(tmp_path / "r.trec", {"q1": {"doc 1": 1.0}}, tag="t")
    assert list(tmp_path.iterdir()) == []
