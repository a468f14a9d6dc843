"""Training examples: one query with a group of passages (sampled positives + pool negatives).

Each item is (query, group of G passages, which of them are positives). Positives come
from the label set through a positive sampler (pos-one / pos-avg / pos-all); the rest
of the group is filled with the query's pool negatives (hard negatives), drawn without
replacement while they last, then with replacement, then from random corpus documents
when the pool has none. In-batch negatives are added by the bi-encoder's scoring.

The group holds every positive the sampler asks for: G = max(group_size, P_max + 1),
P_max the most positives sampled for one query (capped by ``max_positives`` when set),
one size for the whole dataset so batches stay rectangular across items and DDP ranks.
Positives cut by ``max_positives`` are counted in :attr:`GroupDataset.stats`.

Logged SERPs (click sessions, ``LabelledQuery.serp``) are trained on as shown instead: the
group is the SERP in rank order, with each passage's rank and propensity (the unbiased
learning-to-rank losses read them), one item per session.

FAMOL examples that carry their objective and frequency bucket
(:class:`uptrain.labels.frequency.FamolExample`: per-objective losses, learned weights) give
items whose ``query_id`` is a :class:`~uptrain.labels.frequency.FamolRowId` (the query id, tagged
with both), and the dataset's ``famol`` is their phase's :class:`~uptrain.labels.frequency.FamolPlan`
(None otherwise), which the training module reads.
"""

from __future__ import annotations

import random
from typing import Sequence

from torch.utils.data import Dataset

from uptrain.labels.examples import LabelledQuery, stable_seed  # noqa: F401  (re-exported)
from uptrain.labels.frequency import FamolExample
from uptrain.model.batch import TrainItem  # noqa: F401  (re-exported)


