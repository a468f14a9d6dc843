"""The index stage: a searchable index of one collection (dense vectors or BM25)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from uptrain.graph import Artifact, Stage
from uptrain.index.base import Indexer


class IndexStage(Stage[Path]):
    name = "index"
    # the corpus vectors depend on the model's passage side only (not e.g. its query length)
    input_facets = {"model": "passage"}

    def __init__(self, indexer: Indexer):
        self.indexer = indexer
        # a lexical index does not depend on the encoder, so BM25 runs share one index
        self.inputs = ("data", "model") if indexer.needs_model else ("data",)

    def spec(self) -> dict:
        return self.indexer.spec()

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        model = inputs["model"].value if self.indexer.needs_model else None
        stats = self.indexer.build(inputs["data"].value, model, out)
        (out / "index_stats.json").write_text(json.dumps(stats, indent=2))

    def load(self, path: Path) -> Path:
        return path
