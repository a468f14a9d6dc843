"""Frequency-aware supervision: labels chosen or weighted by the query's frequency in the click log.

Yu et al. (arXiv 2511.06635) combine click and LLM supervision by query frequency in two ways;
only their abstract is public, so both are configurable components here:

``buckets``  (data scheduling) the examples of any label spec, kept only for queries of the
             named frequency buckets: ``{source: buckets, labels: click:dbn, buckets: [high]}``.
             A schedule is a list of phases over the existing phase mechanism (each warm-started
             from the one before, each a cached node), e.g. LLM labels on every query, then
             clicks on the high-frequency ones (``conf/labels/schedule_*.yaml``).
``famol``    (frequency-aware multi-objective learning) one phase with two objectives,
             L = sum_q w(f_q) L_click(q) + (1 - w(f_q)) L_llm(q): every query labelled by the
             click spec gives an example of weight w(f_q), every query labelled by the LLM spec
             one of weight 1 - w(f_q), and the phase's loss weighs each example by it (the
             weighted mean over a batch, :func:`uptrain.losses.base.weighted_mean`). Both
             objectives therefore share the phase's loss (any loss over positive sets or grades:
             infonce, pointwise_bce, pointwise_ce); logged-SERP sources (click:raw, click:ips) are
             refused, since their examples are sessions, not queries.

The weight ``w`` is a registered component (``weighting: {kind: ...}``):

``step``     one weight per bucket (``weights: {high: 0.8, medium: 0.5, low: 0.2}``); a query the
             log does not hold (bucket ``unseen``) gets ``weights.unseen``, 0 unless given
``sigmoid``  w(f) = sigmoid(slope * (ln(1 + f) - ln(1 + midpoint))): w = 1/2 at ``midpoint``
             sessions, rising with frequency (slope > 0)
``constant`` w = ``value`` for every query (a frequency-blind mixture, the control)

Buckets follow ``bucketing`` (default: the Baidu-ULTR convention of
:func:`uptrain.clicks.buckets.frequency_buckets`), over every query of the click log, as the
evaluation's frequency segments do.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from uptrain.labels.sources import LabelConfigError, LabelSource, _plain, build_examples, parse_spec, register, spec_key

WEIGHTINGS: dict[str, type] = {}


def weighting(name: str):
    def wrap(cls):
        WEIGHTINGS[name] = cls
        cls.kind = name
        return cls

    return wrap


class Weighting:
    """w(frequency, bucket) in [0, 1]: the click objective's weight for a query."""

    kind = "base"

    def __call__(self, frequency: int, bucket: str) -> float:
        raise NotImplementedError

    def params(self) -> dict:
        return {}

    def spec(self) -> dict:
        return {"kind": self.kind, **self.params()}


def _unit(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LabelConfigError(f"famol weighting: {name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise LabelConfigError(f"famol weighting: {name} must be in [0, 1], got {value!r}")
    return v


@weighting("step")
class StepWeighting(Weighting):
    def __init__(self, weights: Mapping[str, float] | None = None):
        weights = dict(weights or {"high": 0.8, "medium": 0.5, "low": 0.2})
        if not weights:
            raise LabelConfigError("famol weighting 'step' needs weights: {bucket: w, ...}")
        self.weights = {str(k): _unit(f"weights.{k}", v) for k, v in weights.items()}

    def __call__(self, frequency: int, bucket: str) -> float:
        if bucket == "unseen" and bucket not in self.weights:
            return 0.0  # a query the log does not hold: no click evidence (documented, counted by famol)
        if bucket not in self.weights:
            raise LabelConfigError(f"famol weighting 'step' has no weight for bucket '{bucket}' "
                                   f"(weights: {self.weights}); give one per bucket of the bucketing")
        return self.weights[bucket]

    def params(self) -> dict:
        return {"weights": self.weights}


@weighting("sigmoid")
class SigmoidWeighting(Weighting):
    def __init__(self, midpoint: float = 10.0, slope: float = 1.0):
        try:
            self.midpoint, self.slope = float(midpoint), float(slope)
        except (TypeError, ValueError):
            raise LabelConfigError(f"famol weighting 'sigmoid': midpoint and slope must be numbers, got "
                                   f"{midpoint!r}, {slope!r}") from None
        if self.midpoint < 0 or not math.isfinite(self.slope):
            raise LabelConfigError(f"famol weighting 'sigmoid': midpoint must be >= 0 sessions, got {midpoint!r}")

    def __call__(self, frequency: int, bucket: str) -> float:
        x = self.slope * (math.log1p(max(int(frequency), 0)) - math.log1p(self.midpoint))
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))

    def params(self) -> dict:
        return {"midpoint": self.midpoint, "slope": self.slope}


