"""Evaluation paths: how an experiment's model is turned into measured results.

Each path is one class behind :class:`EvalPath` and one entry of ``eval.paths``
(name -> ``{_target_: ...}``); the pipeline runs every configured path in order and
knows none of them. Built in:

``retrieval``  first-stage retrieval (``index``: dense FAISS with the model, or BM25) of
               every collection of ``eval.groups`` -> an optional **rerank** stage that
               re-scores the first stage's top-k (``rerank.depth``, default 100) with the
               model (a cross-encoder, or a bi-encoder as the untrained baseline) ->
               evaluate. With reranking the first stage is evaluated too, and the report
               compares both.
``llm_test``   the LLM test collection of Zhang et al. (arXiv 2504.05220, Sec. 5): the
               top-k of named systems pooled and re-judged by the annotator, then this
               run evaluated on those labels, with ``Judged@10`` (ir_measures) saying how
               much of this run's top 10 the pool covers.

``click_models`` every configured click model fit on ``clicks.train`` and evaluated on
               ``clicks.test`` (or a split of the train log): log-likelihood, perplexity
               per rank, CTR error (``+exp=click_models``).

``judge``       systems (run files or experiments) judged by a relevance judge, the judge's
               agreement with human labels and the A/B design (:mod:`uptrain.judge.path`,
               ``+exp=judge_trec_dl``).

A later path (RAG answers) is one more class here or anywhere, and one more entry under ``eval.paths``.
"""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from uptrain.errors import ConfigError
from uptrain.evaluate.metrics import EvalResult, parse_measures
from uptrain.evaluate.significance import compare
from uptrain.evaluate.stage import EvaluateStage
from uptrain.graph import Artifact, Runner

log = logging.getLogger("uptrain")

Results = dict[str, dict[str, EvalResult]]  # group -> collection -> result


def check_measures(measures: Any, where: str) -> list[str]:
    """The measure names, or a ConfigError naming the config key (before anything slow runs)."""
    try:
        return list(parse_measures(list(measures) if not isinstance(measures, str) else measures))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class RankingPlan:
    """How each collection is ranked: the first-stage index, then optional reranking."""

    index: DictConfig  # the first stage's index config
    index_needs_model: bool
    rerank: dict | None  # {depth, batch_size} when reranking
    model_family: str
    notes: list[str] = field(default_factory=list)  # choices made for the user, said in the report

    @property
    def needs_model(self) -> bool:
        return self.index_needs_model or self.rerank is not None


def plan_ranking(cfg: DictConfig) -> RankingPlan:
    """Decide the first stage and reranking from ``index``, ``rerank`` and the model family.

    Refuses combinations where training would not reach the results: training phases with a
    lexical first stage and no reranking (the trained model would never be used).
    """
    model_cls = get_class(cfg.model._target_)
    can_retrieve = bool(getattr(model_cls, "can_retrieve", True))
    family = str(getattr(model_cls, "family", model_cls.__name__))
    index_cfg = cfg.index
    index_needs_model = bool(getattr(get_class(index_cfg._target_), "needs_model", True))
    rr = cfg.get("rerank") or {}
    enabled = rr.get("enabled", False)
    notes = []
    if enabled == "auto":
        # only when the model is used at all: a lexical run without training needs no model
        enabled = not can_retrieve and (index_needs_model or bool(cfg.get("phases")))
    elif not isinstance(enabled, bool):
        raise ConfigError(f"rerank.enabled must be true, false or auto, got {enabled!r}")
    if not can_retrieve and index_needs_model:
        if not enabled:
            raise ConfigError(
                f"model family '{family}' scores (query, passage) pairs and cannot build a dense index, and "
                "rerank.enabled is false: use a lexical first stage and rerank it (index=bm25 rerank.enabled=true)"
            )
        index_cfg = rr.get("first_stage")
        if index_cfg is None:
            raise ConfigError(f"model family '{family}' cannot retrieve: set index=bm25 or rerank.first_stage")
        index_needs_model = bool(getattr(get_class(index_cfg._target_), "needs_model", True))
        notes.append(f"the {family} cannot retrieve: the first stage is {index_cfg._target_.rsplit('.', 1)[-1]} "
                     f"(rerank.first_stage), its top-{rr.get('depth', 100)} re-scored by the model")
    if cfg.get("phases") and not index_needs_model and not enabled:
        raise ConfigError(
            f"experiment '{cfg.name}' trains a model ({len(cfg.phases)} phase(s)) but index={index_cfg._target_.rsplit('.', 1)[-1]} "
            "is lexical and no reranking is configured, so every result would be the lexical baseline's under this "
            "experiment's name. Use index=faiss (dense retrieval with the trained model), or keep the lexical "
            "first stage and rerank it with the trained model: rerank.enabled=true."
        )
    if enabled and not can_retrieve and not cfg.get("phases"):
        notes.append(f"the {family} is not trained by this experiment (no phases): unless model.backbone is an "
                     "already trained reranker, its scoring head is fresh and ranks at random")
    rerank = None
    if enabled:
        depth = int(rr.get("depth", 100))
        if depth < 1:
            raise ConfigError(f"rerank.depth must be >= 1, got {depth}")
        if depth > int(cfg.eval.depth):
            raise ConfigError(f"rerank.depth ({depth}) exceeds eval.depth ({cfg.eval.depth}), the first stage's depth")
        rerank = {"depth": depth, "batch_size": int(rr.get("batch_size", 64))}
    return RankingPlan(index_cfg, index_needs_model, rerank, family, notes)


