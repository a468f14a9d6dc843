"""Label sources: which pool passages are positives of a training query, by whom.

``human``        the human qrels carried in the pool (optionally a random r% of the queries)
``llm:<step>``   the positives of an annotation step (relsel, utilsel, utilrank) of the LLM
``replug``       REPLUG utilities (answer log-likelihoods) over the pool; trained with KL(U||R)

A spec joins sources with ``+``: ``human+llm:utilsel`` is the interleave strategy of
Zhang et al. (arXiv 2504.05220, Sec. 4.3), one phase over the union of both positive
sets. Negatives are always the query's pool candidates that no source of the spec calls
positive: a passage the LLM left out is a negative even when a human judged it relevant,
which is what training on LLM labels means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from uptrain.labels.examples import LabelledQuery, stable_seed

LABEL_SOURCES: dict[str, type["LabelSource"]] = {}


class LabelConfigError(ValueError):
    """A label spec, ratio or loss that cannot work together (a user error, reported in one paragraph)."""


def register(name: str):
    def wrap(cls):
        LABEL_SOURCES[name] = cls
        cls.name = name
        return cls

    return wrap


class LabelSource:
    """One source of training labels. ``input`` names the run-graph artifact it reads (or None)."""

    name = "base"
    input: str | None = None

    def __init__(self, arg: str | None = None):
        if arg is not None:
            raise LabelConfigError(f"label source '{self.name}' takes no ':' argument, got '{self.name}:{arg}'")

    def positives(self, entry, value: Any) -> list[str] | None:
        """The query's positives, or None when this source has no label for it."""
        raise NotImplementedError

    def spec(self) -> str:
        return self.name


@register("human")
class HumanSource(LabelSource):
    def positives(self, entry, value: Any) -> list[str] | None:
        return list(entry.positives)


@register("llm")
class LLMSource(LabelSource):
    input = "annotations"
    steps = ("relsel", "utilsel", "utilrank")

    def __init__(self, arg: str | None = None):
        if arg not in self.steps:
            raise LabelConfigError(f"label source 'llm:<step>' needs a step among {', '.join(self.steps)}, got {arg!r}")
        self.step = arg

    def positives(self, entry, value: Mapping) -> list[str] | None:
        ann = value.get(entry.query_id)
        return None if ann is None else ann.positives(self.step)

    def spec(self) -> str:
        return f"llm:{self.step}"


@register("replug")
class ReplugSource(LabelSource):
    """Soft labels: the top-utility passage is the nominal positive (it anchors the group)."""

    input = "replug"

    def positives(self, entry, value: Mapping) -> list[str] | None:
        labels = value.get(entry.query_id)
        return None if labels is None else labels.best()


def parse_spec(spec: str) -> list[LabelSource]:
    """``"human+llm:utilsel"`` -> [HumanSource(), LLMSource("utilsel")]; clear errors for anything else."""
    parts = [p.strip() for p in str(spec).split("+") if p.strip()]
    if not parts:
        raise LabelConfigError("empty label spec: use human, llm:<step>, replug, or sources joined by '+'")
    sources = []
    for part in parts:
        name, _, arg = part.partition(":")
        if name not in LABEL_SOURCES:
            raise LabelConfigError(f"unknown label source '{name}' in '{spec}'; known: {', '.join(sorted(LABEL_SOURCES))}")
        sources.append(LABEL_SOURCES[name](arg or None))
    if len(sources) > 1 and any(isinstance(s, ReplugSource) for s in sources):
        raise LabelConfigError(f"'{spec}': REPLUG's soft labels cannot be interleaved with positive sets")
    return sources


def required_inputs(spec: str) -> tuple[str, ...]:
    """The artifacts (``annotations``, ``replug``) a spec's sources read, in a fixed order."""
    names = {s.input for s in parse_spec(spec) if s.input}
    return tuple(n for n in ("annotations", "replug") if n in names)


def is_soft(spec: str) -> bool:
    """True when the spec trains on utility scores (KL) rather than positive sets."""
    return any(isinstance(s, ReplugSource) for s in parse_spec(spec))


def sample_ratio(query_ids: Sequence[str], ratio: float, seed: int) -> set[str]:
    """A seeded random ceil(r%) of the queries; the r% set is contained in every larger one."""
    if not 0 < ratio <= 100:
        raise LabelConfigError(f"human_ratio must be in (0, 100], got {ratio}")
    order = sorted(query_ids, key=lambda q: (stable_seed("human_ratio", seed, q), q))
    return set(order[: math.ceil(len(order) * ratio / 100.0)])


@dataclass
class ExampleStats:
    queries: int  # pool queries considered
    labelled: int  # queries with at least one positive
    human_queries: int | None  # queries whose human labels were used (None: no human source)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def build_examples(
    spec: str,
    pool: Sequence,
    values: Mapping[str, Any],
    human_ratio: float = 100.0,
    seed: int = 0,
) -> tuple[list[LabelledQuery], ExampleStats]:
    """Training examples for one phase: per pool query, the union of its sources' positives.

    ``values`` maps each required input (``annotations``, ``replug``) to its loaded artifact.
    With ``human_ratio`` < 100 only that share of the queries carries its human labels
    (the paper's curriculum uses r = 20 and 100). A query no source labels is left out.
    """
    sources = parse_spec(spec)
    human_keep = None
    if any(isinstance(s, HumanSource) for s in sources):
        judged = [e.query_id for e in pool if e.positives]
        human_keep = sample_ratio(judged, float(human_ratio), seed) if float(human_ratio) < 100 else set(judged)
    soft = next((s for s in sources if isinstance(s, ReplugSource)), None)
    examples = []
    for e in pool:
        pos: list[str] = []
        labelled = False
        for s in sources:
            if isinstance(s, HumanSource) and e.query_id not in human_keep:
                continue
            got = s.positives(e, values.get(s.input) if s.input else None)
            if got is None:
                continue
            labelled = True
            pos += [d for d in got if d not in pos]
        if not labelled:
            continue
        utilities = None
        if soft is not None:
            utilities = dict(values["replug"][e.query_id].utilities)
            candidates = [d for d in e.candidates if d in utilities]
        else:
            candidates = list(e.candidates)
        examples.append(LabelledQuery(
            e.query_id, e.query, tuple(pos), tuple(d for d in candidates if d not in pos), utilities=utilities,
        ))
    stats = ExampleStats(
        queries=len(pool),
        labelled=sum(1 for x in examples if x.positives),
        human_queries=len(human_keep) if human_keep is not None else None,
    )
    return examples, stats
