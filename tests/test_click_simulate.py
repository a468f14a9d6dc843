"""The click simulator: Zipf frequencies, SERPs and swaps, grade maps, quality, the stage, validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from uptrain.cache import ArtifactCache
from uptrain.clicks.simulate import (
    DEFAULT_ATTRACTIVENESS,
    DEFAULT_SATISFACTION,
    ClickSimulator,
    SimulateClicksStage,
    seeded_normal,
    simulate_bench,
    synthetic_collection,
    ubm_gamma,
)
from uptrain.data.collection import Collection
from uptrain.data.stage import DataStage
from uptrain.errors import ConfigError
from uptrain.graph import Runner

REPO = Path(__file__).resolve().parent.parent
EXAM = [0.8, 0.6, 0.45, 0.35, 0.3]


class QrelsRanker:
    """Returns each query's documents in a fixed order (``order[q]``): SERPs known in advance."""

    def __init__(self, order: dict[str, list[str]]):
        self.order = order
        self.indexed = 0

    def index(self, docs):
        self.indexed += 1

    def search(self, queries, k):
        return {q: {d: float(-i) for i, d in enumerate(self.order.get(q, [])[:k])} for q in queries}

    def spec(self):
        return {"impl": "qrels-order", "order": self.order}


def graded_collection(n_queries: int, grades_per_query: list[int], unjudged: int = 0, name="graded"):
    """Query q has documents q_d0.. with the given grades, then ``unjudged`` documents without
    judgments; the ranker shows them in that order."""
    docs, queries, qrels, order = {}, {}, {}, {}
    for i in range(n_queries):
        q = f"q{i}"
        queries[q] = f"query {i}"
        qrels[q] = {}
        order[q] = []
        for j, g in enumerate(grades_per_query):
            d = f"{q}_d{j}"
            docs[d] = "text"
            qrels[q][d] = g
            order[q].append(d)
        for j in range(unjudged):
            d = f"{q}_u{j}"
            docs[d] = "text"
            order[q].append(d)
    return Collection(name=name, docs=docs, queries=queries, qrels=qrels), QrelsRanker(order)


def per_rank_ctr(click_log, doc: str | None = None):
    """(clicks, impressions) per rank, of one document or of all."""
    shown = click_log.shown
    if doc is not None:
        shown = shown & (click_log.docs == click_log.doc_ids.index(doc))
    return (click_log.clicked & shown).sum(axis=0), shown.sum(axis=0)


# ---- Zipf frequencies ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def zipf_run():
    collection, ranker = graded_collection(50, [1, 0, 2, 0, 1])
    sim = ClickSimulator(sessions=200_000, zipf_exponent=1.0, serp_size=5, ranker=ranker, examination=EXAM, seed=7)
    return collection, ranker, sim.simulate(collection, progress=False)


def test_zipf_frequencies_follow_the_expected_shares(zipf_run):
    """Catches: shares not proportional to k^-s, ranks not a permutation, frequencies lost between log and truth."""
    collection, _, (click_log, truth) = zipf_run
    qs = truth["queries"]
    ranks = np.array([qs[q]["frequency_rank"] for q in collection.queries])
    assert sorted(ranks) == list(range(1, 51))
    harmonic = sum(1 / k for k in range(1, 51))
    expected = 200_000 / ranks / harmonic  # s = 1, computed here independently
    realised = np.array([qs[q]["sessions"] for q in collection.queries])
    assert realised.sum() == 200_000 == len(click_log)
    assert np.allclose([qs[q]["expected_share"] for q in collection.queries], expected / 200_000)
    chi2 = ((realised - expected) ** 2 / expected).sum()
    assert chi2 < sps.chi2.ppf(0.999, df=49), chi2
    head = ranks <= 5
    assert np.max(np.abs(realised[head] - expected[head]) / expected[head]) < 0.04
    assert click_log.frequencies() == {q: v["sessions"] for q, v in qs.items() if v["sessions"]}
    # the ranking is a seeded permutation, not the collection's order
    assert list(ranks) != list(range(1, 51))
    rho = sps.spearmanr(realised, -ranks).statistic
    assert rho > 0.95


