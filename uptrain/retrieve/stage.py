"""The retrieve stage: the top-k of every query of a collection, as a TREC run file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from uptrain.graph import Artifact, Stage
from uptrain.index.base import Indexer
from uptrain.retrieve.runfile import read_trec_run, write_trec_run

RUN_FILE = "run.trec"


class RetrieveStage(Stage[dict]):
    name = "retrieve"

    def __init__(self, indexer: Indexer, depth: int = 1000, tag: str = "uptrain"):
        self.indexer = indexer
        self.depth = int(depth)
        self.tag = tag
        self.inputs = ("data", "index", "model") if indexer.needs_model else ("data", "index")

    def spec(self) -> dict:
        # the tag is written into every line of the run file, so it determines the artifact
        return {"depth": self.depth, "tag": self.tag}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        model = inputs["model"].value if self.indexer.needs_model else None
        run = self.indexer.search(inputs["index"].path, collection.queries, model, self.depth)
        write_trec_run(out / RUN_FILE, run, tag=self.tag, depth=self.depth)

    def load(self, path: Path) -> dict:
        return read_trec_run(path / RUN_FILE)