@dataclass
class EvalContext:
    """What every path works from: the runner, the config, the model and the ranking plan."""

    runner: Runner
    cfg: DictConfig
    model: Artifact | None
    run_dir: Path
    plan: RankingPlan
    llm_test_runs: Mapping[str, Artifact] | None = None
    judge_runs: Mapping[str, Artifact] | None = None  # judge.systems named by experiment: their final runs
    train_data: Artifact | None = None  # data.train, when the experiment trains (else built on demand)
    _build: Any = None
    _data: dict[str, Artifact] = field(default_factory=dict)
    _first: dict[str, Artifact] = field(default_factory=dict)
    _final: dict[str, Artifact] = field(default_factory=dict)

    def data(self, name: str) -> Artifact:
        from uptrain.data.stage import DataStage

        if name not in self._data:
            if name not in self.cfg.eval.collections:
                raise ConfigError(f"'{name}' is not in eval.collections (known: {sorted(self.cfg.eval.collections)})")
            self._data[name] = self.runner.run(DataStage(instantiate(self.cfg.eval.collections[name])), label=f"data_{name}")
        return self._data[name]

    def require(self, name: str, params: Mapping[str, Any] | None = None) -> Artifact:
        """Any artifact a registered producer builds (the click log, its fitted models, graded
        labels, ...), through the same producers and cache as the training phases."""
        from uptrain.labels.producers import BuildContext

        if self._build is None:
            train = self.train_data
            if train is None:
                from uptrain.data.stage import DataStage

                train = self.runner.run(DataStage(instantiate(self.cfg.data.train)), label="data_train")
            self._build = BuildContext(self.runner, self.cfg, train)
        return self._build.require(name, params)

    def first_stage(self, name: str) -> Artifact:
        """The first stage's top-``eval.depth`` of collection ``name``."""
        from uptrain.index.stage import IndexStage
        from uptrain.retrieve.stage import RetrieveStage

        if name not in self._first:
            indexer = instantiate(self.plan.index)
            deps = {"data": self.data(name)}
            if indexer.needs_model:
                deps["model"] = self.model
            index = self.runner.run(IndexStage(indexer), deps, label=f"index_{name}")
            tag = self.cfg.name if not self.plan.rerank else f"{self.cfg.name}-first"
            self._first[name] = self.runner.run(
                RetrieveStage(indexer, depth=self.cfg.eval.depth, tag=tag), {**deps, "index": index},
                label=f"retrieve_{name}",
            )
        return self._first[name]

    def ranked(self, name: str) -> Artifact:
        """This experiment's final ranking of collection ``name`` (first stage, reranked when configured)."""
        if name not in self._final:
            run = self.first_stage(name)
            if self.plan.rerank:
                from uptrain.rerank.stage import RerankStage

                stage = RerankStage(depth=self.plan.rerank["depth"], batch_size=self.plan.rerank["batch_size"],
                                    tag=self.cfg.name)
                run = self.runner.run(stage, {"data": self.data(name), "run": run, "model": self.model},
                                      label=f"rerank_{name}")
            self._final[name] = run
        return self._final[name]

    def evaluate(self, data: Artifact, run: Artifact, measures: list[str], label: str) -> EvalResult:
        return self.runner.run(EvaluateStage(measures), {"data": data, "run": run}, label=label).value

    def save_run(self, run: Artifact, name: str) -> None:
        from uptrain.retrieve.stage import RUN_FILE

        runs = self.run_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.path / RUN_FILE, runs / f"{name}.trec")