def test_zipf_exponent_and_seed_change_the_ranking(zipf_run):
    """Catches: the exponent ignored; the permutation not seeded (or not changing with the seed)."""
    collection, ranker, (_, truth) = zipf_run
    _, steep = ClickSimulator(sessions=20_000, zipf_exponent=2.0, serp_size=5, ranker=ranker, examination=EXAM,
                              seed=7).simulate(collection, progress=False)
    assert [steep["queries"][q]["frequency_rank"] for q in collection.queries] == [
        truth["queries"][q]["frequency_rank"] for q in collection.queries
    ]  # same seed: same permutation, whatever the sessions and exponent
    top = [q for q in collection.queries if truth["queries"][q]["frequency_rank"] == 1][0]
    assert steep["queries"][top]["expected_share"] == pytest.approx(1 / sum(k ** -2.0 for k in range(1, 51)))
    _, other = ClickSimulator(sessions=20_000, serp_size=5, ranker=ranker, examination=EXAM,
                              seed=8).simulate(collection, progress=False)
    assert [other["queries"][q]["frequency_rank"] for q in collection.queries] != [
        truth["queries"][q]["frequency_rank"] for q in collection.queries
    ]


def test_same_seed_same_log_other_seed_other_log():
    """Catches: an unseeded draw anywhere (frequencies, order, swaps, clicks)."""
    collection, ranker = graded_collection(20, [2, 1, 0, 1, 0])

    def run(seed):
        sim = ClickSimulator(sessions=5_000, serp_size=5, ranker=ranker, examination=EXAM, swap_probability=0.3,
                             noise=0.5, quality_strength=0.5, seed=seed)
        lg, truth = sim.simulate(collection, progress=False)
        return [(s.query, list(s.docs), list(s.clicks)) for s in lg.sessions()], truth

    a, ta = run(3)
    b, tb = run(3)
    c, _ = run(4)
    assert a == b and ta["attractiveness"] == tb["attractiveness"]
    assert a != c


def test_queries_that_draw_no_session_are_counted_and_kept():
    """Catches: zero-frequency queries silently missing from the truth or the counts."""
    collection, ranker = graded_collection(50, [1, 0])
    lg, truth = ClickSimulator(sessions=30, zipf_exponent=2.0, serp_size=2, ranker=ranker, examination=[0.9, 0.5],
                               seed=0).simulate(collection, progress=False)
    zero = [q for q, v in truth["queries"].items() if v["sessions"] == 0]
    assert len(truth["queries"]) == 50 and zero
    assert truth["stats"]["queries_zero_sessions"] == len(zero)
    assert truth["stats"]["queries_with_sessions"] == 50 - len(zero) == len(lg.frequencies())


def test_query_selection_judged_only_or_given():
    """Catches: unjudged queries simulated; query_ids ignored; queries without results not counted."""
    collection, ranker = graded_collection(6, [1, 0])
    collection.queries["q_nojudg"] = "no judgments"
    ranker.order["q_nojudg"] = ["q0_d0"]
    del ranker.order["q5"]  # q5 is judged but retrieves nothing
    sim = ClickSimulator(sessions=500, serp_size=2, ranker=ranker, examination=[0.9, 0.5], seed=0)
    _, truth = sim.simulate(collection, progress=False)
    assert set(truth["queries"]) == {"q0", "q1", "q2", "q3", "q4"}
    assert truth["stats"]["queries_not_judged"] == 1
    assert truth["stats"]["queries_without_results"] == 1 and truth["queries_without_results"] == ["q5"]
    lg, truth = sim.simulate(collection, query_ids=["q1", "q_nojudg"], progress=False)
    assert set(truth["queries"]) == {"q1", "q_nojudg"} and set(lg.frequencies()) <= {"q1", "q_nojudg"}
    with pytest.raises(ConfigError, match="not queries of collection"):
        sim.simulate(collection, query_ids=["nope"], progress=False)


