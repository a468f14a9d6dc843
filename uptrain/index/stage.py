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

    def report(self, artifact: Artifact) -> dict[str, str]:
        """How fast the corpus was encoded, in which precision, and how much of it was padding."""
        f = artifact.path / "index_stats.json"
        st = json.loads(f.read_text()) if f.is_file() else {}
        if "encode_seconds" not in st:
            return {}
        text = (f"{st['docs']} documents encoded in {st.get('encoder_dtype', 'fp32')} in {st['encode_seconds']} s "
                f"({st['docs_per_second']} docs/s")
        if "tokens_per_second" in st:
            text += f", {st['tokens_per_second']:.0f} tokens/s, {100 * st['padding_share']:.1f}% of the tokens run were padding"
        return {f"Index of {st.get('collection') or 'a collection'}": text + "); vectors stored as float32."}

    def load(self, path: Path) -> Path:
        return path
