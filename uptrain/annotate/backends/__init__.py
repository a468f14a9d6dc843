"""Annotator backends: the same chat prompts run in-process on transformers or llama.cpp, or on vLLM."""

from __future__ import annotations

from uptrain.annotate.backends.base import Backend, BackendStats, Generation, GenerationParams, Messages
from uptrain.annotate.backends.llamacpp_backend import LlamaCppBackend, LlamaCppUnavailableError
from uptrain.annotate.backends.transformers_backend import TransformersBackend
from uptrain.annotate.backends.vllm_backend import VLLMBackend, VLLMUnavailableError

BACKENDS = {"transformers": TransformersBackend, "llamacpp": LlamaCppBackend, "vllm": VLLMBackend}


def get_backend(name: str, **kw) -> Backend:
    """Build a backend by name; keyword arguments go to its constructor."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"Unknown annotator backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None
    return cls(**kw)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendStats",
    "Generation",
    "GenerationParams",
    "LlamaCppBackend",
    "LlamaCppUnavailableError",
    "Messages",
    "TransformersBackend",
    "VLLMBackend",
    "VLLMUnavailableError",
    "get_backend",
]
