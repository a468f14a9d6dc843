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
             weighted mean over a batch, :func:`uptrain.losses.base.weighted_mean`). By default
             both objectives share the phase's loss (any loss over positive sets or grades:
             infonce, pointwise_bce, pointwise_ce); logged-SERP sources (click:raw, click:ips) are
             refused, since their examples are sessions, not queries, and a batch of one phase
             holds one layout (a SERP as shown, or a query's sampled group), not both.

Per-objective losses (``click_loss``, ``llm_loss``: a registered loss name and its keyword
arguments, ``{name: pointwise_bce, pos_weight: 2}``; absent: the phase's loss). Each example then
carries its objective (:class:`FamolExample`), and the training module
(:class:`uptrain.train.module.FamolObjective`) applies objective o's loss L_o to the rows of o,
each a weighted mean over its rows with the weights above, and sums them by their share of the
batch's weight:

    L = sum_o (S_o / S) L_o,   S_o = sum_{i in o} W_i,  S = sum_i W_i,

which is the shared-loss weighted mean exactly when L_click = L_llm is one row-level loss (a batch
with one click row of weight w and one LLM row of weight 1 - w gives w L_click + (1 - w) L_llm).
Losses over logged SERPs (``target: click``: naive_*, ips_*, dla) are refused for the same reason
as the sessions themselves; ``kl`` needs a soft (REPLUG) objective spec.

The weight ``w`` is a registered component (``weighting: {kind: ...}``):

``step``     one weight per bucket (``weights: {high: 0.8, medium: 0.5, low: 0.2}``); a query the
             log does not hold (bucket ``unseen``) gets ``weights.unseen``, 0 unless given
``sigmoid``  w(f) = sigmoid(slope * (ln(1 + f) - ln(1 + midpoint))): w = 1/2 at ``midpoint``
             sessions, rising with frequency (slope > 0)
``constant`` w = ``value`` for every query (a frequency-blind mixture, the control)
``learned``  one weight per bucket, learned with the ranker in the FAMOL phase by homoscedastic-
             uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty
             to Weigh Losses for Scene Geometry and Semantics", CVPR 2018), one task per (bucket b,
             objective o):

                 L = sum_{(b, o) in the batch} exp(-s_{b,o}) L_{b,o} + s_{b,o},

             L_{b,o} the objective's loss over the batch's rows of bucket b and objective o (their
             weighted mean with the examples' own weights, w left out), s_{b,o} = log sigma^2_{b,o}
             learnable. The click weight reported is w_b = exp(-s_{b,click}) / (exp(-s_{b,click}) +
             exp(-s_{b,llm})) = sigmoid(s_{b,llm} - s_{b,click}). Minimising over s alone gives
             exp(-s*) = 1 / L_{b,o}, so w_b tends to L_{b,llm} / (L_{b,click} + L_{b,llm}): the
             objective a bucket fits worse (larger loss, noisier labels) weighs less, while the
             + s term keeps either weight from collapsing to 0 (a weight learned on the training
             loss alone would drop whichever objective has the larger loss). (The paper's
             classification form has + s / 2, s = log sigma^2; the factor halves exp(-s*) for both
             objectives of a bucket and leaves w_b unchanged.) ``init`` sets the
             start: ``{high: 0.8, medium: 0.3, low: 0.1}`` (one value in (0, 1) per bucket of the
             bucketing; ``unseen`` optional, else the last bucket's) or a sigmoid weighting
             ``{kind: sigmoid, midpoint, slope}`` (w_b^0 = the mean of the sigmoid over the click
             log's queries of bucket b, sigmoid(0) for ``unseen``); s_{b,click} = -ln w_b^0 and
             s_{b,llm} = -ln(1 - w_b^0), so the first step optimises the fixed weighting's
             w_b^0 L_click + (1 - w_b^0) L_llm (plus a constant). ``lr`` is the s parameters'
             learning rate (AdamW, no weight decay, the phase's warm-up and decay schedule);
             the values are logged (``famol/w_<bucket>``) and recorded at step 0, every
             ``record_every`` optimiser steps and at each epoch's end, with the mean L_{b,o}
             since the last record; the phase's ``train_stats.json`` holds them under ``famol``
             (``final``, ``trajectory``) and :func:`famol_weight_plot` draws them.

Buckets follow ``bucketing`` (default: the Baidu-ULTR convention of
:func:`uptrain.clicks.buckets.frequency_buckets`), over every query of the click log, as the
evaluation's frequency segments do.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from uptrain.labels.examples import LabelledQuery
from uptrain.labels.sources import LabelConfigError, LabelSource, _plain, build_examples, parse_spec, register, spec_key

log = logging.getLogger("uptrain")

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


#: a learned weight starts strictly inside (0, 1): s = -ln w and -ln(1 - w) must be finite; a sigmoid
#: init's bucket mean is clipped to this margin (counted in the plan's ``init_clipped``)
INIT_MARGIN = 1e-4


@weighting("learned")
class LearnedWeighting(Weighting):
    """One click weight per bucket, learned in training (uncertainty weighting; see the module docstring).

    Before training it gives the initial weights: ``init[bucket]`` for a per-bucket ``init``; with a
    sigmoid ``init``, the sigmoid at the query's frequency until :meth:`initial` has seen the click
    log, then the bucket's mean. What training learned is in the phase's ``train_stats.json``
    (``famol.final``), not here.
    """

    learned = True

    def __init__(self, init: Any = None, lr: float = 0.05, record_every: int = 10):
        init = _plain(init)
        if not isinstance(init, Mapping) or not init:
            raise LabelConfigError(
                "famol weighting 'learned' needs init: the starting click weight per bucket "
                "({high: 0.8, medium: 0.3, low: 0.1}, each in (0, 1)) or a sigmoid weighting "
                f"({{kind: sigmoid, midpoint: 10, slope: 1.5}}); got {init!r}")
        if "kind" in init:
            spec = dict(init)
            if spec.pop("kind") != "sigmoid":
                raise LabelConfigError(f"famol weighting 'learned': init is a per-bucket mapping or a weighting of "
                                       f"kind sigmoid, got {init!r}")
            try:
                self.sigmoid = SigmoidWeighting(**spec)
            except TypeError as exc:
                raise LabelConfigError(f"famol weighting 'learned': init {init!r}: {exc}") from None
            self.init = None
        else:
            self.sigmoid = None
            self.init = {str(b): _open_unit(f"init.{b}", v) for b, v in init.items()}
        try:
            self.lr = float(lr)
            self.record_every = int(record_every)
        except (TypeError, ValueError):
            raise LabelConfigError(f"famol weighting 'learned': lr must be a number and record_every an integer, "
                                   f"got {lr!r}, {record_every!r}") from None
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LabelConfigError(f"famol weighting 'learned': lr must be > 0, got {lr!r}")
        if self.record_every < 1 or self.record_every != float(record_every):
            raise LabelConfigError(f"famol weighting 'learned': record_every must be an integer >= 1 (optimiser "
                                   f"steps between two records of the weights), got {record_every!r}")
        self._initial: dict[str, float] | None = None

    def check_buckets(self, names: Sequence[str]) -> None:
        """A per-bucket init names exactly the bucketing's buckets (``unseen`` optional)."""
        if self.init is None:
            return
        unknown = sorted(set(self.init) - set(names) - {"unseen"})
        missing = [b for b in names if b not in self.init]
        if unknown or missing:
            raise LabelConfigError(
                f"famol weighting 'learned': init {self.init} must give one weight per bucket of the bucketing "
                f"{list(names)} (and optionally 'unseen')"
                + (f"; the bucketing has no bucket {unknown}" if unknown else "")
                + (f"; missing {missing}" if missing else ""))

    def initial(self, frequencies: Mapping[str, int], bucket_of: Mapping[str, str],
                names: Sequence[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """(w_b^0 per bucket of ``names`` + ``unseen``, counts): see the module docstring."""
        counts: dict[str, Any] = {}
        if self.init is not None:
            out = {b: self.init[b] for b in names}
            out["unseen"] = self.init.get("unseen", out[names[-1]])
        else:
            per: dict[str, list[float]] = {}
            for q, b in bucket_of.items():
                per.setdefault(b, []).append(self.sigmoid(int(frequencies.get(q, 0)), b))
            out, clipped, empty = {}, [], []
            for b in list(names) + ["unseen"]:
                values = per.get(b)
                if not values:  # no log query in it: no example either; started as a query of 0 sessions
                    if b != "unseen":
                        empty.append(b)
                    values = [self.sigmoid(0, b)]
                w = sum(values) / len(values)
                if not INIT_MARGIN <= w <= 1 - INIT_MARGIN:
                    clipped.append(b)
                    w = min(max(w, INIT_MARGIN), 1 - INIT_MARGIN)
                out[b] = w
            if clipped:
                counts["init_clipped"] = clipped
            if empty:
                counts["init_buckets_without_log_queries"] = empty
        self._initial = dict(out)
        return out, counts

    def __call__(self, frequency: int, bucket: str) -> float:
        if self._initial is not None and bucket in self._initial:
            return self._initial[bucket]
        if self.sigmoid is not None:
            return self.sigmoid(frequency, bucket)
        if bucket in self.init:
            return self.init[bucket]
        if bucket == "unseen":
            return list(self.init.values())[-1]
        raise LabelConfigError(f"famol weighting 'learned' has no init for bucket '{bucket}' (init: {self.init})")

    def params(self) -> dict:
        init = self.init if self.init is not None else {"kind": "sigmoid", **self.sigmoid.params()}
        return {"init": init, "lr": self.lr, "record_every": self.record_every}


def _open_unit(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LabelConfigError(f"famol weighting 'learned': {name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise LabelConfigError(f"famol weighting 'learned': {name} must be in (0, 1) (a learned weight starts "
                               f"strictly between the two objectives: s = -ln w, -ln(1 - w)), got {value!r}")
    return v


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


def bucket_names(bucketing: Mapping[str, Any]) -> list[str]:
    """The bucket names a (checked) bucketing can give, most frequent first: those
    :func:`~uptrain.clicks.buckets.frequency_buckets` gives a toy table that reaches every bucket
    (rank: one query per bucket index; edges: a query at each edge and one below the last;
    quantile: the frequencies 0..10000, which reach every bucket of quantiles at least 1e-4 apart)."""
    from uptrain.clicks.buckets import frequency_buckets

    scheme = bucketing.get("scheme", "rank")
    if scheme == "edges":
        edges = [float(e) for e in bucketing.get("edges") or []]
        toy = {f"e{i}": e for i, e in enumerate(edges)}
        toy["below"] = (edges[-1] - 1) if edges else 0
    elif scheme == "quantile":
        toy = {f"f{i}": i for i in range(10001)}
    else:
        toy = {f"q{i}": 10**6 - i for i in range(max(int(bucketing.get("buckets", 10)), 10))}
    got = frequency_buckets(toy, **bucketing)
    names: list[str] = []
    for q in sorted(got, key=lambda q: -float(toy[q])):
        if got[q] not in names:
            names.append(got[q])
    return names


OBJECTIVES = ("click", "llm")


@dataclass(frozen=True)
class FamolPlan:
    """What a FAMOL phase asks of the training module (:class:`uptrain.train.module.FamolObjective`).

    ``losses``: objective -> its loss ``{name, **kwargs}``, or None for the phase's loss;
    ``buckets``: the learned weights' buckets in report order; ``init``: w_b^0 per bucket, None for
    fixed weights (the examples' weights then carry w); ``lr`` and ``record_every``: see
    :class:`LearnedWeighting`.
    """

    losses: Mapping[str, Mapping[str, Any] | None]
    buckets: tuple[str, ...] = ()
    init: Mapping[str, float] | None = None
    lr: float = 0.05
    record_every: int = 10

    @property
    def learned(self) -> bool:
        return self.init is not None

    def as_dict(self) -> dict:
        return {"losses": {o: (dict(v) if v else None) for o, v in self.losses.items()},
                "buckets": list(self.buckets), "init": dict(self.init) if self.init is not None else None,
                "lr": self.lr, "record_every": self.record_every}


@dataclass(frozen=True, eq=False)
class FamolExample(LabelledQuery):
    """A FAMOL example that says which objective it serves and its query's frequency bucket (what the
    training module needs for per-objective losses and learned weights), and the phase's plan."""

    objective: str = "click"
    bucket: str = "unseen"
    plan: FamolPlan | None = None

    def row_id(self) -> "FamolRowId":
        return FamolRowId(self.query_id, self.objective, self.bucket)


class FamolRowId(str):
    """A training row's query id that also carries its FAMOL objective and bucket.

    It is the query id itself (equal, same hash, same text, JSON and seeds), so everything that reads
    a batch's ``query_ids`` is unchanged; the training module reads ``objective`` and ``bucket`` from
    it. (Every model family's collator passes ``query_ids`` into the batch; a tag carried there needs
    no change to any family's batch layout.)
    """

    def __new__(cls, query_id: str, objective: str, bucket: str):
        self = super().__new__(cls, query_id)
        self.objective = objective
        self.bucket = bucket
        return self

    def __reduce__(self):  # DataLoader workers and ddp_spawn pickle the batches' items
        return (FamolRowId, (str(self), self.objective, self.bucket))


def _loss_spec(objective: str, spec: Any, objective_spec: Any) -> dict | None:
    """A per-objective loss: ``{name, **kwargs}`` (or a bare name) of a registered loss that takes a
    FAMOL row; None when not given. Instantiated once here, so a bad name or argument fails now."""
    spec = _plain(spec)
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not spec.get("name"):
        raise LabelConfigError(f"label source 'famol': {objective}_loss must be a loss name or {{name: NAME, "
                               f"...kwargs}}, got {spec!r}")
    from uptrain.losses import LOSSES, get_loss

    spec = {"name": str(spec["name"]), **{str(k): v for k, v in spec.items() if k != "name"}}
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] not in LOSSES:
        raise LabelConfigError(f"label source 'famol': unknown {objective}_loss '{spec['name']}'; known losses: "
                               f"{', '.join(sorted(LOSSES))}")
    try:
        loss = get_loss(spec["name"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise LabelConfigError(f"label source 'famol': {objective}_loss {spec}: {exc}") from None
    target = getattr(loss, "target", "positive")
    if target == "click":
        raise LabelConfigError(
            f"label source 'famol': {objective}_loss '{spec['name']}' trains on logged SERPs (clicks, ranks, "
            "propensities); FAMOL's examples are per-query groups, so a session-level loss needs a phase of its "
            "own (labels click:raw or click:ips). Use a loss over positive sets or grades (infonce, pointwise_bce, "
            "pointwise_ce).")
    from uptrain.labels.sources import is_soft

    if target == "utility" and not is_soft(objective_spec):
        raise LabelConfigError(f"label source 'famol': {objective}_loss '{spec['name']}' reads REPLUG utilities, "
                               f"and the {objective} labels {objective_spec!r} are positive sets; use labels replug "
                               "for it, or a loss over positive sets")
    return spec


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
    """Frequency-aware multi-objective learning (see the module docstring).

    ``click_loss`` / ``llm_loss``: an objective's own loss (``{name: NAME, **kwargs}``), None for the
    phase's loss; with either, or with the ``learned`` weighting, the examples are
    :class:`FamolExample` rows that carry their objective and bucket (and the phase's
    :class:`FamolPlan`) to the training module. Without them the examples are the plain weighted
    queries the phase's loss reads, as before these options existed.
    """

    def __init__(self, click: Any = None, llm: Any = None, weighting: Any = None, bucketing: Any = None,
                 weight: float = 1.0, click_loss: Any = None, llm_loss: Any = None):
        super().__init__(weight)
        self.click = _sub_spec("click", click if click is not None else {"source": "click", "model": "dbn"}, "famol")
        self.llm = _sub_spec("llm", llm if llm is not None else {"source": "grade"}, "famol")
        self.weighting = make_weighting(weighting)
        self.bucketing = _bucketing(bucketing)
        self.bucket_names = bucket_names(self.bucketing)
        if getattr(self.weighting, "learned", False):
            self.weighting.check_buckets(self.bucket_names)
        self.losses = {"click": _loss_spec("click", click_loss, self.click), "llm": _loss_spec("llm", llm_loss, self.llm)}
        self.inputs = self._inputs_of([self.click, self.llm])

    @property
    def tagged(self) -> bool:
        """True when the examples carry their objective (per-objective losses or learned weights)."""
        return getattr(self.weighting, "learned", False) or any(self.losses.values())

    def params(self) -> dict[str, Any]:
        out = {"click": spec_key(self.click), "llm": spec_key(self.llm), "weighting": self.weighting.spec(),
               "bucketing": self.bucketing}
        # only when given: a run without them keeps the cache key it had before they existed
        out.update({f"{o}_loss": s for o, s in self.losses.items() if s})
        return out

    def describe(self) -> str:
        from uptrain.labels.sources import describe

        losses = "".join(f", {o} loss {s['name']}" for o, s in self.losses.items() if s)
        return f"famol(w={self.weighting.kind}{losses}: {describe(self.click)} | {describe(self.llm)})"

    def requests(self) -> dict[str, dict]:
        return self._requests_of([self.click, self.llm])

    def examples(self, pool, values, collection, seed: int = 0):
        from dataclasses import replace

        freq, bucket_of = _query_buckets(values, self.bucketing)
        learned = getattr(self.weighting, "learned", False)
        counts: dict[str, Any] = {}
        init = None
        if learned:
            init, init_counts = self.weighting.initial(freq, bucket_of, self.bucket_names)
            counts.update(init_counts)
            if init_counts.get("init_clipped"):
                log.warning("famol: the learned weights of bucket(s) %s start at the sigmoid's mean clipped to "
                            "[%g, %g] (s = -ln w must be finite)", init_counts["init_clipped"], INIT_MARGIN,
                            1 - INIT_MARGIN)
            if init_counts.get("init_buckets_without_log_queries"):
                log.warning("famol: bucket(s) %s hold no query of the click log; their learned weights start at "
                            "the sigmoid at 0 sessions and no example trains them",
                            init_counts["init_buckets_without_log_queries"])
        out, tags = [], []
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
                # a learned weight is applied in training (exp(-s)); the example keeps its own weight
                out.append(replace(e, weight=e.weight * (1.0 if learned else w) * self.weight))
                tags.append((objective, b))
            counts[f"{objective}_examples_weight_zero"] = zero
            counts.update({f"{objective}:{k}": v for k, v in (stats.per_source or {}).items()})
        counts["mean_weight"] = {k: round(sum(v) / len(v), 4) for k, v in sorted(weights.items())}
        if not out:
            raise LabelConfigError("label source 'famol': neither objective gives a training example")
        if not self.tagged:
            return out, counts
        self._check_grades(out, tags)
        seen = {b for _, b in tags}
        buckets = tuple(self.bucket_names) + (("unseen",) if "unseen" in seen else ())
        plan = FamolPlan(
            losses=dict(self.losses),
            buckets=buckets if learned else (),
            init={b: init[b] for b in buckets} if learned else None,
            lr=float(getattr(self.weighting, "lr", 0.05)),
            record_every=int(getattr(self.weighting, "record_every", 10)),
        )
        rows = {f"{o}:{b}": 0 for o in OBJECTIVES for b in (buckets or sorted(seen))}
        for o, b in tags:
            rows[f"{o}:{b}"] = rows.get(f"{o}:{b}", 0) + 1
        counts["examples_per_objective_bucket"] = rows
        if learned:
            counts["learned_init"] = {b: round(init[b], 6) for b in buckets}
        fields = [f.name for f in LabelledQuery.__dataclass_fields__.values()]
        tagged = [FamolExample(**{k: getattr(e, k) for k in fields}, objective=o, bucket=b, plan=plan)
                  for e, (o, b) in zip(out, tags)]
        return tagged, counts

    def _check_grades(self, examples: Sequence[LabelledQuery], tags: Sequence[tuple[str, str]]) -> None:
        from uptrain.losses import get_loss

        for objective, spec in self.losses.items():
            if not spec or getattr(get_loss(spec["name"], **{k: v for k, v in spec.items() if k != "name"}),
                                   "target", "positive") != "grade":
                continue
            if not any(e.grades for e, (o, _) in zip(examples, tags) if o == objective):
                raise LabelConfigError(
                    f"label source 'famol': {objective}_loss '{spec['name']}' trains on graded labels, and the "
                    f"{objective} labels {getattr(self, objective)!r} give none; use a graded source (grade) for "
                    "that objective, or a loss over positive sets (infonce, pointwise_bce)")


# ---- what a FAMOL phase learned, for the training report --------------------------------------------

def famol_report(record: Mapping[str, Any] | None) -> str:
    """One paragraph on a FAMOL phase's record (``train_stats.json``: ``famol``): the objectives' losses
    and, for learned weights, w_b at the start and the end per bucket, with the last recorded L_{b,o}."""
    if not record:
        return ""
    losses = record.get("losses") or {}
    text = "FAMOL objectives: " + "; ".join(
        f"{o} {s['name'] + (' ' + str({k: v for k, v in s.items() if k != 'name'}) if len(s) > 1 else '') if isinstance(s, Mapping) else s}"
        for o, s in losses.items()) + "."
    final = record.get("final")
    if final:
        init = record.get("init") or {}
        traj = record.get("trajectory") or []
        steps = traj[-1]["step"] if traj else 0
        text += (f" Learned click weights w_b (uncertainty weighting, Kendall et al. 2018; lr {record.get('lr')}, "
                 f"{steps} steps, {len(traj)} records): "
                 + ", ".join(f"{b} {init.get(b, float('nan')):.3f} -> {w:.3f}" for b, w in final.items()) + ".")
        seen: dict[str, float] = {}
        for point in traj:  # the latest recorded mean loss of each term
            seen.update(point.get("mean_loss") or {})
        if seen:
            text += " Last recorded L_{b,o}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(seen.items())) + "."
    return text


def famol_weight_plot(record: Mapping[str, Any], path) -> str | None:
    """The learned click weight w_b of each bucket against the optimiser step (the FAMOL weight curve);
    None when the record has no learned weights."""
    traj = [p for p in (record or {}).get("trajectory") or [] if p.get("w")]
    if not traj:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, b in enumerate(record.get("buckets") or list(traj[0]["w"])):
        pts = [(p["step"], p["w"][b]) for p in traj if b in p["w"]]
        ax.plot([s for s, _ in pts], [w for _, w in pts], marker="o", ms=3, color=f"C{i}", label=f"{b}")
    for p in traj:
        if p.get("epoch_end"):
            ax.axvline(p["step"], color="gray", linestyle=":", linewidth=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimiser step (dotted: end of an epoch)")
    ax.set_ylabel("click weight w_b (LLM weight 1 - w_b)")
    ax.set_title("FAMOL: learned click weight per frequency bucket", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="bucket", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
