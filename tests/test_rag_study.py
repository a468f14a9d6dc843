"""The RAG study's report (uptrain/report/rag_study.py) on synthetic sweeps in the layout the rag
path writes (metrics.json: groups, per_query, rag.<collection>), whose per-question values are
chosen so that every verdict is known by hand; markers, p-values, Spearman's rho and Kendall's tau
are checked against scipy computed here on the numbers written, independently of the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from uptrain.report import rag_study
from uptrain.report.findings import FAILS, HOLDS, HOLDS_NS, NOT_RUN
from uptrain.report.rag_study import main, rag_study as run_study

C = "squad_test"
N = 12
QIDS = [f"q{i:02d}" for i in range(N)]
B = np.linspace(0.25, 0.65, N)  # Human's per-question F1 at top-5
REPO = Path(__file__).resolve().parents[1]  # the checkout (the package may be installed elsewhere)


def noise(scale: float, seed: int) -> np.ndarray:
    """Zero-mean spread of standard deviation ``scale``: added to a difference it keeps its mean."""
    x = np.random.default_rng(seed).normal(size=N)
    x -= x.mean()
    return scale * x / x.std()


def ones(c: int) -> np.ndarray:
    """Answer recall per question: the first c questions have a gold answer in the passages (nested sets)."""
    return np.array([1.0] * c + [0.0] * (N - c))


def qv(values) -> dict[str, float]:
    return {q: float(v) for q, v in zip(QIDS, values)}


def write_run(root: Path, job: str, name: str, label: str, f1: np.ndarray | None, ar: int, *, ks=(1, 5),
              gold_f1: float | None = 0.95, closed_f1: float | None = 0.05, per_query: bool = True,
              rag: bool = True, collection: str = C) -> Path:
    """A job directory whose metrics.json has the keys the rag path and the pipeline write."""
    d = root / job
    d.mkdir(parents=True, exist_ok=True)
    f1 = B if f1 is None else f1
    recall = {1: ones(ar // 2), 5: ones(ar), 10: ones(min(N, ar + 2)), 20: ones(min(N, ar + 2))}
    retrieval = {"R@1": recall[1], "R@5": recall[5], "nDCG@10": np.clip(f1 + 0.3, 0, 1)}
    pq_rag, agg_rag, at_k = {}, {}, {}
    for k in ks:
        f = f1 if k == 5 else 0.8 * f1
        per = {"EM": (f > 0.45).astype(float), "F1": f, "ROUGE-L": 0.9 * f, "BLEU-3": 0.6 * f, "BLEU-4": 0.5 * f,
               **{f"answer_recall@{r}": recall[r] for r in (1, 5, 10, 20)}}
        pq_rag[f"{collection}@{k}"] = {m: qv(v) for m, v in per.items()}
        agg = {m: float(np.mean(v)) for m, v in per.items()}
        agg["BLEU-4"] = round(0.3 * float(np.mean(f)), 6)  # corpus BLEU: not the mean of the sentence values
        agg["BLEU-3"] = round(0.4 * float(np.mean(f)), 6)
        agg_rag[f"{collection}@{k}"] = agg
        at_k[str(k)] = {**{m: agg[m] for m in ("EM", "F1", "ROUGE-L", "BLEU-3", "BLEU-4")},
                        f"answer_recall@{k}": agg[f"answer_recall@{k}"], "seconds_per_question": 0.1 * k + 0.5,
                        "empty_answers": 0}
    refs = {}
    if gold_f1 is not None:
        refs["gold"] = {"EM": gold_f1 - 0.1, "F1": gold_f1, "ROUGE-L": gold_f1 - 0.05, "BLEU-3": 0.2, "BLEU-4": 0.15,
                        "k": max(ks), "seconds_per_question": 0.4}
    if closed_f1 is not None:
        refs["none"] = {"EM": 0.0, "F1": closed_f1, "ROUGE-L": 0.07, "BLEU-3": 0.0, "BLEU-4": 0.01, "k": 0,
                        "seconds_per_question": 0.2}
    entry = {"questions": N, "k": max(ks), "at_k": at_k, "references": refs,
             **{f"answer_recall@{r}": float(np.mean(recall[r])) for r in (1, 5, 10, 20)},
             **{m: at_k[str(max(ks))][m] for m in ("EM", "F1", "ROUGE-L", "BLEU-3", "BLEU-4")}}
    ret_agg = {m: float(np.mean(v)) for m, v in retrieval.items()}
    groups = {"in_domain": {"collections": {collection: ret_agg}, "average": ret_agg}}
    pq = {"in_domain": {collection: {m: qv(v) for m, v in retrieval.items()}}}
    if rag:
        groups["rag"] = {"collections": agg_rag}
        pq["rag"] = pq_rag
    metrics = {
        "name": name, "report_row": {"group": "baselines", "label": label},
        "overrides": [f"+exp={name}", "profile=tiny"], "label_source": "", "human_ratio": None,
        "results": {collection: ret_agg, **(agg_rag if rag else {})}, "groups": groups,
        "per_query": pq if per_query else {},
        "rag_generator": {"backend": {"_target_": "x", "model": "tiny-gen"}},
    }
    if rag:
        metrics["rag"] = {collection: entry}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


REPLUG_F1 = B - 0.1 + noise(0.02, 1)
# name -> (label, per-question F1 at top-5, number of questions with the answer in the top-5)
MAIN = {
    "rag_zeroshot": ("Zero-shot encoder", B - 0.25 + noise(0.03, 2), 2),
    "rag_bm25": ("BM25", B - 0.2 + noise(0.03, 3), 3),
    "rag_human": ("Human", B, 7),
    "rag_replug": ("REPLUG", REPLUG_F1, 5),
    "rag_replug_human": ("REPLUG (Human)", REPLUG_F1 + 0.02 + noise(0.15, 4), 6),  # above, not significantly
    "rag_relsel": ("RelSel", B - 0.05 + noise(0.05, 5), 6),
    "rag_utilsel": ("UtilSel", REPLUG_F1 + 0.2 + noise(0.02, 6), 10),  # clearly above REPLUG and Human
    "rag_utilrank": ("UtilRank", REPLUG_F1 + 0.15 + noise(0.02, 7), 10),
    "rag_replug_cl20": ("REPLUG-CL20%", B - 0.03 + noise(0.02, 8), 7),
    "rag_utilsel_cl20": ("UtilSel-CL20%", B - 0.005 + noise(0.1, 9), 7),  # close to Human, not significantly below
}
PAPER_ORDER = ["rag_bm25", "rag_zeroshot", "rag_human", "rag_replug", "rag_replug_human", "rag_relsel", "rag_utilsel",
               "rag_utilrank", "rag_replug_cl20", "rag_utilsel_cl20"]


def write_sweep(root: Path, runs: dict, **kw) -> Path:
    # jobs numbered in reverse so the table's order cannot come from the folder order
    for i, (name, (label, f1, ar)) in enumerate(reversed(list(runs.items()))):
        write_run(root, str(i), name, label, f1, ar, **kw)
    return root


@pytest.fixture(scope="module")
def main_sweep(tmp_path_factory):
    root = write_sweep(tmp_path_factory.mktemp("sweep"), MAIN)
    # a job's copy of its baseline, with other numbers: the real rag_human run must be the row
    write_run(root / "0", "baseline_rag_human", "rag_human", "Human", B * 0 + 0.01, 1)
    out = root.parent / (root.name + "_out")
    data = run_study([root], out, references=[])
    return root, out, data


def row(data, name):
    rows = [r for r in data["rows"] if r["name"] == name]
    assert len(rows) == 1, [r["name"] for r in data["rows"]]
    return rows[0]


def finding(data, fid):
    return next(f for f in data["findings"] if f["id"] == fid)


def read_pq(root: Path) -> dict[str, dict]:
    out = {}
    for p in root.glob("*/metrics.json"):
        m = json.loads(p.read_text())
        out[m["name"]] = m["per_query"]
    return out


def per_q(pq: dict, key: str) -> dict[str, float] | None:
    """The per-question values of a table column, read from the metrics.json layout directly."""
    if key in ("R@1", "R@5", "nDCG@10"):
        return pq.get("in_domain", {}).get(C, {}).get(key)
    if key.startswith("answer_recall@"):
        return pq.get("rag", {}).get(f"{C}@5", {}).get(key)
    measure, _, k = key.partition("@top")
    return pq.get("rag", {}).get(f"{C}@{k}", {}).get(measure)


def scipy_marker(a: dict, b: dict, better: str, worse: str) -> str:
    x = np.array([a[q] for q in QIDS])
    y = np.array([b[q] for q in QIDS])
    d = x - y
    if np.all(d == 0):
        return ""
    p = stats.ttest_rel(x, y).pvalue
    if not (p < 0.05):
        return ""
    return better if d.mean() > 0 else worse


# ---- the table ---------------------------------------------------------------------------------

def test_rows_in_the_papers_order_with_values_as_written(main_sweep):
    root, _, data = main_sweep
    assert [r["name"] for r in data["rows"]] == PAPER_ORDER
    assert [r["label"] for r in data["rows"]] == [MAIN[n][0] for n in PAPER_ORDER]
    assert data["generation_ks"] == [1, 5]
    headers = [c["header"] for c in data["columns"]]
    assert headers[:6] == ["R@1", "R@5", "nDCG@10", "AR@1", "AR@5", "AR@20"]
    assert headers[6:] == [f"{m} top-{k}" for k in (1, 5) for m in ("EM", "F1", "ROUGE-L", "BLEU-4")]
    us = row(data, "rag_utilsel")["cells"]
    f1 = MAIN["rag_utilsel"][1]
    assert us["F1@top5"]["value"] == pytest.approx(f1.mean())
    assert us["F1@top1"]["value"] == pytest.approx((0.8 * f1).mean())
    assert us["answer_recall@5"]["value"] == pytest.approx(10 / N)
    assert us["answer_recall@1"]["value"] == pytest.approx(5 / N)
    assert us["nDCG@10"]["value"] == pytest.approx(np.clip(f1 + 0.3, 0, 1).mean())
    # BLEU-4: the corpus value the run wrote, not the mean of its per-question sentence BLEU
    assert us["BLEU-4@top5"]["value"] == pytest.approx(round(0.3 * f1.mean(), 6))
    assert us["BLEU-4@top5"]["value"] != pytest.approx((0.5 * f1).mean())
    # the baseline copy inside job 0 (other numbers) is not the Human row
    assert row(data, "rag_human")["cells"]["F1@top5"]["value"] == pytest.approx(B.mean())
    assert not row(data, "rag_human")["baseline_copy"]
    refs = data["references"]
    assert set(refs) == {"gold", "none"}
    assert refs["gold"]["values"]["F1"] == pytest.approx(0.95) and refs["gold"]["k"] == 5
    assert refs["none"]["values"]["F1"] == pytest.approx(0.05)
    assert row(data, "rag_utilsel")["seconds_per_question"] == {"1": pytest.approx(0.6), "5": pytest.approx(1.0)}


def test_markers_are_exactly_the_significant_paired_tests(main_sweep):
    root, _, data = main_sweep
    pq = read_pq(root)
    partner = {"rag_utilsel_cl20": "rag_replug_cl20", "rag_replug_cl20": None, "rag_replug": None}
    seen = {"+": 0, "-": 0, "†": 0}
    for r in data["rows"]:
        name = r["name"]
        replug = partner.get(name, "rag_replug")
        for c in data["columns"]:
            mine = per_q(pq[name], c["key"])
            want = "" if name == "rag_human" else scipy_marker(mine, per_q(pq["rag_human"], c["key"]), "+", "-")
            if replug:
                want += scipy_marker(mine, per_q(pq[replug], c["key"]), "†", "")
            got = r["cells"][c["key"]]["marker"]
            assert got == want, (name, c["key"])
            for m in seen:
                seen[m] += m in got
    assert all(seen.values()), seen  # the fixture exercises every marker
    us = row(data, "rag_utilsel")["cells"]["F1@top5"]
    assert us["marker"] == "+†"
    assert us["replug"]["p"] == pytest.approx(stats.ttest_rel(MAIN["rag_utilsel"][1], REPLUG_F1).pvalue, rel=1e-9)
    assert us["human"]["n"] == N
    assert row(data, "rag_replug")["cells"]["F1@top5"]["marker"] == "-"
    assert row(data, "rag_human")["cells"]["F1@top5"]["human"] is None  # no test against itself
    assert "†" not in row(data, "rag_replug_human")["cells"]["F1@top5"]["marker"]  # above REPLUG, not significantly
    # the curriculum's dagger compares with REPLUG at the same share of human labels
    assert row(data, "rag_utilsel_cl20")["replug"]["name"] == "rag_replug_cl20"
    assert row(data, "rag_relsel")["replug"]["name"] == "rag_replug"
    assert data["stats"]["dagger_fallbacks"] == []
    # BLEU-4's test uses the per-question sentence BLEU the run stored
    bleu = row(data, "rag_utilsel")["cells"]["BLEU-4@top5"]["replug"]["p"]
    assert bleu == pytest.approx(stats.ttest_rel(0.5 * MAIN["rag_utilsel"][1], 0.5 * REPLUG_F1).pvalue, rel=1e-9)


def test_curriculum_dagger_falls_back_to_replug_and_says_so(tmp_path):
    runs = {n: MAIN[n] for n in ("rag_human", "rag_replug", "rag_utilsel_cl20")}
    data = run_study([write_sweep(tmp_path / "s", runs)], tmp_path / "out", references=[])
    assert row(data, "rag_utilsel_cl20")["replug"]["name"] == "rag_replug"
    assert data["stats"]["dagger_fallbacks"] == ["rag_utilsel_cl20"]
    assert any("same share" in n for n in data["notes"])
    assert "(no `rag_replug_cl20`)" in (tmp_path / "out" / "study.md").read_text()


# ---- findings ----------------------------------------------------------------------------------

def test_verdicts_on_the_main_sweep(main_sweep):
    _, _, data = main_sweep
    a = finding(data, "utility_over_replug")
    assert a["status"] == HOLDS
    p = stats.ttest_rel(MAIN["rag_utilsel"][1], REPLUG_F1).pvalue
    assert f"rag_utilsel {MAIN['rag_utilsel'][1].mean():.3f} vs rag_replug {REPLUG_F1.mean():.3f}" in a["evidence"]
    assert f"p = {p:.3g}" in a["evidence"]
    assert len(a["checks"]) == 4  # UtilSel and UtilRank, F1 and answer recall
    b = finding(data, "replug_human_over_replug")  # above, but not significantly
    assert b["status"] == HOLDS_NS
    assert all(c["test"]["p"] >= 0.05 for c in b["checks"])
    assert finding(data, "cl20_close_to_human")["status"] == HOLDS
    d = finding(data, "llm_matches_human")
    assert d["status"] == HOLDS and "beats" in d["evidence"]
    assert finding(data, "retrieval_to_answers")["status"] == HOLDS
    assert data["generator_check"]["status"] == "ok"


def test_spearman_rho_is_scipys_on_the_runs_values(main_sweep):
    _, _, data = main_sweep
    xs = [MAIN[n][2] / N for n in PAPER_ORDER]
    ys = [MAIN[n][1].mean() for n in PAPER_ORDER]
    want = stats.spearmanr(xs, ys)
    rec = finding(data, "retrieval_to_answers")["checks"][0]
    assert rec["n"] == len(PAPER_ORDER)
    assert rec["rho"] == pytest.approx(want.statistic)
    assert rec["p"] == pytest.approx(want.pvalue)
    assert rec["rho"] > 0.9


def test_ties_do_not_hold_and_missing_runs_are_not_run(tmp_path):
    runs = {"rag_human": MAIN["rag_human"], "rag_replug": MAIN["rag_replug"],
            "rag_replug_human": ("REPLUG (Human)", REPLUG_F1, 5),  # the same values as REPLUG
            "rag_utilsel": ("UtilSel", REPLUG_F1, 5), "rag_utilrank": ("UtilRank", REPLUG_F1 + 0.3, 9)}
    data = run_study([write_sweep(tmp_path / "s", runs)], tmp_path / "out", references=[])
    b = finding(data, "replug_human_over_replug")
    assert b["status"] == FAILS
    assert all(c["test"]["p"] == 1.0 for c in b["checks"])
    assert row(data, "rag_replug_human")["cells"]["F1@top5"]["marker"] == "-"  # below Human; no dagger on a tie
    a = finding(data, "utility_over_replug")  # UtilRank far above, UtilSel tied: one check fails
    assert a["status"] == FAILS
    assert row(data, "rag_utilsel")["cells"]["F1@top5"]["marker"] == "-"
    c = finding(data, "cl20_close_to_human")
    assert c["status"] == NOT_RUN and "rag_utilsel_cl20" in c["evidence"]
    e = finding(data, "retrieval_to_answers")
    assert e["status"] in (HOLDS, HOLDS_NS, FAILS)  # 4 runs: evaluated
    # without REPLUG, the findings that need it are not run, and nothing crashes
    (tmp_path / "s2").mkdir()
    write_run(tmp_path / "s2", "0", "rag_utilsel", "UtilSel", None, 6)
    write_run(tmp_path / "s2", "1", "rag_replug", "REPLUG", None, 6)
    data = run_study([tmp_path / "s2"], tmp_path / "out2", references=[])
    assert finding(data, "utility_over_replug")["status"] == NOT_RUN
    assert finding(data, "utility_over_replug")["evidence"] == "missing runs: rag_utilrank"
    assert finding(data, "retrieval_to_answers")["status"] == NOT_RUN  # one run: no correlation
    assert row(data, "rag_utilsel")["cells"]["F1@top5"]["marker"] == ""


@pytest.mark.parametrize("f1, status", [
    (B - 0.05 + noise(0.3, 11), FAILS),     # not significantly below, but more than 0.01 below
    (B - 0.008 + noise(0.001, 12), FAILS),  # within 0.01, but significantly below
    (B - 0.01 + noise(0.2, 13), HOLDS),     # exactly 0.01 below (rounding), not significant
    (B + 0.05 + noise(0.01, 14), HOLDS),    # above
])
def test_cl20_close_needs_both_conditions(tmp_path, f1, status):
    runs = {"rag_human": MAIN["rag_human"], "rag_utilsel_cl20": ("UtilSel-CL20%", f1, 7)}
    data = run_study([write_sweep(tmp_path / "s", runs)], tmp_path / "out", references=[])
    c = finding(data, "cl20_close_to_human")
    assert c["status"] == status, c["evidence"]
    assert f"p = {stats.ttest_rel(f1, B).pvalue:.3g}" in c["evidence"]


def test_llm_short_of_human_does_not_hold(tmp_path):
    runs = {"rag_human": MAIN["rag_human"], "rag_utilsel": ("UtilSel", B - 0.1 + noise(0.02, 15), 7)}
    data = run_study([write_sweep(tmp_path / "s", runs)], tmp_path / "out", references=[])
    d = finding(data, "llm_matches_human")
    assert d["status"] == FAILS and "short" in d["evidence"]


def test_a_run_above_the_gold_passages_breaks_finding_e_and_the_generator_check(tmp_path):
    data = run_study([write_sweep(tmp_path / "s", MAIN, gold_f1=0.2)], tmp_path / "out", references=[])
    e = finding(data, "retrieval_to_answers")
    assert e["status"] == FAILS
    above = e["checks"][-1]["above"]
    assert {a.split(" ")[0] for a in above} >= {"UtilSel", "Human"}
    assert data["generator_check"]["status"] == "low"
    assert "answers poorly even" in data["generator_check"]["text"]
    assert "answer recall" in data["generator_check"]["text"]
    text = (tmp_path / "out" / "study.md").read_text()
    assert data["generator_check"]["text"] in text


def test_constant_answers_with_varying_retrieval_do_not_hold(tmp_path):
    runs = {n: (MAIN[n][0], B * 0 + 0.1, MAIN[n][2]) for n in ("rag_human", "rag_replug", "rag_utilsel", "rag_bm25")}
    data = run_study([write_sweep(tmp_path / "s", runs, gold_f1=None)], tmp_path / "out", references=[])
    e = finding(data, "retrieval_to_answers")
    assert e["status"] == FAILS and "rho undefined" in e["evidence"]
    assert "no gold-passage reference" in e["evidence"]
    # with answers that do vary, the missing upper bound leaves the finding not run
    runs = {n: MAIN[n] for n in ("rag_human", "rag_replug", "rag_utilsel", "rag_bm25")}
    data = run_study([write_sweep(tmp_path / "s2", runs, gold_f1=None)], tmp_path / "out2", references=[])
    e = finding(data, "retrieval_to_answers")
    assert e["status"] == NOT_RUN and "Spearman rho" in e["evidence"] and "no gold-passage reference" in e["evidence"]
    assert data["generator_check"]["status"] == NOT_RUN
    assert "gold" not in data["references"]


def test_missing_depth_and_per_query_values_are_reported_not_crashed(tmp_path):
    root = tmp_path / "s"
    write_run(root, "0", "rag_human", "Human", None, 7, ks=(1,))
    write_run(root, "1", "rag_replug", "REPLUG", REPLUG_F1, 5, ks=(1,))
    write_run(root, "2", "rag_utilsel", "UtilSel", MAIN["rag_utilsel"][1], 10, ks=(1,), per_query=False)
    write_run(root, "5", "rag_utilrank", "UtilRank", MAIN["rag_utilrank"][1], 10, ks=(1,))
    write_run(root, "3", "rag_relsel", "RelSel", None, 6, rag=False)  # retrieval only
    write_run(root, "4", "other", "Other", None, 6, collection="nq")  # another collection: not a row
    data = run_study([root], tmp_path / "out", references=[])
    assert [r["name"] for r in data["rows"]] == ["rag_human", "rag_replug", "rag_relsel", "rag_utilsel", "rag_utilrank"]
    assert data["generation_ks"] == [1]
    a = finding(data, "utility_over_replug")
    assert a["status"] == NOT_RUN and "F1 at top-5: not evaluated" in a["evidence"]
    us = row(data, "rag_utilsel")["cells"]["F1@top1"]
    assert us["value"] is not None and us["marker"] == "" and us["human"] is None
    assert data["stats"]["tests_without_per_question"] > 0
    assert all(v["value"] is None for k, v in row(data, "rag_relsel")["cells"].items() if "@top" in k)
    assert data["stats"]["cells_missing"] >= 4
    assert len(data["stats"]["skipped_without_collection"]) == 1
    text = (tmp_path / "out" / "study.md").read_text()
    assert "tests not made" in text and "without collection" in text


# ---- the paper ---------------------------------------------------------------------------------

PAPER_CSV = """table,group,method,collection,measure,value,marker
5,,Human,NQ,Recall@5,50.0,
5,Llama-3.1-8B,Human,NQ,F1,50.0,
5,,REPLUG,NQ,Recall@5,40.0,-
5,Llama-3.1-8B,REPLUG,NQ,F1,45.0,-
5,,UtilSel,NQ,Recall@5,60.0,+†
5,Llama-3.1-8B,UtilSel,NQ,F1,48.0,†
5,Llama-3.1-8B,UtilSel,NQ,BERTScore-F1,60.0,
5,Llama-3.1-8B,UtilRank (CL 100%),NQ,F1,52.0,
3,Llama-3.1-8B,Human,MS MARCO QA,ROUGE-L,35.0,
3,Llama-3.1-8B,REPLUG,MS MARCO QA,ROUGE-L,33.0,
3,Llama-3.1-8B,UtilSel,MS MARCO QA,ROUGE-L,34.0,
"""


def test_paper_side_by_side_and_the_order_of_methods(tmp_path, main_sweep):
    root, _, _ = main_sweep
    csv_path = tmp_path / "paper.csv"
    csv_path.write_text(PAPER_CSV, encoding="utf-8")
    data = run_study([root], tmp_path / "out", references=[csv_path])
    cmp = data["paper"]
    assert cmp["not_compared"] == {"measure BERTScore-F1": 1}
    t5 = cmp["tables"]["5"]
    assert t5["shared"] == ["rag_human", "rag_replug", "rag_utilsel"]
    assert t5["not_run_here"] == ["rag_utilrank_cl100"]
    names = ["rag_human", "rag_replug", "rag_utilsel"]
    f1 = next(o for o in cmp["orderings"] if o["table"] == "5" and o["measure"] == "F1")
    ours = [MAIN[n][1].mean() for n in names]
    want = stats.kendalltau([0.50, 0.45, 0.48], ours)
    assert f1["methods"] == names and f1["ours"] == "F1@top5"
    assert f1["tau"] == pytest.approx(want.statistic) and f1["p"] == pytest.approx(want.pvalue)
    assert f1["paper_order"] == "Human > UtilSel > REPLUG"
    assert f1["our_order"] == "UtilSel > Human > REPLUG"
    rec = next(o for o in cmp["orderings"] if o["table"] == "5" and o["measure"] == "Recall@5")
    assert rec["ours"] == "answer_recall@5" and rec["tau"] == pytest.approx(1.0)  # 60 > 50 > 40 and 10 > 7 > 5
    rouge = next(o for o in cmp["orderings"] if o["table"] == "3")
    assert rouge["ours"] == "ROUGE-L@top1"
    text = (tmp_path / "out" / "study.md").read_text()
    assert "### Table 5 (top-5)" in text and "### Table 3 (top-1)" in text
    assert text.index("### Table 5") < text.index("### Table 3")
    assert f"| UtilSel | {100 * 10 / N:.1f}" in text  # ours in percent beside the paper's
    assert "48.0†" in text and "UtilRank (CL 100%)" in text
    a = finding(data, "utility_over_replug")
    assert "48.0† vs 45.0- (NQ, Llama-3.1-8B)" in a["paper"] and "above in 1 of 1" in a["paper"]
    assert "60.0+† vs 40.0- (NQ)" in a["paper"]


def test_the_repositorys_paper_files_map_every_method():
    files = [REPO / "experiments" / "utility_annotation" / f for f in ("reference_table3_rag.csv",
                                                                       "reference_table5_rag.csv")]
    if not all(f.is_file() for f in files):
        pytest.skip("the paper's reference files are not in this checkout")
    paper = rag_study.load_paper(files, lambda m: None)
    assert not [k for k in paper["not_compared"] if k.startswith("method")]
    assert {r["experiment"] for r in paper["rows"]} == set(rag_study.PAPER_METHODS)
    assert paper["not_compared"] == {"measure BERTScore-F1": 22, "measure BLEU-3": 22}
    nq = next(r for r in paper["rows"] if r["experiment"] == "rag_utilsel" and r["collection"] == "NQ"
              and r["measure"] == "F1" and r["group"] == "Llama-3.1-8B")
    assert nq["value"] == pytest.approx(0.588) and nq["marker"] == "+†"


# ---- files and the command ---------------------------------------------------------------------

def test_cli_writes_the_three_files(tmp_path, main_sweep, capsys):
    root, _, _ = main_sweep
    csv_path = tmp_path / "paper.csv"
    csv_path.write_text(PAPER_CSV, encoding="utf-8")
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--reference", str(csv_path)]) == 0
    assert (out / "rag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "study.json").read_text())
    assert [f["status"] for f in data["findings"]] == [HOLDS, HOLDS_NS, HOLDS, HOLDS, HOLDS]
    assert data["plot"] == "rag.png"
    text = (out / "study.md").read_text()
    for section in ("## The RAG table", "### Generator cost", "## The paper beside it", "### The order of the methods",
                    "## Findings", "## Plot", "## Runs"):
        assert section in text
    assert "| UtilSel | `rag_utilsel` |" in text
    assert "*Gold passages (upper bound)*" in text and "*Closed book (no passage)*" in text
    assert f"{MAIN['rag_utilsel'][1].mean():.3f}+†" in text
    assert "sentence BLEU-4" in text
    assert "finding utility_over_replug: holds" in capsys.readouterr().out
    json.dumps(data, allow_nan=False)  # no NaN in the artifact


def test_cli_errors_exit_2(tmp_path, main_sweep, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    assert main([str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err
    root, _, _ = main_sweep
    assert main([str(root), "--out", str(tmp_path / "o"), "--collection", "nq_test"]) == 2
    err = capsys.readouterr().err
    assert "nq_test" in err and "squad_test" in err
    assert not (tmp_path / "o" / "study.md").exists()


def test_a_bad_reference_file_is_reported_not_fatal(tmp_path, main_sweep):
    root, _, _ = main_sweep
    bad = tmp_path / "bad.csv"
    bad.write_text("method,value\nHuman,1\n")
    data = run_study([root], tmp_path / "out", references=[bad])
    assert data["paper"]["problems"] and "lacks the columns" in data["paper"]["problems"][0]
    assert data["paper"]["orderings"] == []
    assert "Not used:" in (tmp_path / "out" / "study.md").read_text()
    assert math.isclose(row(data, "rag_human")["cells"]["F1@top5"]["value"], B.mean())
