"""Cross-device negatives under real Lightning DDP: 2 CPU ranks (gloo) started by ddp_spawn, and
2 processes started from outside as two "nodes" on the loopback interface (multi-node DDP).

Each rank writes, from inside its training_step, the loss and scores it computed over the
gathered batch; the test recomputes both in one process over the same four queries and
all their passages (the gathered batch) and compares. Catches a broken all_gather: no
gather (each rank sees only its own passages: scores [2, 6] instead of [2, 12], a smaller
loss), a wrong column offset (each rank's positives labelled in the other rank's columns),
or gradients not synchronised across ranks (the ranks' weights would drift apart).
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from uptrain.losses import ConjInfoNCE
from uptrain.model import BiEncoder
from uptrain.sampling import PosAll
from uptrain.train.dataset import GroupDataset, LabelledQuery
from uptrain.train.module import RankerModule

from conftest import DOCS

HERE = Path(__file__).resolve().parent

# q1 and q4 share positives, so a known positive of one query sits in another query's group
EXAMPLES = [
    LabelledQuery("q1", "does aspirin prevent heart attacks", ("d1", "d2"), ("d3", "d7")),
    LabelledQuery("q2", "vitamin d and fractures", ("d5",), ("d6", "d8")),
    LabelledQuery("q3", "calcium for older women", ("d6",), ("d5", "d4")),
    LabelledQuery("q4", "aspirin cardiovascular", ("d2",), ("d1", "d7")),
]


class Recording(RankerModule):
    """The training module, writing what each rank computed at each step."""

    def __init__(self, *args, out_dir: Path, **kw):
        super().__init__(*args, **kw)
        self.out_dir = Path(out_dir)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.model.eval()  # no dropout: the ranks' scores must be reproducible outside training

    def training_step(self, batch, batch_idx):
        loss, out = self.compute_loss(batch)
        torch.save(
            {"loss": loss.detach().clone(), "scores": out.scores.detach().clone(), "query_ids": batch["query_ids"],
             "weights_sum": sum(float(p.detach().double().sum()) for p in self.model.parameters())},
            self.out_dir / f"rank{self.global_rank}_step{self.global_step}.pt",
        )
        return loss


def make_setup(out_dir: Path):
    """The model, data and module every rank builds (pretrained weights: the same on every process)."""
    # temperature 0.2: the other rank's passages are easy negatives, at 0.05 they would weigh almost nothing
    model = BiEncoder(query_max_length=16, passage_max_length=32, temperature=0.2)
    ds = GroupDataset(EXAMPLES, DOCS, PosAll(), group_size=3, seed=0)
    loss_fn = ConjInfoNCE()  # several positives per row: the labels' columns matter
    module = Recording(model, loss_fn, lr=1e-3, warmup_ratio=0.0, out_dir=out_dir, cross_device=True)
    return model, ds, loss_fn, module


def fit(module, model, ds, out_dir: Path, **trainer_kw) -> None:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(out_dir), **trainer_kw,
    )
    # 4 queries, 2 per rank per step, 1 step per epoch
    trainer.fit(module, DataLoader(ds, batch_size=2, shuffle=False, collate_fn=model.collator()))


def check_against_single_process(out_dir: Path, reference: BiEncoder, ds: GroupDataset, loss_fn) -> None:
    """What ranks 0 and 1 recorded, against one process over the gathered batch."""
    ranks = [torch.load(out_dir / f"rank{r}_step0.pt") for r in (0, 1)]
    assert sorted(ranks[0]["query_ids"] + ranks[1]["query_ids"]) == ["q1", "q2", "q3", "q4"]

    # one process, the four queries in rank order: their passages are the gathered batch
    by_id = {ex.query_id: i for i, ex in enumerate(ds.examples)}
    items = [ds[by_id[q]] for rank in ranks for q in rank["query_ids"]]
    single = RankerModule(reference, loss_fn)
    single.model.eval()
    with torch.no_grad():
        scores, labels = single.scores_and_labels(reference.collator()(items))
        assert scores.shape == (4, 12)
        whole = loss_fn(scores, labels).item()
        for r, rank in enumerate(ranks):
            rows = slice(2 * r, 2 * r + 2)
            assert rank["scores"].shape == (2, 12)  # every passage of both ranks
            torch.testing.assert_close(rank["scores"], scores[rows], atol=1e-4, rtol=1e-4)
            assert rank["loss"].item() == pytest.approx(loss_fn(scores[rows], labels[rows]).item(), abs=1e-4)
        # the DDP gradient is the mean of the ranks' losses; here that is the loss over the gathered batch
        assert (ranks[0]["loss"].item() + ranks[1]["loss"].item()) / 2 == pytest.approx(whole, abs=1e-4)

        # the test can tell: without the gather a rank sees its 6 local passages and a smaller loss
        local = RankerModule(reference, loss_fn).scores_and_labels(reference.collator()(items[:2]))
        assert local[0].shape == (2, 6)
        assert abs(loss_fn(*local).item() - ranks[0]["loss"].item()) > 1e-2

    # gradients were all-reduced: after a step both ranks hold the same weights
    step1 = [torch.load(out_dir / f"rank{r}_step1.pt") for r in (0, 1)]
    assert step1[0]["weights_sum"] == pytest.approx(step1[1]["weights_sum"], rel=1e-9)
    assert step1[0]["weights_sum"] != pytest.approx(ranks[0]["weights_sum"], rel=1e-9)


@pytest.mark.slow
def test_two_rank_loss_equals_single_process_loss_over_the_gathered_batch(tmp_path):
    model, ds, loss_fn, module = make_setup(tmp_path)
    reference = copy.deepcopy(model)  # ddp_spawn copies the trained weights back into `model`
    fit(module, model, ds, tmp_path, devices=2, strategy="ddp_spawn")
    check_against_single_process(tmp_path, reference, ds, loss_fn)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_loopback_gather_negatives_across_nodes(tmp_path):
    """Two processes that pretend to be two machines (conf/trainer/ddp_multinode.yaml: num_nodes=2,
    devices=1, strategy=ddp), each started from outside as a cluster starts them, with Lightning's
    variables set by hand. Catches a node that trains alone (no process group across the nodes: each
    records [2, 6] scores over its own passages, or both record all four queries), a wrong
    NODE_RANK -> global rank mapping (both write rank0), and ranks whose weights drift apart."""
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "LOCAL_RANK", "NODE_RANK",
                                                                     "WORLD_SIZE", "MASTER_", "GROUP_RANK"))}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(node), LOCAL_RANK="0",
                   PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, str(HERE / "_ddp_node.py"), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    # each node saw itself as one of two: global rank = NODE_RANK x devices + LOCAL_RANK, world size 2
    for node, out in enumerate(outs):
        assert f"node {node}: global_rank={node} world_size=2" in out, out[-3000:]
    model, ds, loss_fn, _ = make_setup(tmp_path / "unused")
    check_against_single_process(tmp_path, model, ds, loss_fn)
