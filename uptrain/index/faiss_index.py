"""Exact (or factory-built) FAISS inner-product index over bi-encoder passage vectors.

With cosine similarity the vectors are L2-normalised, so inner product = cosine.
A GPU index is used when FAISS sees GPUs (faiss-gpu installed), else faiss-cpu.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import faiss
import numpy as np

from uptrain.index.base import Indexer

log = logging.getLogger(__name__)


class FaissIndexer(Indexer):
    needs_model = True

    def __init__(
        self,
        factory: str = "Flat",
        batch_size: int = 128,
        query_batch_size: int = 256,
        use_gpu: str | bool = "auto",
        show_progress: bool = True,
    ):
        self.factory = factory
        self.batch_size = int(batch_size)
        self.query_batch_size = int(query_batch_size)
        self.use_gpu = use_gpu
        self.show_progress = show_progress

    def spec(self) -> dict:
        # batch sizes and devices do not change the vectors beyond float noise
        return {"type": "faiss", "factory": self.factory}

    def _gpu(self) -> bool:
        n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        return n > 0 if self.use_gpu == "auto" else bool(self.use_gpu) and n > 0

    def build(self, collection, model, out: Path) -> dict:
        t0 = time.time()
        stats = getattr(model, "encode_stats", None)
        before = dict(stats) if stats is not None else None
        doc_ids = list(collection.docs)
        texts = [collection.docs[d] for d in doc_ids]
        emb = model.encode(
            texts, kind="passage", batch_size=self.batch_size, show_progress=self.show_progress,
            desc=f"encode {collection.name}",
        )
        encode_s = time.time() - t0
        index = faiss.index_factory(emb.shape[1], self.factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(emb)
        index.add(emb)
        faiss.write_index(index, str(out / "index.faiss"))
        (out / "doc_ids.json").write_text(json.dumps(doc_ids))
        out = {
            "collection": getattr(collection, "name", None),
            "docs": len(doc_ids),
            "dim": int(emb.shape[1]),
            "vectors_dtype": str(emb.dtype),  # float32 whatever the encoder computes in
            "encoder_dtype": getattr(model, "dtype_name", "fp32"),
            "encode_seconds": round(encode_s, 2),
            "docs_per_second": round(len(doc_ids) / max(encode_s, 1e-9), 1),
        }
        if before is not None:
            tokens = stats["tokens"] - before.get("tokens", 0)
            padded = stats["padded_tokens"] - before.get("padded_tokens", 0)
            out.update(tokens=tokens, tokens_per_second=round(tokens / max(encode_s, 1e-9), 1),
                       padding_share=round(1 - tokens / padded, 4) if padded else 0.0)
        return out

    def search(self, index_dir: Path, queries: dict[str, str], model, k: int) -> dict[str, dict[str, float]]:
        index = faiss.read_index(str(Path(index_dir) / "index.faiss"))
        doc_ids = json.loads((Path(index_dir) / "doc_ids.json").read_text())
        if self._gpu():
            log.info("FAISS: searching on %d GPU(s)", faiss.get_num_gpus())
            index = faiss.index_cpu_to_all_gpus(index)
        qids = list(queries)
        if not qids:
            return {}
        q = model.encode(
            [queries[x] for x in qids], kind="query", batch_size=self.query_batch_size,
            show_progress=self.show_progress, desc="encode queries",
        )
        k = min(k, index.ntotal)
        scores, idx = index.search(np.ascontiguousarray(q), k)
        run: dict[str, dict[str, float]] = {}
        for qi, qid in enumerate(qids):
            run[qid] = {doc_ids[j]: float(s) for s, j in zip(scores[qi], idx[qi]) if j >= 0}
        return run
