"""Pointwise graded judgments (0-3): the parser, the grade stage on a simulated click log with a
scripted backend (prompts, resumption, quality arithmetic), the simulated annotator's rates, the
`grade` label source, the refusals, and one tiny real SmolLM2 run."""

from __future__ import annotations

import json
import math
import re
import time
import types
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, Entry
from uptrain.annotate.backends.base import Backend, Generation
from uptrain.annotate.grade import GradeStage, SimulatedGrader, grade_quality, quality_markdown, shown_documents
from uptrain.annotate.parse import GradeParseStats, parse_grade
from uptrain.annotate.replug import ReplugStage
from uptrain.annotate.stage import AnnotateStage
from uptrain.clicks.log import from_arrays
from uptrain.clicks.simulate import ClickSimulator
from uptrain.clicks.stages import LoadedClicks
from uptrain.data.collection import Collection
from uptrain.errors import ConfigError
from uptrain.labels import build_examples, parse_spec
from uptrain.labels.producers import PLANNERS

HERE = __name__

# ---- the parser ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, grade", [
    ("2", 2), ("Grade: 3", 3), ("##final score: 1", 1), ("Final score: 2", 2), ("**2**", 2), ("O: 2", 2),
    ("M: 2\nT: 1\nO: 1", 1),  # UMBRELA's aspects, then the overall score: the last label wins
    ("The passage cites 3 studies of 12 patients. Final score: 0", 0),  # the label wins over stray numbers
    ("Grade: 1. Actually, on reflection, Grade: 3", 3), ("**Score:** 2", 2), ("The grade is 2.", 2),
    ("2. The passage mentions 3 trials", 2),  # a leading number is the answer
    ("The passage is related to the query. 1", 1), ("<think>maybe 3</think>0", 0),
    ("Score: 7", None), ("Final score: 3", 3), ("4", None), ("-", None), ("none", None), ("", None), (None, None),
    ("score 2.5", None), ("<think>it is 2", None), (12345678901234567890, None),
])
def test_parse_grade_reads_the_forms_small_models_answer_in(text, grade):
    assert parse_grade(text) == grade


def test_parse_grade_range_follows_max_grade_and_counts():
    assert parse_grade("Grade: 3", max_grade=2) is None and parse_grade("Grade: 2", max_grade=2) == 2
    assert parse_grade("2", max_grade="x") is None
    stats = GradeParseStats()
    for t in ("2", "nonsense", "Final score: 9"):
        stats.record(parse_grade(t))
    assert stats.to_dict() == {"total": 3, "unparseable": 2, "empty": 2} and stats.unparseable_rate == pytest.approx(2 / 3)


# ---- quality arithmetic by hand ------------------------------------------------------------


