"""Which of a query's positives a training step uses (arXiv 2504.05220: pos-one, pos-avg, pos-all).

LLM annotation yields a varying number of positives per query; Zhang et al.,
"Leveraging LLMs for Utility-Focused Annotation" (arXiv 2504.05220) compare training
on one sampled positive (pos-one), on up to the average number of positives
(pos-avg), and on all of them (pos-all). Samplers are fitted once on the whole label
set, then draw per query per epoch from a seeded ``random.Random``. A sample is a
subset of the query's positives without duplicates, in an order drawn from ``rng``,
and is empty exactly when the query has no positive.
"""

from __future__ import annotations

import math
import random
from typing import Sequence


def _unique(positives: Sequence[str]) -> list[str]:
    # first-seen order, so the result depends only on the rng and the input order
    return list(dict.fromkeys(positives))


class PositiveSampler:
    """S(P) subset of P, |S(P)| >= 1 whenever P is non-empty; subclasses choose the subset.

    ``fit`` sees the positive ids of every training query once, before training;
    ``sample`` is called per query per epoch with that query's positive ids.
    """

    name = "base"

    def fit(self, positives_per_query: Sequence[Sequence[str]]) -> None:
        """See the whole training label set once (before training); stateless samplers ignore it."""

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PosOne(PositiveSampler):
    """pos-one (arXiv 2504.05220): S(P) = {p}, p ~ Uniform(P), drawn anew per query and epoch."""

    name = "pos_one"

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        unique = _unique(positives)
        return [rng.choice(unique)] if unique else []


class PosAvg(PositiveSampler):
    """pos-avg (arXiv 2504.05220): S(P) = min(k, |P|) positives of P drawn without replacement.

    k = ceil( (1 / |Q+|) * sum_{q in Q+} |P_q| ), Q+ = training queries with >= 1 positive,
    computed by :meth:`fit` and exposed as ``k_``. An explicit ``k`` overrides the fit.
    """

    name = "pos_avg"

    def __init__(self, k: int | None = None):
        if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
            raise ValueError(f"sampling.k must be an integer >= 1 or null, got {k!r}")
        self.k = None if k is None else int(k)
        self.k_: int | None = self.k

    def fit(self, positives_per_query: Sequence[Sequence[str]]) -> None:
        if self.k is not None:
            self.k_ = self.k
            return
        counts = [len(set(p)) for p in positives_per_query if len(p) > 0]
        # a label set without any positive trains nothing; 1 keeps sample() usable
        self.k_ = max(1, math.ceil(sum(counts) / len(counts))) if counts else 1

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        if self.k_ is None:
            raise RuntimeError(
                "PosAvg.sample() called before fit(): k is the mean number of positives of the "
                "label set, so call fit(positives_per_query) first (or set sampling.k)"
            )
        unique = _unique(positives)
        return rng.sample(unique, min(self.k_, len(unique)))

    def __repr__(self) -> str:
        return f"PosAvg(k={self.k_})"


class PosAll(PositiveSampler):
    """pos-all (arXiv 2504.05220): S(P) = P, every positive of the query in a random order."""

    name = "pos_all"

    def sample(self, positives: Sequence[str], rng: random.Random) -> list[str]:
        unique = _unique(positives)
        rng.shuffle(unique)
        return unique
