"""Producers: the stage that builds each artifact a label source reads, registered by name.

A label source declares ``inputs = ("annotations",)``; the pipeline asks
``ctx.require("annotations", params)`` and the producer registered under that name runs its
stage through the artifact cache. Producers may require other artifacts (REPLUG on pseudo
answers requires the annotations), and each (name, params) is built once per experiment,
however many phases and sources read it. A source defined outside the package registers
its producer with the same decorator, in the same file::

    @producer("clicks")
    def clicks(ctx, params):
        return ctx.runner.run(MyClickStage(**params), {"data": ctx.train_data}, label="clicks")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uptrain.cache import canonical_json
from uptrain.errors import ConfigError
from uptrain.graph import Artifact, Runner, Stage

Producer = Callable[["BuildContext", dict], Artifact]
PRODUCERS: dict[str, Producer] = {}
#: name -> a function (cfg, params) -> the producer's stage, unbuilt: to validate it before anything runs
PLANNERS: dict[str, Callable[[DictConfig, dict], Stage | None]] = {}


def producer(name: str, plan: Callable[[DictConfig, dict], Stage | None] | None = None):
    """Register ``fn(ctx, params) -> Artifact`` as the producer of the artifact ``name``;
    ``plan(cfg, params)`` optionally returns its configured stage so bad settings fail early."""

    def wrap(fn: Producer) -> Producer:
        PRODUCERS[name] = fn
        if plan is not None:
            PLANNERS[name] = plan
        return fn

    return wrap


@dataclass
class BuildContext:
    """What producers build from: the runner, the composed config and the training data."""

    runner: Runner
    cfg: DictConfig
    train_data: Artifact | None
    _built: dict[str, Artifact] = field(default_factory=dict)

    def require(self, name: str, params: Mapping[str, Any] | None = None) -> Artifact:
        params = dict(params or {})
        memo = f"{name}:{canonical_json(params)}"
        if memo not in self._built:
            if name not in PRODUCERS:
                raise ConfigError(
                    f"no producer is registered for the artifact '{name}' that a label source reads; "
                    f"known: {', '.join(sorted(PRODUCERS))} (register one with uptrain.labels.producer)"
                )
            self._built[memo] = PRODUCERS[name](self, params)
        return self._built[memo]

    def inputs_for(self, requests: Mapping[str, dict]) -> dict[str, Artifact]:
        return {name: self.require(name, params) for name, params in requests.items()}


def plan_inputs(cfg: DictConfig, requests: Mapping[str, dict]) -> list[Stage]:
    """The configured stages behind a spec's inputs (unbuilt), for validation before running."""
    out = []
    for name, params in requests.items():
        if name not in PRODUCERS:
            raise ConfigError(
                f"no producer is registered for the artifact '{name}' that a label source reads; "
                f"known: {', '.join(sorted(PRODUCERS))}"
            )
        if name in PLANNERS:
            stage = PLANNERS[name](cfg, params)
            if stage is not None:
                out.append(stage)
    return out


# ---- the producers of the built-in sources -------------------------------------------

def _annotate_stage(cfg: DictConfig, params: dict):
    from uptrain.annotate.stage import AnnotateStage

    settings = OmegaConf.to_container(cfg.annotate, resolve=True)
    settings.pop("grade", None)  # the pointwise grade stage's own settings (uptrain/labels/graded.py)
    for key in ("shard", "num_shards", "shard_wait"):  # the job's share (the Runner's), not the artifact's
        settings.pop(key, None)
    return AnnotateStage(cfg.annotator, **settings)


def _replug_answers(cfg: DictConfig, params: dict) -> str:
    return str(params.get("answers") or cfg.labels.get("replug_answers", "pseudo"))


def _replug_stage(cfg: DictConfig, params: dict):
    from uptrain.annotate.replug import ReplugStage

    annotate = cfg.annotate
    answers = _replug_answers(cfg, params)
    if answers == "gold":
        from uptrain.data.qa import provides_answers

        if not provides_answers(instantiate(cfg.data.train)):
            raise ConfigError(
                "labels.replug_answers=gold scores the training collection's own gold answers, but data.train "
                f"({cfg.data.train.get('name', cfg.data.train.get('_target_'))}) carries none: train on a QA collection "
                "(data=squad; a BEIR folder with answers.jsonl beside corpus.jsonl), or give a JSONL answer file "
                "(labels.replug_answers=PATH) or pseudo answers (labels.replug_answers=pseudo)")
    return ReplugStage(cfg.annotator, answers=answers, max_queries=annotate.get("max_queries"),
                       batch_queries=annotate.get("batch_queries", 4))


@producer("pool")
def pool(ctx: BuildContext, params: dict) -> Artifact:
    from uptrain.pool.stage import PoolStage

    cfg = ctx.cfg
    return ctx.runner.run(PoolStage(instantiate(cfg.pool.retriever), cfg.pool.depth, cfg.pool.seed,
                                    require_positive=cfg.pool.get("require_positive", True),
                                    inject_positives=cfg.pool.get("inject_positives", True)),
                          {"data": ctx.train_data})


@producer("annotations", plan=_annotate_stage)
def annotations(ctx: BuildContext, params: dict) -> Artifact:
    return ctx.runner.run(_annotate_stage(ctx.cfg, params), {"data": ctx.train_data, "pool": ctx.require("pool")},
                          label="annotate")


@producer("replug", plan=_replug_stage)
def replug(ctx: BuildContext, params: dict) -> Artifact:
    stage = _replug_stage(ctx.cfg, params)
    deps = {"data": ctx.train_data, "pool": ctx.require("pool")}
    if "annotations" in stage.inputs:  # pseudo answers come from the annotation
        deps["annotations"] = ctx.require("annotations")
    return ctx.runner.run(stage, deps, label="replug")
