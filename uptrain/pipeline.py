"""Composes one experiment's run graph from its config and runs it.

data -> [pool -> label inputs] -> model -> train (0..n phases) -> evaluation paths -> report

The orchestrator knows no stage's internals: label sources say which artifacts they read
and registered producers build them (:mod:`uptrain.labels.producers`); the ranking plan
says how collections are ranked (dense or lexical first stage, optional reranking); the
evaluation paths (``eval.paths``) produce results and their own report sections; every
built stage may contribute a report section (``Stage.report``). Every configured value
is checked (:func:`validate`) before the first slow stage runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uptrain.cache import ArtifactCache, write_atomic
from uptrain.data.stage import DataStage
from uptrain.errors import ConfigError, instantiate_as
from uptrain.evaluate.metrics import EvalResult
from uptrain.evaluate.paths import EvalContext, EvalPath, PathResult, RankingPlan, configured_paths, plan_ranking
from uptrain.evaluate.segments import Segmentation, segment_results
from uptrain.evaluate.significance import compare
from uptrain.graph import Artifact, Runner
from uptrain.labels import BuildContext, describe, input_requests, spec_key, uses_human
from uptrain.labels.producers import plan_inputs
from uptrain.precision import describe as describe_precision, lightning_precision, resolve_dtype
from uptrain.report.markdown import console_table, render_report
from uptrain.report.tidy import tidy_rows, to_csv
from uptrain.train.distributed import launched_rank
from uptrain.train.stage import BaseModelStage, TrainStage

log = logging.getLogger("uptrain")


@dataclass
class ExperimentResult:
    name: str
    run_dir: Path
    results: dict[str, dict[str, EvalResult]]  # group -> collection -> result
    stages: list[dict]
    measures: list[str]
    segments: dict | None = None  # group -> collection -> segment -> result


@dataclass
class Plan:
    """Everything configured and checked before anything runs."""

    cfg: DictConfig
    ranking: RankingPlan
    phases: list[TrainStage]
    paths: list[EvalPath]
    segmentations: dict[str, Segmentation]


def make_logger_factory(cfg: DictConfig, run_dir: Path):
    """Lightning loggers write into the run directory, one version per training phase."""
    logger_cfg = cfg.get("logger")
    if logger_cfg is None:
        return None

    def factory(phase: str) -> Any:
        return instantiate(logger_cfg, save_dir=str(run_dir), version=phase)

    return factory


def _merged(base: DictConfig, override) -> DictConfig:
    return OmegaConf.merge(base, override) if override else base


def _phase_labels(phase) -> Any:
    labels = phase.get("labels", "human")
    return OmegaConf.to_container(labels, resolve=True) if OmegaConf.is_config(labels) else labels


def _trainer_cfg(cfg: DictConfig, phase) -> DictConfig:
    """The phase's trainer config, ``precision: auto`` resolved from the model's dtype on the
    trainer's device (bf16-mixed where bf16 is fast), so the cache key holds the choice."""
    trainer = _merged(cfg.trainer, phase.get("trainer"))
    if str(trainer.get("precision", "auto")).lower() == "auto":
        accelerator = str(trainer.get("accelerator", "cpu"))
        device = "cpu" if accelerator == "cpu" else "auto"
        dtype = resolve_dtype(cfg.model.get("dtype", "fp32"), device, "model.dtype")
        trainer = OmegaConf.merge(trainer, {"precision": lightning_precision("auto", dtype)})
    return trainer


def plan_phases(cfg: DictConfig, logger_factory=None) -> list[TrainStage]:
    """One TrainStage per configured phase (each checks its labels and loss on construction)."""
    stages = []
    for phase in cfg.get("phases") or []:
        if not phase.get("name"):
            raise ConfigError(f"every training phase needs a name, got {OmegaConf.to_container(phase)}")
        stages.append(TrainStage(
            phase=phase.name,
            loss_cfg=phase.get("loss") or cfg.loss,
            sampling_cfg=phase.get("sampling") or cfg.sampling,
            trainer_cfg=_trainer_cfg(cfg, phase),
            hparams=_merged(cfg.train, phase.get("train")),
            seed=cfg.seed,
            logger_factory=logger_factory,
            labels=spec_key(_phase_labels(phase)),
            human_ratio=phase.get("human_ratio", 100),
        ))
    return stages


