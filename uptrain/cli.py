"""The ``uptrain`` command: compose the Hydra config, run the experiment graph.

    uptrain +exp=human
    uptrain +exp=human --multirun loss=infonce,conj_infonce,disj_infonce
    uptrain +exp=human profile=smoke
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

log = logging.getLogger("uptrain")


def config_dir() -> str:
    """conf/ as installed (``uptrain.conf``), or the repository's conf/ in a source checkout."""
    spec = importlib.util.find_spec("uptrain.conf")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]).resolve())
    return str(Path(__file__).resolve().parent.parent / "conf")


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import MissingConfigException

    from uptrain.data import DatasetUnavailableError
    from uptrain.errors import UserError
    from uptrain.model.backbone import ModelUnavailableError
    from uptrain.train.stage import TrainingInterrupted

    return (UserError, DatasetUnavailableError, ModelUnavailableError, TrainingInterrupted, MissingMandatoryValue,
            MissingConfigException)


def _root_cause(exc: BaseException) -> BaseException:
    # hydra.utils.instantiate wraps constructor errors; report the original one
    seen = exc
    while seen.__cause__ is not None and type(seen).__name__ == "InstantiationException":
        seen = seen.__cause__
    return seen


def _baseline_overrides(name: str, same_ratio: bool = False) -> list[str]:
    """The overrides that fix the data and scale of this run, applied to the baseline experiment;
    with ``same_ratio`` also the share of human labels (the paper's REPLUG at the same ratio)."""
    # everything but the labels and how they are trained on: the markers then measure label effects only
    keep = ("profile=", "data", "eval", "model", "seed=", "cache_dir=", "pool", "annotate", "annotator",
            "index", "trainer", "train.", "train=", "rerank")
    keep += ("labels.human_ratio=",) if same_ratio else ()
    task = HydraConfig.get().overrides.task
    carried = [o for o in task if o.lstrip("+~").startswith(keep) and not o.startswith(("eval.baseline", "eval.second_baseline"))]
    return [f"+exp={name}", "eval.baseline=null", "eval.second_baseline=null", *carried]


def _compose(name: str, role: str, same_ratio: bool = False) -> DictConfig:
    """The config of experiment ``name`` with this run's data and scale, checked (nothing runs)."""
    from uptrain.pipeline import validate

    known = sorted(p.stem for p in (Path(config_dir()) / "exp").glob("*.yaml") if not p.stem.startswith("_"))
    try:
        cfg = hydra.compose(config_name="config", overrides=_baseline_overrides(name, same_ratio=same_ratio))
    except Exception as exc:  # noqa: BLE001 - hydra raises several kinds for an unknown experiment
        from uptrain.errors import ConfigError

        raise ConfigError(f"{role} names the experiment '{name}', which cannot be composed ({exc}); "
                          f"known experiments: {', '.join(known)}") from None
    validate(cfg)
    return cfg