# ---- position side: examination recovered ---------------------------------------------------

@pytest.fixture(scope="module")
def swapped_run():
    """One query, five documents of grades 3, 2, 1, 0, 2, shown in every order nearby by swaps."""
    collection, ranker = graded_collection(1, [3, 2, 1, 0, 2])
    sim = ClickSimulator(sessions=120_000, serp_size=5, ranker=ranker, examination=EXAM, swap_probability=0.5, seed=1)
    return collection, sim.simulate(collection, progress=False)


def test_ctr_per_rank_of_swapped_documents_is_exam_times_attractiveness(swapped_run):
    """Catches: examination applied by original rank instead of the shown rank; attr misaligned after swaps."""
    collection, (lg, truth) = swapped_run
    attr = {d: v for _, d, v in truth["attractiveness"]}
    checked = 0
    for d in collection.docs:
        clicks, shown = per_rank_ctr(lg, d)
        for r in range(5):
            if shown[r] >= 3000:
                p = EXAM[r] * attr[d]
                assert abs(clicks[r] / shown[r] - p) < 5 * math.sqrt(p * (1 - p) / shown[r]) + 1e-3, (d, r)
                checked += 1
    assert checked >= 12
    assert truth["examination"] == EXAM and truth["stats"]["ctr_at"] == pytest.approx(
        (lg.clicked.sum(0) / lg.shown.sum(0)).tolist(), abs=1e-6)


def test_pbm_fitted_on_the_simulated_log_recovers_the_examination(swapped_run):
    """Catches: a simulated log whose clicks do not follow the configured examination curve."""
    models = pytest.importorskip("uptrain.clicks.models")
    _, (lg, _) = swapped_run
    exam = np.asarray(models.make("pbm").fit(lg).params()["examination"], dtype=float)
    # PBM is identified up to a scale of exam against attractiveness: compare the shape
    assert np.allclose(exam / exam[0], np.asarray(EXAM) / EXAM[0], atol=0.03), exam


def test_examination_fitted_on_a_log_path(swapped_run, tmp_path):
    """Catches: a log path not read or not fitted, or a spec keyed on the path instead of the file's content."""
    pytest.importorskip("uptrain.clicks.models")
    _, (lg, _) = swapped_run
    path = tmp_path / "clicks.jsonl"
    lg.write_jsonl(path)
    sim = ClickSimulator(serp_size=5, examination=str(path), ranker=QrelsRanker({}))
    sim.validate()
    exam, info = sim.resolved_examination()
    assert np.allclose(np.asarray(exam) / exam[0], np.asarray(EXAM) / EXAM[0], atol=0.03), exam
    assert info["source"] == "log" and info["sessions"] == len(lg) and info["em_converged"]
    key = sim.spec()["examination"]
    assert str(tmp_path) not in json.dumps(key) and len(key["sha256"]) == 64
    moved = tmp_path / "moved.jsonl"
    path.rename(moved)
    assert ClickSimulator(serp_size=5, examination=str(moved), ranker=QrelsRanker({})).spec()["examination"] == key
    with pytest.raises(ConfigError, match="fewer than serp_size=6"):
        ClickSimulator(serp_size=6, examination=str(moved), ranker=QrelsRanker({})).resolved_examination()


def test_ubm_gamma_derived_from_the_examination():
    """Catches: the wrong column layout (j = r' + 1) or a ratio the wrong way round."""
    g = ubm_gamma([1.0, 0.5, 0.25])
    assert g.shape == (3, 4)
    assert g[:, 0].tolist() == [1.0, 0.5, 0.25]  # no click above
    assert g[1, 1] == 0.5  # click at rank 0, then rank 1: 0.5 / 1
    assert g[2, 1] == 0.25 and g[2, 2] == 0.5  # click at rank 0 or 1, then rank 2
    assert ubm_gamma([0.5, 0.8])[1, 1] == 1.0  # capped at 1


# ---- the grade map, unjudged documents, quality ---------------------------------------------

