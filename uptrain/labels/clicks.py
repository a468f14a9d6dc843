"""Click labels: a click log (read from ``clicks.train`` or simulated over the training collection)
turned into training labels, through the label-source seam.

``click:ctr``        positives = the ``top`` (1) pool candidates of the query by click-through rate
                     (DCTR: smoothed clicks / impressions of the pair, position bias left in) among
                     those with an estimate >= ``threshold`` (0) and ``min_impressions`` (1); ``top:
                     null`` keeps every candidate over the threshold
``click:<model>``    the same from a fitted click model's relevance estimate (``click:dbn``: DBN's
                     attractiveness x satisfaction; ``click:pbm``: PBM's attractiveness; any name of
                     :data:`uptrain.clicks.models.CLICK_MODELS`)
``click:raw``        the logged SERPs themselves, one training example per session, trained on as
                     shown (clicked documents, each document's rank): for the naive and DLA losses;
                     ``min_clicks: 1`` leaves out sessions without a click (they add nothing to a
                     listwise loss), ``max_sessions`` samples the rest
``click:ips``        the same with each rank's examination propensity from a PBM fitted on the
                     training log (or ``propensities: [...]`` given): for the IPS losses

Query keys of the log must be the collection's query ids (a simulated log's are); a log
with its own query texts (TREC Session Track, TianGong-ST) supplies them. Everything left
out (queries without clicks, documents outside the pool or the collection, sessions cut by
``max_sessions``) is counted in the training phase's label statistics.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from uptrain.errors import ConfigError
from uptrain.graph import Artifact
from uptrain.labels.examples import LabelledQuery, stable_seed
from uptrain.labels.producers import BuildContext, producer
from uptrain.labels.sources import LabelConfigError, LabelSource, register

SESSION_MODES = ("raw", "ips")
ALIASES = {"ctr": "dctr"}


def _known_models() -> list[str]:
    from uptrain.clicks.models import CLICK_MODELS

    return sorted(CLICK_MODELS)


@register("click")
class ClickSource(LabelSource):
    arg = "model"

    def __init__(self, model: str | None = None, threshold: float = 0.0, top: int | None = 1, min_impressions: int = 1,
                 propensities: Sequence[float] | None = None, max_sessions: int | None = None,
                 min_clicks: int = 0, weight: float = 1.0):
        super().__init__(weight)
        known = ["ctr", *SESSION_MODES, *_known_models()]
        if model not in known:
            raise LabelConfigError(
                f"label source 'click' needs a model among {', '.join(known)} (click:<model>, or "
                f"{{source: click, model: ...}}), got {model!r}"
            )
        if not 0 <= float(threshold) <= 1:
            raise LabelConfigError(f"label source 'click': threshold must be in [0, 1], got {threshold}")
        if top is not None and int(top) < 1:
            raise LabelConfigError(f"label source 'click': top must be >= 1 or null, got {top}")
        if int(min_impressions) < 1:
            raise LabelConfigError(f"label source 'click': min_impressions must be >= 1, got {min_impressions}")
        if max_sessions is not None and int(max_sessions) < 1:
            raise LabelConfigError(f"label source 'click': max_sessions must be >= 1 or null, got {max_sessions}")
        if propensities is not None:
            propensities = [float(p) for p in propensities]
            if model != "ips" or not all(0 < p <= 1 for p in propensities):
                raise LabelConfigError("label source 'click': propensities (each in (0, 1]) apply to click:ips only, "
                                       f"got {propensities} for click:{model}")
        self.model = model
        self.threshold = float(threshold)
        self.top = None if top is None else int(top)
        self.min_impressions = int(min_impressions)
        self.propensities = propensities
        self.max_sessions = None if max_sessions is None else int(max_sessions)
        if int(min_clicks) < 0 or (int(min_clicks) and model not in SESSION_MODES):
            raise LabelConfigError(f"label source 'click': min_clicks (>= 0) applies to click:raw and click:ips, "
                                   f"got {min_clicks} for click:{model}")
        self.min_clicks = int(min_clicks)
        self.session_level = model in SESSION_MODES
        fitted = self._fitted_model()
        self.inputs = ("clicks",) + (("click_model",) if fitted else ())
        self._table: dict[str, dict[str, float]] | None = None
        self._impressions: dict[tuple[str, str], int] = {}
        self._counts = {"click_queries_without_clicks": 0, "click_positives_outside_pool": 0,
                        "click_pairs_below_threshold": 0, "click_pairs_beyond_top": 0}

    def _fitted_model(self) -> str | None:
        if self.model == "raw" or (self.model == "ips" and self.propensities is not None):
            return None
        if self.model == "ips":
            return "pbm"
        return ALIASES.get(self.model, self.model)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if not self.session_level:
            out.update(threshold=self.threshold, top=self.top, min_impressions=self.min_impressions)
        if self.propensities is not None:
            out["propensities"] = self.propensities
        if self.max_sessions is not None:
            out["max_sessions"] = self.max_sessions
        if self.min_clicks:
            out["min_clicks"] = self.min_clicks
        return out

    def describe(self) -> str:
        extra = {k: v for k, v in self.params().items() if k != "model"}
        text = f"click:{self.model}" + (" (" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
        return text + (f" (weight {self.weight:g})" if self.weight != 1.0 else "")

    def requests(self) -> dict[str, dict]:
        out: dict[str, dict] = {"clicks": {}}
        fitted = self._fitted_model()
        if fitted:
            out["click_model"] = {"model": fitted}
        return out

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self._counts.items() if v}

    # ---- aggregated estimates -> positive sets over the pool ------------------------------
    def positives(self, entry, values: Mapping[str, Any]) -> list[str] | None:
        if self._table is None:
            fitted = values["click_model"]
            self._table = fitted.by_query()
            self._impressions = fitted.impressions
        est = self._table.get(entry.query_id)
        if not est:
            self._counts["click_queries_without_clicks"] += 1
            return None
        candidates = set(entry.candidates)
        out = []
        for d, v in sorted(est.items(), key=lambda kv: -kv[1]):
            if v < self.threshold or self._impressions.get((entry.query_id, d), 0) < self.min_impressions:
                self._counts["click_pairs_below_threshold"] += 1
                continue
            if d not in candidates:
                self._counts["click_positives_outside_pool"] += 1
                continue
            if self.top is not None and len(out) >= self.top:
                self._counts["click_pairs_beyond_top"] += 1
                continue
            out.append(d)
        return out

    # ---- logged SERPs ---------------------------------------------------------------------
    def session_examples(self, pool: Sequence, values: Mapping[str, Any], collection, seed: int = 0):
        clicks = values["clicks"].log
        props = self._session_propensities(values, clicks.n_ranks)
        pool_text = {e.query_id: e.query for e in pool}
        queries = getattr(collection, "queries", {}) or {}
        docs = getattr(collection, "docs", {}) or {}
        clicked = clicks.clicked
        order = list(range(len(clicks)))
        counts = {"sessions_in_log": len(clicks), "sessions_below_min_clicks": 0, "sessions_cut_by_max_sessions": 0,
                  "sessions_without_query_text": 0, "sessions_with_unknown_documents": 0}
        if self.min_clicks:  # before the sample: max_sessions counts sessions that are trained on
            per = clicked.sum(axis=1)
            order = [s for s in order if per[s] >= self.min_clicks]
            counts["sessions_below_min_clicks"] = len(clicks) - len(order)
        if self.max_sessions is not None and len(order) > self.max_sessions:
            rng = random.Random(stable_seed("click_sessions", seed))
            counts["sessions_cut_by_max_sessions"] = len(order) - self.max_sessions
            order = sorted(rng.sample(order, self.max_sessions))
        examples = []
        for s in order:
            key = clicks.queries[clicks.query[s]]
            text = pool_text.get(key) or queries.get(key) or clicks.query_text.get(key)
            if not text:
                counts["sessions_without_query_text"] += 1
                continue
            serp = [clicks.doc_ids[d] for d in clicks.docs[s] if d >= 0]
            if any(d not in docs for d in serp):
                counts["sessions_with_unknown_documents"] += 1
                continue
            pos = tuple(d for r, d in enumerate(serp) if clicked[s, r])
            examples.append(LabelledQuery(
                key, text, pos, tuple(d for d in serp if d not in pos), weight=self.weight,
                serp=tuple(serp), propensities=None if props is None else tuple(props[: len(serp)]),
            ))
        if not examples:
            raise LabelConfigError(
                f"label source 'click:{self.model}': none of the log's {len(clicks)} sessions could be used "
                f"({ {k: v for k, v in counts.items() if v} }): the log's query keys must be the training "
                "collection's query ids (or the log must carry query texts), and its documents the collection's"
            )
        counts = {k: v for k, v in counts.items() if v}
        truth = getattr(values["clicks"], "truth", None) or {}
        if truth.get("examination"):  # a simulated log: the examination it used, for learned-vs-true reports
            counts["true_examination"] = [float(x) for x in truth["examination"]]
        return examples, counts

    def _session_propensities(self, values: Mapping[str, Any], ranks: int) -> list[float] | None:
        if self.model == "raw":
            return None
        if self.propensities is not None:
            if len(self.propensities) < ranks:
                raise LabelConfigError(f"label source 'click:ips': {len(self.propensities)} propensities given for a "
                                       f"log of {ranks} ranks")
            return list(self.propensities)
        exam = (values["click_model"].params or {}).get("examination")
        if not exam or len(exam) < ranks or not all(isinstance(x, (int, float)) and x > 0 for x in exam):
            raise LabelConfigError(f"label source 'click:ips': the fitted PBM gives no usable examination curve ({exam})")
        return [float(x) for x in exam]


# ---- producers ---------------------------------------------------------------------------

def _clicks_stage(cfg: DictConfig, params: dict):
    clicks = cfg.get("clicks") or {}
    if clicks.get("train"):
        from uptrain.clicks.stages import ReadClicksStage

        return ReadClicksStage(str(clicks.train), clicks.get("format", "auto"), clicks.get("ranks", 10), role="train")
    sim = clicks.get("simulator")
    if sim is None:
        raise ConfigError("click labels need a click log: set clicks.train=PATH, or configure clicks.simulator "
                          "to simulate one over data.train")
    from hydra.utils import instantiate

    from uptrain.clicks.simulate import SimulateClicksStage

    return SimulateClicksStage(instantiate(sim))


def _click_model_stage(cfg: DictConfig, params: dict):
    from uptrain.clicks.stages import FitClickModelStage

    name = params["model"]
    kwargs = ((cfg.get("clicks") or {}).get("model_kwargs") or {}).get(name) or {}
    return FitClickModelStage(name, **(OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs)
                                       else dict(kwargs)))


@producer("clicks", plan=_clicks_stage)
def clicks(ctx: BuildContext, params: dict) -> Artifact:
    stage = _clicks_stage(ctx.cfg, params)
    deps = {"data": ctx.train_data} if "data" in stage.inputs else {}
    return ctx.runner.run(stage, deps, label="clicks")


@producer("click_model", plan=_click_model_stage)
def click_model(ctx: BuildContext, params: dict) -> Artifact:
    return ctx.runner.run(_click_model_stage(ctx.cfg, params), {"clicks": ctx.require("clicks")},
                          label=f"click_model_{params['model']}")

