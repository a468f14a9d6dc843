"""BM25 as a first-stage retriever (the ``+exp=bm25`` baseline), on the same BM25 as the pool."""

from __future__ import annotations

import time
from pathlib import Path

from uptrain.index.base import Indexer
from uptrain.pool.bm25 import BM25


class BM25Indexer(Indexer):
    needs_model = False

    def __init__(self, show_progress: bool = True, **bm25_params):
        self.bm25_params = bm25_params
        self.show_progress = show_progress

    def _bm25(self) -> BM25:
        return BM25(**self.bm25_params)

    def spec(self) -> dict:
        return {"type": "bm25", **self._bm25().spec()}

    def build(self, collection, model, out: Path) -> dict:
        t0 = time.time()
        bm25 = self._bm25()
        bm25.index(collection.docs)
        bm25.save(out / "bm25")
        return {"docs": len(collection.docs), "index_seconds": round(time.time() - t0, 2)}

    def search(self, index_dir: Path, queries: dict[str, str], model, k: int) -> dict[str, dict[str, float]]:
        bm25 = BM25.load(Path(index_dir) / "bm25")
        return bm25.search(queries, k=k, show_progress=self.show_progress)
