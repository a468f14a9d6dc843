"""The run's metrics as a tidy table: one row per run x collection x segment x measure.

``metrics.csv`` beside ``metrics.json`` is what pandas (``pd.read_csv``), spreadsheets and W&B
tables read directly. Columns:

=============  ==========================================================================
run            the experiment's name (``cfg.name``)
group          the evaluation group (``in_domain``, ``out_of_domain``, ...)
collection     the evaluated collection
segmentation   the query segmentation (``eval.segments`` name); ``all`` for every query
segment        the segment within it; ``all`` for every query
measure        the measure as configured (``nDCG@10``, ...)
value          the mean over the segment's queries
queries        how many queries the mean is over
marker         the significance marker against the baseline (``+``, ``-``, a dagger), or empty
=============  ==========================================================================
"""

from __future__ import annotations

import csv
import io
from typing import Mapping

COLUMNS = ("run", "group", "collection", "segmentation", "segment", "measure", "value", "queries", "marker")


def tidy_rows(run: str, results: Mapping, segments: Mapping | None = None, markers: Mapping | None = None,
              segment_markers: Mapping | None = None, owners: Mapping | None = None) -> list[dict]:
    """Rows of :data:`COLUMNS` from ``results`` (group -> collection -> EvalResult), ``segments``
    (group -> collection -> segment -> EvalResult) and ``owners`` (collection -> segment ->
    segmentation name)."""
    rows = []
    for group, by_collection in results.items():
        for collection, result in by_collection.items():
            marks = ((markers or {}).get(group) or {}).get(collection) or {}
            for measure in result.measures:
                if measure in result.aggregate:
                    rows.append(dict(run=run, group=group, collection=collection, segmentation="all", segment="all",
                                     measure=measure, value=result.aggregate[measure], queries=result.num_queries,
                                     marker=marks.get(measure, "")))
            segs = ((segments or {}).get(group) or {}).get(collection) or {}
            for name, seg in segs.items():
                seg_marks = (((segment_markers or {}).get(group) or {}).get(collection) or {}).get(name) or {}
                segmentation, segment = ((owners or {}).get(collection) or {}).get(name, ""), str(name)
                for measure in seg.measures:
                    if measure in seg.aggregate:
                        rows.append(dict(run=run, group=group, collection=collection, segmentation=segmentation,
                                         segment=segment, measure=measure, value=seg.aggregate[measure],
                                         queries=seg.num_queries, marker=seg_marks.get(measure, "")))
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "value": repr(float(row["value"]))})
    return buf.getvalue()
