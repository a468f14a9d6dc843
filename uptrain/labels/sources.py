"""Label sources: which pool passages are positives of a training query, by whom.

``human``        the human qrels carried in the pool (optionally a random r% of the queries)
``llm:<step>``   the positives of an annotation step (relsel, utilsel, utilrank) of the LLM
``replug``       REPLUG utilities (answer log-likelihoods) over the pool; trained with KL(U||R)
``click:<x>``    click labels (:mod:`uptrain.labels.clicks`): ``click:ctr`` or ``click:<click model>``
                 positives from aggregated click estimates; ``click:raw`` / ``click:ips`` the
                 logged SERPs themselves, with ranks and propensities, for unbiased LTR losses

A phase's ``labels`` is a spec, in one of two forms:

* a string joining sources with ``+``: ``human+llm:utilsel`` is the interleave strategy of
  Zhang et al. (arXiv 2504.05220, Sec. 4.3), one phase over the union of both positive sets;
* a structured list, one entry per source, with parameters and a weight::

      labels:
        - {source: human}
        - {source: llm, step: utilsel, weight: 0.5}
        - {_target_: my_package.MySource, threshold: 2}   # a source defined anywhere

Each source declares the run-graph artifacts it reads (``inputs``), and the producer of
each artifact is registered by name (:mod:`uptrain.labels.producers`): the pipeline asks
the spec what it needs and the producers build it, so a new source is one class (and its
producer, when it reads a new artifact) plus one config, with no edit to the pipeline.

Negatives are always the query's pool candidates that no source of the spec calls
positive: a passage the LLM left out is a negative even when a human judged it relevant,
which is what training on LLM labels means. An example's ``weight`` is the largest weight
of the sources that labelled its query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from uptrain.errors import ConfigError
from uptrain.labels.examples import LabelledQuery, stable_seed

LABEL_SOURCES: dict[str, type["LabelSource"]] = {}


class LabelConfigError(ConfigError):
    """A label spec, ratio or loss that cannot work together (a user error, reported in one paragraph)."""


def register(name: str):
    """Class decorator: make a source reachable by ``name`` in label specs."""

    def wrap(cls):
        LABEL_SOURCES[name] = cls
        cls.name = name
        return cls

    return wrap


class LabelSource:
    """One source of training labels.

    ``inputs`` names the artifacts it reads (each built by the producer registered under
    that name); ``arg`` names the constructor parameter that the string form's ``:arg``
    sets (``llm:utilsel`` -> ``step="utilsel"``); ``soft`` sources give utilities, not sets.
    """

    name = "base"
    inputs: tuple[str, ...] = ()
    arg: str | None = None
    soft = False
    #: True for a source whose examples are logged sessions (click SERPs), not pool queries:
    #: it gives them through :meth:`session_examples`, and is the only source of its phase
    session_level = False

    def __init__(self, weight: float = 1.0, **params: Any):
        if params:
            raise LabelConfigError(
                f"label source '{self.name}' takes no parameters {sorted(params)} (only 'weight')"
            )
        self.weight = _weight(self.name, weight)
        self._string_form = False

    def positives(self, entry, values: Mapping[str, Any]) -> list[str] | None:
        """The query's positives, or None when this source has no label for it."""
        raise NotImplementedError

    def utilities(self, entry, values: Mapping[str, Any]) -> dict[str, float] | None:
        """Soft sources: passage id -> utility for the query (None: not scored)."""
        return None

    def grades(self, entry, values: Mapping[str, Any]) -> dict[str, int] | None:
        """Graded sources: passage id -> grade for the query (None: no grades), read by the
        graded losses (``loss.target: grade``); a query's grades from several sources are merged,
        the highest grade of a passage winning."""
        return None

    #: True for a source that builds a phase's examples itself (:meth:`examples`), e.g. FAMOL's
    #: two weighted examples per query; it is then the only source of its phase
    own_examples = False

    def examples(self, pool: Sequence, values: Mapping[str, Any], collection,
                 seed: int = 0) -> tuple[list[LabelledQuery], dict]:
        """Sources with ``own_examples``: the phase's examples and counts of what was left out."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The parameters that determine this source's labels (beyond its name and weight)."""
        return {}

    def session_examples(self, pool: Sequence, values: Mapping[str, Any], collection,
                         seed: int = 0) -> tuple[list[LabelledQuery], dict]:
        """Session-level sources: one example per logged SERP (texts from ``collection``, the
        training :class:`~uptrain.data.collection.Collection`), and counts of what was left out."""
        raise NotImplementedError

    def requests(self) -> dict[str, dict]:
        """What this source asks of each input's producer: input name -> parameters."""
        return {name: {} for name in self.inputs}

    def spec(self) -> str | dict:
        """The cache-key form: the plain name (``llm:utilsel``) for the string form, else a dict."""
        params = self.params()
        if self._string_form:
            return self.name if not params else f"{self.name}:{next(iter(params.values()))}"
        if LABEL_SOURCES.get(self.name) is type(self):
            return {"source": self.name, "weight": self.weight, **params}
        # a source not in the registry (named by _target_) keys, and re-parses, by its class path
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "weight": self.weight, **params}

    def describe(self) -> str:
        params = self.params()
        text = self.name + (":" + ",".join(str(v) for v in params.values()) if params else "")
        return text + (f" (weight {self.weight:g})" if self.weight != 1.0 else "")