def _judge_system_runs(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The final runs over judge.collection of the judge.systems that name experiments (composed and
    checked first, then built or found in the cache); None when the judge path is not configured."""
    from uptrain.pipeline import system_run

    paths = cfg.eval.get("paths") or {}
    if not paths.get("judge"):
        return None
    from uptrain.judge.path import JudgePath, classify_systems

    settings = JudgePath.settings(cfg)
    _, exps = classify_systems(settings["systems"])
    composed = {name: _compose(exp, f"judge.systems.{name}") for name, exp in exps.items()}
    runs = {}
    for name, sys_cfg in composed.items():
        log.info("judge: the run of +exp=%s on %s", sys_cfg.name, settings["collection"])
        runs[name] = system_run(sys_cfg, run_dir / "judge_systems" / name, settings["collection"])
    return runs


def run(cfg: DictConfig) -> float | None:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
    from uptrain.pipeline import is_follower, validate
    from uptrain.precision import set_threads
    from uptrain.annotate.shards import ShardsPending
    from uptrain.report.loggers import start_tracker

    set_threads()  # the cores this process may use (affinity), unless OMP_NUM_THREADS says otherwise

    if OmegaConf.is_missing(cfg, "name"):
        known = sorted(p.stem for p in (Path(config_dir()) / "exp").glob("*.yaml") if not p.stem.startswith("_"))
        raise MissingMandatoryValue(
            "no experiment chosen: run `uptrain +exp=NAME` with NAME one of "
            f"{', '.join(known)} (see `uptrain --help` for the config groups)"
        )
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # every experiment this run needs is composed and checked before anything slow runs
    validate(cfg)
    tracker = None if is_follower(cfg) else start_tracker(cfg, run_dir, _sweep_group(), list(HydraConfig.get().overrides.task))
    try:
        value = _run_checked(cfg, run_dir)
        if tracker is not None:
            tracker.log_results()
    except BaseException as exc:
        if tracker is not None:
            tracker.finish(exit_code=0 if isinstance(exc, ShardsPending) else 1)
        raise
    if tracker is not None:
        tracker.finish()
    return value


def _sweep_group() -> str | None:
    """A --multirun sweep's directory (its runs' W&B group), None for a single run."""
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


def _run_checked(cfg: DictConfig, run_dir: Path) -> float | None:
    from uptrain.pipeline import run_experiment, system_run

    baseline_cfgs = {
        key: _compose(cfg.eval.get(key), f"eval.{key}", same_ratio=key == "second_baseline")
        for key in ("baseline", "second_baseline") if cfg.eval.get(key)
    }
    llm = cfg.eval.get("llm_test")
    system_cfgs = ({s: _compose(s, "eval.llm_test.systems") for s in llm.systems}
                   if llm is not None and llm.get("enabled") else {})
    judge_runs = _judge_system_runs(cfg, run_dir)
    llm_runs = None
    if system_cfgs:
        llm_runs = {}
        for name, sys_cfg in system_cfgs.items():
            log.info("llm test collection: the run of +exp=%s on %s", name, llm.collection)
            llm_runs[name] = system_run(sys_cfg, run_dir / "llm_test_systems" / name, llm.collection)
    baselines = {}
    for key, base_cfg in baseline_cfgs.items():
        log.info("%s: +exp=%s for the significance tests", key.replace("_", " "), base_cfg.name)
        baselines[key] = run_experiment(base_cfg, run_dir / f"baseline_{base_cfg.name}", announce=False,
                                        llm_test_runs=llm_runs)
    result = run_experiment(cfg, run_dir, baseline=baselines.get("baseline"),
                            second_baseline=baselines.get("second_baseline"), llm_test_runs=llm_runs,
                            overrides=list(HydraConfig.get().overrides.task), judge_runs=judge_runs)
    # the in-domain nDCG@10 is returned so Hydra sweepers can optimise it
    first = next(iter(result.results.values()), {})
    target = next(iter(first.values()), None)
    if target is not None and "nDCG@10" in target.aggregate:
        return float(target.aggregate["nDCG@10"])
    return None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from uptrain.annotate.shards import ShardsPending

    try:
        return run(cfg)
    except Exception as exc:  # noqa: BLE001 - user errors become one paragraph, others keep the trace
        cause = _root_cause(exc)
        if isinstance(cause, ShardsPending):  # this job's share is done: a success, not an error
            print(f"\nuptrain: {cause}\n", file=sys.stderr)
            return None
        if isinstance(cause, _user_errors()):
            print(f"\nuptrain: error: {cause}\n", file=sys.stderr)
            raise SystemExit(2) from None
        raise


# Hydra's flags that take a value (the next argument unless given as --flag=value)
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc", "--info", "-i"}


def flags_first(args: list[str]) -> list[str]:
    """Hydra's parser takes flags only before the overrides; accept them anywhere, e.g.
    ``uptrain +exp=x --multirun a=1,2`` or ``uptrain +exp=x --config-dir ~/my-conf``."""
    flags, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):  # overrides start with a key, '+', '++' or '~', never '-'
            flags.append(a)
            if a in _VALUE_FLAGS and i + 1 < len(args) and not args[i + 1].startswith("-"):
                # --info and --cfg take a choice, never an override (which contains '=')
                if a not in ("--info", "-i") or "=" not in args[i + 1]:
                    flags.append(args[i + 1])
                    i += 1
        else:
            rest.append(a)
        i += 1
    return flags + rest


def main() -> None:
    if sys.argv[1:2] == ["cache"]:  # `uptrain cache ls|verify|gc|rm`: the cache, not an experiment
        from uptrain.cache_cli import main as cache_main

        raise SystemExit(cache_main(sys.argv[2:]))
    if sys.argv[1:2] == ["export"]:  # `uptrain export RUN_DIR`: a run's labels as datasets and qrels
        from uptrain.export.cli import main as export_main

        raise SystemExit(export_main(sys.argv[2:]))
    sys.argv = [sys.argv[0], *flags_first(sys.argv[1:])]
    _main()


if __name__ == "__main__":
    main()