def test_grade_quality_against_hand_computed_values():
    pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]  # (human, LLM)
    q = grade_quality(pairs, max_grade=3)
    # confusion over grades 0..2 (3 is empty): rows human, columns LLM
    assert q["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert q["exact"] == pytest.approx(4 / 6) and q["within_one"] == pytest.approx(1.0)
    # kappa: po = 4/6; marginals human (3, 2, 1)/6, LLM (2, 2, 2)/6 -> pe = 12/36; (2/3 - 1/3) / (2/3) = 0.5
    assert q["kappa"] == pytest.approx(0.5)
    # linear weights |i-j|: observed disagreement 1 + 1 = 2; expected sum |i-j| h_i l_j / n = 32/6
    # -> 1 - 2 / (32/6) = 0.625
    assert q["weighted_kappa"] == pytest.approx(0.625)
    # binary: LLM >= 2 on (1,2), (2,2); human > 0 on (1,1), (1,2), (2,2)
    b = q["binary"]
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    md = quality_markdown({**q, "simulated": False})
    assert "| 6 | 0.6667 | 1.0000 | 0.5000 | 0.6250 | 1.0000 | 0.6667 | 0.8000 |" in md
    assert "| 0 | 2 | 1 | 0 | 0 |" in md and "SIMULATED" not in md
    single = grade_quality([(0, 0), (0, 0)])
    assert single["kappa"] is None and single["exact"] == 1.0  # undefined kappa is None, not NaN


# ---- shown documents of a read log ---------------------------------------------------------


def test_shown_documents_of_a_read_log_by_best_rank_then_first_appearance():
    # q0: s0 shows [a, b, c], s2 shows [b, d, a]; q1: s1 shows [e] (a short SERP)
    query = np.array([0, 1, 0])
    docs = np.array([[0, 1, 2], [4, -1, -1], [1, 3, 0]])
    log = from_arrays(query, docs, np.zeros((3, 3), dtype=bool), ["q0", "q1"], ["a", "b", "c", "d", "e"])
    assert shown_documents(LoadedClicks(log)) == {"q0": ["a", "b", "d", "c"], "q1": ["e"]}


# ---- a small collection, its simulated log, a scripted backend -----------------------------


class OrderRanker:
    """Shows each query's documents in a fixed order, so the SERPs are known in advance."""

    def __init__(self, order):
        self.order = order

    def index(self, docs):
        pass

    def search(self, queries, k):
        return {q: {d: float(-i) for i, d in enumerate(self.order.get(q, [])[:k])} for q in queries}

    def spec(self):
        return {"impl": "order", "order": self.order}


def small_collection(n_queries=5, per_query=4):
    """Query qi has documents qi_dj with grade (i + j) % 4 (qi_d3 unjudged); text names the script."""
    docs, queries, qrels, order = {}, {}, {}, {}
    for i in range(n_queries):
        q = f"q{i}"
        queries[q] = f"question number {i}"
        qrels[q], order[q] = {}, []
        for j in range(per_query):
            d = f"{q}_d{j}"
            docs[d] = f"passage {d} SCRIPT{(i + 2 * j) % 5}"  # 4 -> an unparseable answer
            if j != per_query - 1:
                qrels[q][d] = (i + j) % 4
            order[q].append(d)
    return Collection("small", docs, queries, qrels), order


def simulated_clicks(collection, order, sessions=6, serp_size=3):
    sim = ClickSimulator(model="pbm", sessions=sessions, zipf_exponent=2.0, serp_size=serp_size,
                         ranker=OrderRanker(order), examination=[1.0 / (r + 1) for r in range(serp_size)], seed=3)
    log, truth = sim.simulate(collection, progress=False)
    return types.SimpleNamespace(log=log, truth=truth)


class ScriptedBackend(Backend):
    """Answers each grade prompt with the grade its passage names (``SCRIPTk``; k = 4: no grade)."""

    name = "scripted"
    calls = 0
    fail_on_call: int | None = None
    seen: list = []

    def __init__(self, model: str = "scripted", max_context: int = 4096, batch_size: int = 8):
        self.model_name = model
        self._max_context = max_context

    def spec(self):
        return {"backend": self.name, "model": self.model_name}

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, params):
        cls = type(self)
        cls.calls += 1
        if cls.fail_on_call is not None and cls.calls >= cls.fail_on_call:
            raise KeyboardInterrupt("killed")
        cls.seen.extend(prompts)
        cls.params = params
        out = []
        for p in prompts:
            k = int(re.search(r"SCRIPT([0-9])", p[-1]["content"]).group(1))
            text = "I cannot judge this." if k == 4 else f"The passage has 2 parts.\nFinal score: {k}"
            out.append(Generation(text, self.prompt_length(p), 5))
        return out

    def loglikelihood(self, contexts, continuations):
        raise NotImplementedError


@pytest.fixture(autouse=True)
def _reset_backend():
    ScriptedBackend.calls = 0
    ScriptedBackend.fail_on_call = None
    ScriptedBackend.seen = []


