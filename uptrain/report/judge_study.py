"""The judge study's comparison with the paper (Wang, Whitworth et al., arXiv 2509.03764):
``uptrain-judge-study DIR [DIR ...] --out OUT``.

Reads every ``metrics.json`` with a ``judge`` section under the given directories (single runs or
multirun sweeps), and writes ``OUT/study.md`` (and ``study.json``): the agreement of each judge
with the human labels beside the paper's figures (73.7% exact and 91.7% within-one agreement;
query-level sDCG@25 Kendall tau 0.652 / Spearman rho 0.817, mean error 0.005, P10 -0.047, P90
0.059), the system-level agreement, the A/B design table (the layout of the paper's Table 3),
the cost per judge, and one verdict per finding, with the plots copied beside.

Verdicts compare numbers, they do not test them: "reached" when ours is at least the paper's
figure, "below" otherwise, and a simulated judge is never given a verdict (its agreement is set,
not measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from uptrain.judge.agreement import PAPER as _PAPER

PAPER = {**_PAPER["label"], **{k: v for k, v in _PAPER["query"].items() if k != "measure"}}

FINDINGS = {
    "label": "RQ1, label level: the fine-tuned judge matches the human grade exactly on 73.7% of pairs and "
             "within one grade on 91.7%",
    "query": "RQ1, query level: query-level sDCG@25 by judge labels ranks queries as human labels do "
             "(Kendall tau 0.652, Spearman rho 0.817), with a mean error of 0.005",
    "system": "RQ1, system level: judge labels order systems (and the sign of paired system differences) as "
              "human labels do",
    "design": "RQ2: stratified sampling with Neyman allocation and the stratified estimator cuts the standard "
              "deviation by 94% (n = 2,000) and the MDE from 1.3-1.5% to about 0.25%",
}


def find_runs(roots: list[Path]) -> list[dict]:
    out = []
    for root in roots:
        for path in sorted(Path(root).rglob("metrics.json")):
            try:
                m = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(m.get("judge"), dict):
                out.append({"dir": path.parent, "name": m.get("name"), "overrides": m.get("overrides") or [],
                            "judge": m["judge"]})
    return out


def _f(x: Any, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _label(run: dict) -> str:
    j = run["judge"]
    sim = " (SIMULATED)" if j.get("simulated") else ""
    how = "out-of-fold" if j.get("out_of_fold") else (f"trained on {j['train']}" if j.get("train") else "untrained")
    return f"{j['judge']}{sim}, {j['collection']}, top {j['k']}, {how}"


def agreement_rows(runs: list[dict]) -> list[str]:
    lines = ["| judge | Exact | Within one | kappa | weighted kappa | query tau | query rho | error mean | P10 | "
             "median | P90 | system tau | sign agreement | pairs/s |",
             "| --- |" + " ---: |" * 13]
    for r in runs:
        j = r["judge"]
        la, qa, sa = j.get("label_agreement") or {}, j.get("query_agreement") or {}, j.get("system_agreement") or {}
        lines.append(
            f"| {_label(r)} | {_f(la.get('exact'), True)} | {_f(la.get('within_one'), True)} | {_f(la.get('kappa'))} | "
            f"{_f(la.get('weighted_kappa'))} | {_f(qa.get('kendall_tau'))} | {_f(qa.get('spearman_rho'))} | "
            f"{_f(qa.get('error_mean'))} | {_f(qa.get('error_p10'))} | {_f(qa.get('error_median'))} | "
            f"{_f(qa.get('error_p90'))} | {_f(sa.get('kendall_tau'))} | {_f(sa.get('sign_agreement'), True)} | "
            f"{_f((j.get('cost') or {}).get('pairs_per_second'))} |")
    p = PAPER
    lines.append(f"| paper (XLM-RoBERTa-large, 2.6M pairs, sDCG@25) | {_f(p.get('exact'), True)} | "
                 f"{_f(p.get('within_one'), True)} | n/a | n/a | {_f(p.get('kendall_tau'))} | {_f(p.get('spearman_rho'))} | "
                 f"{_f(p.get('error_mean'))} | {_f(p.get('error_p10'))} | n/a | {_f(p.get('error_p90'))} | n/a | n/a | n/a |")
    return lines


def verdicts(runs: list[dict]) -> list[str]:
    p = PAPER
    lines = []
    measured = [r for r in runs if not r["judge"].get("simulated")]
    for key, text in FINDINGS.items():
        parts = []
        for r in measured:
            j = r["judge"]
            if key in ("label", "query"):
                block = j.get(f"{key}_agreement") or {}
                keys = ("exact", "within_one") if key == "label" else ("kendall_tau", "spearman_rho")
                if all(block.get(k2) is not None for k2 in keys):
                    ok = all(block[k2] >= p[k2] for k2 in keys)
                    shown = ([f"exact {_f(block['exact'], True)}", f"within one {_f(block['within_one'], True)}"]
                             if key == "label" else
                             [f"tau {_f(block['kendall_tau'])}", f"rho {_f(block['spearman_rho'])}",
                              f"mean error {_f(block.get('error_mean'))}"])
                    parts.append(f"{_label(r)}: {'reached' if ok else 'below'} ({', '.join(shown)})")
            elif key == "system":
                sa = j.get("system_agreement") or {}
                if sa.get("kendall_tau") is not None:
                    parts.append(f"{_label(r)}: system tau {_f(sa['kendall_tau'])}, sign agreement "
                                 f"{_f(sa.get('sign_agreement'), True)} over {sa.get('pairs')} pairs, "
                                 f"{_f(sa.get('significant_sign_agreement'), True)} over the human-significant ones")
            elif key == "design":
                d = j.get("design")
                if d:
                    for what in ("level", "difference"):
                        best = [row for row in d.get(what, []) if row["design"] == "neyman"]
                        if best:
                            top = max(best, key=lambda row: row["n"])
                            parts.append(f"{_label(r)}, {what}: Neyman at n = {top['n']} cuts sigma by "
                                         f"{_f(top.get('reduction'), True)} (MDE {_f(top.get('mde'), True)}, coverage "
                                         f"{_f(top.get('coverage'), True)}; a stratified design gains what its strata "
                                         "explain of the values' variance)")
        lines.append(f"- **{text}.** " + ("; ".join(parts) if parts else "no measured run (only simulated or none)."))
    if any(r["judge"].get("simulated") for r in runs):
        lines.append("- Simulated judges are listed for reference: their agreement is set by their confusion, not measured.")
    return lines


def design_tables(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        d = r["judge"].get("design")
        if not d:
            continue
        out.append(f"### {_label(r)}: {d['treatment']} vs {d['control']}, population {d['population']} queries\n")
        for what in ("level", "difference"):
            out.append(f"**{what}** | Sample type | Estimator | n | sigma | Reduction in sigma | MDE | Coverage |")
            out.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
            for row in d.get(what, []):
                out.append(f"| | {row.get('sample')} | {row.get('estimator')} | {row['n']} | {_f(row.get('sigma'))} | "
                           f"{_f(row.get('reduction'), True)} | {_f(row.get('mde'), True)} | {_f(row.get('coverage'), True)} |")
            out.append("")
    return out


def write_study(runs: list[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# The judge study: uptrain's judges beside the paper", "",
             "Wang, Whitworth et al., \"LLM-based Relevance Assessment for Web-Scale Search Evaluation at Pinterest\" "
             "(RecSys 2025 EARL workshop, arXiv 2509.03764). Generated by `uptrain-judge-study`.", "",
             "## Agreement with human labels", "", *agreement_rows(runs), "",
             "## Verdicts", "", *verdicts(runs), ""]
    tables = design_tables(runs)
    if tables:
        lines += ["## A/B measurement design (the layout of the paper's Table 3)", "", *tables]
    lines += ["## Runs", ""]
    for i, r in enumerate(runs):
        tag = f"run{i}_{r['judge']['judge']}"
        for name in ("judge_errors.png", "judge_mde.png"):
            if (r["dir"] / name).is_file():
                shutil.copyfile(r["dir"] / name, out / f"{tag}_{name}")
                lines.append(f"![{tag} {name}]({tag}_{name})")
        lines.append(f"- {tag}: {_label(r)}; overrides {' '.join(r['overrides']) or 'none'}; cost "
                     f"{(r['judge'].get('cost') or {}).get('pairs_per_second')} pairs/s grading, "
                     f"{(r['judge'].get('cost') or {}).get('train_seconds')} s training")
    (out / "study.md").write_text("\n".join(lines) + "\n")
    (out / "study.json").write_text(json.dumps([{**r, "dir": str(r["dir"])} for r in runs], indent=2, default=str))
    return out / "study.md"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="uptrain-judge-study", description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories holding metrics.json files")
    ap.add_argument("--out", type=Path, required=True, help="where study.md, study.json and the plots go")
    args = ap.parse_args(argv)
    runs = find_runs(args.dirs)
    if not runs:
        raise SystemExit(f"uptrain-judge-study: no metrics.json with a judge section under {', '.join(map(str, args.dirs))}")
    print(write_study(runs, args.out))


if __name__ == "__main__":
    main()