def _segmentations(cfg: DictConfig) -> dict[str, Segmentation]:
    out = {}
    for name, node in (cfg.eval.get("segments") or {}).items():
        if node is None:
            continue
        seg = instantiate_as(node, Segmentation, f"eval.segments.{name}", "uptrain.evaluate.segments.Segmentation")
        out[str(name)] = seg
    return out


def validate(cfg: DictConfig, logger_factory=None) -> Plan:
    """Configure every stage of the experiment and check every value, without running anything.

    Raises :class:`uptrain.errors.UserError` (one paragraph, exit 2 from the CLI) for
    settings that cannot work: unknown measures or collections, label specs, losses,
    producers' settings, a lexical index with training phases, a model family that
    cannot retrieve without reranking, bad segment or path configs.
    """
    job_shard(cfg)  # annotate.shard / annotate.num_shards
    ranking = plan_ranking(cfg)
    phases = plan_phases(cfg, logger_factory)
    if ranking.needs_model or phases:  # the backbone, and its pooling against a sentence-transformers layout
        BaseModelStage(cfg.model).validate()
    for stage in phases:
        stage.validate()
        for producer_stage in plan_inputs(cfg, input_requests(stage.labels)):
            producer_stage.validate()
    paths = configured_paths(cfg)
    for path in paths:
        path.validate(cfg)
    segmentations = _segmentations(cfg)
    # last, every collection's files exist (a local collection's missing file names its remedies)
    sources = ([cfg.data.train] if phases else []) + [
        cfg.eval.collections[n] for names in (cfg.eval.groups or {}).values() for n in (names or [])
        if n in cfg.eval.collections]
    for source in sources:
        DataStage(instantiate(source)).validate()
    return Plan(cfg, ranking, phases, paths, segmentations)


def build_model(runner: Runner, plan: Plan, train_data: Artifact | None) -> Artifact:
    """The model as configured, then each training phase warm-started from the one before.

    The artifacts the phases' labels read (the pool, annotations, REPLUG scores, ...) are
    built by their producers only when a phase needs them, each once per experiment.
    """
    model = runner.run(BaseModelStage(plan.cfg.model), label="model")
    if not plan.phases:
        return model
    assert train_data is not None
    ctx = BuildContext(runner, plan.cfg, train_data)
    pool = ctx.require("pool")
    for stage in plan.phases:
        deps = {"data": train_data, "pool": pool, "init": model, **ctx.inputs_for(input_requests(stage.labels))}
        model = runner.run(stage, deps, label=f"train_{stage.phase}")
    return model


def model_directory(model: Artifact) -> Path:
    """The final model as a sentence-transformers directory: a trained model's ``encoder/`` (a
    SentenceTransformer for a bi-encoder, a CrossEncoder for a cross-encoder), or, for a model
    used as shipped, its backbone's directory (the weights stay where the backbone lives)."""
    from uptrain.model.backbone import resolve_backbone

    encoder = Path(model.path) / "encoder"
    if encoder.is_dir():
        return encoder
    from uptrain.model.base import FAMILIES

    files = [Path(model.path) / c.artifact_file for c in FAMILIES.values() if (Path(model.path) / c.artifact_file).is_file()]
    backbone = json.loads(files[0].read_text()).get("backbone") if files else None
    return Path(resolve_backbone(backbone)) if backbone else encoder


def link_model(run_dir: Path, model: Artifact) -> None:
    """``<run dir>/model``: a link to :func:`model_directory`, so ``SentenceTransformer(run_dir/'model')``
    (or ``CrossEncoder``) loads what this run ranked with."""
    target = model_directory(model)
    link = Path(run_dir) / "model"
    if not target.is_dir():
        log.warning("the model of this run is not a local directory (%s): no %s link", target, link)
        return
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    except OSError as exc:  # a file system without links: say where the model is instead
        log.warning("could not link %s -> %s (%s); the model is at %s", link, target, exc, target)