@dataclass
class PathResult:
    results: Results = field(default_factory=dict)
    measures: list[str] = field(default_factory=list)  # measures beyond eval.measures shown in tables
    sections: dict[str, str] = field(default_factory=dict)  # report sections, title -> Markdown
    queries: dict[str, Mapping[str, str]] = field(default_factory=dict)  # collection -> query texts (segments)
    metrics: dict[str, Any] = field(default_factory=dict)  # top-level metrics.json entries (e.g. click_models)


class EvalPath(ABC):
    """One way of measuring the experiment: configured under eval.paths, validated before running."""

    name = "path"

    def validate(self, cfg: DictConfig) -> None:
        """Raise ConfigError for settings that cannot work, before anything slow runs."""

    def enabled(self, cfg: DictConfig) -> bool:
        return True

    @abstractmethod
    def run(self, ctx: EvalContext) -> PathResult:
        """Build and evaluate; return results by group and collection."""


def _mean(r: EvalResult, m: str) -> str:
    v = r.aggregate.get(m)
    return "n/a" if v is None else f"{v:.4f}"


class RetrievalPath(EvalPath):
    """First stage -> [rerank] -> evaluate, for every collection of eval.groups."""

    name = "retrieval"

    def validate(self, cfg: DictConfig) -> None:
        check_measures(cfg.eval.measures, "eval.measures")
        known = set(cfg.eval.collections)
        for group, names in (cfg.eval.groups or {}).items():
            for n in names or []:
                if n not in known:
                    raise ConfigError(
                        f"eval.groups.{group} names '{n}', which is not in eval.collections (known: {', '.join(sorted(known))}). "
                        f"Add it with '+eval.collections.{n}={{_target_: uptrain.data.TrecSource, name: {n}, docs: ..., "
                        "topics: ..., qrels: ...}' (see the README, 'Your own collection')."
                    )
        if not any(names for names in (cfg.eval.groups or {}).values()):
            raise ConfigError("eval.groups is empty: name at least one collection to evaluate on")

    def run(self, ctx: EvalContext) -> PathResult:
        out = PathResult()
        measures = check_measures(ctx.cfg.eval.measures, "eval.measures")
        alpha = float(ctx.cfg.eval.get("alpha", 0.05))
        rows = []
        for group, names in ctx.cfg.eval.groups.items():
            if not names:
                continue
            out.results[group] = {}
            for name in names:
                data, run = ctx.data(name), ctx.ranked(name)
                ctx.save_run(run, name)
                result = ctx.evaluate(data, run, measures, f"evaluate_{name}")
                out.results[group][name] = result
                out.queries[name] = data.value.queries
                if ctx.plan.rerank:
                    first = ctx.first_stage(name)
                    ctx.save_run(first, f"{name}.first_stage")
                    base = ctx.evaluate(data, first, measures, f"evaluate_{name}_first_stage")
                    marks = compare(result, base, alpha=alpha)
                    rows.append(f"| {name} | " + " | ".join(
                        f"{_mean(base, m)} | {_mean(result, m)}{marks.get(m, '')}" for m in measures) + " |")
        if ctx.plan.rerank:
            header = "| collection | " + " | ".join(f"{m} first stage | {m} reranked" for m in measures) + " |"
            sep = "| --- | " + " | ".join("---: | ---:" for _ in measures) + " |"
            notes = "".join(f" Note: {n}." for n in ctx.plan.notes)
            out.sections["Reranking"] = (
                f"The first stage's top-{ctx.plan.rerank['depth']} re-scored by the {ctx.plan.model_family}; "
                f"+/-: the reranked run significantly better/worse than the first stage "
                f"(two-sided paired t-test, p < {alpha:g}).{notes}\n\n" + "\n".join([header, sep, *rows])
            )
        return out


