"""What a family's collator consumes (``TrainItem``) and what its batch scoring returns (``ScoredBatch``).

Every family turns a list of TrainItems (one query, a group of N passages) into a
batch, and a batch into ``scores [B, N']`` plus the targets the losses read:

* ``positive`` bool [B, N']: multi-hot positives (InfoNCE, Conj-, Disj-InfoNCE, pointwise BCE);
* ``utility`` float [B, N']: REPLUG utilities, -inf where a column has none (KL);
* ``grade`` long [B, N']: graded labels, -1 where a column has none (pointwise CE);
* ``click`` float [B, N', 3]: per column (clicked 0/1, the rank it was shown at, its
  examination propensity) for the unbiased learning-to-rank losses (a session's SERP is the
  group); rank -1 marks a column that was not shown (padding, in-batch negatives), a
  propensity NaN one that has none (DLA learns them).

N' is N for a cross-encoder (its own group) and every passage of the batch, on
every rank, for a bi-encoder (in-batch and cross-device negatives).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, MutableMapping, Sequence

import numpy as np
import torch


@dataclass
class TrainItem:
    query_id: str
    query: str
    doc_ids: list[str]
    passages: list[str]
    is_positive: list[bool]
    all_positives: frozenset[str]  # every known positive of the query, to mask false in-batch negatives
    utilities: list[float] | None = None  # REPLUG utility of each passage of the group (soft labels)
    grades: list[int] | None = None  # graded label of each passage (-1: none), for multi-class losses
    weight: float = 1.0  # the query's weight in the loss (from the label spec)
    positions: list[int] | None = None  # rank (0-based) each passage was shown at in a logged SERP (-1: not shown)
    propensities: list[float] | None = None  # P(examined | rank) of each shown passage (NaN: unknown)


def doc_hash(doc_id: str) -> int:
    # a process-independent int64 id, so masks agree across DDP ranks
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little", signed=True)


@dataclass
class Gather:
    """The cross-device gather a bi-encoder uses for in-batch negatives from other ranks.

    ``all_gather(t, sync_grads=...)`` returns ``[world_size, *t.shape]`` (Lightning's
    ``LightningModule.all_gather``); ``rank`` is this process's index in it.
    """

    all_gather: Callable[..., torch.Tensor]
    rank: int
    world_size: int


@dataclass
class ScoredBatch:
    scores: torch.Tensor  # [B, N'] float, -inf masks a column
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None  # [B, N', C] for a multi-class head
    weights: torch.Tensor | None = None  # [B] query weights


def group_targets(items: Sequence[TrainItem]) -> dict[str, torch.Tensor]:
    """Targets in the group layout [B, N] (row i = item i's own group), plus ``weights`` [B]."""
    n = len(items[0].doc_ids)
    if any(len(it.doc_ids) != n for it in items):
        raise ValueError("every item of a batch must have the same group size (rectangular batches)")
    out = {
        "positive": torch.tensor([it.is_positive for it in items], dtype=torch.bool),
        "weights": torch.tensor([float(it.weight) for it in items], dtype=torch.float32),
    }
    if any(it.utilities is not None for it in items):
        out["utility"] = torch.tensor(
            [it.utilities if it.utilities is not None else [float("-inf")] * n for it in items], dtype=torch.float32
        )
    if any(it.grades is not None for it in items):
        out["grade"] = torch.tensor([it.grades if it.grades is not None else [-1] * n for it in items], dtype=torch.long)
    if any(it.positions is not None for it in items):
        nan = float("nan")
        click = torch.tensor([it.is_positive for it in items], dtype=torch.float32)
        pos = torch.tensor([it.positions if it.positions is not None else [-1] * n for it in items], dtype=torch.float32)
        prop = torch.tensor([it.propensities if it.propensities is not None else [nan] * n for it in items],
                            dtype=torch.float32)
        out["click"] = torch.stack([click, pos, prop], dim=-1)
    return out


TARGET_FILL = {"positive": False, "utility": float("-inf"), "grade": -1, "click": (0.0, -1.0, float("nan"))}


def block_diagonal(group: torch.Tensor, fill) -> torch.Tensor:
    """[B, N, ...] group layout -> [B, B*N, ...] flat layout (row i's group in columns i*N..i*N+N-1);
    ``fill`` is a scalar, or one value per trailing feature."""
    b, n = group.shape[:2]
    flat = torch.empty((b, b * n, *group.shape[2:]), dtype=group.dtype)
    flat[:] = torch.as_tensor(fill, dtype=group.dtype)
    for i in range(b):
        flat[i, i * n : (i + 1) * n] = group[i]
    return flat


def token_length_batches(tokenizer, enc, batch_size: int, stats: MutableMapping[str, int]
                         ) -> Iterator[tuple[np.ndarray, dict]]:
    """Batches of an unpadded encoding in token-length order (longest first), padded by the
    tokenizer: yields (row positions in ``enc``, padded tensors). Counts the tokens and the
    tokens run with padding in ``stats`` (``tokens``, ``padded_tokens``)."""
    lengths = np.array([len(x) for x in enc["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        sel = order[start : start + batch_size]
        batch = tokenizer.pad({k: [enc[k][j] for j in sel] for k in enc.keys()}, return_tensors="pt")
        stats["tokens"] += int(lengths[sel].sum())
        stats["padded_tokens"] += int(len(sel) * lengths[sel].max())
        yield sel, batch