def _weight(name: str, weight: Any) -> float:
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise LabelConfigError(f"label source '{name}': weight must be a number, got {weight!r}") from None
    if not (w > 0 and math.isfinite(w)):
        raise LabelConfigError(f"label source '{name}': weight must be > 0, got {weight!r}")
    return w


@register("human")
class HumanSource(LabelSource):
    """The qrels' positives. ``holdout: {fraction, seed}`` leaves out the queries that
    :class:`uptrain.data.split.QuerySubset` holds out with the same settings (the study's test
    queries), counted as ``human_queries_held_out``."""

    def __init__(self, weight: float = 1.0, holdout: Mapping[str, Any] | None = None):
        super().__init__(weight)
        self.holdout = None
        if holdout is not None:
            from uptrain.data.split import check_holdout

            if not isinstance(holdout, Mapping) or set(holdout) - {"fraction", "seed"}:
                raise LabelConfigError(f"label source 'human': holdout must be {{fraction, seed}}, got {holdout!r}")
            f, s = check_holdout(holdout.get("fraction"), holdout.get("seed", 0), "label source 'human' holdout")
            self.holdout = {"fraction": f, "seed": s}
        self._held = 0

    def params(self) -> dict[str, Any]:
        return {"holdout": self.holdout} if self.holdout else {}

    def describe(self) -> str:
        text = "human" + (f" (test queries held out: fraction {self.holdout['fraction']:g}, seed {self.holdout['seed']})"
                          if self.holdout else "")
        return text + (f" (weight {self.weight:g})" if self.weight != 1.0 else "")

    def counts(self) -> dict[str, int]:
        return {"human_queries_held_out": self._held} if self.holdout else {}

    def positives(self, entry, values: Mapping[str, Any]) -> list[str] | None:
        if self.holdout:
            from uptrain.data.split import in_holdout

            if in_holdout(entry.query_id, self.holdout["fraction"], self.holdout["seed"]):
                self._held += 1
                return None
        return list(entry.positives)


@register("llm")
class LLMSource(LabelSource):
    inputs = ("annotations",)
    arg = "step"
    steps = ("relsel", "utilsel", "utilrank")

    def __init__(self, step: str | None = None, weight: float = 1.0):
        super().__init__(weight)
        if step not in self.steps:
            raise LabelConfigError(
                f"label source 'llm' needs a step among {', '.join(self.steps)} "
                f"(llm:<step>, or {{source: llm, step: ...}}), got {step!r}"
            )
        self.step = step

    def params(self) -> dict[str, Any]:
        return {"step": self.step}

    def positives(self, entry, values: Mapping[str, Any]) -> list[str] | None:
        ann = values["annotations"].get(entry.query_id)
        return None if ann is None else ann.positives(self.step)


@register("replug")
class ReplugSource(LabelSource):
    """Soft labels: the top-utility passage is the nominal positive (it anchors the group).

    ``answers``: ``pseudo`` (the annotation's pseudo answers) or a JSONL file of ground-truth
    answers; None takes ``labels.replug_answers`` of the config.
    """

    inputs = ("replug",)
    soft = True

    def __init__(self, answers: str | None = None, weight: float = 1.0):
        super().__init__(weight)
        self.answers = answers

    def params(self) -> dict[str, Any]:
        return {"answers": self.answers} if self.answers is not None else {}

    def requests(self) -> dict[str, dict]:
        return {"replug": self.params()}

    def positives(self, entry, values: Mapping[str, Any]) -> list[str] | None:
        labels = values["replug"].get(entry.query_id)
        return None if labels is None else labels.best()

    def utilities(self, entry, values: Mapping[str, Any]) -> dict[str, float] | None:
        labels = values["replug"].get(entry.query_id)
        return None if labels is None else dict(labels.utilities)


