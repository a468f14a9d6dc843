"""The evaluate stage: ir_measures over a run, with per-query values kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from uptrain.evaluate.metrics import EvalResult, evaluate_run
from uptrain.graph import Artifact, Stage


class EvaluateStage(Stage[EvalResult]):
    name = "evaluate"
    inputs = ("data", "run")

    def __init__(self, measures: list[str]):
        self.measures = list(measures)

    def spec(self) -> dict:
        return {"measures": self.measures}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        result = evaluate_run(inputs["run"].value, inputs["data"].value.qrels, self.measures)
        (out / "eval.json").write_text(json.dumps(result.to_dict(), indent=2))

    def load(self, path: Path) -> EvalResult:
        return EvalResult.from_dict(json.loads((path / "eval.json").read_text()))