def test_grade_2_ctr_at_rank_1_is_attractiveness_times_examination():
    """Catches: the grade map applied to the wrong grade or rank; unjudged docs not counted."""
    collection, ranker = graded_collection(40, [2, 1, 0], unjudged=2)
    lg, truth = ClickSimulator(sessions=50_000, serp_size=5, ranker=ranker, examination=EXAM,
                               seed=2).simulate(collection, progress=False)
    clicks, shown = per_rank_ctr(lg)
    expected = DEFAULT_ATTRACTIVENESS[2] * EXAM[0]
    assert abs(clicks[0] / shown[0] - expected) < 0.01
    expected_unjudged = DEFAULT_ATTRACTIVENESS[0] * EXAM[4]
    assert abs(clicks[4] / shown[4] - expected_unjudged) < 0.006
    st = truth["stats"]
    assert st["unjudged_pairs"] == 80 and st["unjudged_impressions"] == 2 * 50_000
    unjudged = [row for row in truth["grades"] if not row[3]]
    assert len(unjudged) == 80 and all(row[2] == 0 and "_u" in row[1] for row in unjudged)


def test_unknown_grade_is_an_error_listing_the_map():
    """Catches: a grade missing from the map silently given some probability."""
    collection, ranker = graded_collection(3, [4, 1])
    sim = ClickSimulator(sessions=10, serp_size=2, ranker=ranker, examination=[0.9, 0.5])
    with pytest.raises(ConfigError, match=r"clicks.simulator.attractiveness has no probability for grade\(s\) \[4\]") as e:
        sim.simulate(collection, progress=False)
    assert "{0: 0.05, 1: 0.5, 2: 0.9, 3: 0.95}" in str(e.value)
    assert ranker.indexed == 0  # found before the ranker runs


@pytest.mark.parametrize("strength", [0.0, 1.5])
def test_quality_raises_ctr_at_equal_grade_only_when_on(strength):
    """Catches: quality ignored when on, leaking when off, or not the logit shift sigmoid(logit(A) + s q)."""
    collection, ranker = graded_collection(60, [1, 1, 1])
    exam = [1.0, 1.0, 1.0]
    lg, truth = ClickSimulator(sessions=60_000, serp_size=3, ranker=ranker, examination=exam, quality_strength=strength,
                               seed=5).simulate(collection, progress=False)
    q = truth["quality"]
    attr = {d: v for _, d, v in truth["attractiveness"]}
    for d, v in attr.items():
        assert v == pytest.approx(1 / (1 + math.exp(-(0.0 + strength * q[d]))))  # logit(0.5) = 0
    clicked, shown = lg.clicked, lg.shown
    hi = np.isin(lg.docs, [lg.doc_ids.index(d) for d in attr if q[d] > 0.5])
    lo = np.isin(lg.docs, [lg.doc_ids.index(d) for d in attr if q[d] < -0.5])
    ctr_hi, ctr_lo = clicked[hi & shown].mean(), clicked[lo & shown].mean()
    if strength:
        assert ctr_hi - ctr_lo > 0.3
    else:
        assert abs(ctr_hi - ctr_lo) < 0.015
    assert "quality" not in json.dumps(collection.qrels)


def test_quality_and_noise_are_seeded_by_id():
    """Catches: quality or noise drawn in table order (a document's value changing with the query set)."""
    collection, ranker = graded_collection(10, [1, 2, 0])
    sim = ClickSimulator(sessions=100, serp_size=3, ranker=ranker, examination=[1, 1, 1], noise=0.7,
                         quality_strength=0.4, seed=9)
    _, full = sim.simulate(collection, progress=False)
    _, part = sim.simulate(collection, query_ids=["q7", "q3"], progress=False)
    full_attr = {(q, d): v for q, d, v in full["attractiveness"]}
    for q, d, v in part["attractiveness"]:
        assert v == full_attr[(q, d)]
        assert part["quality"][d] == full["quality"][d]
    values = [v for _, _, v in full["attractiveness"] if v != 0]
    assert len(set(values)) == len(values)  # noise differs per pair
    z = seeded_normal([f"id{i}" for i in range(20_000)], seed=0, tag=1)
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03 and abs(sps.skew(z)) < 0.06
    assert not np.array_equal(z, seeded_normal([f"id{i}" for i in range(20_000)], seed=1, tag=1))


