"""Experiment loggers that need more than a ``_target_`` line."""

from __future__ import annotations

import os


def wandb_logger(save_dir: str, version: str, project: str = "uptrain", name: str | None = None, **kw):
    """Lightning's WandbLogger, offline unless an API key is configured.

    The key is read by wandb itself from its environment or netrc; it is never
    passed through the config, logged or stored in the run directory.
    """
    from lightning.pytorch.loggers import WandbLogger

    has_key = bool(os.environ.get("WANDB_API_KEY")) or os.path.exists(os.path.expanduser("~/.netrc"))
    offline = kw.pop("offline", not has_key)
    return WandbLogger(
        project=project, name=f"{name}-{version}" if name else version, save_dir=save_dir,
        offline=offline, **kw,
    )
