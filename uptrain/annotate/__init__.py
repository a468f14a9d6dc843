"""LLM annotation of training queries: prompts, parsing and the annotation pipeline."""

from uptrain.annotate.parse import parse_selection, parse_answer, ParseStats
from uptrain.annotate.prompts import PromptRenderer

__all__ = ["parse_selection", "parse_answer", "ParseStats", "PromptRenderer"]
