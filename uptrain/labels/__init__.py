"""Label sources and how a training phase mixes them (arXiv 2504.05220, Sec. 4.3).

A phase names its labels with a spec string: one source (``human``, ``llm:<step>``,
``replug``) or several joined by ``+`` (interleave: the union of their positives in one
phase). Curriculum learning is a list of phases in the config, each warm-started from the
one before (``conf/labels/curriculum.yaml``); ``human_ratio`` keeps a seeded random r% of
the human-labelled queries.
"""

from uptrain.labels.sources import (
    LABEL_SOURCES,
    LabelConfigError,
    LabelSource,
    build_examples,
    parse_spec,
    required_inputs,
    sample_ratio,
)

__all__ = ["LABEL_SOURCES", "LabelConfigError", "LabelSource", "build_examples", "parse_spec", "required_inputs", "sample_ratio"]
