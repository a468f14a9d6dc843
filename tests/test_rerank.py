"""The rerank stage on a tiny collection, through the real Runner and artifact cache: the new
order follows the model's scores, the depth cuts the first-stage run before re-scoring, and
every gap (short lists, unknown documents, missing queries) is counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uptrain.cache import ArtifactCache
from uptrain.data.collection import Collection
from uptrain.graph import Artifact, Runner
from uptrain.model import BiEncoder, CrossEncoder
from uptrain.rerank import RERANK_STATS, RerankStage
from uptrain.retrieve.runfile import read_trec_run
from uptrain.retrieve.stage import RUN_FILE

from conftest import DOCS

QUERIES = {"q1": "does aspirin prevent heart attacks", "q2": "vitamin d and bone fractures", "q3": "roman history"}
# first-stage scores put the relevant documents last; d9 is not in the collection; q3 is not in the run
RUN = {
    "q1": {"d7": 9.0, "d3": 8.0, "d2": 7.0, "d1": 6.0, "d8": 1.0},
    "q2": {"d4": 5.0, "d9": 4.0, "d5": 3.0},
    "qX": {"d1": 1.0},
}


@pytest.fixture(scope="module")
def collection():
    return Collection("toy", dict(DOCS), dict(QUERIES), {})


def run_stage(tmp_path, collection, model, depth, keep_tail=False):
    runner = Runner(ArtifactCache(tmp_path / "cache"), tmp_path / "run")
    inputs = {
        "data": Artifact("data", "kd", tmp_path, lambda p: collection),
        "run": Artifact("retrieve", "kr", tmp_path, lambda p: RUN),
        "model": Artifact("model", "km", tmp_path, lambda p: model),
    }
    art = runner.run(RerankStage(depth=depth, batch_size=2, tag="rr", show_progress=False, keep_tail=keep_tail), inputs)
    return art, json.loads((art.path / RERANK_STATS).read_text())


@pytest.mark.parametrize("family", [BiEncoder, CrossEncoder])
def test_rerank_order_depth_and_counts(tmp_path, collection, family):
    model = family()
    art, stats = run_stage(tmp_path, collection, model, depth=4)
    run = art.value
    assert run == read_trec_run(art.path / RUN_FILE)
    assert set(run) == {"q1", "q2"}
    # depth 4 keeps the run's top 4 of q1 (d8 at rank 5 is never re-scored), re-ordered by the model
    assert set(run["q1"]) == {"d7", "d3", "d2", "d1"}
    assert set(run["q2"]) == {"d4", "d5"}  # d9 is not in the collection: dropped, counted
    for qid, docs in run.items():
        want = model.score_pairs([QUERIES[qid]] * len(docs), [DOCS[d] for d in docs])
        np.testing.assert_allclose([docs[d] for d in docs], want, rtol=1e-4, atol=1e-4)
        assert list(docs) == [d for _, d in sorted(zip(-np.asarray(want), docs))]  # file order = model order
    assert stats["queries"] == 2 and stats["pairs_scored"] == 6 and stats["depth"] == 4
    assert stats["queries_short_of_depth"] == 1  # q2 has 3 candidates
    assert stats["missing_docs"] == 1 and stats["queries_not_in_run"] == 1
    assert stats["run_queries_not_in_collection"] == 1
    assert stats["family"] == model.family and stats["pairs_per_second"] > 0
    lines = (art.path / RUN_FILE).read_text().split("\n")
    assert lines[0].split()[-1] == "rr"
    section = RerankStage(depth=4).report(art)["Reranking (toy)"]
    assert "6 (query, passage) pairs" in section and "(dropped): 1" in section


def test_rerank_brings_the_relevant_passage_up(tmp_path, collection):
    """The zero-shot bi-encoder puts the aspirin passages above the Roman empire and the Eiffel tower."""
    art, _ = run_stage(tmp_path, collection, BiEncoder(), depth=100)
    top2 = list(art.value["q1"])[:2]
    assert set(top2) == {"d1", "d2"}
    assert list(art.value["q2"])[0] == "d5"


def test_the_first_stage_tail_follows_the_reranked_depth(tmp_path, collection):
    # without the tail, R@1000 of a reranked top-100 would collapse to R@100 (a false "-" marker)
    model = BiEncoder()
    top, _ = run_stage(tmp_path / "a", collection, model, depth=4)
    full, stats = run_stage(tmp_path / "b", collection, model, depth=4, keep_tail=True)
    assert list(full.value["q1"])[:4] == list(top.value["q1"])  # the reranked head is unchanged
    assert list(full.value["q1"])[4:] == ["d8"]  # then the first stage's rank 5, below every reranked score
    assert full.value["q1"]["d8"] < min(top.value["q1"].values())
    assert stats["tail_docs"] == 1 and full.value["q2"] == top.value["q2"]


def test_rerank_spec_and_bad_depth():
    assert RerankStage(depth=20, tag="x").spec() == {"depth": 20, "tag": "x", "keep_tail": True}
    assert RerankStage(depth=20, batch_size=8).spec() == RerankStage(depth=20, batch_size=128).spec()
    with pytest.raises(ValueError, match="depth"):
        RerankStage(depth=0)
