"""Query segments: every measure reported per named subset of a collection's queries.

A segmentation assigns each query of a collection to one named segment; the mean of a
measure over a segment is the mean of its per-query values there (the same query set as
the overall value: every judged query, 0 for a query without a ranking). Configured under
``eval.segments`` (name -> ``{_target_: ...}``), e.g.::

    eval:
      segments:
        length: {_target_: uptrain.evaluate.segments.QueryLength, edges: [5, 10]}
        freq:   {_target_: uptrain.evaluate.segments.SegmentFile, path: buckets.tsv, collection: my_log}

Built-in: :class:`QueryLength` (words per query, split at edges), :class:`SegmentFile`
(a ``query_id<TAB>segment`` file, the form any bucketing can be written in) and
:class:`QueryFunction` (any importable ``f(query_id, text) -> segment name``). The click
study adds frequency buckets and the judge study popularity segments as further classes.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Mapping, Sequence

from uptrain.errors import ConfigError
from uptrain.evaluate.metrics import EvalResult

log = logging.getLogger("uptrain")

UNASSIGNED = "unassigned"


class Segmentation(ABC):
    """Assigns queries to named segments; ``collections`` limits it to some collections (None: all)."""

    def __init__(self, collections: Sequence[str] | str | None = None):
        if isinstance(collections, str):
            collections = [collections]
        self.collections = list(collections) if collections is not None else None

    def applies_to(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    @abstractmethod
    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        """query id -> segment name, for every query given (``UNASSIGNED`` when it has none)."""

    def order(self) -> list[str] | None:
        """The segments' display order, when the segmentation knows it."""
        return None

    def prepare(self, ctx) -> None:
        """Build what the assignment needs from the run (``ctx``: the
        :class:`~uptrain.evaluate.paths.EvalContext`; ``ctx.require(name)`` gives any artifact a
        producer builds, e.g. the click log), after the evaluation paths ran. Default: nothing."""

    def report(self) -> dict[str, str]:
        """Report sections (title -> Markdown) describing the segmentation, after :meth:`prepare`."""
        return {}

    def summary(self) -> dict | None:
        """A JSON summary for ``metrics.json`` (``segmentations.<name>``), after :meth:`prepare`."""
        return None


class QueryLength(Segmentation):
    """Segments by words per query: ``edges`` [a, b] give ``words<=a``, ``words(a+1)-b``, ``words>b``
    (or the given ``labels``, one more than edges)."""

    def __init__(self, edges: Sequence[int] = (4, 8), labels: Sequence[str] | None = None,
                 collections: Sequence[str] | str | None = None):
        super().__init__(collections)
        self.edges = [int(e) for e in edges]
        if not self.edges or self.edges != sorted(set(self.edges)):
            raise ConfigError(f"QueryLength edges must be increasing integers, got {list(edges)}")
        names = [f"words<={self.edges[0]}"]
        names += [f"words{a + 1}-{b}" for a, b in zip(self.edges, self.edges[1:])]
        names.append(f"words>{self.edges[-1]}")
        if labels is not None:
            if len(labels) != len(names):
                raise ConfigError(f"QueryLength with {len(self.edges)} edges needs {len(names)} labels, got {list(labels)}")
            names = [str(x) for x in labels]
        self.names = names

    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for q, text in queries.items():
            n = len(str(text).split())
            i = sum(1 for e in self.edges if n > e)
            out[q] = self.names[i]
        return out

    def order(self) -> list[str]:
        return list(self.names)


class SegmentFile(Segmentation):
    """``query_id<TAB>segment`` lines (``#`` comments); queries not in the file are counted and
    reported as ``unassigned``."""

    def __init__(self, path: str, collection: str | None = None, collections: Sequence[str] | str | None = None):
        super().__init__(collections if collections is not None else collection)
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"segment file {self.path} does not exist (eval.segments: a query_id<TAB>segment file)")
        self.table: dict[str, str] = {}
        self._order: list[str] = []
        bad = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[1].strip():
                bad += 1
                continue
            seg = parts[1].strip()
            self.table[parts[0].strip()] = seg
            if seg not in self._order:
                self._order.append(seg)
        if bad:
            log.warning("segment file %s: %d malformed lines skipped (need query_id<TAB>segment)", self.path, bad)
        if not self.table:
            raise ConfigError(f"segment file {self.path} has no query_id<TAB>segment line")

    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        return {q: self.table.get(q, UNASSIGNED) for q in queries}

    def order(self) -> list[str]:
        return list(self._order)


class QueryFunction(Segmentation):
    """Any importable ``function(query_id, text) -> segment name`` (``fn: package.module.name``)."""

    def __init__(self, fn: str, collections: Sequence[str] | str | None = None):
        super().__init__(collections)
        module, _, attr = str(fn).rpartition(".")
        try:
            self.fn: Callable[[str, str], str] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"QueryFunction: cannot import '{fn}' ({exc})") from None

    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        return {q: str(self.fn(q, t)) for q, t in queries.items()}


def split_result(result: EvalResult, assignment: Mapping[str, str], order: Sequence[str] | None = None) -> dict[str, EvalResult]:
    """The result restricted to each segment's queries (means over that segment's per-query values)."""
    queries = sorted({q for m in result.per_query.values() for q in m})
    by_seg: dict[str, list[str]] = {}
    for q in queries:
        by_seg.setdefault(assignment.get(q, UNASSIGNED), []).append(q)
    names = [s for s in (order or []) if s in by_seg] + sorted(s for s in by_seg if s not in (order or []))
    out = {}
    for seg in names:
        qs = by_seg[seg]
        per_query = {m: {q: v[q] for q in qs if q in v} for m, v in result.per_query.items()}
        aggregate = {m: sum(v.values()) / len(v) if v else float("nan") for m, v in per_query.items()}
        out[seg] = EvalResult(measures=list(result.measures), aggregate=aggregate, per_query=per_query, num_queries=len(qs))
    return out


def segment_results(
    segmentations: Mapping[str, Segmentation], collection: str, queries: Mapping[str, str], result: EvalResult,
    owners: dict[str, str] | None = None,
) -> dict[str, EvalResult]:
    """Every applicable segmentation's segments of one collection's result, by segment name.

    Two segmentations that name a segment alike on one collection would overwrite each
    other: that is a configuration error. ``owners``, when given, receives segment -> segmentation.
    """
    out: dict[str, EvalResult] = {}
    for name, seg in segmentations.items():
        if not seg.applies_to(collection):
            continue
        assignment = seg.assign({q: queries.get(q, "") for q in {q for m in result.per_query.values() for q in m}})
        unassigned = sum(1 for s in assignment.values() if s == UNASSIGNED)
        if unassigned:
            log.warning("segments %s on %s: %d of %d queries unassigned", name, collection, unassigned, len(assignment))
        for s, r in split_result(result, assignment, seg.order()).items():
            if s in out:
                raise ConfigError(f"segment name '{s}' is produced twice on {collection} (segmentation '{name}' and an "
                                  "earlier one); give one of them other labels")
            out[s] = r
            if owners is not None:  # segment name -> the segmentation that made it
                owners[s] = name
    return out