# ---- swaps ---------------------------------------------------------------------------------

def _ranks_per_doc(lg):
    seen: dict[int, set] = {}
    for r in range(lg.n_ranks):
        for d in np.unique(lg.docs[:, r]):
            if d >= 0:
                seen.setdefault(int(d), set()).add(r)
    return seen


def test_swaps_move_documents_between_ranks_and_are_counted():
    """Catches: swaps never applied, applied with p = 0, or miscounted."""
    collection, ranker = graded_collection(10, [2, 1, 0, 1])
    kwargs = dict(sessions=20_000, serp_size=4, ranker=ranker, examination=[0.9, 0.7, 0.5, 0.4], seed=3)
    lg0, t0 = ClickSimulator(swap_probability=0.0, **kwargs).simulate(collection, progress=False)
    assert all(len(r) == 1 for r in _ranks_per_doc(lg0).values()) and t0["stats"]["swaps"] == 0
    lg1, t1 = ClickSimulator(swap_probability=0.2, **kwargs).simulate(collection, progress=False)
    assert any(len(r) > 1 for r in _ranks_per_doc(lg1).values())
    n_steps = 20_000 * 3
    assert abs(t1["stats"]["swaps"] - 0.2 * n_steps) < 5 * math.sqrt(n_steps * 0.2 * 0.8)
    # each session still shows the query's documents once
    for s in range(0, 20_000, 997):
        assert sorted(lg1.docs[s]) == sorted(lg0.docs[lg0.query == lg1.query[s]][0])


def test_short_serps_are_shorter_and_counted():
    """Catches: short SERPs padded with someone else's document, or not counted."""
    collection, ranker = graded_collection(4, [1, 0, 1])
    ranker.order["q0"] = ranker.order["q0"][:1]
    lg, truth = ClickSimulator(sessions=2_000, serp_size=3, ranker=ranker, examination=[0.9, 0.7, 0.5],
                               swap_probability=0.5, seed=0).simulate(collection, progress=False)
    rows = lg.query == lg.queries.index("q0")
    assert (lg.docs[rows, 1:] == -1).all() and not lg.clicked[rows, 1:].any()
    assert truth["stats"]["short_serp_queries"] == 1 and truth["stats"]["short_serp_sessions"] == int(rows.sum())


# ---- all models run through the same path -------------------------------------------------

@pytest.mark.parametrize("model", ["cm", "dcm", "ubm", "dbn", "sdbn"])
def test_each_model_samples_a_log(model):
    """Catches: a model wired to the wrong sampler parameters (cascade models: at most one click for cm)."""
    collection, ranker = graded_collection(5, [2, 1, 0, 1, 0])
    lg, truth = ClickSimulator(model=model, sessions=3_000, serp_size=5, ranker=ranker, examination=EXAM,
                               seed=0).simulate(collection, progress=False)
    assert lg.n_clicks > 0 and truth["model"] == model
    if model == "cm":
        assert lg.clicked.sum(axis=1).max() == 1
    clicks, shown = per_rank_ctr(lg)
    exam0 = EXAM[0] if model == "ubm" else 1.0  # cascade models examine rank 1 always
    assert clicks[0] / shown[0] == pytest.approx(DEFAULT_ATTRACTIVENESS[2] * exam0, abs=0.03)
    if model in ("dbn", "sdbn"):
        assert truth["satisfaction"] is not None and truth["satisfaction_map"] == {
            str(k): v for k, v in DEFAULT_SATISFACTION.items()}


# ---- the stage -----------------------------------------------------------------------------

class FixedSource:
    def __init__(self, collection):
        self.collection = collection

    def validate(self):
        pass

    def spec(self):
        return {"name": self.collection.name}

    def load(self):
        return self.collection


