"""Curriculum and REPLUG through the real CLI, the LLM test collection, and REPLUG scoring resumed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import ANNOTATE_TINY, TINY, needs_data, run_cli

LLM_TEST_TINY = [
    "eval.llm_test.enabled=true",
    "eval.llm_test.queries=2",
    "eval.llm_test.systems=[bm25]",
    "eval.llm_test.depth=3",
]


def _stages(run_dir: Path) -> dict[str, str]:
    return {s["label"]: s["cache"] for s in json.loads((run_dir / "metrics.json").read_text())["stages"]}


def _artifacts(cache: Path, stage: str) -> list[Path]:
    return [p.parent for p in (cache / stage).glob("*/_uptrain_artifact.json")]


@needs_data
@pytest.mark.slow
def test_curriculum_phases_replug_baseline_and_llm_test_collection(cli_env, tmp_path):
    args = ["+exp=utilsel_cl20", *TINY, "eval.groups.out_of_domain=[]", *ANNOTATE_TINY, *LLM_TEST_TINY,
            "eval.baseline=human"]
    run_cli(args, cli_env, tmp_path)
    run_dir = next((tmp_path / "outputs" / "utilsel_cl20").glob("*/"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["label_source"] == "llm:utilsel -> human 20%"
    assert metrics["human_ratio"] == 20.0
    assert metrics["report_row"] == {"group": "combination", "label": "UtilSel-CL20%"}
    assert metrics["second_baseline"] == "replug_cl20"
    assert set(metrics["groups"]["llm_test"]["collections"]["scifact_test_llm"]) == {"RR@10", "nDCG@10", "R@5", "R@10"}

    stages = _stages(run_dir)
    assert stages["train_llm"] == "built" and stages["train_human"] == "built"
    assert stages["annotate"] == "hit"  # built by the replug_cl20 baseline before: one annotation for both
    assert stages["llm_testset"] == "hit"  # built once, shared with the baselines' runs
    # phase 2 keeps ceil(20%) of the judged training queries, warm-started from phase 1
    phase2 = json.loads((run_dir / "artifacts" / "train_human" / "train_stats.json").read_text())
    assert phase2["label_stats"]["human_queries"] == math.ceil(16 * 0.2)
    assert phase2["queries"] == math.ceil(16 * 0.2)

    report = (run_dir / "report.md").read_text()
    assert "significantly better than replug_cl20" in report
    assert "## llm_test" in report and "## LLM test collection" in report
    assert "`llm:utilsel -> human 20%` (human labels: 20%)" in report

    # the REPLUG baseline: utilities over each annotated query's pool, log-likelihoods (<= 0)
    replug = _artifacts(tmp_path / "cache", "replug")
    assert len(replug) == 1
    rows = [json.loads(x) for x in (replug[0] / "utilities.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    pool = {json.loads(x)["query_id"]: json.loads(x) for x in
            (_artifacts(tmp_path / "cache", "pool")[0] / "pool.jsonl").read_text().splitlines()}
    for r in rows:
        if r["answer"]:
            assert set(r["utilities"]) == set(pool[r["query_id"]]["candidates"])
            assert all(v <= 0.0 for v in r["utilities"].values())
        else:
            assert r["utilities"] == {}
    # a degenerate (NaN) encoder retrieves nothing; the REPLUG-trained one must still rank
    base_metrics = json.loads((run_dir / "baseline_replug_cl20" / "metrics.json").read_text())
    assert base_metrics["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"] > 0.5
    base_report = (run_dir / "baseline_replug_cl20" / "report.md").read_text()
    assert "## REPLUG utilities" in base_report and "`replug -> human 20%`" in base_report

    # the LLM test collection: the sampled queries, qrels over the pooled top-3 of bm25
    testset = _artifacts(tmp_path / "cache", "llm_testset")
    assert len(testset) == 1
    qrels = [line.split() for line in (testset[0] / "qrels.txt").read_text().splitlines()]
    assert len({q for q, *_ in qrels}) == 2 and all(rel in ("0", "1") for *_, rel in qrels)
    agreement = json.loads((testset[0] / "agreement.json").read_text())
    assert agreement["queries"] == 2 and 0 < agreement["pooled_per_query"] <= 3

    # a sweep over the human ratio reuses phase 1, the annotation and the LLM test collection
    run_cli([*args, "labels.human_ratio=100", "eval.baseline=null", "eval.second_baseline=null"], cli_env, tmp_path)
    second = max((tmp_path / "outputs" / "utilsel_cl20").glob("*/"), key=lambda p: p.stat().st_mtime)
    stages = _stages(second)
    assert stages["train_llm"] == "hit" and stages["annotate"] == "hit" and stages["llm_testset"] == "hit"
    assert stages["train_human"] == "built"
    assert json.loads((second / "metrics.json").read_text())["human_ratio"] == 100.0


@needs_data
@pytest.mark.slow
def test_replug_with_infonce_is_a_clear_error(cli_env, tmp_path):
    proc = run_cli(["+exp=replug", *TINY, "loss=infonce"], cli_env, tmp_path, check=False)
    assert proc.returncode == 2
    assert "labels 'replug' are REPLUG utilities and need loss=kl" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not _artifacts(tmp_path / "cache", "train")
