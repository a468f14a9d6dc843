"""Label sources, mix strategies (interleave, curriculum ratios), REPLUG soft labels through training."""

from __future__ import annotations

import math

import pytest
import torch

from uptrain.annotate.replug import UtilityLabels, read_answer_file
from uptrain.annotate.steps import QueryAnnotation
from uptrain.evaluate.llm_testset import pool_runs, sample_queries
from uptrain.labels import LabelConfigError, build_examples, parse_spec, required_inputs, sample_ratio
from uptrain.losses import KLDivergence
from uptrain.model import BiEncoder
from uptrain.sampling import PosOne
from uptrain.train.dataset import GroupDataset
from uptrain.train.module import BiEncoderModule, GroupCollator

from conftest import Entry, DOCS
from uptrain.train.stage import TrainStage


POOL = [
    Entry("q1", "aspirin heart", ("d1",), ("d3", "d1", "d2", "d4")),
    Entry("q2", "vitamin d bones", ("d5",), ("d5", "d6", "d7")),
    Entry("q3", "calcium women", ("d6", "d7"), ("d6", "d8", "d7")),
]
ANN = {
    "q1": QueryAnnotation("q1", "aspirin heart", list(POOL[0].candidates), relsel=["d1", "d2"], utilsel=["d2"],
                          utilrank=["d2", "d1"], utilrank_top=["d2"]),
    "q2": QueryAnnotation("q2", "vitamin d bones", list(POOL[1].candidates), relsel=[], utilsel=[], utilrank=[],
                          utilrank_top=[]),
    # q3 was not annotated (annotate.max_queries smaller than the pool)
}


def test_spec_parsing_and_inputs():
    assert [s.spec() for s in parse_spec("human+llm:utilsel")] == ["human", "llm:utilsel"]
    assert required_inputs("human") == ()
    assert required_inputs("llm:relsel+human") == ("annotations",)
    assert required_inputs("replug") == ("replug",)
    with pytest.raises(LabelConfigError, match="unknown label source 'clicks'"):
        parse_spec("clicks")
    with pytest.raises(LabelConfigError, match="needs a step among"):
        parse_spec("llm:answer")
    with pytest.raises(LabelConfigError, match="cannot be interleaved"):
        parse_spec("human+replug")
    with pytest.raises(LabelConfigError, match="takes no ':' argument"):
        parse_spec("human:20")


def test_sample_ratio_size_nesting_and_errors():
    ids = [f"q{i}" for i in range(37)]
    s20, s50 = sample_ratio(ids, 20, seed=3), sample_ratio(ids, 50, seed=3)
    assert len(s20) == math.ceil(37 * 0.2) == 8 and len(s50) == 19
    assert s20 <= s50  # a larger ratio keeps every query of a smaller one
    assert sample_ratio(list(reversed(ids)), 20, seed=3) == s20  # independent of the pool order
    assert sample_ratio(ids, 20, seed=4) != s20
    assert sample_ratio(ids, 100, seed=3) == set(ids)
    for bad in (0, -5, 101):
        with pytest.raises(LabelConfigError, match="human_ratio must be in"):
            sample_ratio(ids, bad, seed=0)


def test_human_examples_with_ratio():
    full, stats = build_examples("human", POOL, {})
    assert [(e.query_id, e.positives, e.negatives) for e in full] == [
        ("q1", ("d1",), ("d3", "d2", "d4")),
        ("q2", ("d5",), ("d6", "d7")),
        ("q3", ("d6", "d7"), ("d8",)),
    ]
    assert stats.human_queries == 3
    part, stats = build_examples("human", POOL, {}, human_ratio=34, seed=1)
    assert len(part) == math.ceil(3 * 0.34) == 2 and stats.human_queries == 2
    assert {e.query_id for e in part} == sample_ratio(["q1", "q2", "q3"], 34, seed=1)


def test_llm_examples_ignore_human_labels():
    ex, stats = build_examples("llm:utilsel", POOL, {"annotations": ANN})
    by_q = {e.query_id: e for e in ex}
    assert set(by_q) == {"q1", "q2"}  # q3 has no annotation
    assert by_q["q1"].positives == ("d2",)
    assert by_q["q1"].negatives == ("d3", "d1", "d4")  # the human positive d1 is a negative here
    assert by_q["q2"].positives == ()  # annotated, nothing selected: skipped (and counted) by the dataset
    assert stats.labelled == 1 and stats.human_queries is None


