"""The interface every model family implements (Tevatron-style), and the artifact registry.

A family is one class: how it tokenizes a training batch (``collator``), how it turns
a batch into ``scores [B, N]`` and targets for the losses (``batch_scores``), how it
scores (query, passage) pairs at evaluation (``score_pairs``), and how its artifact
is written and read (``save`` / ``from_artifact``, a JSON file that names the family).
The training module, the train stage and the rerank stage know only this interface.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ClassVar, Iterator, Sequence

import numpy as np
from torch import nn

from uptrain.errors import UserError
from uptrain.model.batch import Gather, ScoredBatch, TrainItem

log = logging.getLogger("uptrain")

FAMILIES: dict[str, type["RankingModel"]] = {}


class RankingModel(nn.Module, ABC):
    """A ranker: s(q, p) for a query and a passage.

    ``family``: the artifact's family name; ``can_retrieve``: whether it embeds passages
    on their own, so a dense index can be built (bi-encoder), or needs the query in the
    same sequence and can only re-score candidates (cross-encoder);
    ``supports_in_batch_negatives``: whether other queries' passages can serve as
    negatives at no extra encoding cost; ``train_length_attr``: the setting that
    ``train.passage_max_length`` shortens while training.
    """

    family: ClassVar[str]
    can_retrieve: ClassVar[bool]
    supports_in_batch_negatives: ClassVar[bool] = False
    artifact_file: ClassVar[str]
    train_length_attr: ClassVar[str]
    #: parameter name prefixes initialised from scratch (a scoring head): trained at lr * train.head_lr_scale
    fresh_parameter_prefixes: ClassVar[tuple[str, ...]] = ()
    num_labels: int = 1

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "family" in cls.__dict__:
            FAMILIES[cls.family] = cls

    # ---- configuration and artifact -----------------------------------------------------
    @abstractmethod
    def settings(self) -> dict:
        """The constructor arguments that rebuild this model (lengths resolved to numbers)."""

    @abstractmethod
    def save(self, path: str | Path, with_weights: bool = True) -> None:
        """Write ``artifact_file`` (settings and ``family``) and, with weights, the weights."""

    @classmethod
    @abstractmethod
    def from_artifact(cls, path: str | Path) -> "RankingModel":
        """Read an artifact written by :meth:`save`."""

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        """Check a model config against its backbone's files (no weights loaded), before anything slow."""

    def _write_settings(self, path: Path, settings: dict) -> None:
        (path / self.artifact_file).write_text(json.dumps({"family": self.family, **settings}, indent=2))

    @classmethod
    def _read_settings(cls, path: Path) -> dict:
        settings = json.loads((Path(path) / cls.artifact_file).read_text())
        family = settings.pop("family", cls.family)
        if family != cls.family:
            raise UserError(f"{path} holds a '{family}' model, not a '{cls.family}'; load it with uptrain.model.load_model")
        return settings

    # ---- training -----------------------------------------------------------------------
    @abstractmethod
    def collator(self) -> Callable[[Sequence[TrainItem]], dict]:
        """The family's collator: a list of TrainItems (equal group sizes) -> a batch dict."""

    @abstractmethod
    def batch_scores(self, batch: dict, gather: Gather | None = None, in_batch_negatives: bool = True) -> ScoredBatch:
        """Scores [B, N'] for a collated batch and the targets of the losses (see uptrain.model.batch)."""

    @contextmanager
    def training_length(self, length: int | None) -> Iterator[None]:
        """Shorter passages while training only (attention cost is quadratic); restored after."""
        if not length:
            yield
            return
        before = getattr(self, self.train_length_attr)
        setattr(self, self.train_length_attr, int(length))
        try:
            yield
        finally:
            setattr(self, self.train_length_attr, before)

    # ---- evaluation ---------------------------------------------------------------------
    @abstractmethod
    def score_pairs(
        self, queries: Sequence[str], passages: Sequence[str], batch_size: int = 64, show_progress: bool = False,
        desc: str | None = None,
    ) -> np.ndarray:
        """One float32 score per (queries[i], passages[i]) pair, higher = more relevant."""

    #: counts of inputs seen and cut by truncation since the model was built (for reports)
    truncation_counts: dict[str, int]


def load_model(path: str | Path) -> RankingModel:
    """Load any family's artifact: the JSON file in ``path`` names the family."""
    path = Path(path)
    for cls in FAMILIES.values():
        f = path / cls.artifact_file
        if f.is_file():
            family = json.loads(f.read_text()).get("family", cls.family)
            if family not in FAMILIES:
                raise UserError(f"{f} names the model family '{family}', which is not known ({sorted(FAMILIES)})")
            return FAMILIES[family].from_artifact(path)
    raise UserError(
        f"{path} is not a model artifact: none of {sorted(c.artifact_file for c in FAMILIES.values())} is in it"
    )
