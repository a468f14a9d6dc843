"""The annotate stage: shards that survive a kill, Table-1 arithmetic, and a real SmolLM2 run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uptrain.annotate.quality import selection_quality, table1_markdown
from uptrain.annotate.shards import ShardWriter, read_shards
from uptrain.annotate.steps import QueryAnnotation, top_k_percent

from conftest import ANNOTATE_TINY, TINY, needs_data, run_cli


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    w = ShardWriter(tmp_path, records_per_shard=2)
    for i in range(3):
        w.append({"query_id": str(i)})
    w.close()
    shard = sorted(tmp_path.glob("shard-*.jsonl"))[-1]
    with open(shard, "ab") as f:
        f.write(b'{"query_id": "3", "tru')  # a kill in the middle of a write
    assert [r["query_id"] for r in read_shards(tmp_path)] == ["0", "1", "2"]
    assert shard.read_bytes().endswith(b"\n")  # repaired: the next append starts on a clean line
    assert len(list(tmp_path.glob("shard-*.jsonl"))) == 2


def test_selection_quality_by_hand():
    selected = {"q1": ["a", "b"], "q2": [], "q3": ["c"]}
    human = {"q1": ["a"], "q2": ["d"], "q3": ["e", "c"]}
    got = selection_quality(selected, human)
    # precision over q1 (1/2) and q3 (1/1); recall over q1 (1/1), q2 (0/1), q3 (1/2)
    assert got["precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["recall"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert got["avg_positives"] == pytest.approx(3 / 3)
    assert got["queries_without_positive"] == 1
    assert "| relsel | 0.7500 | 0.5000 | 1.00 | 1 |" in table1_markdown({"relsel": got})


def test_top_k_percent_keeps_at_least_one():
    assert top_k_percent([], 10) == []
    assert top_k_percent(list("abc"), 10) == ["a"]
    assert top_k_percent([str(i) for i in range(25)], 10) == ["0", "1", "2"]  # ceil(2.5)
    assert top_k_percent(list("abcd"), 50) == ["a", "b"]


def test_positives_per_step():
    a = QueryAnnotation("q", "text", ["a", "b", "c"], relsel=["a", "b"], utilsel=["b"], utilrank=["b", "a"], utilrank_top=["b"])
    assert a.positives("relsel") == ["a", "b"] and a.positives("utilrank") == ["b"]
    with pytest.raises(ValueError, match="no positives for step"):
        a.positives("answer")




def _annotate_dir(cache: Path) -> Path:
    done = [p.parent for p in (cache / "annotate").glob("*/_uptrain_artifact.json")]
    assert len(done) == 1, done
    return done[0]


@needs_data
@pytest.mark.slow
def test_utilsel_run_annotates_trains_and_reports(cli_env, tmp_path):
    proc = run_cli(["+exp=utilsel", *TINY, "eval.groups.out_of_domain=[]", *ANNOTATE_TINY], cli_env, tmp_path)
    art = _annotate_dir(tmp_path / "cache")
    rows = [json.loads(x) for x in (art / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert set(r["relsel"]) <= set(r["candidates"])
        assert set(r["utilsel"]) <= set(r["relsel"])
        assert set(r["utilrank_top"]) <= set(r["relsel"]) and len(r["utilrank_top"]) <= max(1, len(r["relsel"]))
        assert r["prompts"] >= 2 and r["prompt_tokens"] > 0  # two windows of 4 over 5+ candidates
    quality = json.loads((art / "quality.json").read_text())
    assert set(quality) == {"relsel", "utilsel", "utilrank"}
    assert all(0.0 <= q["precision"] <= 1.0 and 0.0 <= q["recall"] <= 1.0 for q in quality.values())
    stats = json.loads((art / "stats.json").read_text())
    assert stats["queries"] == 4 and stats["paper_scale"]["gpu_hours"] > 0
    assert stats["truncation"]["prompts"] == stats["prompts"]  # every prompt went through the budget fitter
    qrels = (art / "qrels_utilsel.txt").read_text().splitlines()
    assert sum(len(r["utilsel"]) for r in rows) == len(qrels)
    report = next((tmp_path / "outputs" / "utilsel").rglob("report.md")).read_text()
    assert "Table 1 layout" in report and "GPU-hours" in report


@needs_data
@pytest.mark.slow
def test_killed_annotation_resumes_with_identical_labels(cli_env, tmp_path):
    """kill -9 after the first committed batch; the re-run skips it and greedy labels match a clean run."""
    args = ["+exp=relsel", *TINY, "eval.groups.out_of_domain=[]", *ANNOTATE_TINY, "annotate.batch_queries=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uptrain.cli", *args], cwd=tmp_path, env=cli_env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 600
    shards = tmp_path / "cache" / "annotate"
    while time.time() < deadline:
        done = [x for s in shards.glob("*.work/shards/shard-*.jsonl") for x in s.read_text().splitlines()]
        if len(done) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(shards.glob("*/_uptrain_artifact.json"))
    resumed = run_cli(args, cli_env, tmp_path)
    assert "resuming:" in resumed.stdout + resumed.stderr
    labels = (_annotate_dir(tmp_path / "cache") / "labels.jsonl").read_text().splitlines()

    clean_env = dict(cli_env, UPTRAIN_CACHE_DIR=str(tmp_path / "clean_cache"))
    run_cli(args, clean_env, tmp_path)
    clean = (_annotate_dir(tmp_path / "clean_cache") / "labels.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(labels) == strip(clean)


def test_pending_and_collect_resume_from_committed_records(tmp_path):
    from uptrain.annotate.shards import collect, pending

    w = ShardWriter(tmp_path, records_per_shard=2)
    for q in ("b", "x", "a"):  # "x" belongs to no current query list
        w.append({"query_id": q, "v": q.upper()})
    w.close()
    assert pending(tmp_path, ["a", "b", "c", "d"], "test") == ["c", "d"]
    with pytest.raises(RuntimeError, match=r"test incomplete: 2 queries missing, e.g. \['c', 'd'\]"):
        collect(tmp_path, ["a", "b", "c", "d"], "test")
    out = tmp_path / "all.jsonl"
    assert [r["v"] for r in collect(tmp_path, ["a", "b"], "test", out)] == ["A", "B"]  # the given order
    assert [json.loads(x)["query_id"] for x in out.read_text().splitlines()] == ["a", "b"]
