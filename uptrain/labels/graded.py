"""Graded labels from pointwise LLM judgments (0-3) of the documents a click log showed.

``grade``              positives = the query's documents graded >= 2, highest grade first
``grade:<min_grade>``  the same with another threshold (``grade:3``: only "exact answer" documents)

Structured: ``{source: grade, min_grade: 2, weight: 1.0}``. The grades come from the grade stage
(:class:`uptrain.annotate.grade.GradeStage`, the artifact ``grades``): the annotator LLM
(``cfg.annotator``) or the simulated annotator (``annotator=simulated``) over each query's shown
documents (``annotate.grade``: depth, max_queries). A query without grades gives no label (counted
as ``grade_queries_without_grades``); graded positives outside the query's pool are kept (the
training collection has their text) and counted (``grade_positives_outside_pool``). The query's
grades reach the graded losses (``loss=pointwise_ce`` trains on 0-3): a pool candidate without a
grade is then grade 0.
"""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from uptrain.graph import Artifact
from uptrain.labels.producers import BuildContext, producer
from uptrain.labels.sources import LabelConfigError, LabelSource, register


@register("grade")
class GradeSource(LabelSource):
    inputs = ("grades",)
    arg = "min_grade"

    def __init__(self, min_grade: int | str = 2, weight: float = 1.0):
        super().__init__(weight)
        try:
            value = int(str(min_grade).strip()) if not isinstance(min_grade, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or value < 1:
            raise LabelConfigError(f"label source 'grade' needs min_grade, an integer grade of at least 1 "
                                   f"(grade:<min_grade> or {{source: grade, min_grade: 2}}), got {min_grade!r}")
        self.min_grade = value
        self._counts = {"grade_queries_without_grades": 0, "grade_positives_outside_pool": 0}

    def params(self) -> dict[str, Any]:
        return {"min_grade": self.min_grade}

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self._counts.items() if v}

    def _grades(self, entry, values: Mapping[str, Any]) -> dict[str, int] | None:
        grades = values["grades"].get(entry.query_id)
        return None if not grades else grades

    def positives(self, entry, values: Mapping[str, Any]) -> list[str] | None:
        grades = self._grades(entry, values)
        if grades is None:
            self._counts["grade_queries_without_grades"] += 1
            return None
        # highest grade first; ties keep the grade stage's order (best rank in the log first)
        order = {d: i for i, d in enumerate(grades)}
        pos = sorted((d for d, g in grades.items() if int(g) >= self.min_grade), key=lambda d: (-int(grades[d]), order[d]))
        candidates = set(entry.candidates)
        self._counts["grade_positives_outside_pool"] += sum(1 for d in pos if d not in candidates)
        return pos

    def grades(self, entry, values: Mapping[str, Any]) -> dict[str, int] | None:
        grades = self._grades(entry, values)
        return None if grades is None else {d: int(g) for d, g in grades.items()}


# ---- producer ------------------------------------------------------------------------------

def _grade_stage(cfg: DictConfig, params: dict):
    from uptrain.annotate.grade import GradeStage

    annotate = cfg.get("annotate") or {}
    grade = annotate.get("grade") or {}
    grade = OmegaConf.to_container(grade, resolve=True) if OmegaConf.is_config(grade) else dict(grade)
    return GradeStage(cfg.annotator, batch_queries=annotate.get("batch_queries", 4), **grade)


@producer("grades", plan=_grade_stage)
def grades(ctx: BuildContext, params: dict) -> Artifact:
    return ctx.runner.run(_grade_stage(ctx.cfg, params), {"data": ctx.train_data, "clicks": ctx.require("clicks")},
                          label="grade")