def test_stage_builds_once_then_hits_and_keys_on_parameters(tmp_path):
    """Catches: the stage not cached, a key blind to a parameter, texts copied into the log, a log that reads back different."""
    collection = synthetic_collection(30, 8, seed=0)
    runner = Runner(ArtifactCache(tmp_path / "cache"), tmp_path / "run")
    data = runner.run(DataStage(FixedSource(collection)))

    def stage(**kw):
        args = dict(sessions=3_000, examination=[0.9, 0.7, 0.5, 0.4, 0.3], serp_size=5, seed=1, swap_probability=0.1)
        args.update(kw)
        return SimulateClicksStage(ClickSimulator(**args), progress=False)

    a = runner.run(stage(), {"data": data})
    b = runner.run(stage(), {"data": data})
    assert [r.cache for r in runner.records] == ["built", "built", "hit"]
    assert a.key == b.key
    c = runner.run(stage(swap_probability=0.2), {"data": data})
    assert c.key != a.key
    assert runner.run(stage(satisfaction={0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}), {"data": data}).key == a.key  # unread by pbm
    assert runner.run(stage(examination=[0.9, 0.7, 0.5, 0.4, 0.2]), {"data": data}).key != a.key
    value = b.value
    lg, truth = ClickSimulator(sessions=3_000, examination=[0.9, 0.7, 0.5, 0.4, 0.3], serp_size=5, seed=1,
                               swap_probability=0.1).simulate(collection, progress=False)
    assert [(s.query, list(s.docs), list(s.clicks)) for s in value.log.sessions()] == [
        (s.query, list(s.docs), list(s.clicks)) for s in lg.sessions()]
    assert value.truth["queries"] == truth["queries"] and value.frequencies() == {q: v["sessions"] for q, v in truth["queries"].items()}
    first = json.loads((a.path / "log.jsonl").open().readline())
    assert set(first) == {"query", "docs", "clicks"}
    st = json.loads((a.path / "stats.json").read_text())
    assert st["sessions"] == 3_000 and st["examination"] == [0.9, 0.7, 0.5, 0.4, 0.3]
    manifest = json.loads((a.path / "_uptrain_artifact.json").read_text())
    assert manifest["spec"]["spec"]["ranker"]["impl"] == "bm25s"
    report = stage().report(a)["Simulated clicks"]
    assert "3,000 sessions" in report and "| examination | 0.900" in report and "| CTR |" in report
    assert "high / medium / low" in report


# ---- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"zipf_exponent": 0}, "zipf_exponent"),
        ({"zipf_exponent": float("inf")}, "zipf_exponent"),
        ({"sessions": 0}, "sessions"),
        ({"sessions": 2.5}, "sessions"),
        ({"serp_size": 0}, "serp_size"),
        ({"swap_probability": 1.5}, "swap_probability"),
        ({"continuation": -0.1}, "continuation"),
        ({"noise": -1}, "noise"),
        ({"quality_strength": "x"}, "quality_strength"),
        ({"model": "ccm"}, "model"),
        ({"attractiveness": {0: 0.1, 1: 1.2}}, r"attractiveness\[1\]"),
        ({"satisfaction": {"a": 0.1}}, "satisfaction"),
        ({"examination": [0.9, 0.5]}, "examination has 2 probabilities but serp_size is 3"),
        ({"examination": [0.9, 0.5, 1.5]}, r"examination\[2\]"),
        ({"examination": "/no/such/log"}, "examination"),
        ({"seed": -1}, "seed"),
        ({"ranker": object()}, "ranker"),
    ],
)
def test_validate_names_the_key(kwargs, key):
    """Catches: a bad value accepted, or an error that does not say which key."""
    args = dict(serp_size=3, examination=[0.9, 0.5, 0.3], ranker=QrelsRanker({}))
    args.update(kwargs)
    with pytest.raises(ConfigError, match=f"clicks.simulator.{key}"):
        ClickSimulator(**args).validate()


