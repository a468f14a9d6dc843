"""The data stage: load a collection from its source and store it as plain files."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from uptrain.data.collection import Collection
from uptrain.graph import Artifact, Stage


class DataStage(Stage[Collection]):
    name = "data"
    version = 2  # 2: the collection's stats count unclosed SGML tags

    def __init__(self, source):
        self.source = source

    def validate(self) -> None:
        self.source.validate()

    def spec(self) -> dict:
        return self.source.spec()

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        self.source.load().save(out)

    def load(self, path: Path) -> Collection:
        return Collection.load(path)
