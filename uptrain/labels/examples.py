"""The form every label source produces: one training query with its positives and negatives."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True, eq=False)
class LabelledQuery:
    """One training query: its text, its positives (by the label source) and its hard negatives.

    ``utilities`` (REPLUG) maps passage ids to utility scores when the labels are soft;
    ``weight`` is the query's weight in the loss (the largest weight of the sources that
    labelled it; 1 unless a spec sets weights). A click session sets ``serp`` (and, for IPS,
    ``propensities``): the example is then that SERP as it was shown, one per logged session.
    """

    query_id: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    utilities: Mapping[str, float] | None = None
    weight: float = 1.0
    grades: Mapping[str, int] | None = None  # graded labels (doc id -> grade) for pointwise multi-class losses
    # a logged SERP (click labels): the documents in rank order, trained on as shown (the group is this
    # list; ``positives`` are its clicked documents), and per rank its examination propensity (NaN: unknown)
    serp: tuple[str, ...] | None = None
    propensities: tuple[float, ...] | None = None


def stable_seed(*parts: object) -> int:
    """A seed from its parts that does not depend on Python's per-process hash salt."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")