def job_shard(cfg: DictConfig):
    """This job's share of the sharded stages (``annotate.shard`` of ``annotate.num_shards``), or None."""
    from uptrain.annotate.shards import JobShard

    annotate = cfg.get("annotate") or {}
    return JobShard.from_config(annotate.get("shard"), annotate.get("num_shards", 1), annotate.get("shard_wait", 120))


def is_follower(cfg: DictConfig) -> bool:
    """Whether this process is a launched training process other than rank 0 (multi-node DDP)."""
    return launched_rank(_plain_trainer(cfg)) > 0


def _plain_trainer(cfg: DictConfig) -> dict:
    trainer = cfg.get("trainer")
    return OmegaConf.to_container(trainer, resolve=True) if trainer is not None else {}


def describe_labels(cfg: DictConfig) -> tuple[str, float | None]:
    """A one-line account of the training labels and the share of human labels they use (%)."""
    phases = cfg.get("phases") or []
    if not phases:
        return "", None
    parts, human = [], 0.0
    for phase in phases:
        labels = _phase_labels(phase)
        ratio = float(phase.get("human_ratio", 100))
        text = describe(labels)
        if uses_human(labels):
            human = max(human, ratio)
            if ratio < 100:
                text = text.replace("human", f"human {ratio:g}%", 1)
        parts.append(text)
    return " -> ".join(parts), human


def _train_data(runner: Runner, cfg: DictConfig) -> Artifact | None:
    return runner.run(DataStage(instantiate(cfg.data.train)), label="data_train") if cfg.get("phases") else None


def system_run(cfg: DictConfig, run_dir: Path, collection: str) -> Artifact:
    """One system's final run over one collection (its model trained or found in the cache), for pooling."""
    plan = validate(cfg)
    runner = Runner(ArtifactCache(cfg.cache_dir), run_dir, follower=is_follower(cfg), shard=job_shard(cfg))
    model = build_model(runner, plan, _train_data(runner, cfg)) if plan.ranking.needs_model else None
    return EvalContext(runner, cfg, model, Path(run_dir), plan.ranking).ranked(collection)


def run_paths(ctx: EvalContext, paths: list[EvalPath]) -> PathResult:
    """Every enabled path in order, merged (a later path adding to a group extends it)."""
    merged = PathResult()
    for path in paths:
        if not path.enabled(ctx.cfg):
            continue
        got = path.run(ctx)
        for group, res in got.results.items():
            merged.results.setdefault(group, {}).update(res)
        merged.measures += [m for m in got.measures if m not in merged.measures]
        merged.sections.update(got.sections)
        merged.queries.update(got.queries)
        merged.metrics.update(got.metrics)
    return merged


def significance_markers(
    results: dict[str, dict[str, EvalResult]],
    baseline: "ExperimentResult | None",
    second: "ExperimentResult | None" = None,
    alpha: float = 0.05,
    segments: bool = False,
) -> dict | None:
    """group -> collection -> measure -> "+"/"-" against the baseline, then a dagger when
    significantly better than the second baseline (two-sided paired t-tests, p < alpha).

    With ``segments``, ``results`` is group -> collection -> segment -> result and the
    markers compare each segment with the same segment of the baselines.
    """
    if baseline is None and second is None:
        return None

    def theirs_of(other: "ExperimentResult | None", g: str, c: str):
        if other is None:
            return None
        source = other.segments if segments else other.results
        return ((source or {}).get(g) or {}).get(c)

    out: dict = {}
    for g, res in results.items():
        out[g] = {}
        for c, r in res.items():
            if segments:
                out[g][c] = {}
                for seg, rs in r.items():
                    marks = {m: "" for m in rs.measures}
                    for other, better, worse in ((baseline, "+", "-"), (second, "\u2020", "")):
                        theirs = (theirs_of(other, g, c) or {}).get(seg)
                        if theirs is not None:
                            for m, mk in compare(rs, theirs, alpha=alpha, better=better, worse=worse).items():
                                marks[m] += mk
                    out[g][c][seg] = marks
                continue
            marks = {m: "" for m in r.measures}
            for other, better, worse in ((baseline, "+", "-"), (second, "\u2020", "")):
                theirs = theirs_of(other, g, c)
                if theirs is not None:
                    for m, mk in compare(r, theirs, alpha=alpha, better=better, worse=worse).items():
                        marks[m] += mk
            out[g][c] = marks
    return out


