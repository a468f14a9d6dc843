"""Which of a query's positives a training step uses (arXiv 2504.05220: pos-one, pos-avg, pos-all).

LLM annotation yields a varying number of positives per query; the paper compares
training on one sampled positive, on up to the average number of positives, and on
all of them. Samplers are fitted once on the whole label set, then draw per query
per epoch from a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from typing import Sequence


class PositiveSampler:
    name = "base"

    def fit(self, positives_per_query: Sequence[Sequence[str]]) -> None:
        """See the whole training label set once (before training)."""

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PosOne(PositiveSampler):
    """pos-one: one positive drawn uniformly per query and epoch."""

    name = "pos_one"

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        return [rng.choice(list(positives))] if positives else []


class PosAvg(PositiveSampler):
    """pos-avg: up to k positives without replacement, k = ceil(mean #positives over labelled queries)."""

    name = "pos_avg"

    def __init__(self, k: int | None = None):
        if k is not None and k < 1:
            raise ValueError(f"sampling.k must be >= 1 or null, got {k}")
        self.k = k
        self.k_: int | None = k

    def fit(self, positives_per_query: Sequence[Sequence[str]]) -> None:
        if self.k is not None:
            self.k_ = self.k
            return
        counts = [len(set(p)) for p in positives_per_query if len(p) > 0]
        self.k_ = max(1, math.ceil(sum(counts) / len(counts))) if counts else 1

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        if self.k_ is None:
            raise RuntimeError("PosAvg.sample() called before fit(): k comes from the label set (or set sampling.k)")
        unique = list(dict.fromkeys(positives))
        return rng.sample(unique, min(self.k_, len(unique)))

    def __repr__(self) -> str:
        return f"PosAvg(k={self.k_})"


class PosAll(PositiveSampler):
    """pos-all: every positive of the query, in random order."""

    name = "pos_all"

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        unique = list(dict.fromkeys(positives))
        rng.shuffle(unique)
        return unique
