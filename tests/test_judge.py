"""The judge study's graph: judges behind one interface, the judge path end to end through the real
CLI on a graded fixture collection and run files, out-of-fold training, resumption, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import run_cli
from uptrain.errors import ConfigError
from uptrain.judge.cross_encoder import GradedPairs, JudgeTrainStage, fold_of, graded_pairs

TOPICS = {
    "q1": "aspirin heart attack risk", "q2": "eiffel tower height", "q3": "photosynthesis light energy",
    "q4": "vitamin d bone fractures", "q5": "roman empire history", "q6": "neural network training",
}
WORDS = ["aspirin", "heart", "tower", "paris", "light", "plant", "vitamin", "bone", "rome", "empire",
         "neural", "network", "energy", "risk", "history", "training"]


def write_fixture(root: Path, n_docs_per_query: int = 6, seed: int = 0) -> dict:
    """A graded collection (grades 0..3) and three run files over it; returns the paths and truths."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    docs, qrels = {}, {}
    for q, text in TOPICS.items():
        qrels[q] = {}
        for i in range(n_docs_per_query):
            d = f"{q}d{i}"
            g = [3, 2, 1, 0, 0, 1, 2, 0][i % 8]
            words = text.split() if g > 0 else rng.sample(WORDS, 4)
            docs[d] = " ".join(words + rng.sample(WORDS, 3)) + f" passage {i}"
            qrels[q][d] = g
    docs["stray"] = "a passage no topic judged"
    (root / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in docs.items()))
    (root / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in TOPICS.items()))
    (root / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q, r in qrels.items() for d, g in r.items()))
    runs = {}
    for name, order in (("good", lambda ds: sorted(ds, key=lambda d: -qrels[d[:2]][d])),
                        ("bad", lambda ds: sorted(ds, key=lambda d: qrels[d[:2]][d])),
                        ("mixed", lambda ds: sorted(ds))):
        lines = []
        for q in TOPICS:
            ranked = order([d for d in docs if d.startswith(q + "d")]) + (["stray"] if name == "mixed" else [])
            lines += [f"{q} Q0 {d} {r + 1} {100 - r} {name}\n" for r, d in enumerate(ranked)]
        path = root / f"{name}.run"
        path.write_text("".join(lines))
        runs[name] = path
    return {"root": root, "runs": runs, "qrels": qrels, "docs": docs}


def fixture_overrides(fx: dict, k: int = 4, systems: str | None = None) -> list[str]:
    """The fixture collection and its runs as a user gives them (``systems``: another judge.systems)."""
    root = fx["root"]
    systems = systems or ", ".join(f"{n}: {p}" for n, p in fx["runs"].items())
    return [
        f"+eval.collections.fx={{_target_: uptrain.data.TrecSource, name: fx, docs: {root}/docs.tsv, "
        f"topics: {root}/topics.tsv, qrels: {root}/qrels.txt}}",
        "judge.collection=fx", f"judge.systems={{{systems}}}", f"judge.k={k}", "judge.segments=[]",
    ]


@pytest.fixture()
def uptrain_cli(cli_env):
    def call(*args: str, cwd: Path, check: bool = True):
        return run_cli(list(args), cli_env, cwd, check=check)
    return call


IDENTITY = "judge.grader.confusion={0: [1,0,0,0], 1: [0,1,0,0], 2: [0,0,1,0], 3: [0,0,0,1]}"


# ---- units ---------------------------------------------------------------------------------

def test_fold_of_depends_on_the_query_alone_and_covers_every_fold():
    """A query's fold must not change with the other queries (a per-collection shuffle would), and
    k folds must all be used on enough queries."""
    ids = [f"q{i}" for i in range(400)]
    folds = [fold_of(q, 5, 7) for q in ids]
    assert folds == [fold_of(q, 5, 7) for q in reversed(ids)][::-1]
    counts = [folds.count(f) for f in range(5)]
    assert min(counts) > 50 and set(folds) == set(range(5))
    assert [fold_of(q, 5, 8) for q in ids] != folds  # the seed matters


