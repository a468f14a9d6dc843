"""The judge interface: grade(query, passages) -> grades with probabilities.

A judge labels (query, passage) pairs on the collection's grade scale 0..G (G the highest
human grade, e.g. 3 for TREC DL's 0-3; a 5-point scale is 0..4). Every judge is one file
behind :class:`Judge` and one config of the ``judge`` group (``conf/judge/``):

``cross_encoder``  a cross-encoder fine-tuned on human grades (:mod:`uptrain.judge.cross_encoder`)
``llm``            a prompted 0-3 judge through the annotator backends (:mod:`uptrain.judge.llm`)
``simulated``      human grades through a configured confusion (:mod:`uptrain.judge.simulated`),
                   marked as a simulation in every report

A judge that learns (``trainable``) is fitted by the judge path before it grades: out-of-fold
by query on the judged collection itself, or once on another collection (``judge.train``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from uptrain.errors import ConfigError


@dataclass
class JudgeGrades:
    """One query's grades: ``grades[i]`` in 0..G (None: the judge gave no usable answer, counted),
    ``probs[i]`` the probability of each grade 0..G (one-hot for a judge that only answers a grade,
    None where ``grades[i]`` is None), ``expected[i]`` = sum_g g * probs[i][g]."""

    grades: list[int | None]
    probs: list[list[float] | None]
    expected: list[float | None] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)  # prompts, tokens, raw outputs (an LLM judge)

    def __post_init__(self):
        if not self.expected:
            self.expected = [None if p is None else float(np.dot(np.arange(len(p)), p)) for p in self.probs]


def one_hot(grade: int | None, max_grade: int) -> list[float] | None:
    if grade is None:
        return None
    out = [0.0] * (max_grade + 1)
    out[int(grade)] = 1.0
    return out


class Judge(ABC):
    """Grades (query, passage) pairs; ``max_grade`` is set by the judge path from the collection."""

    name = "judge"
    simulated = False
    trainable = False
    #: a judge that must see the human grade of each pair (the simulated judge)
    needs_human = False

    def __init__(self, max_grade: int | None = None):
        self.max_grade = None if max_grade is None else int(max_grade)

    def set_scale(self, max_grade: int) -> None:
        """The grade scale 0..max_grade of the collection judged (a configured max_grade must agree)."""
        if self.max_grade is not None and self.max_grade != int(max_grade):
            raise ConfigError(f"judge ({self.name}): judge.grader.max_grade is {self.max_grade} but the grades here run "
                              f"0..{max_grade}; drop the setting or map the grades with the collection's relevance_map")
        self.max_grade = int(max_grade)

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work, before anything slow runs."""

    @abstractmethod
    def spec(self) -> dict:
        """What determines the grades (part of the label artifact's cache key)."""

    @abstractmethod
    def grade(self, query: str, passages: Sequence[str], query_id: str | None = None,
              doc_ids: Sequence[str] | None = None, human: Mapping[str, int] | None = None) -> JudgeGrades:
        """The grades of ``passages`` for ``query`` (ids and human grades only for judges that need them)."""

    def grade_many(self, items: Sequence[tuple[str, str, list[str], list[str]]],
                   human: Mapping[str, Mapping[str, int]] | None = None) -> list[JudgeGrades]:
        """Several queries at once, (query_id, query, doc_ids, passages) each; a judge that batches
        across queries (an LLM backend) overrides it."""
        return [self.grade(q, p, query_id=qid, doc_ids=d, human=(human or {}).get(qid)) for qid, q, d, p in items]

    def describe(self) -> str:
        return self.name
