"""A SIMULATED judge: human grades passed through a configured confusion, for studies where a
judge's error rates are set rather than measured (no model, no prompt). Every report and
``metrics.json`` of a run with it say it is a simulation.

It is :class:`uptrain.annotate.grade.SimulatedGrader` (rates or a confusion matrix, one seeded
uniform draw per (seed, query, document)), applied to the human grade of each pair; a pair
without a human grade is drawn as grade 0. Its probabilities are one-hot on the drawn grade.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from uptrain.errors import ConfigError
from uptrain.judge.base import Judge, JudgeGrades, one_hot

NOTE = ("SIMULATED judge: these grades are drawn from the human labels through a configured confusion "
        "(judge=simulated), not produced by any model")


class SimulatedJudge(Judge):
    name = "simulated"
    simulated = True
    needs_human = True

    def __init__(self, recall: float = 0.8, precision: float = 0.7, confusion: Mapping | None = None, seed: int = 0,
                 max_grade: int | None = None):
        super().__init__(max_grade)
        self.settings = {"recall": recall, "precision": precision, "confusion": confusion, "seed": seed}
        self.grader = None
        self._prepared = False

    def set_scale(self, max_grade: int) -> None:
        from uptrain.annotate.grade import SimulatedGrader

        super().set_scale(max_grade)
        self.grader = SimulatedGrader(**self.settings, max_grade=max_grade)
        self._prepared = False

    def prepare(self, human: Sequence[int], top_grade: int) -> None:
        if self.grader is None:
            raise RuntimeError("set_scale() first")
        self.grader.prepare(list(human), top_grade)
        self._prepared = True

    def spec(self) -> dict:
        if self.grader is None:
            return {"judge": self.name, **{k: v for k, v in self.settings.items()}}
        return {"judge": self.name, **self.grader.spec()}

    def grade(self, query, passages, query_id=None, doc_ids=None, human=None) -> JudgeGrades:
        if query_id is None or doc_ids is None or human is None:
            raise ConfigError("the simulated judge draws from the human grades: it needs query_id, doc_ids and human")
        if not self._prepared:
            raise RuntimeError("SimulatedJudge.prepare() must run before grade()")
        grades = [self.grader.grade(query_id, d, int(human.get(d, 0))) for d in doc_ids]
        return JudgeGrades(grades=grades, probs=[one_hot(g, self.max_grade) for g in grades])

    def describe(self) -> str:
        return self.grader.describe() if self.grader is not None and self._prepared else "simulated judge"