def _plain(spec: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(spec, (DictConfig, ListConfig)):
            return OmegaConf.to_container(spec, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return spec


def _from_string(spec: str) -> list[LabelSource]:
    parts = [p.strip() for p in str(spec).split("+") if p.strip()]
    if not parts:
        raise LabelConfigError("empty label spec: use human, llm:<step>, replug, or sources joined by '+'")
    out = []
    for part in parts:
        name, _, arg = part.partition(":")
        cls = LABEL_SOURCES.get(name)
        if cls is None:
            raise LabelConfigError(
                f"unknown label source '{name}' in '{spec}'; known: {', '.join(sorted(LABEL_SOURCES))} "
                "(or a structured entry {_target_: package.Class, ...} for a source defined elsewhere)"
            )
        if arg and cls.arg is None:
            raise LabelConfigError(f"label source '{name}' takes no ':' argument, got '{part}'")
        source = cls(**({cls.arg: arg} if arg else {}))
        source._string_form = True
        out.append(source)
    return out


def _from_entry(entry: Any, spec: Any) -> LabelSource:
    if isinstance(entry, LabelSource):
        return entry
    if isinstance(entry, str):
        sources = _from_string(entry)
        if len(sources) != 1:
            raise LabelConfigError(f"a structured label spec lists one source per entry, got '{entry}' in {spec}")
        return sources[0]
    if not isinstance(entry, Mapping):
        raise LabelConfigError(f"a label spec entry must be a source name or a mapping, got {entry!r} in {spec}")
    entry = dict(entry)
    if "_target_" in entry:
        from hydra.utils import get_class

        target = entry.pop("_target_")
        try:
            cls = get_class(target)
        except Exception as exc:  # noqa: BLE001 - hydra raises several kinds for a bad path
            raise LabelConfigError(f"label source _target_ '{target}' cannot be imported: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, LabelSource)):
            raise LabelConfigError(f"label source _target_ '{target}' is not a uptrain.labels.LabelSource")
    else:
        name = entry.pop("source", None)
        if name not in LABEL_SOURCES:
            raise LabelConfigError(
                f"label spec entry {entry} needs 'source' among {', '.join(sorted(LABEL_SOURCES))} "
                f"or a '_target_' class, got {name!r}"
            )
        cls = LABEL_SOURCES[name]
    try:
        return cls(**entry)
    except TypeError as exc:
        raise LabelConfigError(f"label source '{getattr(cls, 'name', cls.__name__)}': {exc}") from None


def parse_spec(spec: Any) -> list[LabelSource]:
    """A label spec -> its sources, with clear errors for anything else.

    ``"human+llm:utilsel"`` -> [HumanSource(), LLMSource("utilsel")]; a list of entries
    (``{source: name, ...}``, ``{_target_: ..., ...}`` or names) or one such mapping.
    """
    spec = _plain(spec)
    if isinstance(spec, str):
        sources = _from_string(spec)
    elif isinstance(spec, Mapping) or isinstance(spec, LabelSource):
        sources = [_from_entry(spec, spec)]
    elif isinstance(spec, Sequence) and spec:
        sources = [_from_entry(e, spec) for e in spec]
    else:
        raise LabelConfigError(f"label spec must be a string or a list of sources, got {spec!r}")
    if len(sources) > 1 and any(s.soft for s in sources):
        raise LabelConfigError(f"'{describe(sources)}': soft labels (REPLUG utilities) cannot be interleaved with positive sets")
    if len(sources) > 1 and any(s.session_level for s in sources):
        raise LabelConfigError(
            f"'{describe(sources)}': logged click sessions (click:raw, click:ips) are trained on as shown and "
            "cannot be interleaved with per-query positive sets; give them a phase of their own "
            "(or use an aggregated click label, click:ctr or click:<click model>, which can be interleaved)"
        )
    if len(sources) > 1 and any(s.own_examples for s in sources):
        raise LabelConfigError(f"'{describe(sources)}': a source that builds its phase's examples itself "
                               "(e.g. famol) cannot be combined with other sources; give it a phase of its own")
    return sources


def spec_key(spec: Any) -> str | list:
    """The JSON form of a spec for cache keys: a string spec stays the same string."""
    spec = _plain(spec)
    if isinstance(spec, str):
        return spec
    return [s.spec() for s in parse_spec(spec)]


def describe(spec: Any) -> str:
    """One line for reports: ``human + llm:utilsel (weight 0.5)``."""
    sources = spec if isinstance(spec, list) and spec and isinstance(spec[0], LabelSource) else parse_spec(spec)
    return " + ".join(s.describe() for s in sources)


def required_inputs(spec: Any) -> tuple[str, ...]:
    """The artifacts a spec's sources read, sorted by name."""
    return tuple(sorted({name for s in parse_spec(spec) for name in s.inputs}))


def input_requests(spec: Any) -> dict[str, dict]:
    """Input name -> the parameters its producer is asked for; two sources asking one input
    with different parameters is an error (one artifact per input name and phase)."""
    out: dict[str, dict] = {}
    for s in parse_spec(spec):
        for name, params in s.requests().items():
            if name in out and out[name] != params:
                raise LabelConfigError(f"label sources ask '{name}' with different parameters: {out[name]} and {params}")
            out[name] = params
    return out


def is_soft(spec: Any) -> bool:
    """True when the spec trains on utility scores (KL) rather than positive sets."""
    return any(s.soft for s in parse_spec(spec))


def uses_human(spec: Any) -> bool:
    return any(isinstance(s, HumanSource) for s in parse_spec(spec))


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
    per_source: dict[str, int] | None = None  # source -> queries it gave a label

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def is_session_level(spec: Any) -> bool:
    """True when the spec trains on logged SERPs (one example per click session)."""
    return any(s.session_level for s in parse_spec(spec))


def build_examples(
    spec: Any,
    pool: Sequence,
    values: Mapping[str, Any],
    human_ratio: float = 100.0,
    seed: int = 0,
    collection=None,
) -> tuple[list[LabelledQuery], ExampleStats]:
    """Training examples for one phase: per pool query, the union of its sources' positives.

    ``values`` maps each required input (e.g. ``annotations``, ``replug``) to its loaded artifact.
    With ``human_ratio`` < 100 only that share of the queries carries its human labels
    (the paper's curriculum uses r = 20 and 100). A query no source labels is left out.
    """
    sources = parse_spec(spec)
    missing = [n for s in sources for n in s.inputs if n not in values]
    if missing:
        raise ValueError(f"build_examples: the label spec reads {sorted(set(missing))}, not given")
    if sources[0].own_examples or sources[0].session_level:  # the source builds the phase's examples itself
        build = sources[0].examples if sources[0].own_examples else sources[0].session_examples
        examples, counts = build(pool, values, collection, seed=seed)
        return examples, ExampleStats(
            queries=len({e.query_id for e in examples}), labelled=sum(1 for e in examples if e.positives),
            human_queries=None, per_source={sources[0].describe(): len(examples), **counts},
        )
    human_keep = None
    if any(isinstance(s, HumanSource) for s in sources):
        judged = [e.query_id for e in pool if e.positives]
        human_keep = sample_ratio(judged, float(human_ratio), seed) if float(human_ratio) < 100 else set(judged)
    soft = next((s for s in sources if s.soft), None)
    per_source = {s.describe(): 0 for s in sources}
    examples = []
    for e in pool:
        pos: list[str] = []
        weight = None
        graded: dict[str, int] | None = None
        for s in sources:
            if isinstance(s, HumanSource) and e.query_id not in human_keep:
                continue
            got = s.positives(e, values)
            if got is None:
                continue
            per_source[s.describe()] += 1
            weight = s.weight if weight is None else max(weight, s.weight)
            pos += [d for d in got if d not in pos]
            g = s.grades(e, values)
            if g is not None:
                graded = {} if graded is None else graded
                for d, v in g.items():
                    graded[d] = max(int(v), graded.get(d, int(v)))
        if weight is None:
            continue
        utilities = None
        if soft is not None:
            utilities = soft.utilities(e, values) or {}
            candidates = [d for d in e.candidates if d in utilities]
        else:
            candidates = list(e.candidates)
        examples.append(LabelledQuery(
            e.query_id, e.query, tuple(pos), tuple(d for d in candidates if d not in pos),
            utilities=utilities, weight=weight, grades=graded,
        ))
    for s in sources:  # what a source left out (e.g. click positives outside the pool), counted
        per_source.update(getattr(s, "counts", lambda: {})())
    stats = ExampleStats(
        queries=len(pool),
        labelled=sum(1 for x in examples if x.positives),
        human_queries=len(human_keep) if human_keep is not None else None,
        per_source=per_source,
    )
    return examples, stats
