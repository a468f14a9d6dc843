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


def write_job(directory: Path, m: dict, overrides: list[str] | None = None, mtime: float | None = None) -> Path:
    """A Hydra job directory: metrics.json, and the job's task overrides in .hydra/overrides.yaml."""
    write_run(directory, m)
    if overrides is not None:
        (directory / ".hydra").mkdir(exist_ok=True)
        (directory / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if mtime is not None:
        os.utime(directory / "metrics.json", (mtime, mtime))
    return directory


LOSSES = {  # loss -> in-domain deltas: conj significantly above infonce on every query, disj below
    "infonce": [0.0] * N_IN,
    "conj_infonce": [0.02 + 0.004 * (i % 3) for i in range(N_IN)],
    "disj_infonce": [-0.03 - 0.005 * (i % 2) for i in range(N_IN)],
}


@pytest.fixture(scope="module")
def loss_sweep(tmp_path_factory):
    """`uptrain +exp=human profile=tiny --multirun loss=infonce,conj_infonce,disj_infonce`, then job 1
    run again in a second multirun (a re-run: same name, same overrides)."""
    root = tmp_path_factory.mktemp("loss_sweep")
    day = root / "multirun" / "human" / "2025-06-01_10-00-00"
    runs = {}
    for job, (loss, deltas) in enumerate(LOSSES.items()):
        m = metrics("human", {"scifact_test": deltas}, report_row={"group": "baselines", "label": "Human"},
                    human_ratio=100.0, label_source="human")
        runs[loss] = m
        write_job(day / str(job), m, ["+exp=human", "profile=tiny", f"loss={loss}"], mtime=2_000_000)
    # the re-run of loss=conj_infonce, older, with other numbers: merged into the newer one
    old = metrics("human", {"scifact_test": [0.3] * N_IN}, report_row={"group": "baselines", "label": "Human"})
    rerun = write_job(root / "multirun" / "human" / "2025-05-01_09-00-00" / "0", old,
                      ["+exp=human", "profile=tiny", "loss=conj_infonce"], mtime=1_000_000)
    out = root / "report"
    proc = run_report([root / "multirun", "--out", out, "--baseline", "human loss=infonce"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    return runs, out, proc, rerun


def test_loss_sweep_rows_are_runs_labelled_by_their_overrides(loss_sweep):
    # bug: rows were keyed by experiment name, so the README's `--multirun loss=...` sweep of
    # +exp=human collapsed to one row (the newest run), the other losses silently dropped
    runs, out, proc, rerun = loss_sweep
    md = (out / "sweep.md").read_text()
    labels = [r[1] for r in table_rows(md)[1]]
    assert sorted(labels) == ["Human (loss=conj_infonce)", "Human (loss=disj_infonce)", "Human (loss=infonce)"]
    data = json.loads((out / "sweep.json").read_text())
    assert {r["label"]: r["varied"] for r in data["rows"]} == {f"Human (loss={k})": {"loss": k} for k in LOSSES}
    # each row holds its own run's numbers
    for r in data["rows"]:
        loss = r["varied"]["loss"]
        assert r["cells"]["in_domain/scifact_test/nDCG@10"]["value"] == pytest.approx(
            runs[loss]["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"])
    # profile=tiny is the same in every run: not in the labels, but listed with the run
    assert all("profile=tiny" in r["overrides"] for r in data["rows"])


def test_loss_sweep_merges_only_reruns_and_says_so(loss_sweep):
    # bug: any two runs of one name were "duplicates"; only a re-run (same name and overrides) is one
    _, out, proc, rerun = loss_sweep
    assert "two runs named 'human' (profile=tiny, loss=conj_infonce) with the same overrides" in proc.stderr
    assert f"ignored {rerun}" in proc.stderr
    data = json.loads((out / "sweep.json").read_text())
    assert data["merged"] == 1
    row = next(r for r in data["rows"] if r["varied"] == {"loss": "conj_infonce"})
    assert row["merged"] == [str(rerun)] and "2025-06-01" in row["path"]
    md = (out / "sweep.md").read_text()
    assert "3 runs (1 re-runs or baseline copies merged into them" in md
    merged = md.split("## Merged runs", 1)[1]
    assert "2 runs of Human (loss=conj_infonce) alike in name and overrides (re-runs)" in merged and str(rerun) in merged


def test_loss_sweep_markers_per_row_against_the_chosen_baseline(loss_sweep):
    # the +/- markers compare each row with the run `--baseline 'human loss=infonce'` names
    runs, out, _, _ = loss_sweep
    md = (out / "sweep.md").read_text()
    base = runs["infonce"]
    for loss, expected in (("conj_infonce", "+"), ("disj_infonce", "-")):
        m = runs[loss]
        mark = expected_marker(values(m, "in_domain", None, "nDCG@10"), values(base, "in_domain", None, "nDCG@10"))
        assert mark == expected  # scipy agrees with the way the data were built
        value = m["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"]
        assert cell(md, f"Human (loss={loss})", "scifact_test nDCG@10") == f"{value:.3f}{mark}"
    # the baseline row carries no marker; the legend names it with its overrides
    assert cell(md, "Human (loss=infonce)", "scifact_test nDCG@10")[-1].isdigit()
    assert "significantly better / worse than Human (loss=infonce)" in md


def test_loss_sweep_without_a_baseline_choice_warns_and_uses_the_first_row(loss_sweep, tmp_path):
    _, out, _, _ = loss_sweep
    proc = run_report([out.parent / "multirun", "--out", tmp_path / "r"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 runs match the baseline 'human': using 'Human (loss=conj_infonce)'" in proc.stderr
    assert json.loads((tmp_path / "r" / "sweep.json").read_text())["baseline_label"] == "Human (loss=conj_infonce)"


def test_ratio_sweep_from_metrics_overrides_pairs_the_dagger_at_the_same_ratio(tmp_path):
    # `uptrain +exp=utilsel_cl20 --multirun labels.human_ratio=20,100`: the overrides come from
    # metrics.json here (no .hydra), and each run's dagger is tested against the REPLUG run at its
    # own ratio (each job's baseline_replug_cl20/ copy), not against whichever copy came first
    def run(name, ratio, deltas, **extra):
        return metrics(name, {"scifact_test": deltas}, human_ratio=float(ratio),
                       overrides=[f"+exp={name}", f"labels.human_ratio={ratio}"], **extra)

    below = [d - 0.02 - 0.003 * (i % 4) for i, d in enumerate(CL20)]  # significantly below CL20
    day = tmp_path / "multirun" / "utilsel_cl20" / "2025-06-01_10-00-00"
    for job, ratio in enumerate((100, 20)):
        job_dir = write_run(day / str(job), run("utilsel_cl20", ratio, CL20, second_baseline="replug_cl20",
                                                report_row={"group": "combination", "label": "UtilSel-CL"}))
        # at 20% REPLUG is below UtilSel on every query; at 100% the two are alike
        write_run(job_dir / "baseline_replug_cl20", run("replug_cl20", ratio, below if ratio == 20 else CL20,
                                                        report_row={"group": "combination", "label": "REPLUG-CL"}))
        write_run(job_dir / "baseline_human", metrics("human"))
    proc = run_report([tmp_path / "multirun", "--out", tmp_path / "r"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "r" / "sweep.md").read_text()
    labels = [r[1] for r in table_rows(md)[1]]
    assert labels == ["REPLUG-CL (labels.human_ratio=20)", "REPLUG-CL (labels.human_ratio=100)",
                      "UtilSel-CL (labels.human_ratio=20)", "UtilSel-CL (labels.human_ratio=100)", "human"]
    value = metrics("x", {"scifact_test": CL20})["groups"]["in_domain"]["average"]["nDCG@10"]
    assert cell(md, "UtilSel-CL (labels.human_ratio=20)", "scifact_test nDCG@10") == f"{value:.3f}†"
    assert cell(md, "UtilSel-CL (labels.human_ratio=100)", "scifact_test nDCG@10") == f"{value:.3f}"
    rows = {r["label"]: r for r in json.loads((tmp_path / "r" / "sweep.json").read_text())["rows"]}
    assert rows["UtilSel-CL (labels.human_ratio=20)"]["second_baseline_label"] == "REPLUG-CL (labels.human_ratio=20)"
    # the two jobs' alike baseline_human copies are one row, said in the report, not warned about
    assert len(rows["human"]["merged"]) == 1 and rows["human"]["baseline_copy"]
    assert "2 copies of the baseline run human in the jobs' directories" in md
    assert "warning" not in proc.stderr


SEGMENTS = {"high": 0.1, "low": -0.1}  # segment -> offset from the collection's value


def with_segments(m: dict, where: str = "groups") -> dict:
    """Query segments as the pipeline writes them: under each group, or (older runs) only under results."""
    results = {}
    for group, g in m["groups"].items():
        seg = {c: {s: {**{k: round(v + off, 6) for k, v in agg.items()}, "queries": 4 if s == "high" else 2}
                   for s, off in SEGMENTS.items()}
               for c, agg in g["collections"].items()}
        if where == "groups":
            g["segments"] = seg
        results.update({c: {**g["collections"][c], "segments": s} for c, s in seg.items()})
    m["results"] = results
    return m


def test_segments_get_a_table_each_and_sweep_json_carries_them(tmp_path):
    # query segments (frequency buckets, popularity) must reach the sweep report, not only metrics.json
    runs = {
        "human": with_segments(metrics("human")),
        "utilsel": with_segments(metrics("utilsel", {"scifact_test": [0.05] * N_IN}), where="results"),
        "bm25": metrics("bm25"),  # a run without segments: n/a in the segment tables
    }
    dirs = [write_run(tmp_path / name, m) for name, m in runs.items()]
    proc = run_report([*dirs, "--out", tmp_path / "r"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "r" / "sweep.md").read_text()
    part = md.split("## Results by query segment", 1)[1].split("## Runs", 1)[0]
    for segment, off in SEGMENTS.items():
        table = part.split(f"### Segment `{segment}`\n\n", 1)[1].split("\n\n", 1)[0]
        lines = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table.splitlines()]
        header, body = lines[0], {r[1]: r for r in lines[2:]}
        for name in ("human", "utilsel"):
            g = runs[name]["groups"]
            sci = g["in_domain"]["collections"]["scifact_test"]["nDCG@10"] + off
            avg = g["out_of_domain"]["average"]["nDCG@10"] + off  # the mean of the collections' segment values
            assert body[name][header.index("scifact_test nDCG@10")] == f"{sci:.3f}"
            assert body[name][header.index("out_of_domain avg nDCG@10")] == f"{avg:.3f}"
        assert body["bm25"][header.index("scifact_test nDCG@10")] == "n/a"
        n = 4 if segment == "high" else 2
        assert f"Queries: scifact_test {n}, cranfield {n}, npl {n}." in part.split(f"### Segment `{segment}`", 1)[1]
    # the overall table is unchanged by the segments
    assert cell(md, "utilsel", "scifact_test nDCG@10").startswith(
        f"{runs['utilsel']['groups']['in_domain']['collections']['scifact_test']['nDCG@10']:.3f}")
    data = json.loads((tmp_path / "r" / "sweep.json").read_text())
    assert data["segments"] == ["high", "low"]
    assert data["segment_queries"]["low"] == {"scifact_test": 2, "cranfield": 2, "npl": 2}
    human = next(r for r in data["rows"] if r["name"] == "human")
    c = human["cells"]["out_of_domain/cranfield/nDCG@10"]
    assert c["segments"] == pytest.approx({
        s: runs["human"]["groups"]["out_of_domain"]["collections"]["cranfield"]["nDCG@10"] + off for s, off in SEGMENTS.items()})
    assert "segments" not in next(r for r in data["rows"] if r["name"] == "bm25")["cells"]["out_of_domain/cranfield/nDCG@10"]
