"""The pool: per training query, human positives plus BM25 hard negatives, shuffled."""

from uptrain.pool.bm25 import BM25
from uptrain.pool.pool import PoolEntry, build_pool, load_pool, query_rng, save_pool

__all__ = ["BM25", "PoolEntry", "build_pool", "load_pool", "query_rng", "save_pool"]
