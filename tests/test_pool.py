"""BM25 (against a by-hand Lucene BM25 and on real SciFact) and the annotation/training pool."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import uptrain
from uptrain.data.collection import Collection
from uptrain.pool import BM25, PoolEntry, build_pool, load_pool, save_pool

REPO = Path(__file__).resolve().parents[1]

TOY = {
    "d1": "the quick brown fox jumps over the lazy dog",
    "d2": "quick quick fox",
    "d3": "lazy dog sleeps all day long in the sun",
    "d4": "brown bears eat honey",
}


def _hand_bm25(docs: dict[str, str], query: str, k1: float, b: float) -> dict[str, float]:
    """Lucene BM25 written out term by term (plain whitespace tokens, no stemming)."""
    toks = {d: t.split() for d, t in docs.items()}
    n = len(toks)
    avgdl = sum(len(t) for t in toks.values()) / n
    scores: dict[str, float] = {}
    for d, t in toks.items():
        tf = Counter(t)
        s = 0.0
        for term in query.split():
            if tf[term] == 0:
                continue
            df = sum(1 for other in toks.values() if term in other)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            s += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(t) / avgdl))
        if s > 0:
            scores[d] = s
    return scores


@pytest.fixture(scope="module")
def plain() -> BM25:
    bm25 = BM25(k1=1.2, b=0.75, stemmer=None, stopwords=None)
    bm25.index(TOY)
    return bm25


# ----- BM25 -----


@pytest.mark.parametrize("query", ["quick fox", "lazy dog", "brown", "quick quick honey", "the sun"])
def test_bm25_matches_hand_computation(plain, query):
    got = plain.search({"q": query}, k=10, show_progress=False)["q"]
    want = _hand_bm25(TOY, query, k1=1.2, b=0.75)
    assert set(got) == set(want)
    for d, s in want.items():
        assert got[d] == pytest.approx(s, rel=1e-5), d


def test_bm25_ranking_order_and_k(plain):
    got = plain.search({"q": "quick fox"}, k=10, show_progress=False)["q"]
    assert list(got) == ["d2", "d1"]  # d2: tf(quick)=2 in a short document
    assert list(got.values()) == sorted(got.values(), reverse=True)
    assert list(plain.search({"q": "quick fox"}, k=1, show_progress=False)["q"]) == ["d2"]
    # k larger than the corpus is clipped, not an error
    assert len(plain.search({"q": "the lazy brown dog"}, k=1000, show_progress=False)["q"]) <= len(TOY)


def test_bm25_default_stems_and_drops_stopwords():
    bm25 = BM25()
    bm25.index({"a": "Running runners ran", "b": "the of and", "c": "jumping frogs"})
    got = bm25.search({"q": "runs", "stop": "the and", "f": "frog"}, k=5, show_progress=False)
    assert list(got["q"]) == ["a"]
    assert got["stop"] == {}
    assert list(got["f"]) == ["c"]


def test_bm25_empty_doc_and_empty_query():
    bm25 = BM25(stemmer=None, stopwords=None)
    bm25.index({"e": "", "x": "alpha beta", "y": "beta gamma", "z": "   "})
    got = bm25.search({"empty": "", "blank": "  ", "unknown": "zeta", "q": "beta"}, k=10, show_progress=False)
    assert got["empty"] == {} and got["blank"] == {} and got["unknown"] == {}
    assert set(got["q"]) == {"x", "y"}
    with pytest.raises(ValueError, match="empty corpus"):
        BM25().index({})


def test_bm25_batches_agree(plain):
    queries = {f"q{i}": q for i, q in enumerate(["quick fox", "lazy dog", "", "brown honey", "sun day"])}
    one = BM25(k1=1.2, b=0.75, stemmer=None, stopwords=None, batch_size=1)
    one.index(TOY)
    assert one.search(queries, k=3, show_progress=False) == plain.search(queries, k=3, show_progress=False)


def test_bm25_save_load_round_trip(tmp_path):
    bm25 = BM25()
    bm25.index(TOY)
    queries = {"a": "quick brown foxes", "b": "dogs sleeping", "c": ""}
    before = bm25.search(queries, k=4, show_progress=False)
    bm25.save(tmp_path / "idx")
    loaded = BM25.load(tmp_path / "idx")
    assert loaded.spec() == bm25.spec()
    assert loaded.search(queries, k=4, show_progress=False) == before
    with pytest.raises(FileNotFoundError):
        BM25.load(tmp_path / "nowhere")


def test_bm25_spec_and_config():
    cfg = OmegaConf.merge(OmegaConf.create({"seed": 7}), {"pool": OmegaConf.load(REPO / "conf/pool/bm25.yaml")})
    assert cfg.pool.seed == 7 and cfg.pool.depth == 30
    retriever = instantiate(cfg.pool.retriever)
    assert isinstance(retriever, BM25)
    assert retriever.spec() == BM25().spec()  # the config and the class defaults agree
    assert BM25(k1=1.2).spec() != BM25().spec()
    assert BM25(batch_size=3).spec() == BM25().spec()


# ----- pool -----


def _collection() -> Collection:
    docs = {f"d{i}": f"apple banana document {i} " + ("cherry " * (i % 4)) for i in range(40)}
    queries = {"q1": "apple cherry", "q2": "banana document", "q3": "cherry", "q4": "apple", "q5": ""}
    qrels = {
        "q1": {"d3": 1, "d7": 2, "d8": 0},
        "q2": {"d5": 1},
        "q3": {"d2": 0},  # judged, but nothing relevant
        "q5": {"d1": 1},
    }
    return Collection("toy", docs, queries, qrels)


@pytest.fixture(scope="module")
def toy_pool():
    c = _collection()
    bm25 = BM25()
    bm25.index(c.docs)
    entries, stats = build_pool(c, bm25, depth=10, seed=3, show_progress=False)
    return c, bm25, entries, stats


def test_pool_positives_negatives_candidates(toy_pool):
    c, bm25, entries, _ = toy_pool
    by_q = {e.query_id: e for e in entries}
    assert by_q["q1"].positives == ["d3", "d7"]
    assert by_q["q2"].positives == ["d5"]
    run = bm25.search({q: c.queries[q] for q in by_q}, k=40, show_progress=False)
    for e in entries:
        assert not set(e.negatives) & set(e.positives)
        assert len(e.negatives) <= 10
        # negatives are the top unjudged-positive BM25 documents, in rank order
        assert e.negatives == [d for d in run[e.query_id] if d not in e.positives][:10]
        assert sorted(e.candidates) == sorted(e.positives + e.negatives)
        assert len(set(e.candidates)) == len(e.candidates)
        assert set(e.bm25_scores) <= set(e.candidates)
        assert set(e.negatives) <= set(e.bm25_scores)
        for d, s in e.bm25_scores.items():
            assert s == pytest.approx(run[e.query_id][d])
    assert len(by_q["q1"].negatives) == 10


def test_pool_skips_and_counts(toy_pool):
    _, _, entries, stats = toy_pool
    assert [e.query_id for e in entries] == ["q1", "q2", "q5"]
    assert stats["queries"] == 3
    assert stats["skipped_no_positive"] == 2  # q3 (only a 0 label) and q4 (no qrels)
    assert stats["empty_query"] == 1
    q5 = entries[-1]
    assert q5.negatives == [] and q5.candidates == ["d1"] and q5.bm25_scores == {}
    assert stats["mean_positives"] == pytest.approx((2 + 1 + 1) / 3)
    assert stats["mean_negatives"] == pytest.approx(sum(len(e.negatives) for e in entries) / 3)


def test_pool_shuffle_deterministic_and_independent(toy_pool):
    c, bm25, entries, _ = toy_pool
    again, _ = build_pool(c, bm25, depth=10, seed=3, show_progress=False)
    assert [e.candidates for e in again] == [e.candidates for e in entries]
    # the shuffle is not a no-op: candidates are not simply positives then negatives
    assert any(e.candidates != e.positives + e.negatives for e in entries)
    alone, _ = build_pool(c, bm25, depth=10, seed=3, query_ids=["q1"], show_progress=False)
    assert alone[0].candidates == entries[0].candidates
    reordered, _ = build_pool(c, bm25, depth=10, seed=3, query_ids=["q2", "q1"], show_progress=False)
    assert {e.query_id: e.candidates for e in reordered} == {
        e.query_id: e.candidates for e in entries if e.query_id in ("q1", "q2")
    }
    other_seeds = [
        build_pool(c, bm25, depth=10, seed=s, query_ids=["q1"], show_progress=False)[0][0] for s in range(4, 9)
    ]
    assert any(e.candidates != entries[0].candidates for e in other_seeds)
    assert all(sorted(e.candidates) == sorted(entries[0].candidates) for e in other_seeds)


def test_pool_takes_any_retriever():
    class Fixed:
        def search(self, queries, k, show_progress=True):
            return {q: {"d5": 3.0, "d3": 2.0, "d9": 1.0} for q in queries}

    entries, stats = build_pool(_collection(), Fixed(), depth=2, seed=0, query_ids=["q1"], show_progress=False)
    assert entries[0].negatives == ["d5", "d9"]  # d3 is a positive, d8 (label 0) was not retrieved
    assert entries[0].bm25_scores == {"d5": 3.0, "d3": 2.0, "d9": 1.0}
    assert stats["queries"] == 1 and stats["skipped_no_positive"] == 0
    with pytest.raises(KeyError):
        build_pool(_collection(), Fixed(), query_ids=["nope"], show_progress=False)


def test_pool_jsonl_round_trip(toy_pool, tmp_path):
    _, _, entries, _ = toy_pool
    path = tmp_path / "sub" / "pool.jsonl"
    save_pool(path, entries)
    lines = path.read_text().splitlines()
    assert len(lines) == len(entries)
    assert list(json.loads(lines[0])) == ["query_id", "query", "positives", "negatives", "candidates", "bm25_scores"]
    assert load_pool(path) == entries
    assert [p.name for p in path.parent.iterdir()] == ["pool.jsonl"]  # no temp file left behind


@pytest.mark.parametrize(
    "bad",
    ["{not json", "[1, 2]", '{"query_id": "q"}', '{"query_id": "q", "query": "x", "positives": [], "negatives": [],'
     ' "candidates": [], "bm25_scores": []}'],
)
def test_pool_malformed_line(tmp_path, bad):
    path = tmp_path / "pool.jsonl"
    good = json.dumps(PoolEntry("q", "x", ["a"], [], ["a"], {}).__dict__)
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(ValueError, match=r"pool\.jsonl, line 2"):
        load_pool(path)


# ----- real collection -----


def _shared_data() -> Path | None:
    env = os.environ.get("UPTRAIN_DATA", "").strip()
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "irds" / "beir" / "scifact").is_dir():
            return candidate.resolve()
    return None


@pytest.mark.skipif(
    _shared_data() is None,
    reason="SciFact not found: set UPTRAIN_DATA to the shared data folder (../shared/data with irds/beir/scifact)",
)
def test_bm25_scifact_ndcg10(tmp_path):
    cfg = OmegaConf.merge(OmegaConf.create({"seed": 0}), {"pool": OmegaConf.load(REPO / "conf/pool/bm25.yaml")})
    params = OmegaConf.to_container(cfg.pool.retriever, resolve=True)
    params.pop("_target_")
    home = tmp_path / "irds_home"
    # copies, not links: ir_datasets writes its docstore beside the source
    shutil.copytree(_shared_data() / "irds", home)
    # ir_datasets fixes its home at import time, so it runs in a child process
    code = """
        import json, sys
        import ir_datasets, ir_measures
        from uptrain.pool import BM25
        ds = ir_datasets.load("beir/scifact/test")
        docs = {d.doc_id: f"{d.title} {d.text}" for d in ds.docs_iter()}
        queries = {q.query_id: q.text for q in ds.queries_iter()}
        qrels = {}
        for r in ds.qrels_iter():
            qrels.setdefault(r.query_id, {})[r.doc_id] = r.relevance
        bm25 = BM25(**json.loads(sys.argv[1]))
        bm25.index(docs)
        run = bm25.search(queries, k=100, show_progress=False)
        res = ir_measures.calc_aggregate([ir_measures.parse_measure("nDCG@10")], qrels, run)
        print(json.dumps({"ndcg10": list(res.values())[0], "docs": len(docs), "queries": len(queries)}))
    """
    env = dict(os.environ, IR_DATASETS_HOME=str(home), IR_DATASETS_DL_DISABLE_PBAR="true")
    package_root = str(Path(uptrain.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), json.dumps(params)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["docs"], out["queries"]) == (5183, 300)
    # Anserini flat BM25 reports 0.679, BEIR's Elasticsearch BM25 0.665
    assert 0.64 <= out["ndcg10"] <= 0.72, out