def test_interleave_is_the_union():
    ex, _ = build_examples("human+llm:relsel", POOL, {"annotations": ANN})
    by_q = {e.query_id: e for e in ex}
    assert by_q["q1"].positives == ("d1", "d2")  # human d1 and LLM d1, d2, once each
    assert by_q["q1"].negatives == ("d3", "d4")
    assert by_q["q2"].positives == ("d5",)
    assert by_q["q3"].positives == ("d6", "d7")  # human labels alone where the LLM did not annotate
    # with r% human labels the other queries keep only their LLM labels
    ex, stats = build_examples("human+llm:relsel", POOL, {"annotations": ANN}, human_ratio=1, seed=0)
    kept = sample_ratio(["q1", "q2", "q3"], 1, seed=0)
    by_q = {e.query_id: e for e in ex}
    assert stats.human_queries == 1 and len(kept) == 1
    assert by_q["q1"].positives == ("d1", "d2")  # the LLM selected d1 too
    assert by_q["q2"].positives == (("d5",) if "q2" in kept else ())
    assert ("q3" in by_q) == ("q3" in kept)  # no LLM label: present only with its human labels


def test_replug_examples_carry_utilities():
    values = {"replug": {"q1": UtilityLabels("q1", "an answer", {"d3": -9.0, "d1": -2.5, "d2": -4.0}),
                         "q2": UtilityLabels("q2", "", {})}}
    ex, _ = build_examples("replug", POOL, values)
    by_q = {e.query_id: e for e in ex}
    assert by_q["q1"].positives == ("d1",)  # the top-utility passage anchors the group
    assert by_q["q1"].negatives == ("d3", "d2")  # d4 was not scored: not in the group
    assert dict(by_q["q1"].utilities) == {"d3": -9.0, "d1": -2.5, "d2": -4.0}
    assert by_q["q2"].positives == ()  # no answer, no utility: skipped in training


def test_read_answer_file(tmp_path):
    f = tmp_path / "answers.jsonl"
    f.write_text('{"query_id": "q1", "answers": ["", "Paris"]}\n{"query_id": 2, "answer": "yes"}\n'
                 '{"query_id": "q3", "answers": []}\n\n')
    assert read_answer_file(f) == {"q1": "Paris", "2": "yes"}
    with pytest.raises(FileNotFoundError, match="replug_answers=pseudo"):
        read_answer_file(tmp_path / "missing.jsonl")




def test_soft_labels_reach_the_kl_loss():
    """Utilities of a query's own group become its KL target; other columns carry no utility."""
    values = {"replug": {
        "q1": UtilityLabels("q1", "a", {"d1": -1.0, "d2": -3.0, "d3": -6.0}),
        "q2": UtilityLabels("q2", "b", {"d5": -2.0, "d6": -2.0}),
    }}
    pool = [Entry("q1", "aspirin heart", ("d1",), ("d1", "d2", "d3")), Entry("q2", "vitamin d", ("d5",), ("d5", "d6"))]
    ex, _ = build_examples("replug", pool, values)
    model = BiEncoder(query_max_length=16, passage_max_length=32)
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=2, seed=0)
    items = [ds[0], ds[1]]
    for it in items:
        assert it.utilities == [values["replug"][it.query_id].utilities[d] for d in it.doc_ids]
    batch = GroupCollator(model)(items)
    module = BiEncoderModule(model, KLDivergence())
    scores, labels = module.scores_and_labels(batch)
    assert labels.dtype == scores.dtype and labels.shape == (2, 4)
    assert torch.isinf(labels[0, 2:]).all() and torch.isinf(labels[1, :2]).all()
    assert labels[0, :2].tolist() == items[0].utilities and labels[1, 2:].tolist() == items[1].utilities
    # the KL of each row over its own group only, by hand
    expected = []
    for i, cols in ((0, slice(0, 2)), (1, slice(2, 4))):
        u = torch.softmax(labels[i, cols], 0)
        r = torch.log_softmax(scores[i, cols], 0)
        expected.append((u * (u.log() - r)).sum())
    got = KLDivergence()(scores, labels)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_train_stage_rejects_labels_and_loss_that_do_not_fit():
    common = dict(sampling_cfg={"_target_": "uptrain.sampling.PosOne"}, trainer_cfg={}, hparams={})
    with pytest.raises(LabelConfigError, match="REPLUG utilities and need loss=kl"):
        TrainStage("p", loss_cfg={"_target_": "uptrain.losses.InfoNCE"}, labels="replug", **common)
    with pytest.raises(LabelConfigError, match="loss=kl needs labels=replug"):
        TrainStage("p", loss_cfg={"_target_": "uptrain.losses.KLDivergence"}, labels="human", **common)
    stage = TrainStage("p", loss_cfg={"_target_": "uptrain.losses.KLDivergence"}, labels="replug", **common)
    assert stage.inputs == ("data", "pool", "init", "replug")
    a = TrainStage("p", loss_cfg={"_target_": "uptrain.losses.InfoNCE"}, labels="human", human_ratio=20, **common)
    b = TrainStage("other name", loss_cfg={"_target_": "uptrain.losses.InfoNCE"}, labels="human", human_ratio=100, **common)
    assert a.spec() != b.spec() and a.spec()["human_ratio"] == 20.0