class LLMTestPath(EvalPath):
    """This run on the shared LLM test collection (``eval.llm_test``), with Judged@10.

    ``eval.llm_test.pool``: ``fixed`` (the paper's design: the named systems' pool, the same
    test collection for every run) or ``with_run`` (this run's top-k joins the pool, so it
    is judged wherever it ranks; the collection then differs per run).
    """

    name = "llm_test"
    POOLS = ("fixed", "with_run")

    def enabled(self, cfg: DictConfig) -> bool:
        llm = cfg.eval.get("llm_test")
        return bool(llm is not None and llm.get("enabled"))

    def validate(self, cfg: DictConfig) -> None:
        if not self.enabled(cfg):
            return
        llm = cfg.eval.llm_test
        check_measures(llm.measures, "eval.llm_test.measures")
        steps = list(llm.steps)
        if llm.label_step not in ("relsel", "utilsel", "utilrank") or llm.label_step not in steps:
            raise ConfigError(
                f"eval.llm_test.label_step must be a selection step among eval.llm_test.steps ({', '.join(steps)}): "
                f"relsel, utilsel or utilrank; got {llm.label_step!r}"
            )
        if llm.collection not in cfg.eval.collections:
            raise ConfigError(f"eval.llm_test.collection '{llm.collection}' is not in eval.collections "
                              f"(known: {', '.join(sorted(cfg.eval.collections))})")
        if not llm.systems:
            raise ConfigError("eval.llm_test.systems is empty: name the experiments whose runs are pooled")
        if llm.get("pool", "fixed") not in self.POOLS:
            raise ConfigError(f"eval.llm_test.pool must be one of {', '.join(self.POOLS)}, got {llm.get('pool')!r}")
        self._stage(cfg, list(llm.systems)).validate()  # the annotator's settings, before any training

    @staticmethod
    def _stage(cfg: DictConfig, systems: list[str]):
        from uptrain.evaluate.llm_testset import LLMTestSetStage

        llm = cfg.eval.llm_test
        return LLMTestSetStage(
            cfg.annotator, systems=systems, queries=llm.queries, depth=llm.depth, seed=llm.seed,
            steps=list(llm.steps), label_step=llm.label_step, batch_queries=cfg.annotate.get("batch_queries", 4),
        )

    def measures(self, cfg: DictConfig) -> list[str]:
        names = check_measures(cfg.eval.llm_test.measures, "eval.llm_test.measures")
        return names + [m for m in ("Judged@10",) if m not in names]

    def run(self, ctx: EvalContext) -> PathResult:
        out = PathResult()
        if not ctx.llm_test_runs:
            log.warning("eval.llm_test is enabled but no system runs were given: the LLM test collection is skipped")
            return out
        llm, cfg = ctx.cfg.eval.llm_test, ctx.cfg
        name = llm.collection
        data, run = ctx.data(name), ctx.ranked(name)
        systems = {s: ctx.llm_test_runs[s] for s in llm.systems}
        pool_mode = llm.get("pool", "fixed")
        if pool_mode == "with_run" and cfg.name not in systems:
            systems[cfg.name] = run
        stage = self._stage(cfg, list(systems))
        testset = ctx.runner.run(stage, {"data": data, **{f"run_{s}": a for s, a in systems.items()}}, label="llm_testset")
        measures = self.measures(cfg)
        result = ctx.evaluate(testset, run, measures, "evaluate_llm_test")
        out.results["llm_test"] = {f"{name}_llm": result}
        out.measures = measures
        out.queries[f"{name}_llm"] = testset.value.queries
        judged = result.aggregate.get("Judged@10")
        out.sections["LLM test collection: pool coverage"] = (
            f"Pool: {pool_mode} ({', '.join(systems)}, top-{llm.depth} each"
            + ("; the paper's design, the same collection for every run" if pool_mode == "fixed" else "; this run included") + "). "
            f"Judged@10 of this run: {judged:.4f} (the share of its top 10 that the pool judged; an unjudged passage "
            "counts as not relevant, so a low value understates this run)." if judged is not None else ""
        )
        return out


