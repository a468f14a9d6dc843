"""The sweep report (``uptrain-report``) on run directories written here, with per-query
values chosen so that each paired t-test has a known outcome, checked against scipy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
from scipy.stats import ttest_rel

from uptrain.report import findings
from uptrain.report.sweep import DEFAULT_MEASURES, Run, columns, parse_measures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_IN, N_OUT = 12, 8
COLLECTIONS = {"in_domain": {"scifact_test": N_IN}, "out_of_domain": {"cranfield": N_OUT, "npl": N_OUT}}
MEASURE_BASE = {"nDCG@10": 0.30, "RR@10": 0.25}
# utilsel_cl20 against human: mean -0.005, far from significant
CL20 = [0.03, -0.04, 0.02, -0.03, 0.01, -0.02] * 2


def base(collection: str, i: int) -> float:
    return 0.02 * i + {"scifact_test": 0.0, "cranfield": 0.1, "npl": 0.05}[collection]


def metrics(name: str, deltas: dict[str, list[float]] | None = None, **extra) -> dict:
    """A metrics.json as the pipeline writes it: every measure is the base plus the collection's deltas."""
    deltas = deltas or {}
    groups, per_query = {}, {}
    for group, sizes in COLLECTIONS.items():
        per_query[group] = {}
        for c, n in sizes.items():
            d = deltas.get(c, [0.0] * n)
            per_query[group][c] = {
                m: {f"q{i}": round(b + base(c, i) + d[i], 6) for i in range(n)} for m, b in MEASURE_BASE.items()
            }
        aggregates = {c: {m: mean(v.values()) for m, v in pq.items()} for c, pq in per_query[group].items()}
        groups[group] = {
            "collections": aggregates,
            "average": {m: mean(a[m] for a in aggregates.values()) for m in MEASURE_BASE},
        }
    return {"name": name, "measures": list(MEASURE_BASE), "groups": groups, "per_query": per_query,
            "baseline": None, "stages": [], "collections": {}, **extra}


def write_run(directory: Path, m: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(m))
    (directory / "config.yaml").write_text(f"name: {m['name']}\n")
    return directory


def sweep_runs() -> dict[str, dict]:
    return {
        "human": metrics("human", report_row={"group": "baselines", "label": "Human"},
                         human_ratio=100.0, label_source="human"),
        # in-domain identical to human; worse on every cranfield query
        "relsel": metrics("relsel", {"cranfield": [-(0.02 + 0.005 * (i % 2)) for i in range(N_OUT)]},
                          report_row={"group": "LLMs", "label": "RelSel", "order": 2}, label_source="llm:relsel"),
        # better on every query by a varying amount
        "utilsel": metrics("utilsel", {
            "scifact_test": [0.01 + 0.002 * (i % 3) for i in range(N_IN)],
            "cranfield": [0.03 + 0.01 * (i % 2) for i in range(N_OUT)],
            "npl": [0.02 + 0.005 * (i % 3) for i in range(N_OUT)],
        }, report_row={"group": "LLMs", "label": "UtilSel", "order": 1}, human_ratio=0.0, label_source="llm:utilsel"),
        "replug_cl20": metrics("replug_cl20", {"scifact_test": [d - 0.02 - 0.003 * (i % 4) for i, d in enumerate(CL20)]},
                               report_row={"group": "combination", "label": "REPLUG 20%"}, human_ratio=20.0,
                               label_source="curriculum(replug -> human 20%)"),
        "utilsel_cl20": metrics("utilsel_cl20", {"scifact_test": CL20},
                                report_row={"group": "combination", "label": "UtilSel 20%"}, human_ratio=20.0,
                                second_baseline="replug_cl20", label_source="curriculum(llm:utilsel -> human 20%)"),
        # no report_row: group "other", label = name
        "bm25": metrics("bm25", {"scifact_test": [-0.05 - 0.01 * (i % 2) for i in range(N_IN)]}),
    }


def report_command() -> list[str]:
    exe = Path(sys.executable).parent / "uptrain-report"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "uptrain.report.sweep"]