def test_yandex_examination_without_the_data_says_what_to_do(tmp_path, monkeypatch):
    """Catches: a missing sample turning into a traceback, or an error that gives no way out."""
    monkeypatch.setenv("UPTRAIN_DATA", str(tmp_path))
    sim = ClickSimulator(examination="yandex", ranker=QrelsRanker({}))
    with pytest.raises(ConfigError) as e:
        sim.validate()
    msg = str(e.value)
    assert "\n" not in msg and "UPTRAIN_DATA" in msg and "raw/yandex_wscd_clicks_pyclick/trainSample" in msg
    assert "list of serp_size=10 probabilities" in msg and "path" in msg
    monkeypatch.delenv("UPTRAIN_DATA")
    with pytest.raises(ConfigError, match="UPTRAIN_DATA is not set"):
        sim.validate()
    ClickSimulator(model="dbn", examination="yandex", ranker=QrelsRanker({})).validate()  # unread by dbn


def test_yandex_examination_is_fitted_on_the_real_sample(monkeypatch):
    """Catches: the Yandex sample read or fitted wrongly (the curve must fall from rank 1 to 10)."""
    import os

    root = os.environ.get("UPTRAIN_DATA")
    if not root or not (Path(root) / "raw/yandex_wscd_clicks_pyclick/trainSample").is_file():
        pytest.skip("the Yandex WSCD sample is not under $UPTRAIN_DATA")
    pytest.importorskip("uptrain.clicks.readers")
    pytest.importorskip("uptrain.clicks.models")
    sim = ClickSimulator(examination="yandex", ranker=QrelsRanker({}))
    sim.validate()
    exam, info = sim.resolved_examination()
    assert len(exam) == 10 and all(0 <= e <= 1 for e in exam) and exam[0] > exam[-1]
    assert info["source"] == "yandex" and info["sessions"] == 35_064 and len(info["sha256"]) == 64
    assert sim.spec()["examination"]["sha256"] == info["sha256"]


# ---- the config node and the benchmark ---------------------------------------------------------

def test_config_node_instantiates_the_class_defaults():
    """Catches: the YAML drifting from the class (a renamed parameter, other default maps)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf/clicks/simulator/default.yaml")
    cfg = OmegaConf.merge({"seed": 4, "sim": node}, {"sim": {"examination": [0.9] * 10}})
    sim = instantiate(cfg.sim)
    assert isinstance(sim, ClickSimulator)
    sim.validate()
    assert sim.attractiveness == DEFAULT_ATTRACTIVENESS and sim.satisfaction == DEFAULT_SATISFACTION
    assert sim.seed == 4 and sim.ranker.spec()["k1"] == 0.9
    defaults = ClickSimulator()
    for k in ("model", "sessions", "zipf_exponent", "serp_size", "swap_probability", "noise", "quality_strength",
              "continuation", "examination"):
        assert OmegaConf.to_container(node)[k] == getattr(defaults, k), k


def test_bench_runs_and_reports_its_rate():
    """Catches: the benchmark entry point broken."""
    out = simulate_bench(sessions=20_000)
    assert out["sessions"] == 20_000 and out["sessions_per_second"] > 0 and out["clicks"] > 0


def test_sessions_per_query_scales_the_log_with_the_collection():
    """Catches: sessions_per_query ignored (the fixed `sessions` used) or not in the cache key."""
    for n in (20, 50):
        collection, ranker = graded_collection(n, [1, 0])
        sim = ClickSimulator(sessions=7, sessions_per_query=2.5, serp_size=2, ranker=ranker, examination=[0.9, 0.5],
                             seed=0)
        lg, truth = sim.simulate(collection, progress=False)
        assert len(lg) == truth["stats"]["sessions"] == round(2.5 * n)
    fixed = ClickSimulator(sessions=7, serp_size=2, ranker=ranker, examination=[0.9, 0.5], seed=0)
    assert sim.spec() != fixed.spec() and fixed.spec()["sessions"] == 7
    with pytest.raises(ConfigError, match="sessions_per_query"):
        ClickSimulator(sessions_per_query=-1, ranker=ranker, examination=[0.9, 0.5]).validate()
