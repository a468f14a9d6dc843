"""One "node" of tests/test_ddp.py's two-node run: started from outside (MASTER_ADDR, MASTER_PORT,
NODE_RANK, LOCAL_RANK in the environment), as SLURM or torchrun would start it on a machine."""

from __future__ import annotations

import sys
from pathlib import Path

from test_ddp import fit, make_setup

if __name__ == "__main__":
    out = Path(sys.argv[1])
    model, ds, _, module = make_setup(out)
    fit(module, model, ds, out, devices=1, num_nodes=2, strategy="ddp")
    trainer = module.trainer
    print(f"node {trainer.node_rank}: global_rank={trainer.global_rank} world_size={trainer.world_size}", flush=True)
