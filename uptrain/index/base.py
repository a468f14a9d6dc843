"""The indexer interface shared by the index and retrieve stages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uptrain.data.collection import Collection
    from uptrain.model.biencoder import BiEncoder


class Indexer(ABC):
    """Builds an index directory for a collection and searches it."""

    #: whether build/search need an encoder (dense) or not (lexical)
    needs_model: bool = True

    @abstractmethod
    def spec(self) -> dict:
        """Parameters that determine the index (part of its cache key)."""

    @abstractmethod
    def build(self, collection: "Collection", model: "BiEncoder | None", out: Path) -> dict:
        """Write the index under ``out``; return statistics (counts, seconds)."""

    @abstractmethod
    def search(
        self, index_dir: Path, queries: dict[str, str], model: "BiEncoder | None", k: int
    ) -> dict[str, dict[str, float]]:
        """Top-``k`` documents per query: qid -> doc_id -> score."""
