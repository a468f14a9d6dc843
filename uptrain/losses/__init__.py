"""Ranking losses, registered by name.

Each is called as ``loss(inputs, targets, weights=None)``. The listwise losses (InfoNCE,
Conj-InfoNCE, Disj-InfoNCE, KL) take scores [B, N] (similarities divided by the
temperature, or a cross-encoder's logits; -inf masks a column) and multi-hot labels or
utilities [B, N], and return the mean over queries that have at least one positive; the
pointwise losses (BCE, multi-class CE) average over pairs; the unbiased learning-to-rank
losses (naive, IPS, DLA: :mod:`uptrain.losses.ultr`) read logged SERPs with their clicks,
ranks and propensities. ``input`` / ``target`` say
which model output and which labels a loss reads. Adding a loss is one file here and one
config in ``conf/loss/``.
"""

from uptrain.losses.base import LOSSES, RankingLoss, get_loss, register
from uptrain.losses.conj_infonce import ConjInfoNCE
from uptrain.losses.disj_infonce import DisjInfoNCE
from uptrain.losses.infonce import InfoNCE
from uptrain.losses.kl_divergence import KLDivergence
from uptrain.losses.pointwise import PointwiseBCE, PointwiseCE
from uptrain.losses.ultr import DLA, IPSListwise, IPSPointwise, NaiveListwise, NaivePointwise

__all__ = [
    "LOSSES", "RankingLoss", "get_loss", "register", "InfoNCE", "ConjInfoNCE", "DisjInfoNCE", "KLDivergence",
    "PointwiseBCE", "PointwiseCE", "NaivePointwise", "IPSPointwise", "NaiveListwise", "IPSListwise", "DLA",
]
