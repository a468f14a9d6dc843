"""Positive sampling strategies for multi-positive training labels (pos-one / pos-avg / pos-all, arXiv 2504.05220)."""

from uptrain.sampling.positives import PosAll, PosAvg, PositiveSampler, PosOne

__all__ = ["PositiveSampler", "PosOne", "PosAvg", "PosAll"]
