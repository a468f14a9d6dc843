"""Wires one experiment's run graph from its composed config and runs it.

data -> pool -> model -> train (0..n phases) -> index -> retrieve -> evaluate -> report

Every stage goes through the artifact cache, so a sweep reuses everything
upstream of the parameter it varies. The run directory receives links to the
artifacts, the run files, ``metrics.json``, the resolved config and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uptrain.annotate.replug import ReplugStage
from uptrain.annotate.stage import AnnotateStage
from uptrain.cache import ArtifactCache, write_atomic
from uptrain.data.stage import DataStage
from uptrain.evaluate.llm_testset import LLMTestSetStage
from uptrain.evaluate.metrics import EvalResult
from uptrain.evaluate.significance import compare
from uptrain.evaluate.stage import EvaluateStage
from uptrain.graph import Artifact, Runner
from uptrain.index.stage import IndexStage
from uptrain.labels import required_inputs
from uptrain.pool.stage import PoolStage
from uptrain.report.markdown import console_table, render_report
from uptrain.retrieve.stage import RUN_FILE, RetrieveStage
from uptrain.train.stage import BaseModelStage, TrainStage

log = logging.getLogger("uptrain")


@dataclass
class ExperimentResult:
    name: str
    run_dir: Path
    results: dict[str, dict[str, EvalResult]]  # group -> collection -> result
    stages: list[dict]
    measures: list[str]


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


def build_model(runner: Runner, cfg: DictConfig, train_data: Artifact | None, logger_factory) -> Artifact:
    """The encoder, then each training phase warm-started from the one before.

    The pool, the LLM annotation and the REPLUG scores are built only when a phase's
    labels need them, and each is one cached node shared by every phase and run that does.
    """
    model = runner.run(BaseModelStage(cfg.model), label="model")
    phases = cfg.get("phases") or []
    if not phases:
        return model
    assert train_data is not None
    pool = runner.run(PoolStage(instantiate(cfg.pool.retriever), cfg.pool.depth, cfg.pool.seed), {"data": train_data})
    # every phase is configured (and checked) before anything slow is built
    stages = [
        TrainStage(
            phase=phase.name,
            loss_cfg=phase.get("loss") or cfg.loss,
            sampling_cfg=phase.get("sampling") or cfg.sampling,
            trainer_cfg=_merged(cfg.trainer, phase.get("trainer")),
            hparams=_merged(cfg.train, phase.get("train")),
            seed=cfg.seed,
            logger_factory=logger_factory,
            labels=phase.get("labels", "human"),
            human_ratio=phase.get("human_ratio", 100),
        )
        for phase in phases
    ]
    needed = {name for stage in stages for name in required_inputs(stage.labels)}
    side: dict[str, Artifact] = {}
    annotate = OmegaConf.to_container(cfg.annotate, resolve=True)
    replug_answers = cfg.labels.get("replug_answers", "pseudo")
    if "annotations" in needed or ("replug" in needed and replug_answers == "pseudo"):
        side["annotations"] = runner.run(
            AnnotateStage(cfg.annotator, **annotate), {"data": train_data, "pool": pool}, label="annotate"
        )
    if "replug" in needed:
        replug = ReplugStage(cfg.annotator, answers=replug_answers, max_queries=annotate.get("max_queries"),
                             batch_queries=annotate.get("batch_queries", 4))
        deps = {"data": train_data, "pool": pool, **{k: side[k] for k in replug.inputs if k in side}}
        side["replug"] = runner.run(replug, deps, label="replug")
    for stage in stages:
        deps = {"data": train_data, "pool": pool, "init": model, **{k: side[k] for k in required_inputs(stage.labels)}}
        model = runner.run(stage, deps, label=f"train_{stage.phase}")
    return model


def describe_labels(cfg: DictConfig) -> tuple[str, float | None]:
    """A one-line account of the training labels and the share of human labels they use (%)."""
    phases = cfg.get("phases") or []
    if not phases:
        return "", None
    parts, human = [], 0.0
    for phase in phases:
        labels = phase.get("labels", "human")
        ratio = float(phase.get("human_ratio", 100))
        if "human" in labels.split("+"):
            human = max(human, ratio)
            labels = labels.replace("human", f"human {ratio:g}%") if ratio < 100 else labels
        parts.append(labels)
    return " -> ".join(parts), human


def retrieve(runner: Runner, cfg: DictConfig, model: Artifact | None, name: str) -> tuple[Artifact, Artifact]:
    """The collection ``name`` of eval.collections and this run's top-``eval.depth`` over it."""
    if name not in cfg.eval.collections:
        raise KeyError(f"'{name}' is not in eval.collections (known: {sorted(cfg.eval.collections)})")
    indexer = instantiate(cfg.index)
    data = runner.run(DataStage(instantiate(cfg.eval.collections[name])), label=f"data_{name}")
    deps = {"data": data}
    if indexer.needs_model:
        deps["model"] = model
    index = runner.run(IndexStage(indexer), deps, label=f"index_{name}")
    run = runner.run(
        RetrieveStage(indexer, depth=cfg.eval.depth, tag=cfg.name), {**deps, "index": index}, label=f"retrieve_{name}"
    )
    return data, run