def test_graded_pairs_visit_every_pair_once_per_epoch_and_pad_without_grades(tmp_path):
    """Every judged pair with text once per epoch (a sampler that draws groups would miss or repeat
    pairs); a short last group padded with grade -1 (a padded copy with its grade would count twice)."""
    from uptrain.data import TrecSource

    fx = write_fixture(tmp_path / "fx", n_docs_per_query=5)
    coll = TrecSource(docs=fx["root"] / "docs.tsv", topics=fx["root"] / "topics.tsv",
                      qrels=fx["root"] / "qrels.txt", name="fx").load()
    pairs, counts = graded_pairs(coll, list(coll.queries), 3)
    assert counts["pairs"] == 30 and counts["without_text"] == 0
    ds = GradedPairs(pairs, coll.queries, coll.docs, group_size=4, seed=0)
    assert len(ds) == 6 * 2  # ceil(5 / 4) groups per query
    seen = []
    for i in range(len(ds)):
        item = ds[i]
        assert len(item.doc_ids) == 4
        seen += [(item.query_id, d, g) for d, g in zip(item.doc_ids, item.grades) if g >= 0]
        assert all(g == -1 for g in item.grades[len([g for g in item.grades if g >= 0]):])
    assert sorted(seen) == sorted((q, d, g) for q, r in pairs.items() for d, g in r)
    assert ds.padded_slots == 6 * 3
    first = [ds[i].doc_ids for i in range(len(ds))]
    ds.set_epoch(1)
    assert [ds[i].doc_ids for i in range(len(ds))] != first  # reshuffled per epoch


def test_graded_pairs_cut_and_count_grades_outside_the_scale(tmp_path):
    from uptrain.data import TrecSource

    fx = write_fixture(tmp_path / "fx", n_docs_per_query=4)
    coll = TrecSource(docs=fx["root"] / "docs.tsv", topics=fx["root"] / "topics.tsv",
                      qrels=fx["root"] / "qrels.txt", name="fx").load()
    pairs, counts = graded_pairs(coll, list(coll.queries), 2)
    assert counts["grades_cut_to_max"] == 6  # one grade-3 document per query
    assert max(g for r in pairs.values() for _, g in r) == 2


def test_out_of_fold_training_leaves_out_exactly_the_fold(tmp_path):
    """The fold-f model must not see fold f's queries (a judge graded on its own training queries
    reports agreement it would not have on new queries)."""
    from uptrain.data import TrecSource

    fx = write_fixture(tmp_path / "fx")
    coll = TrecSource(docs=fx["root"] / "docs.tsv", topics=fx["root"] / "topics.tsv",
                      qrels=fx["root"] / "qrels.txt", name="fx").load()
    seen = set()
    for f in range(3):
        stage = JudgeTrainStage(3, f, 3, 0, {}, {})
        train = set(stage.train_queries(coll))
        held = {q for q in coll.queries if fold_of(q, 3, 0) == f}
        assert train.isdisjoint(held) and train | held == set(coll.queries)
        seen |= held
    assert seen == set(coll.queries)
    assert set(JudgeTrainStage(3, None, 3, 0, {}, {}).train_queries(coll)) == set(coll.queries)


# ---- the path through the CLI ----------------------------------------------------------------

