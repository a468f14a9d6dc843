"""A run's labels as Hugging Face dataset folders, Parquet tables and TREC qrels.

Written by hand: no library turns uptrain's artifacts into these layouts. Parquet goes through
pyarrow; the dataset folder is the layout ``datasets.load_dataset(folder)`` reads (``data/*.parquet``
and a dataset card whose YAML header names the split), so exporting needs no ``datasets`` install.

Training labels (one folder per phase, ``train_<phase>/``), one row per training example:

================  ===============================================================================
query_id          the query's id
query             the query text
pos / neg         the positive / negative passages' texts (FlagEmbedding's ``query, pos, neg``)
pos_ids / neg_ids their doc ids, in the same order
weight            the example's weight in the loss (1 unless the label spec weighs sources)
pos_scores /      REPLUG utilities of the passages, when the labels are soft (FlagEmbedding's
neg_scores        distillation columns)
pos_grades /      graded labels of the passages, when the labels carry grades
neg_grades
serp_ids,         a logged SERP in rank order and its examination propensities (NaN: unknown), for
propensities      click labels trained as shown
================  ===============================================================================

``train_<phase>/qrels.txt`` holds the same labels as TREC qrels: ``qid 0 docid rel`` with rel the
grade when the labels are graded, else 1 for a positive and 0 for a negative.

Other label artifacts (``labels/<artifact label>.parquet``): each JSON line of the artifact is a
row; a field that maps doc ids to values becomes two list columns, ``<field>_ids`` and
``<field>_values``; a field holding nested objects becomes a JSON string ``<field>_json``. The
qrels an artifact carries (judge, REPLUG, graded judgments) are copied as ``labels/<label>.qrels``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from uptrain.errors import UserError

log = logging.getLogger("uptrain")

MANIFEST = "_uptrain_artifact.json"

#: stage -> (its rows file, its qrels file or None)
LABEL_FILES: dict[str, tuple[str, str | None]] = {
    "pool": ("pool.jsonl", None),
    "annotate": ("labels.jsonl", None),
    "replug": ("utilities.jsonl", "qrels_replug.txt"),
    "judge_label": ("labels.jsonl", "qrels_judge.txt"),
    "grade": ("grades.jsonl", "qrels_grade.txt"),
    "rag_generate": ("answers.jsonl", None),
    "click_model": ("relevance.tsv", None),
}


class ExportError(UserError):
    """A run directory that cannot be exported (not a run, no artifacts, a damaged file)."""


def _stage_of(artifact: Path) -> str | None:
    try:
        return json.loads((artifact / MANIFEST).read_text()).get("stage")
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ExportError(f"{path}, line {n}: not a JSON line ({exc}); the artifact is damaged, "
                                      "`uptrain cache verify` finds and `uptrain cache rm` removes it") from None
    return rows


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def flatten_rows(rows: list[dict]) -> list[dict]:
    """Rows with nested fields made columnar (see the module docstring)."""
    kinds: dict[str, str] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, Mapping):
                kind = "map" if all(_is_scalar(x) for x in v.values()) else "json"
            elif isinstance(v, (list, tuple)):
                kind = "list" if all(_is_scalar(x) for x in v) else "json"
            else:
                kind = "scalar"
            if kinds.get(k, kind) != kind:
                kind = "json"  # a field of several shapes is kept whole
            kinds[k] = kind
    out = []
    for row in rows:
        flat = {}
        for k, kind in kinds.items():
            v = row.get(k)
            if kind == "map":
                v = v or {}
                flat[f"{k}_ids"] = [str(x) for x in v]
                flat[f"{k}_values"] = list(v.values())
            elif kind == "json":
                flat[f"{k}_json"] = json.dumps(v, ensure_ascii=False) if v is not None else None
            else:
                flat[k] = list(v) if isinstance(v, tuple) else v
        out.append(flat)
    return out


def write_parquet(rows: list[dict], path: Path) -> int:
    """Rows to Parquet; a column whose values arrow cannot type as one (e.g. numbers and text) is
    written as text, and said so. Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(k for r in rows for k in r))
    arrays, names = [], []
    for c in columns:
        values = [r.get(c) for r in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            log.warning("export %s: column %s mixes value types; written as text", path.name, c)
            arrays.append(pa.array([None if v is None else json.dumps(v) if not isinstance(v, str) else v
                                    for v in values]))
        names.append(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, names=names) if names else pa.table({}), path)
    return len(rows)


