"""Positive sampling strategies for multi-positive training labels."""

from uptrain.sampling.positives import PosAll, PosAvg, PositiveSampler, PosOne

__all__ = ["PositiveSampler", "PosOne", "PosAvg", "PosAll"]