def test_simulated_identity_judge_agrees_perfectly_and_judges_shared_pairs_once(tmp_path, uptrain_cli):
    """With an identity confusion the judge's labels are the human grades, so every agreement measure
    must be perfect and the judge's sDCG equal the human one; the pooled pairs are the union of the
    systems' top k (a document in two systems' top k judged twice would inflate the pair count)."""
    fx = write_fixture(tmp_path / "fx")
    out = tmp_path / "run"
    uptrain_cli("+exp=judge_trec_dl", "judge=simulated", IDENTITY, *fixture_overrides(fx, k=4),
                f"hydra.run.dir={out}", cwd=tmp_path)
    m = json.loads((out / "metrics.json").read_text())["judge"]
    assert m["simulated"] is True and m["judge"] == "simulated"
    union = set()
    for path in fx["runs"].values():
        per_q = {}
        for line in path.read_text().splitlines():
            q, _, d, r, _, _ = line.split()
            per_q.setdefault(q, []).append((int(r), d))
        for q, rows in per_q.items():
            union |= {(q, d) for _, d in sorted(rows)[:4]}
    assert m["pairs"] == len(union)
    assert m["label_agreement"]["exact"] == 1.0 and m["label_agreement"]["kappa"] == 1.0
    assert m["query_agreement"]["error_mean"] == pytest.approx(0.0, abs=1e-12)
    assert m["query_agreement"]["kendall_tau"] == pytest.approx(1.0)
    assert m["system_agreement"]["kendall_tau"] == pytest.approx(1.0)
    for name, row in m["systems"].items():
        assert row["sDCG@4"] == pytest.approx(row["sDCG@4_human"]), name
    assert m["systems"]["good"]["sDCG@4"] > m["systems"]["mixed"]["sDCG@4"] > m["systems"]["bad"]["sDCG@4"]
    # the good run's first page by hand: grades 3, 2, 2, 1 (six documents: 3 2 1 0 0 1 -> 3, 2, 1, 1)
    import math

    disc = [1 / math.log2(1 + r) for r in range(1, 5)]
    want = sum((g + 1) * w for g, w in zip([3, 2, 1, 1], disc)) / sum(4 * w for w in disc)
    assert m["systems"]["good"]["sDCG@4"] == pytest.approx(want)
    report = (out / "report.md").read_text()
    assert "SIMULATED judge" in report and "Judge: agreement with human labels" in report
    assert (out / "judge_errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "judge_labels.qrels").read_text().splitlines()) == len(union)


def test_cross_encoder_judge_trains_out_of_fold_and_labels_every_pair(tmp_path, uptrain_cli):
    """The real cross-encoder judge: k fold models trained (each on the other folds' queries), every
    pooled pair graded, probabilities over 0..G summing to 1, the cost reported."""
    fx = write_fixture(tmp_path / "fx")
    out = tmp_path / "run"
    uptrain_cli("+exp=judge_trec_dl", *fixture_overrides(fx, k=3), "judge.grader.folds=2",
                "judge.grader.train.epochs=1", "judge.grader.train.batch_size=2", "judge.grader.train.group_size=4",
                "judge.grader.model.max_length=64", f"hydra.run.dir={out}", cwd=tmp_path)
    m = json.loads((out / "metrics.json").read_text())["judge"]
    assert m["out_of_fold"] is True and m["max_grade"] == 3 and m["cost"]["train_models"] == 2
    assert m["cost"]["pairs"] == m["pairs"] and m["cost"]["pairs_per_second"] > 0
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    labels = [s for s in stages if s["stage"].startswith("judge_label")]
    assert len(labels) == 2
    for key in ("exact", "within_one", "kappa"):
        assert key in m["label_agreement"]
    for key in ("kendall_tau", "spearman_rho", "error_mean", "error_p10", "error_median", "error_p90"):
        assert key in m["query_agreement"]
    lines = (out / "judge_labels.qrels").read_text().splitlines()
    assert len(lines) == m["pairs"] and all(0 <= int(x.split()[3]) <= 3 for x in lines)


def test_label_stage_resumes_without_regrading_committed_queries(tmp_path):
    """A run killed after some batches: the re-run grades only the queries not committed (a stage
    that restarts from nothing would grade every query again)."""
    from uptrain.cache import ArtifactCache
    from uptrain.data import TrecSource
    from uptrain.data.stage import DataStage
    from uptrain.graph import Runner
    from uptrain.judge.simulated import SimulatedJudge
    from uptrain.judge.stages import JudgeLabelStage

    fx = write_fixture(tmp_path / "fx")
    source = TrecSource(docs=fx["root"] / "docs.tsv", topics=fx["root"] / "topics.tsv",
                        qrels=fx["root"] / "qrels.txt", name="fx")
    runner = Runner(ArtifactCache(tmp_path / "cache"), tmp_path / "run")
    data = runner.run(DataStage(source), label="data")
    pairs = {q: sorted(d for d in fx["qrels"][q])[:3] for q in TOPICS}
    graded = []

    class Killed(SimulatedJudge):
        fail_after = 2

        def grade_many(self, items, human=None):
            if len(graded) >= self.fail_after:
                raise KeyboardInterrupt("killed")
            graded.extend(q for q, *_ in items)
            return super().grade_many(items, human)

    judge = Killed(confusion={0: [1, 0, 0, 0], 1: [0, 1, 0, 0], 2: [0, 0, 1, 0], 3: [0, 0, 0, 1]})
    judge.set_scale(3)
    with pytest.raises(KeyboardInterrupt):
        runner.run(JudgeLabelStage(judge, pairs, batch_queries=2), {"data": data}, label="judge_label")
    assert graded == ["q1", "q2"]
    judge.fail_after = 99
    art = runner.run(JudgeLabelStage(judge, pairs, batch_queries=2), {"data": data}, label="judge_label")
    assert graded == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert art.value.grades == {q: {d: fx["qrels"][q][d] for d in ds} for q, ds in pairs.items()}


def test_llm_judge_grades_through_the_real_smollm2(tmp_path):
    """The prompted judge on the packaged SmolLM2 (transformers): one grade per pair or None
    (counted), one-hot probabilities, prompts and tokens counted."""
    from uptrain.annotate.backends.models import packaged_gguf_path
    from uptrain.judge.llm import LLMJudge

    assert packaged_gguf_path("smollm2-135m-instruct").is_file()  # installed by `make install`; absent is a failure

    annotator = {"backend": {"_target_": "uptrain.annotate.backends.TransformersBackend",
                             "model": "smollm2-135m-instruct", "device": "cpu", "dtype": "fp32", "batch_size": 4},
                 "generation": {"max_new_tokens": 8, "temperature": 0.0}, "prompt_version": "v1",
                 "max_passage_words": 40}
    judge = LLMJudge(annotator=annotator)
    judge.set_scale(3)
    got = judge.grade("aspirin heart attack risk", ["aspirin lowers the risk of a heart attack", "the eiffel tower"],
                      query_id="q1", doc_ids=["a", "b"])
    assert len(got.grades) == 2 and got.cost["prompts"] == 2 and got.cost["prompt_tokens"] > 50
    for g, p in zip(got.grades, got.probs):
        assert (g is None and p is None) or (0 <= g <= 3 and p[g] == 1.0 and sum(p) == 1.0)
    assert got.cost["unparseable"] == sum(g is None for g in got.grades)
    with pytest.raises(ConfigError, match="0-3 scale"):
        LLMJudge(annotator=annotator).set_scale(4)  # a 0-4 collection (Cranfield's mapped grades)


def test_design_through_the_path(tmp_path, uptrain_cli):
    """judge.design on the fixture: rows for each design and size, in metrics.json and the report."""
    fx = write_fixture(tmp_path / "fx")
    out = tmp_path / "run"
    uptrain_cli("+exp=judge_trec_dl", "judge=simulated", IDENTITY, *fixture_overrides(fx, k=4),
                "judge.design.enabled=true", "judge.design.control=bad", "judge.design.treatment=good",
                "judge.design.sizes=[4]", "judge.design.repeats=50",
                "+judge.segmenters.short={_target_: uptrain.evaluate.segments.QueryLength, edges: [3]}", "judge.design.strata=short",
                f"hydra.run.dir={out}", cwd=tmp_path)
    d = json.loads((out / "metrics.json").read_text())["judge"]["design"]
    assert d["control"] == "bad" and d["population"] == 6
    assert {r["design"] for r in d["level"]} <= {"srs", "proportional", "neyman"} and d["level"]
    assert all(r["n"] == 4 for r in d["difference"])
    rows = d["heterogeneous"]
    assert {r["stratum"] for r in rows} == set(d["strata"]["sizes"])
    assert all(r["p_adjusted"] >= r["p_raw"] for r in rows)  # BH never lowers a p-value
    assert "A/B measurement design" in (out / "report.md").read_text()
    assert (out / "judge_mde.png").is_file()


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override, phrase", [
    ("judge.systems={a: /no/such/run.txt}", "neither an existing TREC run file nor an uptrain experiment"),
    ("judge.collection=nowhere", "not in eval.collections"),
    ("judge.k=0", "judge.k must be an integer"),
    ("judge.grader.folds=1", "folds must be an integer >= 2"),
])
def test_bad_settings_fail_before_anything_runs(tmp_path, uptrain_cli, override, phrase):
    fx = write_fixture(tmp_path / "fx")
    if override.startswith("judge.systems="):
        args = fixture_overrides(fx, systems=override.split("=", 1)[1].strip("{}"))
    else:
        args = [*fixture_overrides(fx), override]
    res = uptrain_cli("+exp=judge_trec_dl", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert phrase in res.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_malformed_run_file_is_named_with_its_line(tmp_path, uptrain_cli):
    fx = write_fixture(tmp_path / "fx")
    bad = tmp_path / "broken.run"
    bad.write_text("q1 Q0 q1d0 1 3.0 x\nq1 Q0 q1d1 two 2.0 x\n")
    res = uptrain_cli("+exp=judge_trec_dl", "judge=simulated", *fixture_overrides(fx, systems=f"b: {bad}"),
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False)
    assert res.returncode == 2 and "broken.run:2" in res.stderr and "judge.systems.b" in res.stderr


def test_judge_study_verdicts_compare_with_the_paper_and_never_judge_a_simulation(tmp_path):
    """uptrain-judge-study: 'reached' only when both label figures are at least the paper's, 'below'
    otherwise; a simulated run is listed but given no verdict (its agreement is set, not measured)."""
    from uptrain.report.judge_study import main

    def write(name, simulated, exact, within, tau, rho):
        d = tmp_path / "sweep" / name
        d.mkdir(parents=True)
        j = {"judge": "cross_encoder" if not simulated else "simulated", "simulated": simulated, "collection": "fx",
             "k": 10, "out_of_fold": True, "train": "fx",
             "label_agreement": {"exact": exact, "within_one": within, "kappa": 0.5, "weighted_kappa": 0.6},
             "query_agreement": {"kendall_tau": tau, "spearman_rho": rho, "error_mean": 0.01, "error_p10": -0.1,
                                 "error_median": 0.0, "error_p90": 0.1},
             "system_agreement": {"kendall_tau": 0.8, "sign_agreement": 0.9, "pairs": 15,
                                  "significant_sign_agreement": 1.0},
             "cost": {"pairs_per_second": 100.0, "train_seconds": 5.0}}
        (d / "metrics.json").write_text(json.dumps({"name": "judge_trec_dl", "judge": j, "overrides": []}))

    write("0", False, 0.80, 0.95, 0.50, 0.70)
    write("1", True, 0.99, 0.99, 0.99, 0.99)
    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "study.md").read_text()
    verdict_lines = [line for line in text.splitlines() if line.startswith("- **")]
    label, query = verdict_lines[0], verdict_lines[1]
    assert "reached (exact 80.0%, within one 95.0%)" in label
    assert "below (tau 0.500, rho 0.700" in query
    assert "SIMULATED" not in label and "SIMULATED" not in query  # the simulated run gets no verdict
    assert "| simulated (SIMULATED), fx" in text and "73.7%" in text and "0.652" in text


