"""Click supervision in the run graph: the click label sources, logged SERPs as training groups,
the pool without human positives, the click_models experiment through the real CLI, and one
whole click-trained run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import needs_data, run_cli
from uptrain.clicks import ClickLogBuilder, Session, from_arrays
from uptrain.clicks.sampling import sample_pbm
from uptrain.clicks.stages import FittedClickModel, LoadedClicks
from uptrain.data.collection import Collection
from uptrain.labels import build_examples, is_session_level, parse_spec, spec_key
from uptrain.labels.sources import LabelConfigError
from uptrain.pool.pool import PoolEntry, build_pool
from uptrain.train.dataset import GroupDataset

DOCS = {f"d{i}": f"document number {i} about topic {i % 3}" for i in range(12)}
COLL = Collection("tiny", DOCS, {"q1": "topic one", "q2": "topic two", "q3": "unjudged query"},
                  {"q1": {"d1": 1}, "q2": {"d2": 2}})


def _log():
    b = ClickLogBuilder(ranks=4)
    b.add(Session("q1", ["d1", "d4", "d7", "d10"], [0, 2]))
    b.add(Session("q1", ["d4", "d1", "d7", "d10"], [1]))
    b.add(Session("q2", ["d2", "d5", "d8"], []))          # short SERP
    b.add(Session("q2", ["d2", "d5", "zz", "d8"], [0]))   # a document not in the collection
    b.add(Session("qX", ["d3", "d6", "d9", "d11"], [1]))  # a query neither the collection nor the log has text for
    return b.build()


def test_click_specs_parse_key_and_refuse_what_cannot_work():
    assert spec_key("click:ips") == "click:ips"
    src = parse_spec("click:dbn")[0]
    assert src.inputs == ("clicks", "click_model") and src.requests()["click_model"] == {"model": "dbn"}
    assert parse_spec("click:ctr")[0].requests()["click_model"] == {"model": "dctr"}
    assert parse_spec("click:ips")[0].requests()["click_model"] == {"model": "pbm"}
    given = parse_spec([{"source": "click", "model": "ips", "propensities": [1, 0.5, 0.3, 0.2]}])[0]
    assert given.inputs == ("clicks",)  # given propensities: no PBM is fitted
    assert is_session_level("click:raw") and not is_session_level("click:ctr")
    with pytest.raises(LabelConfigError, match="needs a model among"):
        parse_spec("click:nosuch")
    with pytest.raises(LabelConfigError, match="cannot be interleaved"):
        parse_spec("human+click:raw")
    assert len(parse_spec("human+click:dbn")) == 2  # aggregated click labels interleave with human ones
    with pytest.raises(LabelConfigError, match="propensities"):
        parse_spec([{"source": "click", "model": "raw", "propensities": [0.5]}])


def test_session_examples_keep_ranks_and_count_what_they_leave_out():
    clicks = LoadedClicks(_log())
    spec = [{"source": "click", "model": "ips", "propensities": [1.0, 0.6, 0.4, 0.3]}]
    pool = [PoolEntry("q1", "topic one", ["d1"], ["d4"], ["d1", "d4"])]
    examples, stats = build_examples(spec, pool, {"clicks": clicks}, collection=COLL)
    assert len(examples) == 3
    first = examples[0]
    assert first.serp == ("d1", "d4", "d7", "d10") and set(first.positives) == {"d1", "d7"}
    assert first.propensities == (1.0, 0.6, 0.4, 0.3)
    assert examples[2].serp == ("d2", "d5", "d8") and examples[2].propensities == (1.0, 0.6, 0.4)
    counts = stats.per_source
    assert counts["sessions_with_unknown_documents"] == 1 and counts["sessions_without_query_text"] == 1

    dataset = GroupDataset(examples, DOCS, sampler=None, group_size=2)
    assert dataset.stats["sessions"] == 3 and dataset.stats["padded_serps"] == 1
    item = dataset[2]  # the short SERP padded with one unshown document at rank -1
    assert item.doc_ids[:3] == ["d2", "d5", "d8"] and item.positions == [0, 1, 2, -1]
    assert item.is_positive == [False, False, False, False] and math.isnan(item.propensities[3])
    assert dataset[0].is_positive == [True, False, True, False]


def test_max_sessions_samples_and_counts():
    log = _log()
    spec = [{"source": "click", "model": "raw", "max_sessions": 2}]
    examples, stats = build_examples(spec, [], {"clicks": LoadedClicks(log)}, collection=COLL)
    assert stats.per_source["sessions_cut_by_max_sessions"] == 3
    assert len(examples) <= 2
    # min_clicks leaves out the session without a click first; max_sessions then samples what is left
    spec = [{"source": "click", "model": "raw", "max_sessions": 3, "min_clicks": 1}]
    examples, stats = build_examples(spec, [], {"clicks": LoadedClicks(log)}, collection=COLL)
    assert stats.per_source["sessions_below_min_clicks"] == 1
    assert stats.per_source["sessions_cut_by_max_sessions"] == 1
    assert all(e.positives for e in examples)
    with pytest.raises(LabelConfigError, match="min_clicks"):
        parse_spec([{"source": "click", "model": "dbn", "min_clicks": 1}])


def test_aggregated_click_positives_use_the_threshold_and_stay_in_the_pool():
    fitted = FittedClickModel("dbn", {("q1", "d1"): 0.9, ("q1", "d7"): 0.6, ("q1", "d4"): 0.2, ("q1", "d9"): 0.95},
                              {("q1", "d1"): 5, ("q1", "d7"): 1, ("q1", "d4"): 5, ("q1", "d9"): 3}, {})
    pool = [PoolEntry("q1", "topic one", [], ["d1", "d4", "d7"], ["d4", "d1", "d7"]),
            PoolEntry("q3", "unjudged query", [], ["d2"], ["d2"])]
    spec = [{"source": "click", "model": "dbn", "threshold": 0.5, "top": None, "min_impressions": 2}]
    examples, stats = build_examples(spec, pool, {"clicks": LoadedClicks(_log()), "click_model": fitted})
    assert len(examples) == 1  # q3 has no clicks: no label, counted
    ex = examples[0]
    # d7 has too few impressions, d4 is below the threshold, d9 is outside the pool: only d1
    assert ex.positives == ("d1",) and set(ex.negatives) == {"d4", "d7"}
    assert stats.per_source["click_positives_outside_pool"] == 1
    assert stats.per_source["click_queries_without_clicks"] == 1
    # the default is relative: the query's best-estimated candidate, whatever the estimates' scale
    examples, stats = build_examples("click:dbn", pool, {"clicks": LoadedClicks(_log()), "click_model": fitted})
    assert examples[0].positives == ("d1",) and stats.per_source["click_pairs_beyond_top"] == 2


def test_pool_can_keep_queries_without_human_positives():
    class Fixed:
        def search(self, queries, k, show_progress=True):
            return {q: {"d3": 2.0, "d5": 1.0} for q in queries}

    strict, st = build_pool(COLL, Fixed(), depth=2, show_progress=False)
    loose, sl = build_pool(COLL, Fixed(), depth=2, show_progress=False, require_positive=False)
    assert [e.query_id for e in strict] == ["q1", "q2"] and st["skipped_no_positive"] == 1
    assert [e.query_id for e in loose] == ["q1", "q2", "q3"] and sl["without_positive"] == 1
    assert loose[2].positives == [] and sorted(loose[2].candidates) == ["d3", "d5"]


def test_click_targets_reach_both_families_in_their_layouts():
    from uptrain.model.batch import TrainItem, block_diagonal, group_targets, TARGET_FILL

    items = [TrainItem("q", "q", ["a", "b"], ["", ""], [True, False], frozenset({"a"}), positions=[0, 1],
                       propensities=[1.0, 0.5]),
             TrainItem("r", "r", ["c", "d"], ["", ""], [False, False], frozenset(), positions=[0, -1],
                       propensities=[1.0, float("nan")])]
    g = group_targets(items)["click"]
    assert g.shape == (2, 2, 3) and g[0, 0].tolist() == [1.0, 0.0, 1.0] and g[1, 1, 1] == -1
    flat = block_diagonal(g, TARGET_FILL["click"])
    # query 0's columns of query 1's group were never shown to it: rank -1, ignored by every click loss
    assert flat.shape == (2, 4, 3) and flat[0, 2, 1] == -1 and flat[0, 2, 0] == 0 and flat[1, 2, 0] == 0
    assert flat[1, 2:, 1].tolist() == [0.0, -1.0]


def test_click_loss_without_sessions_is_refused_before_training():
    from omegaconf import OmegaConf

    from uptrain.train.stage import TrainStage

    def stage(labels, loss):
        return TrainStage("p", OmegaConf.create({"_target_": loss}), OmegaConf.create({"_target_": "uptrain.sampling.PosOne"}),
                          OmegaConf.create({}), OmegaConf.create({}), labels=labels)

    with pytest.raises(LabelConfigError, match="click:raw"):
        stage("human", "uptrain.losses.IPSListwise")
    with pytest.raises(LabelConfigError, match="unbiased learning-to-rank loss"):
        stage("click:raw", "uptrain.losses.InfoNCE")
    stage("click:ips", "uptrain.losses.IPSListwise")


def test_split_by_query_keeps_every_test_query_in_train():
    # the file lists sessions grouped by query (PyClick's Yandex sample does): a global cut by session
    # order would make the last queries test-only, unseen by every model
    rng = np.random.default_rng(0)
    q = np.repeat(np.arange(4), [40, 20, 10, 1])
    docs = np.tile(np.arange(10), (len(q), 1))
    log = from_arrays(q, docs, rng.random(docs.shape) < 0.2, [f"q{i}" for i in range(4)], [f"d{i}" for i in range(10)])
    train, test = log.split(0.25)
    assert set(test.frequencies()) <= set(train.frequencies())
    assert test.frequencies() == {"q0": 10, "q1": 5, "q2": 3}  # 2.5 rounds up; q3 (one session) stays in train
    assert len(train) + len(test) == len(log)
    g_train, g_test = log.split(0.25, by="session")
    assert g_test.frequencies() == {"q1": 7, "q2": 10, "q3": 1}  # the last 18 of 71 sessions


def _pbm_log(path, n=6000, seed=0):
    nq, nd = 30, 10
    attr_table = np.random.default_rng(123).uniform(0.05, 0.9, (nq, 40))  # one model for every draw
    rng = np.random.default_rng(seed)
    q = rng.integers(0, nq, n)
    docs = np.stack([rng.permutation(40)[:nd] for _ in range(n)])
    exam = 1.0 / np.arange(1, nd + 1) ** 0.8
    clicked = sample_pbm(attr_table[q[:, None], docs], exam, rng)
    log = from_arrays(q, docs, clicked, [f"q{i}" for i in range(nq)], [f"d{i}" for i in range(40)])
    log.write_jsonl(path)
    return log


def test_click_models_experiment_through_the_cli(cli_env, tmp_path):
    train = tmp_path / "train.jsonl"
    _pbm_log(train)
    test = tmp_path / "test.jsonl"
    _pbm_log(test, n=3000, seed=1)  # another draw of sessions from the same model
    run_cli(["+exp=click_models", f"clicks.train={train}", f"clicks.test={test}", "clicks.models=[gctr,dctr,pbm,ubm]",
             f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cm = m["click_models"]
    assert set(cm) == {"gctr", "dctr", "pbm", "ubm"}
    for r in cm.values():
        assert len(r["perplexity_at"]) == 10 and 1.0 <= r["perplexity"] <= 2.0 and r["log_likelihood"] < 0
        assert r["perplexity"] == pytest.approx(sum(r["perplexity_at"]) / 10, rel=1e-9)
    # the generating model beats the CTR baselines on held-out clicks
    assert cm["pbm"]["perplexity"] < min(cm["gctr"]["perplexity"], cm["dctr"]["perplexity"])
    assert (tmp_path / "run" / "click_models_perplexity_at.png").stat().st_size > 1000
    assert "| pbm |" in (tmp_path / "run" / "click_models_table.md").read_text()
    assert "Click models" in (tmp_path / "run" / "report.md").read_text()


def test_click_models_experiment_errors_in_one_paragraph(cli_env, tmp_path):
    bad = run_cli(["+exp=click_models", f"clicks.train={tmp_path / 'missing.jsonl'}"], cli_env, tmp_path, check=False)
    assert bad.returncode == 2 and "is not a file" in bad.stderr and "Traceback" not in bad.stderr
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not a click log\nnor is this\n")
    bad = run_cli(["+exp=click_models", f"clicks.train={junk}"], cli_env, tmp_path, check=False)
    assert bad.returncode == 2 and "format" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli(["+exp=click_models", f"clicks.train={junk}", "clicks.models=[pbm,nosuch]", "clicks.format=jsonl"],
                  cli_env, tmp_path, check=False)
    assert bad.returncode == 2 and "nosuch" in bad.stderr


@needs_data
def test_dla_run_trains_a_cross_encoder_on_simulated_clicks_and_reports_the_curve(cli_env, tmp_path):
    run_cli(["+exp=click_dla", "profile=smoke", "clicks.simulator.sessions=3000", "labels.max_sessions=24",
             "clicks.simulator.swap_probability=0.2", "eval=indomain", "eval.collections.scifact_test.max_queries=20",
             "rerank.depth=5", "eval.baseline=null", "train.passage_max_length=64", f"hydra.run.dir={tmp_path / 'run'}"],
            cli_env, tmp_path)
    run = tmp_path / "run"
    m = json.loads((run / "metrics.json").read_text())
    assert 0 <= m["results"]["scifact_test"]["nDCG@10"] <= 1
    stats = json.loads((run / "artifacts" / "train_click_raw" / "train_stats.json").read_text())
    assert stats["positives"]["sessions"] == 24
    curve = stats["loss_learned"]["examination"]
    assert len(curve) == 10 and curve[0] == 1.0 and any(abs(x - 1.0) > 1e-4 for x in curve[1:])  # it moved
    # the simulated log's own curve travels to the report beside the learned one, and the plot is drawn
    truth = stats["loss_learned"]["true_examination"]
    assert len(truth) == 10 and truth[0] == 1.0 and truth[-1] < 0.5
    assert stats["loss_learned"]["max_abs_error"] == pytest.approx(max(abs(a - b) for a, b in zip(curve, truth)), abs=1e-5)
    assert (run / "artifacts" / "train_click_raw" / "examination.png").stat().st_size > 1000
    report = (run / "report.md").read_text()
    assert "Simulated clicks" in report and "Learned examination" in report


def test_grade_agreement_against_hand_computed_ctr():
    from scipy.stats import spearmanr

    from uptrain.clicks.agreement import grade_agreement

    b = ClickLogBuilder(ranks=3)
    for clicks in ([0], [0, 1], [], [1]):
        b.add(Session("q", ["a", "b", "c"], clicks))
    log = b.build()
    grades = {("q", "a"): 2, ("q", "b"): 1, ("q", "c"): 0}
    got = grade_agreement(log, grades, ["dctr", "gctr"])
    # DCTR: (prior * pseudo_count + clicks) / (pseudo_count + impressions) = (1 + c) / (2 + 4)
    want = {"a": 3 / 6, "b": 3 / 6, "c": 1 / 6}
    assert got["dctr"]["per_grade"]["2"]["mean"] == pytest.approx(want["a"])
    assert got["dctr"]["per_grade"]["0"]["mean"] == pytest.approx(want["c"])
    rho = spearmanr([want["a"], want["b"], want["c"]], [2, 1, 0]).statistic
    assert got["dctr"]["spearman_rho"] == pytest.approx(rho)
    assert math.isnan(got["gctr"]["spearman_rho"])  # one value for every pair: no rank correlation


@needs_data
def test_click_models_on_the_session_track_log_with_its_judgments(cli_env, tmp_path):
    from conftest import DATA

    st = DATA / "raw" / "trec_session_2012"
    run_cli(["+exp=click_models", f"clicks.train={st / 'sessiontrack2012.xml'}", "clicks.models=[dctr,pbm,dbn]",
             f"clicks.judgments={st / 'relevacne2012.txt'}", f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in ("dctr", "pbm", "dbn"):
        ga = m["click_models"][name]["grade_agreement"]
        # the log's shown (query, document) pairs in the first 10 ranks that have a grade (1,721 when written);
        # a join on the wrong key (query text instead of topic) finds none
        assert ga["pairs"] > 1000 and set(ga["per_grade"]) <= {"-2", "0", "1", "2", "3", "4"}
        assert -1 <= ga["spearman_rho"] <= 1
    assert "Clicks against the human grades" in (tmp_path / "run" / "click_models_table.md").read_text()


def test_biencoder_click_loss_sees_only_each_querys_own_serp():
    # catches: in-batch passages entering the click softmax as if shown (they were never on the query's SERP)
    from uptrain.losses.ultr import IPSListwise
    from uptrain.model import BiEncoder
    from uptrain.model.batch import TrainItem

    model = BiEncoder()
    items = [TrainItem("q1", "aspirin and headaches", ["d1", "d2", "d3"], [DOCS["d1"], DOCS["d2"], DOCS["d3"]],
                       [True, False, False], frozenset({"d1"}), positions=[0, 1, 2], propensities=[1.0, 0.5, 0.3]),
             TrainItem("q2", "vitamin c", ["d4", "d5", "d6"], [DOCS["d4"], DOCS["d5"], DOCS["d6"]],
                       [False, False, True], frozenset({"d6"}), positions=[0, 1, 2], propensities=[1.0, 0.5, 0.3])]
    batch = model.collator()(items)
    with torch.no_grad():
        out = model.batch_scores(batch, None, in_batch_negatives=True)
        full = IPSListwise()(out.scores, out.targets["click"]).item()
        assert out.targets["click"].shape == (2, 6, 3)
        assert out.targets["click"][0, 3:, 1].tolist() == [-1, -1, -1]  # q2's passages: not shown to q1
        own = torch.stack([out.scores[0, :3], out.scores[1, 3:]])
        group = torch.stack([out.targets["click"][0, :3], out.targets["click"][1, 3:]])
        assert full == pytest.approx(IPSListwise()(own, group).item(), rel=1e-6)