class ClickModelsPath(EvalPath):
    """Click models fit on ``clicks.train`` and evaluated on ``clicks.test`` (or the last
    ``clicks.test_fraction`` of the train log): ``metrics.json`` gets
    ``click_models.<model>.{log_likelihood, perplexity, perplexity_at, ctr_error, segments}``."""

    name = "click_models"

    def _stages(self, cfg: DictConfig):
        from uptrain.clicks.stages import ClickModelsStage, ReadClicksStage

        clicks = cfg.get("clicks")
        if clicks is None or not clicks.get("train"):
            raise ConfigError(
                "the click_models path needs a click log: clicks.train=PATH (uptrain JSONL, the Yandex WSCD sample "
                "or raw log, TREC Session Track / TianGong-ST XML), and optionally clicks.test=PATH"
            )
        read = [ReadClicksStage(str(clicks.train), clicks.get("format", "auto"), clicks.get("ranks", 10), "train")]
        if clicks.get("test"):
            read.append(ReadClicksStage(str(clicks.test), clicks.get("format", "auto"), clicks.get("ranks", 10), "test"))
        def plain(node):
            return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})

        kwargs, buckets = plain(clicks.get("model_kwargs")), plain(clicks.get("buckets"))
        models = list(clicks.get("models") or [])
        return read, ClickModelsStage(models, clicks.get("test_fraction", 0.25), has_test=len(read) > 1,
                                      buckets=buckets, model_kwargs=kwargs, split=clicks.get("split", "query"),
                                      judgments=clicks.get("judgments"))

    def validate(self, cfg: DictConfig) -> None:
        read, stage = self._stages(cfg)
        for r in read:
            r.validate()
        stage.validate()

    def run(self, ctx: EvalContext) -> PathResult:
        read, stage = self._stages(ctx.cfg)
        deps = {"train": ctx.runner.run(read[0], label="clicks_train")}
        if len(read) > 1:
            deps["test"] = ctx.runner.run(read[1], label="clicks_test")
        artifact = ctx.runner.run(stage, deps, label="click_models")
        payload = artifact.value
        out = PathResult()
        out.metrics["click_models"] = {
            name: {k: r[k] for k in ("log_likelihood", "perplexity", "perplexity_at", "ctr_error", "segments")
                   if k in r}
            for name, r in payload["models"].items()
        }
        for name, r in ((payload.get("grade_agreement") or {}).get("models") or {}).items():
            out.metrics["click_models"].setdefault(name, {})["grade_agreement"] = {
                k: r.get(k) for k in ("pairs", "spearman_rho", "kendall_tau", "per_grade")}
        for name in ("table.md", "perplexity_at.png"):
            if (artifact.path / name).is_file():
                shutil.copyfile(artifact.path / name, ctx.run_dir / f"click_models_{name}")
        return out


def configured_paths(cfg: DictConfig) -> list[EvalPath]:
    """``eval.paths`` instantiated in order (name -> {_target_}); a bad entry is a ConfigError."""
    paths_cfg = cfg.eval.get("paths")
    if not paths_cfg:
        return [RetrievalPath(), LLMTestPath()]
    out = []
    for key, node in paths_cfg.items():
        if node is None:
            continue
        try:
            path = instantiate(node)
        except Exception as exc:  # noqa: BLE001 - hydra wraps import and constructor errors
            raise ConfigError(f"eval.paths.{key}: cannot instantiate {OmegaConf.to_container(node)} ({exc})") from None
        if not isinstance(path, EvalPath):
            raise ConfigError(f"eval.paths.{key}: {type(path).__name__} is not a uptrain.evaluate.paths.EvalPath")
        out.append(path)
    return out