@weighting("constant")
class ConstantWeighting(Weighting):
    def __init__(self, value: float = 0.5):
        self.value = _unit("value", value)

    def __call__(self, frequency: int, bucket: str) -> float:
        return self.value

    def params(self) -> dict:
        return {"value": self.value}


def make_weighting(cfg: Any) -> Weighting:
    cfg = dict(_plain(cfg) or {"kind": "sigmoid"})
    kind = cfg.pop("kind", None)
    if kind not in WEIGHTINGS:
        raise LabelConfigError(f"famol weighting needs kind among {', '.join(sorted(WEIGHTINGS))}, got {kind!r}")
    try:
        return WEIGHTINGS[kind](**cfg)
    except TypeError as exc:
        raise LabelConfigError(f"famol weighting '{kind}': {exc}") from None


def _bucketing(cfg: Any) -> dict:
    from uptrain.clicks.buckets import check_bucketing

    return check_bucketing(**dict(_plain(cfg) or {"scheme": "rank", "buckets": 10}))


def _query_buckets(values: Mapping[str, Any], bucketing: dict) -> tuple[dict[str, int], dict[str, str]]:
    from uptrain.clicks.buckets import frequency_buckets
    from uptrain.clicks.segments import query_frequencies

    freq = query_frequencies(values["clicks"])
    return freq, frequency_buckets(freq, **bucketing)


def _sub_spec(name: str, spec: Any, owner: str) -> Any:
    spec = _plain(spec)
    sources = parse_spec(spec)
    bad = [s for s in sources if s.session_level or s.own_examples]
    if bad:
        raise LabelConfigError(
            f"label source '{owner}': its {name} labels {spec!r} are logged sessions or build their own examples; "
            "use per-query labels (click:ctr, click:<click model>, grade, llm:<step>, human)"
        )
    return spec


class _Composite(LabelSource):
    own_examples = True

    def _requests_of(self, specs: Sequence[Any]) -> dict[str, dict]:
        out: dict[str, dict] = {"clicks": {}}
        for spec in specs:
            for s in parse_spec(spec):
                out.update(s.requests())
        return out

    def _inputs_of(self, specs: Sequence[Any]) -> tuple[str, ...]:
        names = ["clicks"]
        for spec in specs:
            for s in parse_spec(spec):
                names += [n for n in s.inputs if n not in names]
        return tuple(names)