def _click_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [{"query": r["query"], "doc_id": r["doc"], "relevance": float(r["relevance"]),
                 "impressions": int(r["impressions"])} for r in csv.DictReader(f, delimiter="\t")]


# ---- training labels ------------------------------------------------------------------------------

def training_rows(examples: Iterable[dict], docs: Mapping[str, str], missing: Counter) -> list[dict]:
    """labels.jsonl rows of a training phase -> the dataset's rows (texts looked up in ``docs``;
    a doc id absent from the collection is counted in ``missing`` and given an empty text)."""

    def text(d: str) -> str:
        if d not in docs:
            missing[d] += 1
            return ""
        return docs[d]

    rows = []
    for ex in examples:
        pos, neg = [str(d) for d in ex.get("positives", [])], [str(d) for d in ex.get("negatives", [])]
        row = {"query_id": str(ex["query_id"]), "query": ex.get("query", ""), "pos": [text(d) for d in pos],
               "neg": [text(d) for d in neg], "pos_ids": pos, "neg_ids": neg, "weight": float(ex.get("weight", 1.0))}
        utilities = ex.get("utilities")
        if utilities:
            row["pos_scores"] = [float(utilities.get(d, math.nan)) for d in pos]
            row["neg_scores"] = [float(utilities.get(d, math.nan)) for d in neg]
        grades = ex.get("grades")
        if grades:
            row["pos_grades"] = [int(grades[d]) if d in grades else None for d in pos]
            row["neg_grades"] = [int(grades[d]) if d in grades else None for d in neg]
        if ex.get("serp"):
            row["serp_ids"] = [str(d) for d in ex["serp"]]
            row["propensities"] = [math.nan if p is None else float(p) for p in ex.get("propensities") or []]
        for k, v in ex.items():  # fields a label source adds (e.g. FAMOL's objective and bucket)
            if k not in ("query_id", "query", "positives", "negatives", "weight", "utilities", "grades", "serp",
                         "propensities") and _is_scalar(v):
                row[k] = v
        rows.append(row)
    return rows


def qrels_lines(examples: Iterable[dict]) -> list[str]:
    """TREC qrels of training labels: the grade when graded, else 1 (positive) / 0 (negative)."""
    lines = []
    for ex in examples:
        grades = ex.get("grades") or {}
        seen = set()
        for rel, ids in ((1, ex.get("positives", [])), (0, ex.get("negatives", []))):
            for d in ids:
                if d in seen:
                    continue
                seen.add(d)
                lines.append(f"{ex['query_id']} 0 {d} {int(grades[d]) if d in grades else rel}")
    return lines


DATASET_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---
# {title}

Training labels exported by uptrain (`uptrain export`) from the run `{run}`, training phase
`{phase}` (labels `{labels}`): {rows} examples, {positives} positive and {negatives} negative
passages. `qrels.txt` holds the same labels as TREC qrels.

```python
from datasets import load_dataset
ds = load_dataset("{folder}", split="train")
```

