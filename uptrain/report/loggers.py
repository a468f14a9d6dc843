"""Experiment loggers that need more than a ``_target_`` line, and the experiment tracker.

``logger=wandb`` gives one W&B run per ``uptrain`` command (:class:`WandbExperiment`): the
resolved config, every training phase's curves (the baselines' too, each under its own prefix),
the metrics as tables (all rows, per collection, per segmentation: the rows of ``metrics.csv``),
the headline numbers in the run summary, the run's plots, and its report, metrics and config as
one artifact. Offline unless a key is configured (``wandb sync`` later); the runs of one
``--multirun`` sweep share a group (the sweep's directory) unless ``logger.group`` names one.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("uptrain")


def _has_key() -> bool:
    return bool(os.environ.get("WANDB_API_KEY")) or os.path.exists(os.path.expanduser("~/.netrc"))


def wandb_logger(save_dir: str, version: str, project: str = "uptrain", name: str | None = None,
                 group: str | None = None, **kw):
    """Lightning's WandbLogger for one training phase (``version``), offline unless an API key is configured.

    Inside an ``uptrain`` command the experiment's run is open (:class:`WandbExperiment`): the phase
    logs into it, its metrics prefixed ``train/<experiment>/<phase>``. Alone, it opens a run of its own.
    The key is read by wandb itself from its environment or netrc; it is never passed through the
    config, logged or stored in the run directory.
    """
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    if wandb.run is not None:
        return WandbLogger(experiment=wandb.run, prefix=f"train/{name}/{version}" if name else f"train/{version}")
    offline = kw.pop("offline", not _has_key())
    return WandbLogger(
        project=project, name=f"{name}-{version}" if name else version, save_dir=save_dir,
        offline=offline, group=group, **kw,
    )


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


class WandbExperiment:
    """One W&B run for one experiment (see the module docstring)."""

    #: files of the run directory that go into the report artifact, when present
    REPORT_FILES = ("report.md", "metrics.json", "metrics.csv", "config.yaml")

    def __init__(self, run: Any, run_dir: Path):
        self.run = run
        self.run_dir = Path(run_dir)

    @classmethod
    def start(cls, config: Mapping[str, Any], logger_cfg: Mapping[str, Any], run_dir: Path, *,
              group: str | None = None, tags: list[str] | None = None) -> "WandbExperiment":
        import wandb

        name = logger_cfg.get("name") or config.get("name")
        mode = "online" if _has_key() and not logger_cfg.get("offline", False) else "offline"
        if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
            mode = "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
        run = wandb.init(
            project=logger_cfg.get("project") or "uptrain", name=name, group=logger_cfg.get("group") or group,
            job_type="experiment", config=dict(config), dir=str(run_dir), mode=mode,
            tags=[t[:64] for t in (tags or [])] or None, reinit="finish_previous",
        )
        log.info("W&B run %s (%s, group %s)", run.id, mode, run.group)
        return cls(run, run_dir)

    def log_results(self) -> None:
        """The run directory's metrics as tables and summary, its plots, its report as an artifact."""
        import wandb

        rows = _read_rows(self.run_dir / "metrics.csv")
        if rows:
            columns = list(rows[0])

            def table(selected: list[dict]):
                return wandb.Table(columns=columns, data=[[_number(r[c]) if c in ("value", "queries") else r[c]
                                                           for c in columns] for r in selected])

            tables = {"metrics/all": table(rows)}
            for collection in sorted({r["collection"] for r in rows}):
                tables[f"metrics/{collection}"] = table([r for r in rows if r["collection"] == collection])
            for segmentation in sorted({r["segmentation"] for r in rows if r["segmentation"] not in ("", "all")}):
                tables[f"segments/{segmentation}"] = table([r for r in rows if r["segmentation"] == segmentation])
            self.run.log(tables)
            for r in rows:
                if r["segmentation"] == "all" and _number(r["value"]) is not None:
                    self.run.summary[f"{r['group']}/{r['collection']}/{r['measure']}"] = _number(r["value"])
        plots = self._plots()
        if plots:
            self.run.log({f"plots/{p.relative_to(self.run_dir).with_suffix('').as_posix()}": wandb.Image(str(p)) for p in plots})
        artifact = wandb.Artifact(f"report-{self.run.name}".replace("/", "-")[:120], type="uptrain-report",
                                  metadata={"run_dir": str(self.run_dir), "rows": len(rows)})
        added = 0
        for name in self.REPORT_FILES:
            if (self.run_dir / name).is_file():
                artifact.add_file(str(self.run_dir / name), name=name)
                added += 1
        for p in plots:
            artifact.add_file(str(p), name=p.relative_to(self.run_dir).as_posix())
        if added:
            self.run.log_artifact(artifact)

    def _plots(self) -> list[Path]:
        """The run's own PNG files (not those behind its links into the cache)."""
        found = []
        for root, dirs, files in os.walk(self.run_dir, followlinks=False):
            dirs[:] = [d for d in dirs if d not in ("wandb", "artifacts") and not Path(root, d).is_symlink()]
            found += [Path(root, f) for f in files if f.endswith(".png")]
        return sorted(found)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


#: the experiment tracker of a logger config's ``_target_``
TRACKERS = {"uptrain.report.loggers.wandb_logger": WandbExperiment}


def start_tracker(cfg, run_dir: Path, sweep_dir: str | None = None, overrides: list[str] | None = None):
    """The experiment tracker of ``cfg.logger`` (None when it has none), started."""
    from omegaconf import OmegaConf

    logger_cfg = cfg.get("logger")
    if logger_cfg is None or logger_cfg.get("_target_") not in TRACKERS:
        return None
    tracker = TRACKERS[logger_cfg["_target_"]]
    config = OmegaConf.to_container(cfg, resolve=True)
    plain = {k: v for k, v in OmegaConf.to_container(logger_cfg, resolve=True).items() if k != "_target_"}
    return tracker.start(config, plain, run_dir, group=sweep_dir, tags=overrides)


__all__ = ["wandb_logger", "WandbExperiment", "start_tracker", "TRACKERS"]
