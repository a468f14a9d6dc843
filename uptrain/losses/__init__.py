"""Contrastive and distillation losses for dense retrievers, registered by name.

Each is called as ``loss(scores, labels)`` with scores [B, N] (similarities divided by
the temperature; -inf masks a column) and multi-hot labels [B, N]; it returns the
mean over queries that have at least one positive. Adding a loss is one file here
and one config in ``conf/loss/``.
"""

from uptrain.losses.base import LOSSES, RankingLoss, get_loss, register
from uptrain.losses.conj_infonce import ConjInfoNCE
from uptrain.losses.disj_infonce import DisjInfoNCE
from uptrain.losses.infonce import InfoNCE
from uptrain.losses.kl_divergence import KLDivergence

__all__ = ["LOSSES", "RankingLoss", "get_loss", "register", "InfoNCE", "ConjInfoNCE", "DisjInfoNCE", "KLDivergence"]
