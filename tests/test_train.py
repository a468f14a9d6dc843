"""Training data, the score/label matrix with in-batch negatives, and a real Lightning fit."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from uptrain.losses import DisjInfoNCE, InfoNCE
from uptrain.model import BiEncoder
from uptrain.sampling import PosAll, PosOne
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
