"""The clicks-vs-LLM study's parts: frequency buckets as segments, held-out queries, the pool without
injected positives, data scheduling and FAMOL label sources, the score analysis, ERR@10, the study
experiments through the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY, needs_data, run_cli

from uptrain.errors import ConfigError
from uptrain.labels import LabelConfigError, build_examples, parse_spec


# ---- frequency buckets -------------------------------------------------------------------------

def test_quantile_buckets_cut_at_the_frequency_quantiles():
    from uptrain.clicks.buckets import frequency_buckets

    freq = {f"q{i}": f for i, f in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])}
    # numpy's linear quantiles of [1..9, 100]: q0.8 = 8.2, q0.5 = 5.5
    got = frequency_buckets(freq, scheme="quantile", quantiles=[0.8, 0.5])
    assert [got[f"q{i}"] for i in range(10)] == ["low"] * 5 + ["medium"] * 3 + ["high"] * 2
    with pytest.raises(ConfigError, match="descending"):
        frequency_buckets(freq, scheme="quantile", quantiles=[0.5, 0.8])
    with pytest.raises(ConfigError, match="need 3 labels"):
        frequency_buckets(freq, scheme="quantile", quantiles=[0.8, 0.5], labels=["a", "b"])


@dataclass
class _Sim:  # a simulated click artifact's value: frequencies include zero-session queries
    freq: dict

    def frequencies(self):
        return dict(self.freq)


class _Ctx:
    def __init__(self, value):
        self.value = value
        self.asked = []

    def require(self, name, params=None):
        self.asked.append(name)
        return SimpleNamespace(value=self.value)


def test_click_frequency_buckets_over_the_whole_log_not_the_evaluated_queries():
    from uptrain.clicks.segments import UNSEEN, ClickFrequency

    # 20 log queries with frequencies 20..1 (q0 most frequent); rank buckets of 2 queries each
    freq = {f"q{i}": 20 - i for i in range(20)}
    seg = ClickFrequency()
    ctx = _Ctx(_Sim(freq))
    seg.prepare(ctx)
    assert ctx.asked == ["clicks"]
    # evaluate three queries only: their buckets are those of the whole log (a bucketing over the
    # evaluated queries alone would call q10 "high")
    got = seg.assign({"q10": "", "q19": "", "q1": "", "stranger": ""})
    assert got == {"q10": "medium", "q19": "low", "q1": "high", "stranger": UNSEEN}
    summary = seg.summary()
    assert summary["buckets"]["high"] == {"queries": 6, "sessions": sum(range(15, 21)), "min_frequency": 15,
                                          "max_frequency": 20}
    assert summary["unseen"] == 1 and summary["queries"]["q10"] == ["medium", 10]
    assert seg.order()[:3] == ["high", "medium", "low"] and seg.order()[-1] == UNSEEN
    assert "Query-frequency buckets" in seg.report()


def test_click_frequency_refuses_bad_settings_before_running():
    from uptrain.clicks.segments import ClickFrequency

    with pytest.raises(ConfigError, match="cover buckets"):
        ClickFrequency(groups={"high": [0, 1], "low": [2]})
    with pytest.raises(ConfigError, match="scheme"):
        ClickFrequency(scheme="nosuch")


# ---- held-out queries ---------------------------------------------------------------------------

def _collection(n=200, name="c"):
    from uptrain.data.collection import Collection

    docs = {f"d{i}": f"document {i}" for i in range(n)}
    queries = {f"q{i}": f"query {i}" for i in range(n)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(n)}
    return Collection(name=name, docs=docs, queries=queries, qrels=qrels, stats={})


class _Fixed:
    """A source over an in-memory collection (the Source interface)."""

    def __new__(cls, collection):
        from uptrain.data.sources import Source

        class Fixed(Source):
            kind = "fixed"

            def content_spec(self):
                return {"n": len(collection.queries)}

            def load_full(self):
                return collection

        return Fixed(collection.name)


def test_query_subset_parts_partition_the_queries_and_do_not_depend_on_the_others():
    from uptrain.data.split import QuerySubset, in_holdout

    full = _collection(400)
    test = QuerySubset(_Fixed(full), part="test", fraction=0.3, seed=5).load()
    train = QuerySubset(_Fixed(full), part="train", fraction=0.3, seed=5).load()
    assert set(test.queries).isdisjoint(train.queries) and set(test.queries) | set(train.queries) == set(full.queries)
    assert len(test.docs) == 400 and set(test.qrels) == set(test.queries)
    # 400 draws at p = 0.3: mean 120, sd 9.2; 4 sd either side
    assert 83 <= len(test.queries) <= 157
    # a query's part is a function of its id alone: a subsampled collection splits the same way
    small = QuerySubset(_Fixed(_collection(50)), part="test", fraction=0.3, seed=5).load()
    assert set(small.queries) == {q for q in test.queries if int(q[1:]) < 50}
    assert all(in_holdout(q, 0.3, 5) for q in test.queries)
    with pytest.raises(ConfigError, match="part"):
        QuerySubset(_Fixed(full), part="dev")
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        QuerySubset(_Fixed(full), fraction=1.5)


@dataclass
class _Entry:
    query_id: str
    query: str
    positives: tuple
    candidates: tuple


def test_human_labels_leave_the_held_out_queries_out_and_count_them():
    from uptrain.data.split import in_holdout

    pool = [_Entry(f"q{i}", f"query {i}", (f"d{i}",), (f"d{i}", f"d{i + 1}")) for i in range(100)]
    held = {e.query_id for e in pool if in_holdout(e.query_id, 0.3, 1)}
    spec = [{"source": "human", "holdout": {"fraction": 0.3, "seed": 1}}]
    examples, stats = build_examples(spec, pool, {})
    assert {e.query_id for e in examples} == {e.query_id for e in pool} - held
    assert stats.per_source["human_queries_held_out"] == len(held) > 0
    with pytest.raises(LabelConfigError, match="holdout"):
        parse_spec([{"source": "human", "holdout": {"share": 0.3}}])


def test_pool_without_injected_positives_keeps_only_what_the_retriever_found():
    from uptrain.pool.pool import build_pool

    col = _collection(10)
    col.qrels["q0"] = {"d0": 1, "d9": 1}

    class Ranker:
        def search(self, queries, k, show_progress=True):
            return {q: {f"d{j}": 10.0 - j for j in range(k)} for q in queries}

    injected, _ = build_pool(col, Ranker(), depth=3, query_ids=["q0"])
    plain, stats = build_pool(col, Ranker(), depth=3, query_ids=["q0"], inject_positives=False)
    assert "d9" in injected[0].candidates  # the paper's pool adds every judged positive
    assert sorted(plain[0].candidates) == ["d0", "d1", "d2"] and plain[0].positives == ["d0", "d9"]
    assert plain[0].negatives == ["d1", "d2"] and stats["positives_not_retrieved"] == 1


# ---- data scheduling and FAMOL --------------------------------------------------------------------

class _Est:  # a fitted click model's estimates (what click:<model> reads)
    def __init__(self, table):
        self.table = table
        self.impressions = {(q, d): 5 for q, ds in table.items() for d in ds}
        self.params = {}

    def by_query(self):
        return self.table


def _study_values(freq):
    # click:dbn picks d<i>a as its top document, the LLM grades d<i>b 3 and d<i>a 1
    clicks = {f"q{i}": {f"d{i}a": 0.6, f"d{i}b": 0.2} for i in range(len(freq))}
    grades = {f"q{i}": {f"d{i}b": 3, f"d{i}a": 1} for i in range(len(freq))}
    return {"clicks": _Sim({f"q{i}": f for i, f in enumerate(freq)}), "click_model": _Est(clicks), "grades": grades}


def _pool(n):
    return [_Entry(f"q{i}", f"query {i}", (), (f"d{i}a", f"d{i}b", f"d{i}c")) for i in range(n)]


def test_famol_gives_each_query_two_examples_weighted_w_and_one_minus_w():
    from uptrain.labels.frequency import SigmoidWeighting

    freq = [1000, 50, 10, 3, 0, 0, 1, 2, 5, 7]
    values = _study_values(freq)
    spec = [{"source": "famol", "click": {"source": "click", "model": "dbn"}, "llm": {"source": "grade"},
             "weighting": {"kind": "sigmoid", "midpoint": 10, "slope": 2.0}}]
    assert set(parse_spec(spec)[0].inputs) >= {"clicks", "click_model", "grades"}
    examples, stats = build_examples(spec, _pool(10), values)
    w = SigmoidWeighting(10, 2.0)
    assert w(10, "") == pytest.approx(0.5)  # the midpoint
    by = {(e.query_id, e.positives): e.weight for e in examples}
    for i, f in enumerate(freq):
        expect = 1 / (1 + math.exp(-2.0 * (math.log1p(f) - math.log1p(10))))
        assert by[(f"q{i}", (f"d{i}a",))] == pytest.approx(expect)  # the click objective's example
        assert by[(f"q{i}", (f"d{i}b",))] == pytest.approx(1 - expect)  # the LLM objective's
    grades = {e.query_id: e.grades for e in examples if e.grades}
    assert grades["q0"] == {"d0b": 3, "d0a": 1}  # graded losses see the LLM grades
    assert stats.per_source["click_queries"] == stats.per_source["llm_queries"] == 10


def test_famol_step_weights_by_bucket_and_drops_zero_weight_examples():
    freq = list(range(100, 0, -10))  # 10 queries, rank buckets of one each: q0-q2 high, q3-q6 medium, q7-q9 low
    spec = [{"source": "famol", "llm": {"source": "grade"},
             "weighting": {"kind": "step", "weights": {"high": 1.0, "medium": 0.5, "low": 0.0}}}]
    examples, stats = build_examples(spec, _pool(10), _study_values(freq))
    click = {e.query_id: e.weight for e in examples if e.positives[0].endswith("a")}
    llm = {e.query_id: e.weight for e in examples if e.positives[0].endswith("b")}
    assert click == {**{f"q{i}": 1.0 for i in range(3)}, **{f"q{i}": 0.5 for i in range(3, 7)}}
    assert llm == {**{f"q{i}": 0.5 for i in range(3, 7)}, **{f"q{i}": 1.0 for i in range(7, 10)}}
    assert stats.per_source["click_examples_weight_zero"] == 3 and stats.per_source["llm_examples_weight_zero"] == 3


def test_famol_refuses_logged_sessions_and_bad_weights():
    with pytest.raises(LabelConfigError, match="logged sessions"):
        parse_spec([{"source": "famol", "click": "click:ips"}])
    with pytest.raises(LabelConfigError, match=r"in \[0, 1\]"):
        parse_spec([{"source": "famol", "weighting": {"kind": "step", "weights": {"high": 2}}}])
    with pytest.raises(LabelConfigError, match="kind"):
        parse_spec([{"source": "famol", "weighting": {"kind": "learned"}}])
    with pytest.raises(LabelConfigError, match="phase of its own"):
        parse_spec(["human", {"source": "famol"}])


def test_bucket_schedule_keeps_only_the_named_buckets():
    freq = list(range(100, 0, -10))
    spec = [{"source": "buckets", "labels": {"source": "click", "model": "dbn"}, "buckets": ["high"]}]
    examples, stats = build_examples(spec, _pool(10), _study_values(freq))
    assert sorted(e.query_id for e in examples) == ["q0", "q1", "q2"]
    assert stats.per_source["examples_outside_buckets"] == 7
    with pytest.raises(LabelConfigError, match="no query of the click log is in bucket"):
        build_examples([{**spec[0], "buckets": ["torso"]}], _pool(10), _study_values(freq))


# ---- finding 2's analysis and ERR ---------------------------------------------------------------

def test_score_analysis_separates_relevance_from_quality():
    from uptrain.clicks.study import score_analysis

    rng = np.random.default_rng(0)
    qrels, quality, follow_rel, follow_q = {}, {}, {}, {}
    for q in range(60):
        docs = [f"q{q}d{j}" for j in range(10)]
        rel = {d: int(j < 2) for j, d in enumerate(docs)}
        qrels[f"q{q}"] = {d: g for d, g in rel.items() if g}
        for d in docs:
            quality[d] = float(rng.normal())
        follow_rel[f"q{q}"] = {d: 3.0 * rel[d] + 0.01 * rng.normal() for d in docs}
        follow_q[f"q{q}"] = {d: quality[d] for d in docs}
    a = score_analysis(follow_rel, qrels, quality)
    b = score_analysis(follow_q, qrels, quality)
    assert a["auc"] == pytest.approx(1.0) and a["auc_queries"] == 60
    assert a["quality"]["partial_r_relevance"] > 0.99 and abs(a["quality"]["beta_quality"]) < 0.05
    assert b["quality"]["partial_r_quality"] > 0.99 and abs(b["quality"]["beta_relevance"]) < 0.05
    assert 0.4 < b["auc"] < 0.6  # quality is independent of relevance here


def test_auc_per_query_against_a_hand_count():
    from uptrain.clicks.study import score_analysis

    # q1: relevant a scores 3; non-relevant b=4, c=1: of 2 (rel, non-rel) pairs 1 is ordered right -> 0.5
    # q2: relevant x above y -> 1.0; q3: nothing relevant in its ranking -> skipped
    run = {"q1": {"a": 3.0, "b": 4.0, "c": 1.0}, "q2": {"x": 2.0, "y": 1.0}, "q3": {"z": 1.0}}
    got = score_analysis(run, {"q1": {"a": 1}, "q2": {"x": 2}, "q3": {"w": 1}})
    assert got["auc"] == pytest.approx(0.75) and got["auc_queries_skipped_one_class"] == 1
    assert got["quality"] is None


def test_err_at_10_for_query_ids_that_are_not_numbers():
    from uptrain.evaluate.metrics import evaluate_run

    # gdeval's ERR: R = (2^g - 1) / 2^4; a grade-2 document at rank 2 under a grade-0 one: 3/16 / 2
    r = evaluate_run({"topic-a": {"x": 2.0, "y": 1.0}, "b": {"z": 1.0}}, {"topic-a": {"x": 0, "y": 2}, "b": {"z": 1}},
                     ["ERR@10", "nDCG@1"])
    assert r.per_query["ERR@10"] == pytest.approx({"topic-a": 3 / 32, "b": 1 / 16})
    assert r.per_query["nDCG@1"] == {"topic-a": 0.0, "b": 1.0}


# ---- the study through the CLI ---------------------------------------------------------------------

@needs_data
@pytest.mark.slow
def test_famol_experiment_reports_every_measure_per_bucket(cli_env, tmp_path):
    run_cli(["+exp=famol", *TINY, "data.train.max_queries=40", "data.train.max_docs=300",
             f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    res = m["results"]["clicks_test"]
    measures = ["nDCG@1", "nDCG@3", "nDCG@5", "nDCG@10", "ERR@10"]
    assert all(0 <= res[k] <= 1 for k in measures)
    segs = res["segments"]
    assert {"high", "medium", "low"} <= set(segs)
    n = sum(segs[b]["queries"] for b in segs)
    assert n == len(m["per_query"]["clicks"]["clicks_test"]["nDCG@10"])
    for b in ("high", "medium", "low"):  # each bucket's mean is the mean of its queries' values
        qs = [q for q, (bk, _) in m["segmentations"]["frequency"]["queries"].items() if bk == b]
        vals = [m["per_query"]["clicks"]["clicks_test"]["nDCG@10"][q] for q in qs]
        assert segs[b]["nDCG@10"] == pytest.approx(sum(vals) / len(vals))
    stats = json.loads((tmp_path / "run" / "artifacts" / "train_famol" / "train_stats.json").read_text())
    per = stats["label_stats"]["per_source"]
    assert per["click_queries"] > 0 and per["llm_queries"] > 0
    assert "auc" in m["click_study"]["clicks_test"] and m["click_study"]["clicks_test"]["quality"] is not None
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Query-frequency buckets" in report and "SIMULATED" in report.upper()


def test_latent_quality_is_the_simulators_own_draw_or_absent_with_the_reason():
    """Catches: a quality draw that differs from the simulator's (finding 2 would then measure noise),
    or a read log given a made-up quality."""
    from uptrain.clicks.simulate import ClickSimulator
    from uptrain.clicks.study import latent_quality

    class Ranker:  # every query sees d0..d4
        def index(self, docs):
            pass

        def search(self, queries, k):
            return {q: {f"d{j}": 5.0 - j for j in range(k)} for q in queries}

        def spec(self):
            return {"ranker": "fixed"}

    collection = _collection(10)
    log_, truth = ClickSimulator(sessions=50, serp_size=5, ranker=Ranker(), examination=[0.9, 0.7, 0.5, 0.4, 0.3],
                                 quality_strength=1.0, seed=7).simulate(collection, progress=False)
    got, why = latent_quality(_Ctx(SimpleNamespace(truth=truth, log=log_)), ["d3", "d1", "d3"])
    assert why == "" and got == {d: truth["quality"][d] for d in ("d1", "d3")}
    off, why = latent_quality(_Ctx(SimpleNamespace(truth={"seed": 7, "quality_strength": 0.0})), ["d1"])
    assert off is None and "quality_strength = 0" in why
    read, why = latent_quality(_Ctx(SimpleNamespace(truth=None, log=None)), ["d1"])
    assert read is None and "read from a file" in why
