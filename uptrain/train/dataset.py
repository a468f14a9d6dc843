"""Training examples: one query with a group of passages (sampled positives + pool negatives).

Each item is (query, group of ``group_size`` passages, which of them are positives).
Positives come from the label set through a positive sampler (pos-one / pos-avg /
pos-all); the rest of the group is filled with the query's pool negatives (hard
negatives), drawn without replacement while they last, then with replacement,
then from random corpus documents when the pool has none. In-batch negatives
are added by the loss-side scoring (every query sees every passage of the batch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from torch.utils.data import Dataset

from uptrain.labels.examples import LabelledQuery, stable_seed  # noqa: F401  (re-exported)


@dataclass
class TrainItem:
    query_id: str
    query: str
    doc_ids: list[str]
    passages: list[str]
    is_positive: list[bool]
    all_positives: frozenset[str]  # every known positive of the query, to mask false in-batch negatives
    utilities: list[float] | None = None  # REPLUG utility of each passage of the group (soft labels)


class GroupDataset(Dataset):
    def __init__(
        self,
        examples: Sequence[LabelledQuery],
        docs: dict[str, str],
        sampler,
        group_size: int = 8,
        seed: int = 0,
    ):
        if group_size < 2:
            raise ValueError(f"train.group_size must be >= 2 (one positive and a negative), got {group_size}")
        self.examples = [e for e in examples if e.positives]
        self.skipped_no_positive = len(examples) - len(self.examples)
        if not self.examples:
            raise ValueError(
                "No training query has a positive label: nothing to train on. Check the label "
                "source and the pool (queries without a positive are skipped)."
            )
        self.docs = docs
        self.sampler = sampler
        self.group_size = int(group_size)
        self.seed = int(seed)
        self.epoch = 0
        self._doc_ids = list(docs)
        self.sampler.fit([e.positives for e in self.examples])

    def set_epoch(self, epoch: int) -> None:
        # a new draw of positives and negatives each epoch, reproducible from (seed, epoch, query)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TrainItem:
        ex = self.examples[i]
        rng = random.Random(stable_seed(self.seed, self.epoch, ex.query_id))
        pos = list(self.sampler.sample(list(ex.positives), rng))[: self.group_size - 1]
        if not pos:  # a sampler must return at least one positive for a query that has some
            pos = [rng.choice(ex.positives)]
        n_neg = self.group_size - len(pos)
        positives = set(ex.positives)
        pool_neg = [d for d in ex.negatives if d not in positives]
        if len(pool_neg) >= n_neg:
            neg = rng.sample(pool_neg, n_neg)
        elif pool_neg:
            neg = pool_neg + [rng.choice(pool_neg) for _ in range(n_neg - len(pool_neg))]
        else:
            neg = []
            while len(neg) < n_neg:
                d = rng.choice(self._doc_ids)
                if d not in positives:
                    neg.append(d)
        doc_ids = pos + neg
        return TrainItem(
            query_id=ex.query_id,
            query=ex.query,
            doc_ids=doc_ids,
            passages=[self.docs.get(d, "") for d in doc_ids],
            is_positive=[True] * len(pos) + [False] * len(neg),
            all_positives=frozenset(ex.positives),
            utilities=[float(ex.utilities.get(d, float("-inf"))) for d in doc_ids] if ex.utilities is not None else None,
        )