def test_grades_decode_their_own_token_budget_not_the_listwise_steps(tmp_path):
    """annotate.grade.max_new_tokens (8) replaces annotator.generation's 64 for grading, and keys the cache."""
    coll, order = small_collection()
    inputs = {"data": types.SimpleNamespace(value=coll), "clicks": types.SimpleNamespace(value=simulated_clicks(coll, order))}
    cfg = scripted(generation={"max_new_tokens": 64})
    build(GradeStage(cfg, depth=1, max_queries=1), tmp_path / "a", tmp_path / "wa", inputs)
    assert ScriptedBackend.params.max_new_tokens == 8
    build(GradeStage(cfg, depth=1, max_queries=1, max_new_tokens=None), tmp_path / "b", tmp_path / "wb", inputs)
    assert ScriptedBackend.params.max_new_tokens == 64
    assert GradeStage(cfg).spec() != GradeStage(cfg, max_new_tokens=None).spec()


def scripted(**extra):
    return {"backend": {"_target_": f"{HERE}.ScriptedBackend"}, "generation": {"max_new_tokens": 8},
            "prompt_version": "v1", "window": 16, "max_passage_words": 100, **extra}


def build(stage, out: Path, work: Path, inputs):
    out.mkdir(parents=True, exist_ok=True)
    stage.build(out, work, inputs)
    return stage.load(out)


def test_grade_stage_end_to_end_on_a_simulated_log(tmp_path):
    coll, order = small_collection()
    clicks = simulated_clicks(coll, order)
    assert clicks.truth["stats"]["queries_zero_sessions"] > 0  # zero-session queries are graded too
    stage = GradeStage(scripted(), depth=2, max_queries=4, batch_queries=2)
    inputs = {"data": types.SimpleNamespace(value=coll), "clicks": types.SimpleNamespace(value=clicks)}
    grades = build(stage, tmp_path / "out", tmp_path / "work", inputs)

    # queries in collection order, the first 4 of the 5; per query its 3 shown documents cut to depth 2
    assert list(grades) == ["q0", "q1", "q2", "q3"]
    prompts = ScriptedBackend.seen
    assert len(prompts) == 8 and ScriptedBackend.calls == 2  # one prompt per shown doc, one call per batch
    for p, (q, d) in zip(prompts, [(f"q{i}", f"q{i}_d{j}") for i in range(4) for j in range(2)]):
        user = p[-1]["content"]
        assert f"[1] {coll.docs[d]}" in user and f"Query: {coll.queries[q]}" in user and "0 to 3" in user
    # the script: grade (i + 2j) % 5, 4 unparseable -> no grade
    expected = {f"q{i}": {f"q{i}_d{j}": (i + 2 * j) % 5 for j in range(2) if (i + 2 * j) % 5 != 4} for i in range(4)}
    assert grades == expected

    out = tmp_path / "out"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["simulated"] is False and stats["prompts"] == 8 and stats["unparseable"] == 1  # q2_d1: (2 + 2) % 5
    assert stats["cuts"]["documents_cut_by_depth"] == 4 and stats["cuts"]["queries_cut_by_max_queries"] == 1
    assert stats["output_tokens"] == 40 and stats["seconds_per_prompt"] is not None
    rows = [json.loads(x) for x in (out / "grades.jsonl").read_text().splitlines()]
    assert rows[2]["unparseable"] == 1 and "cannot judge" in rows[2]["outputs"]["q2_d1"]
    qrels = (out / "qrels_grade.txt").read_text().split("\n")
    assert qrels[0] == "q0 0 q0_d0 0" and len([x for x in qrels if x]) == 7

    # quality against the human grades of the same 7 pairs (human (i + j) % 4)
    pairs = [((i + j) % 4, g) for i in range(4) for j in range(2) for g in [expected[f"q{i}"].get(f"q{i}_d{j}")]
             if g is not None]
    quality = json.loads((out / "quality.json").read_text())
    assert quality["pairs"] == 7 and quality["simulated"] is False
    assert quality["exact"] == pytest.approx(np.mean([h == g for h, g in pairs]))
    assert quality["confusion"] == grade_quality(pairs)["confusion"]
    sections = stage.report(types.SimpleNamespace(path=out))
    assert any("LLM" in k for k in sections) and "8 prompts" in " ".join(sections.values())