def stage_sections(runner: Runner) -> dict[str, str]:
    """Report sections contributed by the built stages (annotation quality, REPLUG, reranking, ...)."""
    sections: dict[str, str] = {}
    for stage, artifact in runner.built:
        for title, body in (stage.report(artifact) or {}).items():
            sections.setdefault(title, body)
    return sections


def collection_stats(runner: Runner) -> dict[str, dict]:
    stats = {}
    for rec in runner.records:
        if rec.stage == "data":
            p = Path(rec.path) / "stats.json"
            if p.is_file():
                s = json.loads(p.read_text())
                stats[s.get("name", rec.label)] = s
    return stats


def _aggregates(segs: Mapping[str, EvalResult]) -> dict:
    return {s: {**r.aggregate, "queries": r.num_queries} for s, r in segs.items()}


def _precision(cfg: DictConfig, plan: Plan) -> dict:
    """What the model and each training phase computed in, and what this machine offers."""
    out = {"machine": describe_precision()}
    if "dtype" in cfg.model:
        out["model_dtype"] = {"configured": str(cfg.model.dtype), "resolved": resolve_dtype(cfg.model.dtype, "auto")}
    out["training"] = {stage.phase: stage.trainer_cfg.get("precision") for stage in plan.phases}
    return out


def run_experiment(
    cfg: DictConfig,
    run_dir: Path,
    baseline: "ExperimentResult | None" = None,
    announce: bool = True,
    second_baseline: "ExperimentResult | None" = None,
    llm_test_runs: Mapping[str, Artifact] | None = None,
    overrides: list[str] | None = None,
    judge_runs: Mapping[str, Artifact] | None = None,
) -> ExperimentResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    follower = is_follower(cfg)
    plan = validate(cfg, None if follower else make_logger_factory(cfg, run_dir))
    runner = Runner(ArtifactCache(cfg.cache_dir), run_dir, follower=follower, shard=job_shard(cfg))
    log.info("experiment %s -> %s (cache %s)", cfg.name, run_dir, runner.cache.root)
    for note in plan.ranking.notes:
        log.warning("%s", note)

    train_data = _train_data(runner, cfg)
    model = build_model(runner, plan, train_data) if plan.ranking.needs_model else None
    if follower:  # another node's training process: rank 0 evaluates and writes the run directory
        log.info("experiment %s: training process rank %d joined every training phase; rank 0 evaluates",
                 cfg.name, launched_rank(cfg.trainer))
        return ExperimentResult(cfg.name, run_dir, {}, runner.summary(), [])
    if model is not None:
        link_model(run_dir, model)
    ctx = EvalContext(runner, cfg, model, run_dir, plan.ranking, llm_test_runs, judge_runs=judge_runs,
                      train_data=train_data)
    evaluated = run_paths(ctx, plan.paths)
    for seg in plan.segmentations.values():
        seg.prepare(ctx)
    results = evaluated.results
    measures = list(cfg.eval.measures) + [m for m in evaluated.measures if m not in cfg.eval.measures]

    owners: dict[str, dict[str, str]] = {}  # collection -> segment -> segmentation, for metrics.csv
    segments = {
        g: {c: segment_results(plan.segmentations, c, evaluated.queries.get(c, {}), r, owners.setdefault(c, {}))
            for c, r in res.items()}
        for g, res in results.items()
    } if plan.segmentations else None
    alpha = float(cfg.eval.get("alpha", 0.05))
    markers = significance_markers(results, baseline, second_baseline, alpha=alpha)
    segment_markers = (significance_markers(segments, baseline, second_baseline, alpha=alpha, segments=True)
                       if segments else None)
    label_source, human_ratio = describe_labels(cfg)
    sections = {
        **({"Training labels": f"`{label_source}` (human labels: {human_ratio:g}%)"} if label_source else {}),
        **stage_sections(runner),
        **evaluated.sections,
        **{t: b for seg in plan.segmentations.values() for t, b in seg.report().items()},
    }
    seg_info = {n: info for n, info in ((n, s.summary()) for n, s in plan.segmentations.items()) if info is not None}
    flat = {}
    for g, res in results.items():
        for c, r in res.items():
            flat[c] = dict(r.aggregate)
            segs = (segments or {}).get(g, {}).get(c)
            if segs:
                flat[c]["segments"] = _aggregates(segs)
    metrics = {
        "name": cfg.name,
        "measures": measures,
        "results": flat,
        "groups": {
            g: {
                "collections": {c: r.aggregate for c, r in res.items()},
                "average": {
                    m: sum(r.aggregate[m] for r in res.values()) / len(res)
                    for m in measures if res and all(m in r.aggregate for r in res.values())
                },
                **({"segments": {c: _aggregates(s) for c, s in segments[g].items() if s}} if segments else {}),
            }
            for g, res in results.items()
        },
        "per_query": {g: {c: r.per_query for c, r in res.items()} for g, res in results.items()},
        "baseline": {"name": baseline.name, "run_dir": str(baseline.run_dir), "markers": markers} if baseline else None,
        "second_baseline": second_baseline.name if second_baseline else cfg.eval.get("second_baseline"),
        "markers": markers,
        "segment_markers": segment_markers,
        "report_row": OmegaConf.to_container(cfg.report, resolve=True) if cfg.get("report") else None,
        "label_source": label_source,
        "human_ratio": human_ratio,
        "overrides": list(overrides) if overrides is not None else None,
        "ranking": {"first_stage": plan.ranking.index._target_, "rerank": plan.ranking.rerank,
                    "model_family": plan.ranking.model_family if plan.ranking.needs_model else None,
                    "notes": plan.ranking.notes},
        "sections": sections,
        **evaluated.metrics,
        **({"segmentations": seg_info} if seg_info else {}),
        "precision": _precision(cfg, plan),
        "stages": runner.summary(),
        "collections": collection_stats(runner),
    }
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    write_atomic(run_dir / "metrics.csv", to_csv(tidy_rows(cfg.name, results, segments, markers, segment_markers, owners)))
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    write_atomic(run_dir / "config.yaml", config_yaml)
    report = render_report(
        title=f"uptrain run: {cfg.name}",
        results=results,
        measures=measures,
        markers=markers,
        baseline_name=baseline.name if baseline else None,
        alpha=alpha,
        legend={"\u2020": f"significantly better than {second_baseline.name} (same test)"} if second_baseline else None,
        stats=metrics["collections"],
        config_yaml=config_yaml,
        stages=runner.summary(),
        sections=sections,
        segments=segments,
        segment_markers=segment_markers,
    )
    write_atomic(run_dir / "report.md", report)
    hits = sum(r.cache == "hit" for r in runner.records)
    log.info("stages: %d cache hits, %d built", hits, len(runner.records) - hits)
    if announce:
        print(console_table(results, measures, markers))
        if baseline is not None:
            print(f"\n+/-: significantly better/worse than {baseline.name} (two-sided paired t-test, p < {alpha:g})")
        if second_baseline is not None:
            print(f"\u2020: significantly better than {second_baseline.name}")
        print(f"\nreport: {run_dir / 'report.md'}")
    else:
        log.info("report: %s", run_dir / "report.md")
    return ExperimentResult(cfg.name, run_dir, results, runner.summary(), measures, segments)
