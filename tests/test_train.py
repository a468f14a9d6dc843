"""Training data, the score/label matrix with in-batch negatives, and a real Lightning fit."""

from __future__ import annotations

import copy
import random

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from uptrain.losses import ConjInfoNCE, DisjInfoNCE, InfoNCE
from uptrain.model import BiEncoder
from uptrain.sampling import PosAll, PosAvg, PosOne
from uptrain.train.dataset import GroupDataset, LabelledQuery
from uptrain.train.module import BiEncoderModule, GroupCollator

from conftest import DOCS



@pytest.fixture(scope="module")
def model():
    return BiEncoder(query_max_length=16, passage_max_length=32)


def test_group_composition_and_epoch_determinism():
    ex = [LabelledQuery("q1", "aspirin heart", ("d1", "d2"), ("d3", "d4", "d2", "d5"))]
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=4, seed=1)
    item = ds[0]
    assert len(item.doc_ids) == 4 and item.is_positive == [True, False, False, False]
    assert item.doc_ids[0] in {"d1", "d2"}
    assert set(item.doc_ids[1:]) <= {"d3", "d4", "d5"}  # a positive listed among negatives is never a negative
    assert item.passages == [DOCS[d] for d in item.doc_ids]
    again = ds[0]
    assert again.doc_ids == item.doc_ids  # same epoch, same draw
    draws = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        draws.add(tuple(ds[0].doc_ids))
    assert len(draws) > 1  # a new draw each epoch


def test_group_without_pool_negatives_falls_back_to_corpus_and_skips_unlabelled():
    ex = [
        LabelledQuery("q1", "aspirin", ("d1",), ()),
        LabelledQuery("q2", "nothing relevant", (), ("d3",)),
    ]
    ds = GroupDataset(ex, DOCS, PosAll(), group_size=5, seed=0)
    assert len(ds) == 1 and ds.skipped_no_positive == 1
    item = ds[0]
    assert item.doc_ids[0] == "d1" and "d1" not in item.doc_ids[1:] and len(item.doc_ids) == 5


def test_no_labelled_query_is_a_clear_error():
    with pytest.raises(ValueError, match="No training query has a positive"):
        GroupDataset([LabelledQuery("q", "x", (), ("d1",))], DOCS, PosOne(), group_size=2)


def test_scores_labels_and_false_negative_mask(model):
    """q1 knows d1 and d2 as positives; d2 sits in q2's group: it must be masked for q1, not a negative."""
    ex = [
        LabelledQuery("q1", "aspirin heart attack", ("d1", "d2"), ("d3",)),
        LabelledQuery("q2", "vitamin d bones", ("d5",), ("d2",)),
    ]
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=2, seed=0)
    items = [ds[0], ds[1]]
    # force q1's sampled positive to d1 so the masked column is known
    items[0].doc_ids[0], items[0].passages[0] = "d1", DOCS["d1"]
    batch = GroupCollator(model)(items)
    module = BiEncoderModule(model, InfoNCE())
    scores, labels = module.scores_and_labels(batch)
    assert scores.shape == (2, 4)
    assert labels.tolist() == [[True, False, False, False], [False, False, True, False]]
    # q1 vs columns [d1, d3, d5, d2]: d2 is q1's known positive in q2's group -> masked
    assert torch.isinf(scores[0, 3]) and scores[0, 3] < 0
    assert torch.isfinite(scores[1]).all()
    # unmasked scores equal cosine / temperature computed independently through encode()
    q = model.encode(["aspirin heart attack"], kind="query", show_progress=False)
    p = model.encode([DOCS["d1"], DOCS["d3"], DOCS["d5"]], kind="passage", show_progress=False)
    expected = (q @ p.T)[0] / model.temperature
    np.testing.assert_allclose(scores[0, :3].detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_lightning_fit_lowers_the_loss(model, tmp_path):
    """A few real optimisation steps on a tiny set lower the training loss on that set."""
    rng = random.Random(0)
    ex = [
        LabelledQuery("q1", "does aspirin prevent heart attacks", ("d1",), ("d3", "d7", "d8")),
        LabelledQuery("q2", "aspirin cardiovascular", ("d2",), ("d4", "d7", "d3")),
        LabelledQuery("q3", "vitamin d and fractures", ("d5",), ("d6", "d8", "d3")),
        LabelledQuery("q4", "calcium for older women", ("d6",), ("d5", "d4", "d7")),
    ]
    model = BiEncoder(query_max_length=16, passage_max_length=32)
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=3, seed=rng.randint(0, 100))
    collate = GroupCollator(model)
    loss_fn = DisjInfoNCE()
    module = BiEncoderModule(model, loss_fn, lr=5e-4, warmup_ratio=0.0)
    full = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        before = loss_fn(*module.scores_and_labels(full)).item()

    trainer = L.Trainer(
        accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    trainer.fit(module, DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate))
    assert trainer.global_step == 12
    with torch.no_grad():
        after = loss_fn(*module.scores_and_labels(full)).item()
    assert after < before * 0.8, (before, after)