def test_grade_stage_resumes_after_a_kill_redoing_only_the_unfinished_batch(tmp_path):
    coll, order = small_collection()
    clicks = simulated_clicks(coll, order)
    inputs = {"data": types.SimpleNamespace(value=coll), "clicks": types.SimpleNamespace(value=clicks)}
    stage = GradeStage(scripted(), depth=3, batch_queries=2)
    ScriptedBackend.fail_on_call = 2  # killed during the second batch
    with pytest.raises(KeyboardInterrupt):
        build(stage, tmp_path / "out", tmp_path / "work", inputs)
    assert len(ScriptedBackend.seen) == 6  # the first batch: q0, q1 x 3 documents, committed

    ScriptedBackend.fail_on_call = None
    ScriptedBackend.seen = []
    out2 = tmp_path / "out2"
    grades = build(GradeStage(scripted(), depth=3, batch_queries=2), out2, tmp_path / "work", inputs)
    redone = {re.search(r"Query: question number (\d+)", p[-1]["content"]).group(1) for p in ScriptedBackend.seen}
    assert redone == {"2", "3", "4"} and len(ScriptedBackend.seen) == 9
    assert list(grades) == [f"q{i}" for i in range(5)]
    assert json.loads((out2 / "stats.json").read_text())["prompts"] == 15  # all queries, the resumed ones too


def test_cache_key_of_a_simulated_run_holds_the_simulator_not_a_model():
    sim = GradeStage({"simulated": {"recall": 0.8, "precision": 0.7, "seed": 1}})
    spec = sim.spec()
    assert spec["simulated"] == {"simulated": True, "mode": "rates", "seed": 1, "max_grade": 3,
                                 "recall": 0.8, "precision": 0.7}
    assert "backend" not in spec and "prompts" not in spec
    other = GradeStage({"simulated": {"recall": 0.8, "precision": 0.6, "seed": 1}}).spec()
    assert other != spec
    real = GradeStage(scripted()).spec()
    assert real["backend"]["_target_"].endswith("ScriptedBackend") and real["prompt"] == "grade"
    sim.validate()  # accepted: no model, nothing to resolve


# ---- the simulated annotator ----------------------------------------------------------------


def rated_collection(n_queries=100, per_query=30, grades=(0, 0, 0, 1, 2, 3), seed=0):
    rng = np.random.default_rng(seed)
    docs, queries, qrels, order = {}, {}, {}, {}
    for i in range(n_queries):
        q = f"q{i}"
        queries[q] = f"topic {i}"
        qrels[q], order[q] = {}, []
        for j, g in enumerate(rng.choice(np.asarray(grades), size=per_query)):
            d = f"{q}_{j}"
            docs[d] = f"doc {j}"
            qrels[q][d] = int(g)
            order[q].append(d)
    return Collection("rated", docs, queries, qrels), order


def simulated_grades(tmp_path, coll, order, simulated, batch_queries=16, name="out"):
    clicks = simulated_clicks(coll, order, sessions=50, serp_size=len(next(iter(order.values()))))
    stage = GradeStage({"simulated": simulated}, depth=100, batch_queries=batch_queries)
    inputs = {"data": types.SimpleNamespace(value=coll), "clicks": types.SimpleNamespace(value=clicks)}
    return build(stage, tmp_path / name, tmp_path / f"work_{name}", inputs), stage


