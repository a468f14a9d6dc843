"""The pool stage: per training query, its human positives plus BM25 hard negatives
(``pool.require_positive: false`` also keeps queries no human judged relevant, for click labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from uptrain.errors import ConfigError
from uptrain.graph import Artifact, Stage
from uptrain.pool.pool import PoolEntry, build_pool, load_pool, save_pool


class PoolStage(Stage[list[PoolEntry]]):
    name = "pool"
    inputs = ("data",)

    def __init__(self, retriever, depth: int = 30, seed: int = 0, require_positive: bool = True,
                 inject_positives: bool = True):
        self.retriever = retriever
        self.depth = int(depth)
        self.seed = int(seed)
        self.require_positive = bool(require_positive)
        self.inject_positives = bool(inject_positives)

    def validate(self) -> None:
        if self.depth < 0:
            raise ConfigError(f"pool.depth is the number of retrieved negatives per query: at least 0, got {self.depth}")

    def spec(self) -> dict:
        spec = {"retriever": self.retriever.spec(), "depth": self.depth, "seed": self.seed}
        if not self.require_positive:  # the key of the default pool stays what it was
            spec["require_positive"] = False
        if not self.inject_positives:
            spec["inject_positives"] = False
        return spec

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        self.retriever.index(collection.docs)
        entries, stats = build_pool(collection, self.retriever, depth=self.depth, seed=self.seed,
                                    require_positive=self.require_positive, inject_positives=self.inject_positives)
        save_pool(out / "pool.jsonl", entries)
        (out / "stats.json").write_text(json.dumps(stats, indent=2))

    def load(self, path: Path) -> list[PoolEntry]:
        return load_pool(path / "pool.jsonl")