# ---- the group holds the positives the sampler asks for ----------------------------------
# Bug caught: positives were cut to group_size - 1 ([: group_size - 1]), silently; at profile=demo
# (group_size 4) pos_all kept 3 of a query's 6 positives.

SIX = ("d1", "d2", "d3", "d4", "d5", "d6")


def test_pos_all_keeps_every_positive_and_groups_stay_rectangular():
    ex = [
        LabelledQuery("q1", "many positives", SIX, ("d7", "d8")),
        LabelledQuery("q2", "two positives", ("d1", "d2"), ("d7", "d8", "d3")),
    ]
    ds = GroupDataset(ex, DOCS, PosAll(), group_size=4, seed=0)
    first, second = ds[0], ds[1]
    assert sum(first.is_positive) == 6 and set(first.doc_ids[:6]) == set(SIX)
    assert len(first.doc_ids) == len(second.doc_ids) == ds.effective_group_size == 7  # 6 positives + 1 negative
    assert sum(second.is_positive) == 2 and not set(second.doc_ids[2:]) & {"d1", "d2"}
    assert ds.stats == {
        "group_size": 4, "effective_group_size": 7, "max_positives": None, "positives_asked": 8,
        "positives_kept": 8, "positives_cut": 0, "queries_with_cut": 0, "max_positives_per_query": 6,
    }


def test_pos_avg_and_pos_one_size_the_group_by_what_they_sample():
    ex = [LabelledQuery("q1", "a", SIX, ("d7",)), LabelledQuery("q2", "b", ("d1", "d2"), ("d7",))]
    avg = GroupDataset(ex, DOCS, PosAvg(), group_size=2, seed=0)  # k = ceil((6 + 2) / 2) = 4
    assert avg.effective_group_size == 5 and sum(avg[0].is_positive) == 4 and sum(avg[1].is_positive) == 2
    one = GroupDataset(ex, DOCS, PosOne(), group_size=3, seed=0)
    assert one.effective_group_size == 3 and sum(one[0].is_positive) == 1


def test_max_positives_cuts_are_counted():
    ex = [LabelledQuery("q1", "a", SIX, ("d7", "d8")), LabelledQuery("q2", "b", ("d1", "d2"), ("d7",))]
    ds = GroupDataset(ex, DOCS, PosAll(), group_size=4, seed=0, max_positives=3)
    assert sum(ds[0].is_positive) == 3 and len(ds[0].doc_ids) == 4
    assert ds.stats["positives_asked"] == 8 and ds.stats["positives_kept"] == 5
    assert ds.stats["positives_cut"] == 3 and ds.stats["queries_with_cut"] == 1
    with pytest.raises(ValueError, match="max_positives"):
        GroupDataset(ex, DOCS, PosAll(), group_size=4, max_positives=0)