def test_simulated_annotator_reaches_its_recall_and_precision(tmp_path):
    coll, order = rated_collection()
    grades, stage = simulated_grades(tmp_path, coll, order, {"recall": 0.8, "precision": 0.7, "seed": 5})
    human = [(coll.qrels[q][d], g) for q, gs in grades.items() for d, g in gs.items()]
    assert len(human) == 3000  # every shown document graded: no prompt, nothing unparseable
    rel = [g >= 2 for h, g in human if h > 0]
    graded_rel = [h > 0 for h, g in human if g >= 2]
    recall, precision = np.mean(rel), np.mean(graded_rel)
    # tolerance: 4 binomial standard errors of each share over its own denominator (about 1,500
    # relevant and 1,700 graded >= 2 documents here: 0.04 and 0.045), so a correct simulator fails
    # this with probability < 1e-4, and a false positive rate off by 10 points fails it
    assert abs(recall - 0.8) < 4 * math.sqrt(0.8 * 0.2 / len(rel))
    assert abs(precision - 0.7) < 4 * math.sqrt(0.7 * 0.3 / len(graded_rel))
    # the grade map: relevant -> 3 for the collection's maximum grade, else 2; not relevant -> 0
    assert {g for h, g in human if h == 3} <= {0, 3} and {g for h, g in human if h in (1, 2)} <= {0, 2}
    assert {g for h, g in human if h == 0} <= {0, 2}
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    pi = np.mean([h > 0 for h, _ in human])
    assert quality["simulated"] is True and "SIMULATED" in quality["note"]
    assert quality["simulator"]["base_rate"] == pytest.approx(pi)
    assert quality["simulator"]["false_positive_rate"] == pytest.approx(0.8 * pi * 0.3 / (0.7 * (1 - pi)))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["simulated"] is True and stats["prompts"] == 0 and "simulated" in stats["annotator"]
    sections = stage.report(types.SimpleNamespace(path=tmp_path / "out"))
    assert len(sections) == 2 and all("SIMULATED" in k and "SIMULATED" in v for k, v in sections.items())
    # draws are seeded per (query, doc): another batching gives the same grades
    again, _ = simulated_grades(tmp_path, coll, order, {"recall": 0.8, "precision": 0.7, "seed": 5},
                                batch_queries=7, name="again")
    assert again == grades


def test_simulated_annotator_reproduces_a_confusion_matrix(tmp_path):
    coll, order = rated_collection(grades=(0, 1, 2, 3), seed=1)
    rows = {0: [0.7, 0.2, 0.1, 0.0], 1: [0.2, 0.5, 0.2, 0.1], 2: [0.1, 0.2, 0.4, 0.3], 3: [0.0, 0.1, 0.3, 0.6]}
    grades, _ = simulated_grades(tmp_path, coll, order, {"confusion": rows, "seed": 2})
    counts = np.zeros((4, 4))
    for q, gs in grades.items():
        for d, g in gs.items():
            counts[coll.qrels[q][d], g] += 1
    for h, row in rows.items():
        n = counts[h].sum()
        for g, p in enumerate(row):
            # 4 binomial standard errors per cell (about 750 documents per human grade: <= 0.072)
            assert abs(counts[h, g] / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (h, g)
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert quality["confusion"] == counts.astype(int).tolist()


def test_unreachable_precision_and_bad_confusion_rows_are_clear_errors(tmp_path):
    coll, order = rated_collection(n_queries=20, grades=(0, 1, 2, 3))  # base rate 0.75
    with pytest.raises(ConfigError, match=r"precision = 0.7 cannot be reached at recall 0.8.*base rate.*0\.7"):
        simulated_grades(tmp_path, coll, order, {"recall": 0.8, "precision": 0.7})
    with pytest.raises(ConfigError, match=r"confusion\[1\] must be non-negative probabilities summing to 1"):
        GradeStage({"simulated": {"confusion": {0: [1, 0, 0, 0], 1: [0.5, 0.4, 0, 0]}}})
    with pytest.raises(ConfigError, match=r"confusion\[0\] has 3 probabilities, needs 4"):
        GradeStage({"simulated": {"confusion": {0: [0.5, 0.5, 0]}}})
    with pytest.raises(ConfigError, match="precision must be a probability"):
        GradeStage({"simulated": {"precision": 0}})
    with pytest.raises(ConfigError, match=r"no row for the human grades \[2, 3\]"):
        simulated_grades(tmp_path, coll, order, {"confusion": {0: [1, 0, 0, 0], 1: [0, 1, 0, 0]}}, name="rows")


def test_other_annotator_stages_refuse_the_simulated_annotator():
    cfg = OmegaConf.load(REPO / "conf" / "annotator" / "simulated.yaml")
    cfg.simulated.seed = 0
    for make in (lambda: AnnotateStage(cfg), lambda: ReplugStage(cfg)):
        with pytest.raises(ConfigError, match=r"cannot run the '(annotate|replug)' stage.*label source `grade`"):
            make()
    from uptrain.evaluate.llm_testset import LLMTestSetStage

    with pytest.raises(ConfigError, match="cannot run the 'llm_testset' stage"):
        LLMTestSetStage(cfg, systems=["a"])


def test_annotator_simulated_composes_and_the_producer_plans_a_simulated_grade_stage():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["annotator=simulated", "labels=grade", "seed=9"])
    assert cfg.annotator.get("backend") is None
    stage = PLANNERS["grades"](cfg, {})
    assert isinstance(stage, GradeStage) and stage.simulator.seed == 9 and stage.depth == cfg.annotate.grade.depth
    stage.validate()
    sources = parse_spec(cfg.labels.phases[0].labels)
    assert sources[0].min_grade == 2 and cfg.labels.phases[0].name == "llm_grade"


