"""The clicks-vs-LLM study's sweep report (uptrain/report/clicks_study.py) on synthetic sweeps whose
per-query values are chosen so that every verdict is known by hand; p-values are checked against
scipy computed here, independently of the report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

import uptrain
from uptrain.report.clicks_study import clicks_study_report
from uptrain.report.sweep import SweepError

ROOT = Path(uptrain.__file__).resolve().parents[1]  # the CLI runs the code under test
M = "nDCG@10"
N = 8  # queries per bucket
BUCKETS = ("high", "medium", "low")
SESSIONS = {"high": [9, 10, 12, 15, 20, 40, 80, 147], "medium": [4, 5, 5, 6, 6, 7, 8, 8],
            "low": [0, 0, 1, 1, 2, 3, 3, 4]}
QIDS = {b: [f"{b[0]}{i}" for i in range(N)] for b in BUCKETS}
ALL = [q for b in BUCKETS for q in QIDS[b]]
# zero-mean spread: added to a difference it gives a known mean and a non-degenerate variance
SPREAD = np.array([1, -1, 2, -2, 1, -1, 0.5, -0.5])
BASE = {q: 0.5 + 0.01 * i for i, q in enumerate(ALL)}


def spread(scale: float) -> dict[str, float]:
    """Per query, scale * SPREAD of its position in its bucket."""
    return {q: scale * SPREAD[i] for b in BUCKETS for i, q in enumerate(QIDS[b])}


def bucket_of(q: str) -> str:
    return {"h": "high", "m": "medium", "l": "low"}[q[0]]


def write_run(job: Path, name: str, label: str, values: dict[str, float], *, segments: bool = True,
              auc: dict[str, float] | None = None, quality: dict | None = None, grade: dict | None = None,
              weighting: dict | None = None, label_source: str = "", mtime: float | None = None) -> Path:
    """A job directory with the metrics.json keys the report reads (and config.yaml, quality.json)."""
    job.mkdir(parents=True, exist_ok=True)
    per_bucket = {b: {M: float(np.mean([values[q] for q in QIDS[b]])), "queries": N} for b in BUCKETS}
    results = {M: float(np.mean(list(values.values())))}
    if segments:
        results["segments"] = per_bucket
    metrics = {
        "name": name, "measures": [M], "report_row": {"group": "clicks_vs_llm", "label": label},
        "label_source": label_source, "overrides": [f"+exp={name}"],
        "results": {"clicks_test": results},
        "per_query": {"clicks": {"clicks_test": {M: values}}},
        "segmentations": {"frequency": {
            "buckets": {"high": {"queries": 20, "sessions": 600, "min_frequency": 9, "max_frequency": 147},
                        "medium": {"queries": 25, "sessions": 140, "min_frequency": 4, "max_frequency": 8},
                        "low": {"queries": 18, "sessions": 40, "min_frequency": 0, "max_frequency": 4}},
            "queries": {q: [b, SESSIONS[b][i]] for b in BUCKETS for i, q in enumerate(QIDS[b])}}},
        "click_study": {"clicks_test": {"auc": float(np.mean(list(auc.values()))) if auc else 0.5,
                                        "auc_pooled": 0.5, "auc_per_query": auc or {}, "quality": quality}},
    }
    (job / "metrics.json").write_text(json.dumps(metrics))
    # as the pipeline writes it: resolved, the famol phase's entry holding the weighting itself
    config = {"name": name, "labels": {"source": "famol", "weighting": weighting["kind"]} if weighting else {"source": "x"},
              "phases": [{"name": "famol", "labels": [{"source": "famol", "weighting": weighting}]}] if weighting else []}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    if grade is not None:
        (job / "artifacts" / "grade").mkdir(parents=True)
        (job / "artifacts" / "grade" / "quality.json").write_text(json.dumps(grade))
    if mtime is not None:
        os.utime(job / "metrics.json", (mtime, mtime))
    return job


GRADE = {"simulated": True, "pairs": 240, "exact": 0.55, "within_one": 0.9, "kappa": 0.41, "weighted_kappa": 0.5,
         "binary": {"precision": 0.7, "recall": 0.8}}


def q(quality_r: float, se: float) -> dict:
    return {"beta_relevance": 0.4, "beta_quality": quality_r, "partial_r_relevance": 0.4, "partial_r_quality": quality_r,
            "partial_r_relevance_se": 0.03, "partial_r_quality_se": se, "bootstrap": 200}


def sweep(tmp: Path, d_high: float, d_tail: float, noise: float, *, low_wrong: bool = False, bm25: bool = True,
          combined: bool = True, quality: bool = True, tie_medium: bool = False,
          famol_close: bool = False) -> dict[str, dict[str, float]]:
    """A sweep whose click run beats the LLM run by d_high on high and loses by d_tail on medium and
    low (wins on low when low_wrong; equals it on medium when tie_medium), each difference with
    noise * SPREAD. ``famol_close``: only a FAMOL run, barely above the better single run (large
    spread) and far above the other. Returns name -> values."""
    sp = spread(noise)
    llm = dict(BASE)
    click = {}
    for qid in ALL:
        b = bucket_of(qid)
        d = d_high if b == "high" else (-d_tail if b == "medium" or not low_wrong else d_tail)
        click[qid] = BASE[qid] + d + sp[qid]
        if tie_medium and b == "medium":
            click[qid] = llm[qid]
    runs = {"cvl_click_dbn": click, "cvl_llm": llm}
    auc_llm = {qid: 0.8 + 0.01 * SPREAD[i % N] for i, qid in enumerate(ALL)}
    auc_click = {qid: 0.6 + 0.02 * SPREAD[(i + 3) % N] for i, qid in enumerate(ALL)}
    if low_wrong:  # finding 2 the wrong way: the click run's AUC is the higher
        auc_llm, auc_click = auc_click, auc_llm
    job = 0
    if bm25:
        runs["cvl_bm25"] = {qid: BASE[qid] - 0.2 + 0.01 * SPREAD[i % N] for i, qid in enumerate(ALL)}
        write_run(tmp / str(job), "cvl_bm25", "BM25", runs["cvl_bm25"])
        job += 1
    write_run(tmp / str(job), "cvl_click_dbn", "Clicks (click:dbn)", click, auc=auc_click,
              quality=q(0.30, 0.05) if quality else None, label_source="click:dbn")
    write_run(tmp / str(job + 1), "cvl_llm", "LLM labels", llm, auc=auc_llm,
              quality=q(0.05, 0.05) if quality else None, grade=GRADE, label_source="grade:2")
    job += 2
    if famol_close:
        runs["famol"] = {qid: max(click[qid], llm[qid]) + 0.005 + 0.1 * SPREAD[i % N] for i, qid in enumerate(ALL)}
        write_run(tmp / str(job), "famol", "FAMOL (sigmoid)", runs["famol"])
    if combined:
        best = {qid: max(click[qid], llm[qid]) for qid in ALL}
        runs["famol"] = {qid: best[qid] + 0.10 + 0.01 * SPREAD[i % N] for i, qid in enumerate(ALL)}
        runs["famol_step"] = {qid: best[qid] + 0.06 + 0.01 * SPREAD[(i + 1) % N] for i, qid in enumerate(ALL)}
        runs["schedule_llm_click"] = {qid: best[qid] + 0.04 + 0.01 * SPREAD[(i + 2) % N] for i, qid in enumerate(ALL)}
        runs["schedule_click_llm"] = dict(click)  # no better than clicks: does not hold
        runs["cvl_click_ctr"] = {qid: BASE[qid] - 0.5 + 0.01 * SPREAD[i % N] for i, qid in enumerate(ALL)}
        write_run(tmp / str(job), "famol", "FAMOL (sigmoid)", runs["famol"], grade=GRADE,
                  weighting={"kind": "sigmoid", "midpoint": 10, "slope": 1.5}, label_source="famol(...)")
        write_run(tmp / str(job + 1), "famol_step", "FAMOL (step)", runs["famol_step"],
                  weighting={"kind": "step", "weights": {"high": 0.8, "medium": 0.3, "low": 0.1}})
        write_run(tmp / str(job + 2), "schedule_llm_click", "Schedule LLM -> clicks", runs["schedule_llm_click"])
        write_run(tmp / str(job + 3), "schedule_click_llm", "Schedule clicks -> LLM", runs["schedule_click_llm"])
        write_run(tmp / str(job + 4), "cvl_click_ctr", "Clicks (click:ctr)", runs["cvl_click_ctr"])
    return runs


def scipy_p(a: dict, b: dict, qids) -> float:
    return float(stats.ttest_rel([a[x] for x in qids], [b[x] for x in qids]).pvalue)


def test_significant_case_through_the_cli(tmp_path):
    """Finding 1 holds significantly, finding 2 both parts hold, finding 3 holds with FAMOL best;
    catches wrong bucket splits, swapped test directions, a wrong z-test and missing outputs."""
    sw = tmp_path / "sweep"
    runs = sweep(sw, d_high=0.3, d_tail=0.3, noise=0.02)
    # an older job directory of cvl_llm whose values would flip finding 1: the later one must win
    write_run(sw / "old", "cvl_llm", "LLM labels", {qid: 2.0 for qid in ALL}, mtime=1_000_000)
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "uptrain.report.clicks_study", str(sw), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "finding 1: holds" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["load"]["replaced"] == [{"name": "cvl_llm", "kept": str(sw / "2"), "left_out": str(sw / "old")}]

    f1 = data["findings"]["1"]
    assert f1["verdict"] == "holds"
    click, llm = runs["cvl_click_dbn"], runs["cvl_llm"]
    for b in BUCKETS:
        c = f1["buckets"][b]
        assert c["status"] == "holds" and c["n"] == N
        assert c["p"] == pytest.approx(scipy_p(click, llm, QIDS[b]), rel=1e-9)
        assert c["diff"] == pytest.approx(0.3 if b == "high" else -0.3)
        assert c["click_mean"] == pytest.approx(np.mean([click[x] for x in QIDS[b]]))

    f2 = data["findings"]["2"]
    assert f2["verdict"] == "holds"
    assert f2["auc"]["status"] == "holds" and f2["auc"]["n"] == 3 * N
    auc_llm = json.loads((sw / "2" / "metrics.json").read_text())["click_study"]["clicks_test"]["auc_per_query"]
    auc_click = json.loads((sw / "1" / "metrics.json").read_text())["click_study"]["clicks_test"]["auc_per_query"]
    assert f2["auc"]["p"] == pytest.approx(scipy_p(auc_llm, auc_click, ALL), rel=1e-9)
    z = (0.30 - 0.05) / math.sqrt(0.05 ** 2 + 0.05 ** 2)
    assert f2["quality"]["z"] == pytest.approx(z)
    assert f2["quality"]["p"] == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert f2["quality"]["status"] == "holds"

    f3 = data["findings"]["3"]
    assert f3["verdict"] == "holds"
    assert f3["runs"]["famol"]["verdict"] == "holds"
    assert f3["runs"]["schedule_llm_click"]["verdict"] == "holds"
    assert f3["runs"]["schedule_click_llm"]["verdict"] == "does not hold"
    assert "schedule_bucketwise" not in f3["runs"]
    assert f3["families"]["famol"]["best"] == "famol" and f3["families"]["scheduling"]["best"] == "schedule_llm_click"
    for b in BUCKETS:  # the weaker of the two p-values decides
        c = f3["runs"]["famol"]["buckets"][b]
        p_click, p_llm = scipy_p(runs["famol"], click, QIDS[b]), scipy_p(runs["famol"], llm, QIDS[b])
        assert c["p"] == pytest.approx(max(p_click, p_llm), rel=1e-9)
    more = f3["famol_improves_more"]
    assert more["status"] == "holds" and more["famol"] == "famol" and more["scheduling"] == "schedule_llm_click"
    assert more["p"] == pytest.approx(scipy_p(runs["famol"], runs["schedule_llm_click"], ALL), rel=1e-9)

    # the table's markers against BM25, per bucket
    rows = {r["name"]: r for r in data["table"]}
    for b in ("all", *BUCKETS):
        assert rows["cvl_llm"]["cells"][M][b]["marker"] == "+"
        assert rows["cvl_click_ctr"]["cells"][M][b]["marker"] == "-"
        assert rows["cvl_bm25"]["cells"][M][b]["marker"] == ""
    qids = QIDS["medium"]
    assert rows["cvl_llm"]["cells"][M]["medium"]["p"] == pytest.approx(scipy_p(llm, runs["cvl_bm25"], qids), rel=1e-9)

    md = (out / "sweep.md").read_text()
    llm_row = next(line for line in md.splitlines() if line.startswith("| LLM labels |"))
    assert llm_row.count("+") == 4  # all, high, medium, low
    assert "| Clicks (click:ctr) | " in md and "-" in next(
        line for line in md.splitlines() if line.startswith("| Clicks (click:ctr) |"))
    assert "SIMULATED" in md and "0.410" in md  # (b): the simulated annotator's kappa
    assert "Finding 1: " in md and "— **holds**" in md
    assert "independent" in md  # finding 2 states the z-test's assumption
    assert f"{N} high, {N} medium, {N} low" in data["interpretation"]["1"]
    assert "SIMULATED" in data["interpretation"]["1"]
    assert f"left out `{sw / 'old'}`" in md  # the left-out directory is reported

    # FAMOL's weight at hand-computed points: sigmoid 1/2 at the midpoint, step per bucket
    weights = {w["name"]: {(x["sessions"], x["bucket"]): x["w"] for x in w["queries"]} for w in data["famol_weights"]}
    assert weights["famol"][(10, "high")] == pytest.approx(0.5)
    assert weights["famol"][(0, "low")] == pytest.approx(1 / (1 + (11 ** 1.5)))
    assert weights["famol_step"][(147, "high")] == 0.8 and weights["famol_step"][(4, "medium")] == 0.3
    for name in ("buckets.png", "famol_weight.png", "quality_vs_relevance.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_direction_right_but_not_significant(tmp_path):
    """Small differences in the right direction inside a large spread: holds, not significant;
    without latent quality part (ii) is not measured; without BM25 no markers; finding 3 not run."""
    sw = tmp_path / "sweep"
    runs = sweep(sw, d_high=0.02, d_tail=0.02, noise=0.2, bm25=False, combined=False, quality=False)
    data = clicks_study_report(sw, tmp_path / "out", warn=lambda m: None)
    f1 = data["findings"]["1"]
    assert f1["verdict"] == "holds, not significant"
    for b in BUCKETS:
        assert f1["buckets"][b]["status"] == "holds, not significant"
        p = scipy_p(runs["cvl_click_dbn"], runs["cvl_llm"], QIDS[b])
        assert p > 0.05 and f1["buckets"][b]["p"] == pytest.approx(p, rel=1e-9)
    f2 = data["findings"]["2"]
    assert f2["quality"]["status"] == "not measured" and "quality is null" in f2["quality"]["reason"]
    assert f2["verdict"] == f2["auc"]["status"] == "holds" and f2["parts_not_measured"] == ["quality"]
    f3 = data["findings"]["3"]
    assert f3["verdict"] == "not run"
    assert set(f3["needs"]) == {"schedule_llm_click", "schedule_click_llm", "schedule_bucketwise", "famol",
                                "famol_step", "famol_learned", "famol_losses"}
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "No `+` / `-` markers" in md and "not run: needs" in md.lower()
    assert "Not drawn:" in md and data["plots"]["quality_vs_relevance"] is None
    assert data["plots"]["famol_weight"] is None
    assert not any(c["marker"] for r in data["table"] for c in r["cells"][M].values())


def test_wrong_direction_does_not_hold(tmp_path):
    """The click run wins the low bucket (significantly) and ties the medium one: both do not hold,
    nor does the finding; finding 2's AUCs the wrong way: does not hold. A FAMOL run significantly
    above one single-signal run but not the other: the weaker p-value makes it not significant."""
    sw = tmp_path / "sweep"
    runs = sweep(sw, d_high=0.3, d_tail=0.3, noise=0.02, low_wrong=True, combined=False, tie_medium=True,
                 famol_close=True)
    data = clicks_study_report(sw, tmp_path / "out", warn=lambda m: None)
    f1 = data["findings"]["1"]
    assert [f1["buckets"][b]["status"] for b in BUCKETS] == ["holds", "does not hold", "does not hold"]
    assert f1["buckets"]["medium"]["diff"] == 0.0
    assert f1["verdict"] == "does not hold"
    assert data["findings"]["2"]["auc"]["status"] == "does not hold"
    assert data["findings"]["2"]["verdict"] == "does not hold"
    f3 = data["findings"]["3"]
    for b in ("high", "low"):
        c = f3["runs"]["famol"]["buckets"][b]
        p_click = scipy_p(runs["famol"], runs["cvl_click_dbn"], QIDS[b])
        p_llm = scipy_p(runs["famol"], runs["cvl_llm"], QIDS[b])
        assert min(p_click, p_llm) < 0.05 < max(p_click, p_llm)
        assert c["status"] == "holds, not significant" and c["p"] == pytest.approx(max(p_click, p_llm), rel=1e-9)
    assert f3["runs"]["famol"]["verdict"] == "holds, not significant"
    assert f3["verdict"] == "not run" and set(f3["needs"]) == {"schedule_llm_click", "schedule_click_llm",
                                                              "schedule_bucketwise"}


def test_missing_runs_and_equal_times(tmp_path):
    """No LLM run: findings say not run and name it; of two copies with the same time the later
    job directory (natural order: 10 after 9) is used."""
    sw = tmp_path / "sweep"
    vals = {qid: 0.5 for qid in ALL}
    write_run(sw / "9", "cvl_click_dbn", "Clicks", {qid: 0.1 + 0.01 * i for i, qid in enumerate(ALL)}, mtime=2e9)
    write_run(sw / "10", "cvl_click_dbn", "Clicks", vals, mtime=2e9)
    data = clicks_study_report(sw, tmp_path / "out", warn=lambda m: None)
    assert data["load"]["replaced"][0]["kept"] == str(sw / "10")
    for k in ("1", "2"):
        assert data["findings"][k]["verdict"] == "not run" and data["findings"][k]["needs"] == ["cvl_llm"]
    assert "cvl_llm" in data["findings"]["3"]["needs"]
    assert "not run: needs `cvl_llm`" in (tmp_path / "out" / "sweep.md").read_text()


def test_run_without_segments_is_an_error(tmp_path):
    sw = tmp_path / "sweep"
    sweep(sw, d_high=0.3, d_tail=0.3, noise=0.02, combined=False)
    bad = write_run(sw / "7", "cvl_human", "Human", dict(BASE), segments=False)
    with pytest.raises(SweepError, match="no per-bucket results") as err:
        clicks_study_report(sw, tmp_path / "out")
    assert str(bad) in str(err.value)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "uptrain.report.clicks_study", str(sw), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "no per-bucket results" in proc.stderr
    assert not (tmp_path / "o" / "sweep.md").exists()
