"""Relevance judges for evaluation (Wang, Whitworth et al., arXiv 2509.03764): judges behind one
interface (:mod:`uptrain.judge.base`), sDCG@K and the agreement with human labels
(:mod:`uptrain.judge.measures`, :mod:`uptrain.judge.agreement`), the A/B measurement design
(:mod:`uptrain.judge.design`, :mod:`uptrain.judge.strata`) and the evaluation path that runs them
(:class:`uptrain.judge.path.JudgePath`)."""

from uptrain.judge.base import Judge, JudgeGrades
from uptrain.judge.cross_encoder import CrossEncoderJudge
from uptrain.judge.llm import LLMJudge
from uptrain.judge.path import JudgePath
from uptrain.judge.simulated import SimulatedJudge

__all__ = ["Judge", "JudgeGrades", "CrossEncoderJudge", "LLMJudge", "SimulatedJudge", "JudgePath"]