# ---- the label source ----------------------------------------------------------------------


def test_grade_source_through_build_examples():
    pool = [Entry("q1", "aspirin heart", (), ("d2", "d3", "d4")), Entry("q2", "vitamin d", ("d5",), ("d5", "d6"))]
    values = {"grades": {"q1": {"d2": 1, "d3": 2, "d1": 3, "d4": 0}}}
    ex, stats = build_examples("grade", pool, values)
    assert len(ex) == 1 and ex[0].query_id == "q1"
    assert ex[0].positives == ("d1", "d3")  # grade order; d1 is outside the pool, kept and counted
    assert ex[0].negatives == ("d2", "d4") and dict(ex[0].grades) == {"d2": 1, "d3": 2, "d1": 3, "d4": 0}
    assert stats.per_source["grade:2"] == 1
    assert stats.per_source["grade_queries_without_grades"] == 1 and stats.per_source["grade_positives_outside_pool"] == 1
    ex3, _ = build_examples([{"source": "grade", "min_grade": 3, "weight": 0.5}], pool, values)
    assert ex3[0].positives == ("d1",) and ex3[0].weight == 0.5
    assert build_examples("grade:3", pool, values)[0][0].positives == ("d1",)
    with pytest.raises(ConfigError, match="min_grade"):
        parse_spec("grade:high")


# ---- a tiny real run on SmolLM2 through conf/annotator/transformers.yaml --------------------


def test_transformers_annotator_grades_end_to_end(tmp_path):
    pytest.importorskip("transformers")
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "annotator" / "transformers.yaml"), resolve=True)
    cfg["generation"]["max_new_tokens"] = 12
    coll, order = small_collection(n_queries=2, per_query=2)
    clicks = simulated_clicks(coll, order, sessions=4, serp_size=2)
    stage = GradeStage(cfg, depth=2, batch_queries=2)
    try:
        stage.validate()
    except Exception as exc:  # noqa: BLE001 - the model is not installed on this machine
        pytest.skip(f"the default annotator model is not available: {exc}")
    t0 = time.time()
    grades = build(stage, tmp_path / "out", tmp_path / "work", {"data": types.SimpleNamespace(value=coll), "clicks": types.SimpleNamespace(value=clicks)})
    seconds = time.time() - t0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["prompts"] == 4 and stats["output_tokens"] > 0 and stats["seconds_per_prompt"] > 0
    assert set(grades) <= {"q0", "q1"} and all(0 <= g <= 3 for gs in grades.values() for g in gs.values())
    assert stats["graded"] + stats["unparseable"] == 4
    rows = [json.loads(x) for x in (tmp_path / "out" / "grades.jsonl").read_text().splitlines()]
    assert all(len(r["outputs"]) == 2 for r in rows)
    print(f"SmolLM2 grade run: {seconds:.1f} s, {stats['seconds_per_prompt']} s per prompt, {stats['unparseable']} unparseable")