def system_run(cfg: DictConfig, run_dir: Path, collection: str) -> Artifact:
    """One system's run over one collection (its model trained or found in the cache), for pooling."""
    runner = Runner(ArtifactCache(cfg.cache_dir), run_dir)
    model = None
    if instantiate(cfg.index).needs_model:
        train_data = runner.run(DataStage(instantiate(cfg.data.train)), label="data_train") if cfg.get("phases") else None
        model = build_model(runner, cfg, train_data, None)
    return retrieve(runner, cfg, model, collection)[1]


def evaluate_all(
    runner: Runner, cfg: DictConfig, model: Artifact | None, run_dir: Path,
    llm_test_runs: Mapping[str, Artifact] | None = None,
) -> dict[str, dict[str, EvalResult]]:
    results: dict[str, dict[str, EvalResult]] = {}
    runs_dir = run_dir / "runs"
    runs_dir.mkdir(exist_ok=True)
    retrieved: dict[str, tuple[Artifact, Artifact]] = {}
    for group, names in cfg.eval.groups.items():
        if not names:
            continue
        results[group] = {}
        for name in names:
            data, run = retrieved[name] = retrieve(runner, cfg, model, name)
            shutil.copyfile(run.path / RUN_FILE, runs_dir / f"{name}.trec")
            ev = runner.run(EvaluateStage(list(cfg.eval.measures)), {"data": data, "run": run}, label=f"evaluate_{name}")
            results[group][name] = ev.value
    llm = cfg.eval.get("llm_test")
    if llm is not None and llm.get("enabled") and llm_test_runs:
        # the shared LLM test collection, then this run evaluated on its labels
        name = llm.collection
        data, run = retrieved.get(name) or retrieve(runner, cfg, model, name)
        stage = LLMTestSetStage(
            cfg.annotator, systems=list(llm.systems), queries=llm.queries, depth=llm.depth, seed=llm.seed,
            steps=list(llm.steps), label_step=llm.label_step,
            batch_queries=cfg.annotate.get("batch_queries", 4),
        )
        testset = runner.run(stage, {"data": data, **{f"run_{s}": llm_test_runs[s] for s in llm.systems}}, label="llm_testset")
        ev = runner.run(EvaluateStage(list(llm.measures)), {"data": testset, "run": run}, label="evaluate_llm_test")
        results["llm_test"] = {f"{name}_llm": ev.value}
    return results


def collection_stats(runner: Runner) -> dict[str, dict]:
    stats = {}
    for rec in runner.records:
        if rec.stage == "data":
            p = Path(rec.path) / "stats.json"
            if p.is_file():
                s = json.loads(p.read_text())
                stats[s.get("name", rec.label)] = s
    return stats


def annotation_sections(runner: Runner) -> dict[str, str]:
    """Annotation quality (the paper's Table 1) and cost, when the run annotated its pool."""
    sections = {}
    for rec in runner.records:
        if rec.stage == "llm_testset":
            a = json.loads((Path(rec.path) / "agreement.json").read_text())
            sections["LLM test collection"] = (
                f"{a['queries']} test queries, {a['pooled_per_query']:.1f} pooled passages per query judged by the "
                f"annotator; {a['queries_without_positive']} queries without a relevant passage (not evaluated). "
                f"Against the human qrels on the same pools: precision {a['precision']:.4f}, recall {a['recall']:.4f}; "
                f"unparseable answers: {a['unparseable']}."
            )
        if rec.stage == "replug":
            st = json.loads((Path(rec.path) / "stats.json").read_text())
            q = st["quality_top1"]
            sections["REPLUG utilities"] = (
                f"{st['queries']} queries ({st['queries_without_answer']} without an answer), "
                f"{st['passages_scored']} passages scored in {st['seconds']} s "
                f"({st['passages_per_second']} passages/s); answers: {st['answers']}. "
                f"Top-1 passage by utility against the human qrels: precision {q['precision']:.4f}, "
                f"recall {q['recall']:.4f}."
            )
    for rec in runner.records:
        if rec.stage == "annotate":
            path = Path(rec.path)
            stats = json.loads((path / "stats.json").read_text())
            cost = (
                f"{stats['queries']} queries, {stats['passages_judged']} passages judged, {stats['prompts']} prompts, "
                f"{stats['prompt_tokens']} prompt + {stats['output_tokens']} output tokens in {stats['seconds']} s "
                f"({stats['tokens_per_second']} tokens/s); unparseable answers: {stats['unparseable']}. "
                f"At the paper's scale ({stats['paper_scale']['queries']} queries) and an assumed "
                f"{stats['paper_scale']['assumed_gpu_tokens_per_second']:.0f} tokens/s per GPU: "
                f"about {stats['paper_scale']['gpu_hours']} GPU-hours."
            )
            sections["Annotation quality against human labels (Table 1 layout)"] = (path / "table1.md").read_text()
            sections["Annotation cost"] = cost
            break
    return sections


