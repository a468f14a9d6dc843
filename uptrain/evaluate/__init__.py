"""Evaluation of runs: ir_measures with per-query values kept, and paired significance tests."""

from uptrain.evaluate.metrics import EvalResult, evaluate_run, parse_measures
from uptrain.evaluate.significance import TTest, compare, marker, paired_ttest

__all__ = ["EvalResult", "evaluate_run", "parse_measures", "TTest", "paired_ttest", "marker", "compare"]