@register("buckets")
class BucketSource(_Composite):
    """Another spec's examples, only for the queries of the named frequency buckets."""

    def __init__(self, labels: Any = None, buckets: Sequence[str] | str | None = None, bucketing: Any = None,
                 weight: float = 1.0):
        super().__init__(weight)
        if labels is None or not buckets:
            raise LabelConfigError("label source 'buckets' needs labels (a label spec) and buckets (names, e.g. [high])")
        self.labels = _sub_spec("inner", labels, "buckets")
        self.buckets = [buckets] if isinstance(buckets, str) else [str(b) for b in buckets]
        self.bucketing = _bucketing(bucketing)
        self.inputs = self._inputs_of([self.labels])

    def params(self) -> dict[str, Any]:
        return {"labels": spec_key(self.labels), "buckets": self.buckets, "bucketing": self.bucketing}

    def describe(self) -> str:
        from uptrain.labels.sources import describe

        return f"{describe(self.labels)} on {'+'.join(self.buckets)} queries"

    def requests(self) -> dict[str, dict]:
        return self._requests_of([self.labels])

    def examples(self, pool, values, collection, seed: int = 0):
        freq, bucket_of = _query_buckets(values, self.bucketing)
        known = set(bucket_of.values())
        missing = [b for b in self.buckets if b not in known]
        if missing:
            raise LabelConfigError(f"label source 'buckets': no query of the click log is in bucket(s) {missing} "
                                   f"(its buckets: {sorted(known)})")
        inner, stats = build_examples(self.labels, pool, values, seed=seed, collection=collection)
        kept = [e for e in inner if bucket_of.get(e.query_id) in self.buckets]
        if self.weight != 1.0:
            from dataclasses import replace

            kept = [replace(e, weight=e.weight * self.weight) for e in kept]
        counts = {"inner_examples": len(inner), "examples_outside_buckets": len(inner) - len(kept),
                  **{f"inner:{k}": v for k, v in (stats.per_source or {}).items()}}
        if not kept:
            raise LabelConfigError(f"label source 'buckets': none of the {len(inner)} examples of {self.labels!r} "
                                   f"is a query of bucket(s) {self.buckets}")
        return kept, counts


@register("famol")
class FamolSource(_Composite):
    """Frequency-aware multi-objective learning (see the module docstring)."""

    def __init__(self, click: Any = None, llm: Any = None, weighting: Any = None, bucketing: Any = None,
                 weight: float = 1.0):
        super().__init__(weight)
        self.click = _sub_spec("click", click if click is not None else {"source": "click", "model": "dbn"}, "famol")
        self.llm = _sub_spec("llm", llm if llm is not None else {"source": "grade"}, "famol")
        self.weighting = make_weighting(weighting)
        self.bucketing = _bucketing(bucketing)
        self.inputs = self._inputs_of([self.click, self.llm])

    def params(self) -> dict[str, Any]:
        return {"click": spec_key(self.click), "llm": spec_key(self.llm), "weighting": self.weighting.spec(),
                "bucketing": self.bucketing}

    def describe(self) -> str:
        from uptrain.labels.sources import describe

        return f"famol(w={self.weighting.kind}: {describe(self.click)} | {describe(self.llm)})"

    def requests(self) -> dict[str, dict]:
        return self._requests_of([self.click, self.llm])

    def examples(self, pool, values, collection, seed: int = 0):
        from dataclasses import replace

        freq, bucket_of = _query_buckets(values, self.bucketing)
        out, counts = [], {}
        weights: dict[str, list[float]] = {}
        for objective, spec in (("click", self.click), ("llm", self.llm)):
            inner, stats = build_examples(spec, pool, values, seed=seed, collection=collection)
            counts[f"{objective}_queries"] = len(inner)
            zero = 0
            for e in inner:
                f = int(freq.get(e.query_id, 0))
                b = bucket_of.get(e.query_id, "unseen")
                if b == "unseen":
                    counts[f"{objective}_queries_not_in_log"] = counts.get(f"{objective}_queries_not_in_log", 0) + 1
                w = self.weighting(f, b)
                w = w if objective == "click" else 1.0 - w
                weights.setdefault(f"{objective}:{b}", []).append(w)
                if w <= 0.0:
                    zero += 1
                    continue
                out.append(replace(e, weight=e.weight * w * self.weight))
            counts[f"{objective}_examples_weight_zero"] = zero
            counts.update({f"{objective}:{k}": v for k, v in (stats.per_source or {}).items()})
        counts["mean_weight"] = {k: round(sum(v) / len(v), 4) for k, v in sorted(weights.items())}
        if not out:
            raise LabelConfigError("label source 'famol': neither objective gives a training example")
        return out, counts
