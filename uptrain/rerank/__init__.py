"""Re-ranking: re-score a first-stage run's top-k with any model family (``RerankStage``)."""

from uptrain.rerank.stage import RERANK_STATS, RerankStage, rerank

__all__ = ["RERANK_STATS", "RerankStage", "rerank"]