def significance_markers(
    results: dict[str, dict[str, EvalResult]],
    baseline: "ExperimentResult | None",
    second: "ExperimentResult | None" = None,
    alpha: float = 0.05,
) -> dict | None:
    """group -> collection -> measure -> "+"/"-" against the baseline, then a dagger when
    significantly better than the second baseline (two-sided paired t-tests, p < alpha)."""
    if baseline is None and second is None:
        return None
    out: dict = {}
    for g, res in results.items():
        out[g] = {}
        for c, r in res.items():
            marks = {m: "" for m in r.measures}
            for other, better, worse in ((baseline, "+", "-"), (second, "\u2020", "")):
                theirs = other.results.get(g, {}).get(c) if other is not None else None
                if theirs is not None:
                    for m, mk in compare(r, theirs, alpha=alpha, better=better, worse=worse).items():
                        marks[m] += mk
            out[g][c] = marks
    return out


def run_experiment(
    cfg: DictConfig,
    run_dir: Path,
    baseline: "ExperimentResult | None" = None,
    announce: bool = True,
    second_baseline: "ExperimentResult | None" = None,
    llm_test_runs: Mapping[str, Artifact] | None = None,
) -> ExperimentResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(ArtifactCache(cfg.cache_dir), run_dir)
    log.info("experiment %s -> %s (cache %s)", cfg.name, run_dir, runner.cache.root)

    train_data = None
    if cfg.get("phases"):
        train_data = runner.run(DataStage(instantiate(cfg.data.train)), label="data_train")
    model = None
    if instantiate(cfg.index).needs_model:
        model = build_model(runner, cfg, train_data, make_logger_factory(cfg, run_dir))
    results = evaluate_all(runner, cfg, model, run_dir, llm_test_runs)
    measures = list(cfg.eval.measures)
    if "llm_test" in results:
        measures += [m for m in cfg.eval.llm_test.measures if m not in measures]

    markers = significance_markers(results, baseline, second_baseline, alpha=float(cfg.eval.get("alpha", 0.05)))
    label_source, human_ratio = describe_labels(cfg)
    metrics = {
        "name": cfg.name,
        "measures": measures,
        "groups": {
            g: {
                "collections": {c: r.aggregate for c, r in res.items()},
                "average": {
                    m: sum(r.aggregate[m] for r in res.values()) / len(res)
                    for m in measures if res and all(m in r.aggregate for r in res.values())
                },
            }
            for g, res in results.items()
        },
        "per_query": {g: {c: r.per_query for c, r in res.items()} for g, res in results.items()},
        "baseline": {"name": baseline.name, "run_dir": str(baseline.run_dir), "markers": markers} if baseline else None,
        "second_baseline": second_baseline.name if second_baseline else cfg.eval.get("second_baseline"),
        "markers": markers,
        "report_row": OmegaConf.to_container(cfg.report, resolve=True) if cfg.get("report") else None,
        "label_source": label_source,
        "human_ratio": human_ratio,
        "stages": runner.summary(),
        "collections": collection_stats(runner),
    }
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    write_atomic(run_dir / "config.yaml", config_yaml)
    report = render_report(
        title=f"uptrain run: {cfg.name}",
        results=results,
        measures=measures,
        markers=markers,
        baseline_name=baseline.name if baseline else None,
        alpha=float(cfg.eval.get("alpha", 0.05)),
        legend={"\u2020": f"significantly better than {second_baseline.name} (same test)"} if second_baseline else None,
        stats=metrics["collections"],
        config_yaml=config_yaml,
        stages=runner.summary(),
        sections={**({"Training labels": f"`{label_source}` (human labels: {human_ratio:g}%)"} if label_source else {}),
                  **annotation_sections(runner)},
    )
    write_atomic(run_dir / "report.md", report)
    hits = sum(r.cache == "hit" for r in runner.records)
    log.info("stages: %d cache hits, %d built", hits, len(runner.records) - hits)
    if announce:
        print(console_table(results, measures, markers))
        alpha = float(cfg.eval.get("alpha", 0.05))
        if baseline is not None:
            print(f"\n+/-: significantly better/worse than {baseline.name} (two-sided paired t-test, p < {alpha:g})")
        if second_baseline is not None:
            print(f"\u2020: significantly better than {second_baseline.name}")
        print(f"\nreport: {run_dir / 'report.md'}")
    else:
        log.info("report: %s", run_dir / "report.md")
    return ExperimentResult(cfg.name, run_dir, results, runner.summary(), measures)
