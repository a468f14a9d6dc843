"""Which training process this is, when a launcher started several (multi-node DDP).

With ``trainer=ddp`` (``ddp_spawn``) one uptrain process starts its ranks itself. Across machines
every process is started from outside: by SLURM (``srun``, or Hydra's submitit launcher with
``tasks_per_node`` > 1), by ``torchrun``, or by hand with ``MASTER_ADDR``, ``MASTER_PORT``,
``NODE_RANK`` and ``LOCAL_RANK``. Each such process runs the whole ``uptrain`` command. Lightning
reads the same variables (its SLURM, torchelastic and Lightning cluster environments); uptrain reads
them only to know whether it is rank 0, which builds and publishes every artifact and evaluates,
or a follower, which joins each training phase's fit (:meth:`uptrain.train.stage.TrainStage.follow`)
and stops after the last one.
"""

from __future__ import annotations

import os
from typing import Any, Mapping


def _devices(trainer_cfg: Mapping[str, Any]) -> int:
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        return len(devices)
    try:
        return max(int(devices), 1)
    except (TypeError, ValueError):  # "auto": one process per visible device, unknown here
        return 1


def world_size(trainer_cfg: Mapping[str, Any]) -> int:
    """Training processes over all nodes: devices per node x ``num_nodes``."""
    return _devices(trainer_cfg) * max(int(trainer_cfg.get("num_nodes", 1) or 1), 1)


def launched_rank(trainer_cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> int:
    """This process's global rank when a launcher started it as one of several, else 0.

    ``RANK`` (torchrun) wins; then SLURM's ``SLURM_PROCID`` when the job has several tasks; then
    ``NODE_RANK`` x devices per node + ``LOCAL_RANK`` (Lightning's variables, set by hand).
    """
    env = os.environ if env is None else env
    if world_size(trainer_cfg) <= 1:
        return 0
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    node, local = env.get("NODE_RANK", ""), env.get("LOCAL_RANK", "")
    if node.isdigit() or local.isdigit():
        return int(node or 0) * _devices(trainer_cfg) + int(local or 0)
    return 0