def run_report(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(report_command() + [str(a) for a in args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def table_rows(md: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table after '## Results'."""
    block = md.split("## Results\n\n", 1)[1].split("\n\n", 1)[0]
    table = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in block.splitlines()]
    return table[0], table[2:]


def cell(md: str, label: str, column: str) -> str:
    header, rows = table_rows(md)
    row = next(r for r in rows if r[1] == label)
    return row[header.index(column)]


def values(m: dict, group: str, collection: str | None, measure: str) -> dict[str, float]:
    by_c = m["per_query"][group]
    names = [collection] if collection else list(by_c)
    return {f"{c}/{q}": v for c in names for q, v in by_c[c][measure].items()}


def expected_marker(a: dict, b: dict, better: str = "+", worse: str = "-") -> str:
    x, y = zip(*[(a[q], b[q]) for q in a])
    res = ttest_rel(x, y)
    if res.pvalue < 0.05:
        return better if mean(x) > mean(y) else worse
    return ""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    runs = sweep_runs()
    dirs = [write_run(root / "outputs" / name / "2025-06-01" / "10-00-00", m) for name, m in runs.items()]
    out = root / "report"
    proc = run_report([*dirs, "--out", out, "--findings"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    return runs, out, proc


def test_rows_grouped_in_table4_order(sweep):
    _, out, proc = sweep
    md = (out / "sweep.md").read_text()
    _, rows = table_rows(md)
    # UtilSel before RelSel: report_row.order overrides the name order; "other" (bm25) after the known groups
    assert [r[1] for r in rows] == ["Human", "UtilSel", "RelSel", "REPLUG 20%", "UtilSel 20%", "bm25"]
    assert [r[0] for r in rows] == ["baselines", "LLMs", "", "combination", "", "other"]
    assert f"report: {out / 'sweep.md'}" in proc.stdout


@pytest.mark.parametrize("name,label,collection,column", [
    ("utilsel", "UtilSel", "scifact_test", "scifact_test nDCG@10"),
    ("utilsel", "UtilSel", "scifact_test", "scifact_test RR@10"),
    ("utilsel", "UtilSel", None, "out_of_domain avg nDCG@10"),
    ("relsel", "RelSel", "cranfield", "cranfield nDCG@10"),
    ("relsel", "RelSel", "scifact_test", "scifact_test nDCG@10"),
    ("relsel", "RelSel", None, "out_of_domain avg nDCG@10"),
    ("bm25", "bm25", "scifact_test", "scifact_test nDCG@10"),
])
def test_values_and_markers_against_scipy(sweep, name, label, collection, column):
    runs, out, _ = sweep
    measure = column.rsplit(" ", 1)[1]
    group = "in_domain" if collection == "scifact_test" else "out_of_domain"
    m, h = runs[name], runs["human"]
    value = (m["groups"][group]["collections"][collection] if collection else m["groups"][group]["average"])[measure]
    mark = expected_marker(values(m, group, collection, measure), values(h, group, collection, measure))
    assert cell((out / "sweep.md").read_text(), label, column) == f"{value:.3f}{mark}"


def test_known_outcomes(sweep):
    # the data were built for these outcomes; scipy confirms them, and the report shows them
    runs, out, _ = sweep
    h = runs["human"]
    assert expected_marker(values(runs["utilsel"], "in_domain", None, "nDCG@10"), values(h, "in_domain", None, "nDCG@10")) == "+"
    assert expected_marker(values(runs["relsel"], "out_of_domain", "cranfield", "nDCG@10"),
                           values(h, "out_of_domain", "cranfield", "nDCG@10")) == "-"
    md = (out / "sweep.md").read_text()
    assert cell(md, "RelSel", "scifact_test nDCG@10") == f"{runs['relsel']['groups']['in_domain']['average']['nDCG@10']:.3f}"
    assert cell(md, "bm25", "scifact_test RR@10").endswith("-")
    # the baseline run itself carries no marker
    assert all(c[-1].isdigit() for c in table_rows(md)[1][0][2:])
    assert "two-sided paired t-test" in md and "alpha = 0.05" in md


def test_dagger_against_second_baseline(sweep):
    runs, out, _ = sweep
    cl20, replug, h = runs["utilsel_cl20"], runs["replug_cl20"], runs["human"]
    a = values(cl20, "in_domain", None, "nDCG@10")
    assert expected_marker(a, values(replug, "in_domain", None, "nDCG@10"), better="†", worse="") == "†"
    assert expected_marker(a, values(h, "in_domain", None, "nDCG@10")) == ""
    md = (out / "sweep.md").read_text()
    assert cell(md, "UtilSel 20%", "scifact_test nDCG@10") == f"{cl20['groups']['in_domain']['average']['nDCG@10']:.3f}†"
    # replug_cl20 names no second baseline: no dagger
    assert "†" not in cell(md, "REPLUG 20%", "scifact_test nDCG@10")
    data = json.loads((out / "sweep.json").read_text())
    row = next(r for r in data["rows"] if r["name"] == "utilsel_cl20")
    assert row["cells"]["in_domain/scifact_test/nDCG@10"]["p_second"] < 0.05
    assert {r["name"]: r["family"] for r in data["rows"]}["replug_cl20"] == "replug"
    assert row["family"] == "utilsel"


def test_plots_are_png_and_referenced(sweep):
    _, out, _ = sweep
    md = (out / "sweep.md").read_text()
    for name in ("curriculum.png", "in_vs_out.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
        assert f"]({name})" in md


def test_findings_in_report(sweep):
    _, out, _ = sweep
    status = {f["id"]: f["status"] for f in json.loads((out / "sweep.json").read_text())["findings"]}
    assert status == {
        "utility_over_relevance": "holds",
        "disj_over_other_losses": "not run",
        "curriculum_over_interleave": "not run",
        "curriculum20_close_to_human": "holds",
        "llm_labels_generalize": "holds",
    }
    assert "## Findings of the paper" in (out / "sweep.md").read_text()


def test_multirun_discovery_and_default_out(tmp_path):
    day = tmp_path / "multirun" / "utilsel" / "2025-06-01" / "10-00-00"
    for job, name in enumerate(["utilsel", "relsel"]):
        write_run(day / str(job), metrics(name))
        # each job holds its baseline's run directory; these copies must not count as duplicates
        write_run(day / str(job) / "baseline_human", metrics("human"))
    proc = run_report([tmp_path / "multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    md = (tmp_path / "multirun" / "sweep.md").read_text()
    assert sorted(r[1] for r in table_rows(md)[1]) == ["human", "relsel", "utilsel"]
    assert "Not drawn: no run has a human_ratio" in md
    assert not (tmp_path / "multirun" / "curriculum.png").exists()
    assert (tmp_path / "multirun" / "in_vs_out.png").read_bytes()[:8] == PNG_MAGIC


def test_duplicate_name_keeps_newest(tmp_path):
    old = write_run(tmp_path / "a", metrics("utilsel", {"scifact_test": [0.1] * N_IN}))
    new = write_run(tmp_path / "b", metrics("utilsel", {"scifact_test": [0.2] * N_IN}))
    os.utime(old / "metrics.json", (1_000_000, 1_000_000))
    os.utime(new / "metrics.json", (2_000_000, 2_000_000))
    write_run(tmp_path / "h", metrics("human"))
    proc = run_report([new, old, tmp_path / "h", "--out", tmp_path / "r"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "two runs named 'utilsel'" in proc.stderr and f"ignored {old}" in proc.stderr
    data = json.loads((tmp_path / "r" / "sweep.json").read_text())
    row = next(r for r in data["rows"] if r["name"] == "utilsel")
    assert row["path"] == str(new)
    assert row["cells"]["in_domain/scifact_test/nDCG@10"]["value"] == pytest.approx(0.3 + 0.02 * 5.5 + 0.2)


def test_empty_dir_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_report([tmp_path / "empty"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"uptrain-report: error: no metrics.json in or under {tmp_path / 'empty'}"]


def test_reference_side_by_side(tmp_path):
    runs = sweep_runs()
    dirs = [write_run(tmp_path / name, m) for name, m in runs.items()]
    csv = tmp_path / "paper.csv"
    csv.write_text(
        "table,group,method,collection,measure,value,marker\n"
        "4,baselines,Human,MS MARCO Dev,MRR@10,70.5,\n"
        "4,baselines,Human,BEIR avg,nDCG@10,43.0,\n"
        "4,LLMs,RelSel,MS MARCO Dev,MRR@10,68.0,-\n"
        "4,LLMs,RelSel,BEIR avg,nDCG@10,44.0,\n"
        "4,LLMs,UtilSel,MS MARCO Dev,MRR@10,70.1,\n"
        "4,LLMs,UtilSel,DL19,nDCG@10,30.0,\n"  # in-domain, the paper's side reads MRR@10 (every table has it)
        "4,LLMs,UtilSel,MS MARCO Dev (LLM test collection),MRR@10,99.0,\n"  # its own group, never in-domain
        "4,LLMs,UtilSel,BEIR avg,nDCG@10,45.0,+\n"
        "4,combination,REPLUG (20%),MS MARCO Dev,MRR@10,66.0,-\n"
        "4,combination,UtilSel (20%),MS MARCO Dev,MRR@10,68.5,-\n"
    )
    proc = run_report([*dirs, "--out", tmp_path / "r", "--reference", csv], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref = json.loads((tmp_path / "r" / "sweep.json").read_text())["reference"]
    paper = {r["title"]: r["paper_status"] for r in ref["rows"]}
    assert list(paper.values()) == ["holds", "not run", "not run", "does not hold", "holds"]
    # 20% is 0.020 below Human and marked significantly worse in the paper
    assert "utilsel_cl20 0.685 vs human 0.705" in ref["rows"][3]["paper_evidence"]
    assert ref["methods"]["utilsel_cl20"] == "UtilSel (20%)"
    assert "## Findings next to the paper's numbers" in (tmp_path / "r" / "sweep.md").read_text()

    proc = run_report([*dirs, "--out", tmp_path / "r2", "--reference", tmp_path / "absent.csv"], cwd=tmp_path)
    assert proc.returncode == 0 and "reference not used" in proc.stderr
    assert "could not be used" in (tmp_path / "r2" / "sweep.md").read_text()


def run_of(name: str, deltas: dict | None = None) -> Run:
    return Run(Path(name), metrics(name, deltas), 0.0)


def test_findings_statuses():
    noise = [0.1, -0.1] * (N_IN // 2)
    cases = {
        # cl20 within 0.005 and not significant: holds
        "close": ([0.005 + d / 20 for d in noise], "holds"),
        # significantly worse although only 0.004 below on average
        "worse": ([-0.003 - 0.001 * (i % 3) for i in range(N_IN)], "does not hold"),
        # not significant but 0.02 below
        "far": ([-0.02 + d for d in noise], "does not hold"),
    }
    for deltas, expected in cases.values():
        runs = {"human": run_of("human"), "utilsel_cl20": run_of("utilsel_cl20", {"scifact_test": deltas})}
        status, evidence = findings.curriculum20_close_to_human(runs)
        assert status == expected, evidence

    runs = {"utilsel_cl100": run_of("utilsel_cl100", {"scifact_test": [-0.01] * N_IN}), "interleave": run_of("interleave")}
    assert findings.curriculum_over_interleave(runs)[0] == "does not hold"
    assert findings.curriculum_over_interleave({"interleave": runs["interleave"]}) == ("not run", "missing runs: utilsel_cl100")
    # above on average, but by noise a paired t-test cannot tell from chance
    noisy = {"utilsel_cl100": run_of("utilsel_cl100", {"scifact_test": [0.005 + d for d in noise]}), "interleave": run_of("interleave")}
    status, evidence = findings.curriculum_over_interleave(noisy)
    assert status == "holds, not significant" and "p = " in evidence
    steady = {"utilsel_cl100": run_of("utilsel_cl100", {"scifact_test": [0.01 + 0.001 * (i % 3) for i in range(N_IN)]}),
              "interleave": run_of("interleave")}
    assert findings.curriculum_over_interleave(steady)[0] == "holds"

    lower = {c: [-0.01] * N_OUT for c in ("cranfield", "npl")} | {"scifact_test": [-0.01] * N_IN}
    losses = {"utilsel": run_of("utilsel"), "utilsel_infonce": run_of("utilsel_infonce", lower),
              "utilsel_conj_infonce": run_of("utilsel_conj_infonce", lower)}
    assert findings.disj_over_other_losses(losses)[0] == "holds"  # utilsel stands in for Disj-InfoNCE
    lowest = {k: [v - 0.01 for v in vs] for k, vs in lower.items()}
    losses["utilsel_disj_infonce"] = run_of("utilsel_disj_infonce", lowest)
    assert findings.disj_over_other_losses(losses)[0] == "does not hold"
    assert [f["id"] for f in findings.evaluate({})] == [fn.__name__ for _, fn in findings.FINDINGS]
    assert {f["status"] for f in findings.evaluate({})} == {"not run"}


def test_measures_option():
    assert parse_measures(None) == DEFAULT_MEASURES
    assert parse_measures(["out_of_domain=RR@10,nDCG@10"]) == {**DEFAULT_MEASURES, "out_of_domain": ["RR@10", "nDCG@10"]}
    cols = columns([run_of("human")], parse_measures(["R@100", "in_domain=nDCG@10"]))
    assert [c.key for c in cols] == [
        "in_domain/scifact_test/nDCG@10", "out_of_domain/cranfield/R@100", "out_of_domain/npl/R@100",
        "out_of_domain/average/R@100",
    ]


def test_curriculum_series_keeps_curves_and_drops_ablations():
    from uptrain.report.sweep import curriculum_series

    def run(name, ratio, source):
        return Run(Path(name), metrics(name, human_ratio=ratio, label_source=source), 0.0)

    runs = [
        run("human", 100.0, "human"),
        run("utilsel", 0.0, "llm:utilsel"),
        run("utilsel_infonce", 0.0, "llm:utilsel"),  # an ablation: same family and ratio, not on the curve
        run("utilsel_cl20", 20.0, "llm:utilsel -> human 20%"),
        run("utilsel_cl100", 100.0, "llm:utilsel -> human"),
        run("replug_cl20", 20.0, "replug -> human 20%"),
        run("interleave", 100.0, "human+llm:utilsel"),
        run("relsel", 0.0, "llm:relsel"),  # no curriculum of its family: no curve
        run("zeroshot", None, ""),
    ]
    series = curriculum_series(runs, runs[0], ["nDCG@10"])
    assert {k: sorted(x for x, _ in v) for k, v in series.items()} == {
        "utilsel": [0.0, 20.0, 100.0],
        "replug": [20.0],
        "utilsel interleave": [100.0],
    }
