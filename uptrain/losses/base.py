"""The loss interface and registry: ``loss(scores, labels, weights=None)`` over [B, N] score matrices.

A loss says which model output it reads (``input``: ``"scores"`` [B, N], or ``"logits"``
[B, N, C] of a multi-class head) and which target (``target``: ``"positive"`` multi-hot,
``"utility"`` floats, ``"grade"`` integers); the training module hands it exactly those
(see uptrain.model.batch), so a loss works for every model family that produces them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

LOSSES: dict[str, type["RankingLoss"]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a loss reachable as ``get_loss(name)`` and sets ``cls.name``."""

    def wrap(cls: type) -> type:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' registered twice")
        LOSSES[name] = cls
        cls.name = name
        return cls

    return wrap


def get_loss(name: str, **kwargs) -> "RankingLoss":
    """Instantiate the loss registered as ``name`` with ``kwargs``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)


class RankingLoss(nn.Module):
    """L = (1 / |B+|) * sum_{i in B+} l_i(s_i, P_i), B+ = rows with at least one positive.

    ``scores`` [B, N] are similarities already divided by the temperature; a column
    scored -inf is masked (padding, a known positive of the query in another group)
    and counts neither as a positive nor in any denominator.
    ``labels`` [B, N] are multi-hot (bool or 0/1). Subclasses give the per-row l_i
    in :meth:`row_loss`. With no row in B+ the result is a zero still attached to
    ``scores``, so a ``backward()`` in the training step does not fail.
    """

    name: str = "base"
    input: str = "scores"  # the model output the loss reads: "scores" [B, N] or "logits" [B, N, C]
    target: str = "positive"  # the target it reads: "positive", "utility" or "grade"

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """With query ``weights`` w [B]: L = sum_{i in B+} w_i l_i / sum_{i in B+} w_i."""
        check_shapes(scores, labels)
        pos = labels.bool() & torch.isfinite(scores)
        rows = pos.any(dim=1)
        if not rows.any():
            return zero_loss(scores)
        per_row = self.row_loss(scores[rows], pos[rows])
        return weighted_mean(per_row, weights, rows)

    def row_loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Loss per row, for rows with at least one (finite) positive: returns [B']."""
        raise NotImplementedError(f"{type(self).__name__} must implement row_loss()")


def zero_loss(scores: torch.Tensor) -> torch.Tensor:
    return scores.nan_to_num(0.0, 0.0, 0.0).sum() * 0.0  # zero, still connected to the graph


def weighted_mean(per_row: torch.Tensor, weights: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """mean of ``per_row`` (the rows selected by ``rows``), weighted by ``weights[rows]`` when given."""
    if weights is None:
        return per_row.mean()
    w = weights.to(per_row.device, per_row.dtype)[rows]
    if w.shape != per_row.shape or (w < 0).any():
        raise ValueError(f"weights must be non-negative, one per query: got shape {tuple(weights.shape)}")
    return (w * per_row).sum() / w.sum().clamp(min=torch.finfo(per_row.dtype).tiny)


def check_shapes(scores: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ValueError unless scores is a float [B, N] tensor and labels has its shape."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D tensor [queries, passages], got shape {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match scores shape {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor, got {scores.dtype}")


def masked_logsumexp(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum_{j: mask} exp(s_j) per row; -inf for an empty row, with finite gradients."""
    # the dtype's lowest finite value, not -inf, so an all-masked row has no NaN gradient
    neg_inf = torch.finfo(scores.dtype).min
    s = scores.masked_fill(~mask, neg_inf)
    out = torch.logsumexp(s, dim=-1)
    return out.masked_fill(~mask.any(dim=-1), float("-inf"))
