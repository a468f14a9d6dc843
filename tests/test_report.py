"""The Markdown report and the terminal table."""

from __future__ import annotations

import re

import pytest

from uptrain.evaluate.metrics import EvalResult
from uptrain.report.markdown import console_table, render_report, results_table

MEASURES = ["RR@10", "nDCG@10"]


def result(rr: float, ndcg: float, n: int = 5) -> EvalResult:
    return EvalResult(MEASURES, {"RR@10": rr, "nDCG@10": ndcg}, {"RR@10": {}, "nDCG@10": {}}, n)


@pytest.fixture
def results():
    return {
        "in-domain": {"msmarco-dev": result(0.64512, 0.7)},
        "out-of-domain": {
            "trec-covid": result(0.5, 0.61237),
            "nfcorpus": result(0.25, 0.33333),
            "cranfield": result(0.123456, 0.9),
        },
    }


@pytest.fixture
def markers():
    return {
        "in-domain": {"msmarco-dev": {"RR@10": "+", "nDCG@10": ""}},
        "out-of-domain": {"trec-covid": {"RR@10": "-", "nDCG@10": "+†"}},
    }


def row(table: str, label: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{table}")


def test_table_values_and_markers(results, markers):
    table = results_table(results["in-domain"], MEASURES, markers["in-domain"])
    assert row(table, "Collection") == ["Collection", "RR@10", "nDCG@10"]
    assert row(table, "msmarco-dev") == ["msmarco-dev", "0.6451+", "0.7000"]
    # a single collection has no Average row
    assert "Average" not in table
    ood = results_table(results["out-of-domain"], MEASURES, markers["out-of-domain"])
    assert row(ood, "trec-covid") == ["trec-covid", "0.5000-", "0.6124+†"]
    assert row(ood, "cranfield") == ["cranfield", "0.1235", "0.9000"]


def test_average_row_is_mean(results):
    table = results_table(results["out-of-domain"], MEASURES)
    avg = row(table, "Average")
    assert float(avg[1]) == pytest.approx((0.5 + 0.25 + 0.123456) / 3, abs=5e-5)
    assert float(avg[2]) == pytest.approx((0.61237 + 0.33333 + 0.9) / 3, abs=5e-5)
    assert avg[1:] == ["0.2912", "0.6152"]
    assert "Average" not in results_table(results["out-of-domain"], MEASURES, average_row=False)


def test_report_sections(results, markers):
    stats = {
        "msmarco-dev": {"name": "msmarco-dev", "docs": 1000, "queries": 50, "qrels": 55, "duplicate_qrels": 0},
        "cranfield": {"name": "cranfield", "docs": 1400, "queries": 225, "qrels": 1837, "empty_docs": 2},
    }
    stages = [
        {"stage": "data", "label": "data_msmarco-dev", "key": "abc123", "cache": "hit", "seconds": 0.01},
        {"stage": "evaluate", "label": "evaluate_msmarco-dev", "key": "def456", "cache": "built", "seconds": 1.5},
    ]
    config = "name: demo\neval:\n  measures: [RR@10, nDCG@10]\n"
    md = render_report(
        "uptrain run: demo", results, MEASURES, markers=markers, baseline_name="human-labels",
        stats=stats, config_yaml=config, stages=stages,
    )
    assert md.startswith("# uptrain run: demo\n")
    assert "## in-domain" in md and "## out-of-domain" in md
    assert "0.6451+" in md and "0.6124+†" in md
    legend = next(line for line in md.splitlines() if "significantly better" in line)
    assert "human-labels" in legend and "paired t-test" in legend and "p < 0.05" in legend
    # the Average row of the out-of-domain group is in the document
    assert "| Average | 0.2912 | 0.6152 |" in md

    collections = md.split("## Collections", 1)[1].split("##", 1)[0]
    assert row(collections, "cranfield")[1:4] == ["1400", "225", "1837"]
    assert "empty_docs: 2" in row(collections, "cranfield")[-1]
    assert row(collections, "msmarco-dev")[-1] == "none"

    stage_part = md.split("## Stages", 1)[1].split("##", 1)[0]
    data_row = row(stage_part, "data")
    eval_row = row(stage_part, "evaluate")
    assert "hit" in data_row and "built" in eval_row
    assert "`abc123`" in data_row and "1.50" in eval_row
    assert "1 cache hit(s), 1 built" in stage_part

    assert re.search(r"```yaml\nname: demo\neval:\n  measures: \[RR@10, nDCG@10\]\n```", md)


def test_report_without_baseline_has_no_legend(results):
    md = render_report("t", results, MEASURES)
    assert "significantly" not in md
    assert "## Stages" not in md and "```yaml" not in md


def test_console_table_aligns_columns(results, markers):
    text = console_table(results, MEASURES, markers=markers)
    blocks = text.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["in-domain", "out-of-domain"]
    ood = blocks[1].splitlines()[1:]
    assert ood[0].split() == ["Collection", "RR@10", "nDCG@10"]
    assert [l.split()[0] for l in ood[2:]] == ["trec-covid", "nfcorpus", "cranfield", "Average"]
    data = ood[2:]
    # every value of a column has its decimal point at the same position
    for col in (1, 2):
        positions = set()
        for line in data:
            tokens = list(re.finditer(r"\S+", line))
            tok = tokens[col]
            positions.add(tok.start() + tok.group().index("."))
        assert len(positions) == 1, data
    # headers end where the widest cell of their column ends
    header_ends = [m.end() for m in re.finditer(r"\S+", ood[0])]
    widest_ends = [max(list(re.finditer(r"\S+", l))[c].end() for l in data) for c in (1, 2)]
    assert header_ends[1] >= widest_ends[0] - 2 and header_ends[2] >= widest_ends[1] - 2
    assert "0.6124+†" in text and "0.2912" in text
    assert console_table(results, MEASURES).count("+") == 0