def test_collated_batch_of_grown_groups(model):
    ex = [LabelledQuery("q1", "many", SIX, ("d7", "d8")), LabelledQuery("q2", "two", ("d1", "d2"), ("d7", "d8"))]
    ds = GroupDataset(ex, DOCS, PosAll(), group_size=2, seed=0)
    batch = GroupCollator(model)([ds[0], ds[1]])
    scores, labels = BiEncoderModule(model, InfoNCE()).scores_and_labels(batch)
    assert scores.shape == labels.shape == (2, 14)
    assert labels[0, :7].sum() == 6 and labels[1, 7:].sum() == 2


def test_query_weights_reach_the_loss(model):
    """A label spec's per-query weight (LabelledQuery.weight) weighs that query's row of the loss."""
    ex = [LabelledQuery("q1", "aspirin heart attack", ("d1",), ("d3",), weight=3.0),
          LabelledQuery("q2", "vitamin d bones", ("d5",), ("d6",))]
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=2, seed=0)
    assert [ds[0].weight, ds[1].weight] == [3.0, 1.0]
    module = BiEncoderModule(model, InfoNCE())
    batch = GroupCollator(model)([ds[0], ds[1]])
    assert not model.encoder.training  # no dropout outside training
    with torch.no_grad():
        loss, out = module.compute_loss(batch)  # one forward pass: the rows below are that pass's
        scores, labels = out.scores, out.targets["positive"]
        rows = [InfoNCE()(scores[i : i + 1], labels[i : i + 1]).item() for i in range(2)]
    assert rows[0] != pytest.approx(rows[1], rel=1e-3)  # the weights make a difference
    assert loss.item() == pytest.approx((3 * rows[0] + rows[1]) / 4, rel=1e-4)


# ---- loss sweep: what the formulas imply for trained models --------------------------------
# With one positive per query InfoNCE, Conj- and Disj-InfoNCE are the same function, so models
# trained from the same start and seed must be identical; with several positives they must not.
# Catches a loss whose one-positive case is not the textbook InfoNCE (a mean where a sum is due,
# positives in the denominator, a missed mask), and a sweep whose runs silently train the same loss.

ONE_POSITIVE = [
    LabelledQuery("q1", "does aspirin prevent heart attacks", ("d1",), ("d3", "d7")),
    LabelledQuery("q2", "vitamin d and fractures", ("d5",), ("d6", "d8")),
    LabelledQuery("q3", "calcium for older women", ("d6",), ("d5", "d4")),
    LabelledQuery("q4", "aspirin cardiovascular", ("d2",), ("d4", "d7")),
]
SEVERAL_POSITIVES = [
    LabelledQuery("q1", "does aspirin prevent heart attacks", ("d1", "d2"), ("d3", "d7")),
    LabelledQuery("q2", "vitamin d and fractures", ("d5", "d6"), ("d8",)),
    LabelledQuery("q3", "calcium for older women", ("d6", "d5"), ("d4",)),
    LabelledQuery("q4", "aspirin cardiovascular", ("d2", "d1"), ("d4", "d7")),
]


def _trained_weights(start: BiEncoder, examples, loss, tmp_path) -> torch.Tensor:
    model = copy.deepcopy(start)
    L.seed_everything(0, verbose=False)
    ds = GroupDataset(examples, DOCS, PosAll(), group_size=3, seed=0)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=1.0, default_root_dir=str(tmp_path),
    )
    trainer.fit(BiEncoderModule(model, loss, lr=1e-4, warmup_ratio=0.0),
                DataLoader(ds, batch_size=2, shuffle=True, collate_fn=model.collator()))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_loss_sweep_one_positive_identical_several_positives_differ(model, tmp_path):
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    one = [_trained_weights(model, ONE_POSITIVE, cls(), tmp_path) for cls in (InfoNCE, ConjInfoNCE, DisjInfoNCE)]
    assert not torch.equal(one[0], start)  # training moved the weights
    assert torch.equal(one[0], one[1]) and torch.equal(one[0], one[2])
    several = [_trained_weights(model, SEVERAL_POSITIVES, cls(), tmp_path) for cls in (InfoNCE, ConjInfoNCE, DisjInfoNCE)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert (several[a] - several[b]).abs().max() > 1e-5, (a, b)