def test_systems_by_experiment_name_and_a_judge_trained_on_another_collection(tmp_path, uptrain_cli):
    """judge.systems may name an uptrain experiment (its run over judge.collection is built first:
    here BM25 over the fixture), and judge.train another collection: one model trained there grades
    every query here (no fold), which metrics.json says."""
    fx = write_fixture(tmp_path / "fx")
    other = write_fixture(tmp_path / "other", seed=3)
    out = tmp_path / "run"
    root = other["root"]
    uptrain_cli("+exp=judge_trec_dl", *fixture_overrides(fx, k=3, systems=f"lexical: bm25, good: {fx['runs']['good']}"),
                f"+eval.collections.other={{_target_: uptrain.data.TrecSource, name: other, docs: {root}/docs.tsv, "
                f"topics: {root}/topics.tsv, qrels: {root}/qrels.txt}}", "judge.train=other",
                "judge.grader.train.epochs=1", "judge.grader.train.group_size=4", "judge.grader.model.max_length=64",
                f"hydra.run.dir={out}", cwd=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    j = m["judge"]
    assert j["out_of_fold"] is False and j["train"] == "other" and j["cost"]["train_models"] == 1
    assert set(j["systems"]) == {"lexical", "good"}
    assert (out / "judge_systems" / "lexical").is_dir()  # the experiment's own run directory
    assert sorted(j["system_agreement"]["systems"]) == ["good", "lexical"]