def test_llm_test_pooling_and_sampling():
    runs = [
        {"q": {"a": 3.0, "b": 2.0, "c": 1.0}},
        {"q": {"b": 9.0, "d": 8.0, "a": 1.0}},
    ]
    assert pool_runs(runs, "q", depth=2) == ["a", "b", "d"]  # rank 1: a, b; rank 2: b (seen), d
    assert pool_runs(runs, "q", depth=3) == ["a", "b", "d", "c"]
    assert pool_runs(runs, "missing", depth=3) == []
    ids = [f"q{i}" for i in range(50)]
    s = sample_queries(ids, 10, seed=0)
    assert len(s) == 10 and len(set(s)) == 10
    assert s == sample_queries(list(reversed(ids)), 10, seed=0)
    assert s[:5] == sample_queries(ids, 5, seed=0)  # a smaller sample is a prefix of a larger one
    assert sample_queries(ids, None, seed=0) == sample_queries(ids, 500, seed=0) and len(sample_queries(ids, None, 0)) == 50


def test_second_baseline_runs_at_the_same_human_ratio(monkeypatch):
    from types import SimpleNamespace

    from uptrain import cli

    task = ["+exp=utilsel_cl20", "labels.human_ratio=50", "profile=smoke", "eval.second_baseline=x", "train.lr=1e-5"]
    monkeypatch.setattr(cli.HydraConfig, "get", staticmethod(lambda: SimpleNamespace(overrides=SimpleNamespace(task=task))))
    base = ["+exp=replug_cl20", "eval.baseline=null", "eval.second_baseline=null"]
    assert cli._baseline_overrides("replug_cl20", same_ratio=True) == [
        *base, "labels.human_ratio=50", "profile=smoke", "train.lr=1e-5"]
    # the first baseline (human, all its labels) keeps its own ratio
    assert cli._baseline_overrides("replug_cl20") == [*base, "profile=smoke", "train.lr=1e-5"]


def test_baselines_inherit_index_trainer_and_train_but_not_the_label_method(monkeypatch):
    # without index/trainer/train the +/- markers would mix those effects with the label effect
    from types import SimpleNamespace

    from uptrain import cli

    task = ["+exp=utilsel", "index=bm25", "rerank.enabled=true", "trainer.max_epochs=3", "train.group_size=6",
            "loss=conj_infonce", "sampling=pos_all", "labels.source=llm:relsel", "model.temperature=0.1"]
    monkeypatch.setattr(cli.HydraConfig, "get", staticmethod(lambda: SimpleNamespace(overrides=SimpleNamespace(task=task))))
    carried = cli._baseline_overrides("human")[3:]
    assert carried == ["index=bm25", "rerank.enabled=true", "trainer.max_epochs=3", "train.group_size=6",
                       "model.temperature=0.1"]