Columns: `query_id`, `query`, `pos` / `neg` (passage texts), `pos_ids` / `neg_ids` (their doc ids),
`weight`{extra}. `query, pos, neg` is FlagEmbedding's training format; (query, pos[i], neg[j]) are
the (anchor, positive, negative) triples of sentence-transformers' ranking losses.
"""


def export_phase(artifact: Path, docs: Mapping[str, str], out: Path, run: str, phase: str) -> dict:
    labels_file = artifact / "labels.jsonl"
    if not labels_file.is_file():
        raise ExportError(f"the training artifact {artifact} has no labels.jsonl: it was trained before uptrain "
                          "wrote its labels; re-run the experiment (the stage is rebuilt) and export again")
    examples = read_jsonl(labels_file)
    missing: Counter = Counter()
    rows = training_rows(examples, docs, missing)
    if missing:
        log.warning("export %s: %d doc ids (%d references) are not in the training collection; their text is empty",
                    phase, len(missing), sum(missing.values()))
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, out / "data" / "train-00000-of-00001.parquet")
    (out / "qrels.txt").write_text("".join(x + "\n" for x in qrels_lines(examples)))
    extra = "".join(f", `{c}`" for c in dict.fromkeys(k for r in rows for k in r)
                    if c not in ("query_id", "query", "pos", "neg", "pos_ids", "neg_ids", "weight"))
    settings = json.loads((artifact / MANIFEST).read_text()).get("spec", {}).get("spec", {})
    (out / "README.md").write_text(DATASET_CARD.format(
        title=f"{run}: {phase}", run=run, phase=phase, labels=json.dumps(settings.get("labels")), rows=len(rows),
        positives=sum(len(r["pos"]) for r in rows), negatives=sum(len(r["neg"]) for r in rows),
        folder=str(out), extra=extra))
    return {"kind": "training labels", "rows": len(rows), "path": str(out), "missing_doc_ids": len(missing)}


def export_artifact(label: str, stage: str, artifact: Path, out: Path) -> dict | None:
    rows_file, qrels_file = LABEL_FILES[stage]
    source = artifact / rows_file
    if not source.is_file():
        log.warning("export: %s (%s) has no %s; skipped", label, stage, rows_file)
        return None
    rows = _click_rows(source) if source.suffix == ".tsv" else flatten_rows(read_jsonl(source))
    target = out / "labels" / f"{label}.parquet"
    write_parquet(rows, target)
    done = {"kind": stage, "rows": len(rows), "path": str(target)}
    if qrels_file and (artifact / qrels_file).is_file():
        shutil.copyfile(artifact / qrels_file, out / "labels" / f"{label}.qrels")
        done["qrels"] = str(out / "labels" / f"{label}.qrels")
    return done


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict:
    """Export a run directory's labels (see the module docstring); returns what was written."""
    from uptrain.data.collection import Collection

    run_dir = Path(run_dir)
    links = run_dir / "artifacts"
    if not links.is_dir():
        raise ExportError(f"{run_dir} is not an uptrain run directory (it has no artifacts/ folder); give the "
                          "folder a run printed as its report's directory")
    out = Path(out) if out else run_dir / "export"
    run = run_dir.name
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        run = json.loads(metrics.read_text()).get("name", run)
    written: dict[str, dict] = {}
    docs: Mapping[str, str] | None = None
    for link in sorted(links.iterdir()):
        if not link.exists():
            log.warning("export: %s points at %s, which is gone from the cache; skipped", link, link.resolve())
            continue
        stage = _stage_of(link)
        if stage == "train":
            if docs is None:
                if not (links / "data_train").exists():
                    raise ExportError(f"{run_dir} has training phases but no data_train artifact for their texts")
                docs = Collection.load(links / "data_train").docs
            phase = link.name.removeprefix("train_")
            written[link.name] = export_phase(link, docs, out / link.name, run, phase)
        elif stage in LABEL_FILES:
            got = export_artifact(link.name, stage, link, out)
            if got:
                written[link.name] = got
    if not written:
        raise ExportError(f"{run_dir} links no training phase and no label artifact: nothing to export")
    (out / "export.json").write_text(json.dumps({"run": run, "run_dir": str(run_dir.resolve()), "written": written},
                                                indent=2))
    return written
