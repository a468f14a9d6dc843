"""Index a collection for first-stage retrieval: a FAISS index of dense vectors, or BM25."""

from uptrain.index.base import Indexer
from uptrain.index.bm25_index import BM25Indexer
from uptrain.index.faiss_index import FaissIndexer

__all__ = ["Indexer", "FaissIndexer", "BM25Indexer"]
