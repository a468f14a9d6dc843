"""Held-out queries of a collection: a seeded split by query id that needs no data to compute.

A query is held out when a uniform number drawn from (seed, query id) falls below
``fraction``, so the split of a query never depends on which other queries a collection (or
its smoke-profile subsample) holds, and a label source can leave the held-out queries out
from their ids alone (``{source: human, holdout: {fraction, seed}}``). The held-out share is
``fraction`` in expectation, not exactly; the loaded subset's stats give the realised count.

:class:`QuerySubset` is the collection side: ``part: test`` keeps the held-out queries (with
their judgments, over the whole corpus), ``part: train`` the others. The click-vs-LLM study
evaluates on ``part: test`` of the collection its click log covers, while click and LLM labels
train on every query and human labels on the rest only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from uptrain.data.collection import Collection
from uptrain.data.sources import Source
from uptrain.errors import ConfigError

PARTS = ("train", "test")


def check_holdout(fraction: Any, seed: Any, where: str = "holdout") -> tuple[float, int]:
    try:
        f, s = float(fraction), int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: fraction must be a number in (0, 1) and seed an integer, got "
                          f"fraction={fraction!r}, seed={seed!r}") from None
    if not 0 < f < 1:
        raise ConfigError(f"{where}: fraction must be in (0, 1), got {fraction!r}")
    return f, s


def holdout_draw(query_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from (seed, query id), stable across processes and machines."""
    digest = hashlib.sha256(f"holdout\x1f{int(seed)}\x1f{query_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def in_holdout(query_id: str, fraction: float, seed: int) -> bool:
    return holdout_draw(str(query_id), seed) < float(fraction)


class QuerySubset(Source):
    """The held-out (``part: test``) or remaining (``part: train``) queries of another source's
    collection, with their judgments and the whole corpus (see the module docstring)."""

    kind = "query_subset"

    def __init__(self, source: Source, part: str = "test", fraction: float = 0.3, seed: int = 0,
                 name: str | None = None, max_queries: int | None = None, max_docs: int | None = None):
        if not isinstance(source, Source):
            raise ConfigError(f"QuerySubset.source must be a collection source config (with a _target_), got {source!r}")
        if part not in PARTS:
            raise ConfigError(f"QuerySubset.part must be one of {', '.join(PARTS)}, got {part!r}")
        self.source = source
        self.part = part
        self.fraction, self.seed = check_holdout(fraction, seed, f"QuerySubset of {source.name}")
        super().__init__(name or f"{source.name}_{part}", max_queries=max_queries, max_docs=max_docs)

    def validate(self) -> None:
        self.source.validate()

    def provides_answers(self) -> bool:
        return self.source.provides_answers()

    def content_spec(self) -> dict:
        return {"of": self.source.spec(), "part": self.part, "fraction": self.fraction, "seed": self.seed}

    def load_full(self) -> Collection:
        full = self.source.load()
        held = self.part == "test"
        keep = [q for q in full.queries if in_holdout(q, self.fraction, self.seed) == held]
        if not keep:
            raise ConfigError(
                f"QuerySubset {self.name}: none of the {len(full.queries)} queries of {full.name} falls in part "
                f"'{self.part}' (fraction {self.fraction:g}, seed {self.seed}); use a larger collection or fraction"
            )
        queries = {q: full.queries[q] for q in keep}
        qrels = {q: dict(full.qrels[q]) for q in keep if q in full.qrels}
        stats = dict(full.stats)
        stats["query_subset"] = (f"part {self.part} of {full.name}: {len(keep)} of {len(full.queries)} queries "
                                 f"(held-out fraction {self.fraction:g}, seed {self.seed})")
        answers = {q: list(full.answers[q]) for q in keep if q in full.answers}
        return Collection(name=self.name, docs=dict(full.docs), queries=queries, qrels=qrels, stats=stats,
                          answers=answers)