class GroupDataset(Dataset):
    def __init__(
        self,
        examples: Sequence[LabelledQuery],
        docs: dict[str, str],
        sampler,
        group_size: int = 8,
        seed: int = 0,
        max_positives: int | None = None,
    ):
        if group_size < 2:
            raise ValueError(f"train.group_size must be >= 2 (one positive and a negative), got {group_size}")
        if max_positives is not None and int(max_positives) < 1:
            raise ValueError(f"train.max_positives must be >= 1 or null, got {max_positives}")
        plans = {id(p): p for p in (getattr(e, "plan", None) for e in examples) if p is not None}
        if len(plans) > 1:
            raise ValueError("a training phase's examples come from two FAMOL sources; one famol source per phase")
        self.famol = next(iter(plans.values()), None)
        serps = sum(1 for e in examples if getattr(e, "serp", None) is not None)
        if serps:
            if serps != len(examples):
                raise ValueError("a training phase mixes logged SERPs (click sessions) with labelled queries; "
                                 "give click sessions a phase of their own")
            self._init_serps(examples, docs, seed)
            return
        self.serp_mode = False
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
        self.max_positives = None if max_positives is None else int(max_positives)
        self.seed = int(seed)
        self.epoch = 0
        self._doc_ids = list(docs)
        self.sampler.fit([e.positives for e in self.examples])
        # the first epoch's draw of every query fixes the group size; the samplers' sizes do not vary by epoch
        asked = [len(self._sample(e, self._rng(e))) for e in self.examples]
        kept = [min(n, self.max_positives) if self.max_positives else n for n in asked]
        self.effective_group_size = max(self.group_size, max(kept) + 1)
        self.stats = {
            "group_size": self.group_size,
            "effective_group_size": self.effective_group_size,
            "max_positives": self.max_positives,
            "positives_asked": sum(asked),
            "positives_kept": sum(kept),
            "positives_cut": sum(asked) - sum(kept),
            "queries_with_cut": sum(a > k for a, k in zip(asked, kept)),
            "max_positives_per_query": max(asked),
        }

    def _init_serps(self, examples: Sequence[LabelledQuery], docs: dict[str, str], seed: int) -> None:
        """Logged SERPs: each example is trained on as shown, one group per session (no sampling).
        A SERP shorter than the longest is padded with random corpus documents at rank -1 (not
        shown: the click losses leave them out), counted in ``stats``."""
        self.serp_mode = True
        self.examples = list(examples)
        self.skipped_no_positive = 0  # a session without clicks is data (every shown document was skipped)
        self.docs, self.seed, self.epoch = docs, int(seed), 0
        self._doc_ids = list(docs)
        self.sampler, self.max_positives = None, None
        self.group_size = self.effective_group_size = max(len(e.serp) for e in self.examples)
        padded = sum(len(e.serp) < self.group_size for e in self.examples)
        self.stats = {
            "group_size": self.group_size, "effective_group_size": self.group_size, "max_positives": None,
            "sessions": len(self.examples),
            "sessions_without_clicks": sum(1 for e in self.examples if not e.positives),
            "clicks": sum(len(e.positives) for e in self.examples),
            "padded_serps": padded,
            "positives_asked": 0, "positives_kept": 0, "positives_cut": 0, "queries_with_cut": 0,
            "max_positives_per_query": max(len(e.positives) for e in self.examples),
        }

    def _serp_item(self, ex: LabelledQuery) -> TrainItem:
        serp = list(ex.serp)
        clicked = set(ex.positives)
        pad = self.group_size - len(serp)
        rng = self._rng(ex)
        fill = []
        while len(fill) < pad:
            d = rng.choice(self._doc_ids)
            if d not in clicked and d not in serp:
                fill.append(d)
        doc_ids = serp + fill
        nan = float("nan")
        props = list(ex.propensities) if ex.propensities is not None else [nan] * len(serp)
        return TrainItem(
            query_id=ex.query_id, query=ex.query, doc_ids=doc_ids,
            passages=[self.docs.get(d, "") for d in doc_ids],
            is_positive=[d in clicked for d in serp] + [False] * pad,
            all_positives=frozenset(clicked),
            weight=float(getattr(ex, "weight", 1.0)),
            positions=list(range(len(serp))) + [-1] * pad,
            propensities=props + [nan] * pad,
        )

    def _rng(self, ex: LabelledQuery) -> random.Random:
        # a new draw of positives and negatives each epoch, reproducible from (seed, epoch, query)
        return random.Random(stable_seed(self.seed, self.epoch, ex.query_id))

    def _sample(self, ex: LabelledQuery, rng: random.Random) -> list[str]:
        pos = list(self.sampler.sample(list(ex.positives), rng))
        if not pos:  # a sampler must return at least one positive for a query that has some
            pos = [rng.choice(ex.positives)]
        return pos

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TrainItem:
        ex = self.examples[i]
        if self.serp_mode:
            return self._serp_item(ex)
        rng = self._rng(ex)
        # the cap is max_positives (counted in stats); the group always has room for one negative
        pos = self._sample(ex, rng)[: min(self.max_positives or 10**9, self.effective_group_size - 1)]
        n_neg = self.effective_group_size - len(pos)
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
        grades = getattr(ex, "grades", None)  # doc id -> grade, when the label source is graded
        return TrainItem(
            query_id=ex.row_id() if isinstance(ex, FamolExample) else ex.query_id,
            query=ex.query,
            doc_ids=doc_ids,
            passages=[self.docs.get(d, "") for d in doc_ids],
            is_positive=[True] * len(pos) + [False] * len(neg),
            all_positives=frozenset(ex.positives),
            utilities=[float(ex.utilities.get(d, float("-inf"))) for d in doc_ids] if ex.utilities is not None else None,
            # an ungraded negative is grade 0 (not relevant); an ungraded positive has no grade (-1)
            grades=[int(grades.get(d, -1 if d in positives else 0)) for d in doc_ids] if grades is not None else None,
            weight=float(getattr(ex, "weight", 1.0)),
        )
