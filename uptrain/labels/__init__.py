"""Label sources and how a training phase mixes them (arXiv 2504.05220, Sec. 4.3).

A phase names its labels with a spec: one source (``human``, ``llm:<step>``, ``replug``),
several joined by ``+`` (interleave: the union of their positives in one phase), or a
structured list of ``{source: NAME | _target_: CLASS, weight: w, ...params}`` entries.
Curriculum learning is a list of phases in the config, each warm-started from the one
before (``conf/labels/curriculum.yaml``); ``human_ratio`` keeps a seeded random r% of
the human-labelled queries. Each source declares the artifacts it reads; their producers
(:mod:`uptrain.labels.producers`) build them.
"""

from uptrain.labels.producers import PRODUCERS, BuildContext, producer
from uptrain.labels.sources import (
    LABEL_SOURCES,
    LabelConfigError,
    LabelSource,
    build_examples,
    describe,
    input_requests,
    is_session_level,
    is_soft,
    parse_spec,
    register,
    required_inputs,
    sample_ratio,
    spec_key,
    uses_human,
)

from uptrain.labels import clicks as _clicks  # noqa: E402,F401  (registers click:<model> and its producers)
from uptrain.labels import frequency as _frequency  # noqa: E402,F401  (registers buckets and famol)

__all__ = [
    "LABEL_SOURCES", "PRODUCERS", "BuildContext", "LabelConfigError", "LabelSource", "build_examples", "describe",
    "input_requests", "is_session_level", "is_soft", "parse_spec", "producer", "register", "required_inputs", "sample_ratio", "spec_key",
    "uses_human",
]
from uptrain.labels import graded as _graded  # noqa: E402,F401  (registers grade and its producer)
