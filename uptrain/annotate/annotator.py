"""What every stage that runs the annotator LLM shares: its config, prompts, cache-key part,
backend, checks, and the one resumable shard loop.

:class:`AnnotatorStage` is the base of the annotate stage (LLM labels of the training pool),
the REPLUG stage (answer likelihoods) and the LLM test collection. A new stage that asks
the annotator something subclasses it, builds its records in a ``process_batch`` function
and calls :meth:`AnnotatorStage.run_shards`.

The cache key part (:meth:`AnnotatorStage.annotator_spec`) is computed from the config
without loading the model: the backend class resolves what determines its outputs
(:meth:`uptrain.annotate.backends.base.Backend.config_spec`): the model's file hash, and
the dtype and device that ``auto`` picks on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from uptrain.annotate.backends.base import Backend, GenerationParams
from uptrain.annotate.prompts import PromptRenderer
from uptrain.annotate.shards import run_sharded
from uptrain.errors import ConfigError
from uptrain.graph import Stage

T = TypeVar("T")


def plain(cfg: Any) -> Any:
    """A config node as plain containers (resolved); anything else as it is (a dict copied)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def annotated_pool(pool: list, max_queries: int | None, action: str) -> list:
    """The first ``max_queries`` pool entries (all when None): the queries the LLM labels."""
    pool = pool[:max_queries] if max_queries else pool
    if not pool:
        raise ValueError(f"the pool is empty: no training query to {action}")
    return pool


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.endswith(".gguf")


class AnnotatorStage(Stage[T]):
    """A stage that runs the annotator (``cfg.annotator``: backend, generation, prompt_version,
    window, max_passage_words) over queries in resumable batches of ``batch_queries``.

    Config values are checked when the stage is made (a :class:`ConfigError` names the
    setting); :meth:`validate` also resolves the model's identity, so a missing model or
    extra is reported before anything slow runs. The backend is built on first use only.

    Version 2 of every annotator stage: the model's file hash and the resolved dtype and device
    are in the key, and prompts over the context keep their instruction and question (passages
    shortened, the cuts counted under ``truncation`` in the stage's stats).
    """

    #: True for a stage that can run the simulated annotator (``annotator=simulated``: grades drawn
    #: from the human labels, no model): the pointwise grade stage alone; every other stage refuses it
    accepts_simulated: bool = False
    #: queries can be split across jobs (``annotate.shard`` / ``annotate.num_shards``; see
    #: :mod:`uptrain.annotate.shards`): the work is one resumable loop over queries
    shardable: bool = True

    def __init__(self, annotator: DictConfig | Mapping, batch_queries: int = 4):
        self.annotator: dict = plain(annotator)
        self.batch_queries = batch_queries
        self._check_config()
        self.batch_queries = int(batch_queries)
        try:
            self.renderer = PromptRenderer(version=self.annotator.get("prompt_version", "v1"),
                                           guard=self.annotator.get("guard"))
        except FileNotFoundError as exc:
            raise ConfigError(f"annotator.prompt_version: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"annotator.guard: {exc}. Unset (the default) renders the prompts unguarded") from None
        if self.annotator.get("guard") is not None:
            # one spelling per guard in cache keys ("fence", ["fence"]; "" or [] is no guard: the default's key)
            self.annotator["guard"] = self.renderer.guard_name if self.renderer.guard else None
        self._backend: Backend | None = None
        self._pipelines: dict[tuple, Any] = {}

    # --- checks ---------------------------------------------------------------
    def simulated(self) -> bool:
        """Whether the config is the simulated annotator (an ``annotator.simulated`` block)."""
        return self.annotator.get("simulated") is not None

    def _check_config(self) -> None:
        if self.simulated():
            if not self.accepts_simulated:
                raise ConfigError(
                    f"the simulated annotator (annotator=simulated: grades drawn from the human labels, no model) "
                    f"cannot run the '{self.name}' stage: it only stands in for the pointwise grade stage, read by "
                    "the label source `grade` (labels=grade). Choose a model annotator (annotator=transformers, "
                    "llamacpp or vllm) for this stage"
                )
            value = self.batch_queries
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"annotate.batch_queries must be an integer of at least 1, got {value!r}")
            return
        backend = self.annotator.get("backend")
        if not isinstance(backend, Mapping) or not backend.get("_target_"):
            raise ConfigError("annotator.backend must be a config with a _target_ (e.g. annotator=transformers, "
                              f"annotator=llamacpp or annotator=vllm); got {backend!r}")
        gen = self.annotator.get("generation") or {}
        try:
            params = GenerationParams(**gen)
        except TypeError:
            known = ", ".join(GenerationParams.__dataclass_fields__)
            raise ConfigError(f"annotator.generation has unknown settings {sorted(set(gen) - set(GenerationParams.__dataclass_fields__))}; "
                              f"known: {known}") from None
        if int(params.max_new_tokens) < 1:
            raise ConfigError(f"annotator.generation.max_new_tokens must be at least 1, got {params.max_new_tokens}")
        context = backend.get("max_context") or backend.get("max_model_len")
        if context and int(params.max_new_tokens) >= int(context):
            raise ConfigError(f"annotator.generation.max_new_tokens ({params.max_new_tokens}) leaves no room for a prompt "
                              f"in the model's context of {context} tokens: lower it or raise the context")
        checks = {
            "annotate.batch_queries": (self.batch_queries, 1, False),
            "annotator.window": (self.annotator.get("window", 16), 1, False),
            "annotator.max_passage_words": (self.annotator.get("max_passage_words"), 0, True),
        }
        for name, (value, least, nullable) in checks.items():
            if value is None and nullable:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be an integer of at least {least}{' or null' if nullable else ''}, got {value!r}")

    def backend_class(self) -> type:
        from hydra.utils import get_class

        target = self.annotator["backend"]["_target_"]
        try:
            return get_class(target)
        except Exception as exc:  # noqa: BLE001 - hydra wraps import errors of every kind
            raise ConfigError(f"annotator.backend._target_ {target!r} cannot be imported ({exc}); use "
                              "uptrain.annotate.backends.TransformersBackend, LlamaCppBackend or VLLMBackend") from None

    def validate(self) -> None:
        """Config values, the backend class and extras, and the model's identity (a missing model
        or a missing vllm is a user error here, before anything slow runs)."""
        self._check_config()
        if self.simulated():  # no model: the stage checks its simulator itself
            return
        cls = self.backend_class()
        config = self.annotator["backend"]
        model = str(config.get("model", ""))
        if model and _looks_like_path(model) and not Path(model).expanduser().exists():
            raise ConfigError(f"annotator.backend.model {model!r} looks like a path but does not exist: give an "
                              "existing model directory or .gguf file, or a Hugging Face model name")
        if isinstance(cls, type) and issubclass(cls, Backend):
            cls.check_config(config)
        self.annotator_spec()

    # --- identity -------------------------------------------------------------
    def backend_spec(self) -> dict:
        """The backend settings that determine its outputs, resolved (model hash, dtype, device)."""
        cls = self.backend_class()
        config = self.annotator["backend"]
        if isinstance(cls, type) and issubclass(cls, Backend):
            return cls.config_spec(config)
        return Backend.config_spec(config)  # a backend outside the interface: its settings as given

    def model_spec(self) -> dict:
        """What determines every prompt's model outputs: the backend, the prompts (and how passages
        are rendered into them, ``annotator.guard``, when set), the passage cap."""
        spec = {
            "backend": self.backend_spec(),
            "prompts": self.renderer.fingerprint(),
            "max_passage_words": self.annotator.get("max_passage_words"),
        }
        if self.annotator.get("guard") is not None:  # absent: the keys of earlier runs stay valid
            spec["guard"] = self.annotator["guard"]
        return spec

    def annotator_spec(self) -> dict:
        """Everything about the annotator that determines its generated answers: model, decoding,
        prompts, windows, the prompting scheme of each step (``annotator.scheme``, when set; the
        cache key part of annotation and the LLM test collection)."""
        spec = {
            **self.model_spec(),
            "generation": self.annotator.get("generation", {}),
            "window": self.annotator.get("window", 16),
        }
        if self.annotator.get("scheme") is not None:
            spec["scheme"] = self.annotator["scheme"]
        return spec

    # --- running --------------------------------------------------------------
    def backend(self) -> Backend:
        """The backend, built (the model loaded) on first use."""
        if self._backend is None:
            from hydra.utils import instantiate

            self._backend = instantiate(self.annotator["backend"])
        return self._backend

    def generation(self) -> GenerationParams:
        return GenerationParams(**(self.annotator.get("generation") or {}))

    def pipeline(self, steps: Sequence[str], utilrank_k: float = 10.0):
        """The annotation steps on this stage's backend, prompts and windows (built once per steps)."""
        from uptrain.annotate.steps import AnnotationPipeline

        key = (tuple(steps), float(utilrank_k))
        if key not in self._pipelines:
            self._pipelines[key] = AnnotationPipeline(
                backend=self.backend(),
                renderer=self.renderer,
                params=self.generation(),
                steps=list(steps),
                window_size=int(self.annotator.get("window", 16)),
                max_passage_words=self.annotator.get("max_passage_words"),
                utilrank_k=utilrank_k,
                scheme=dict(self.annotator.get("scheme") or {}),
            )
        return self._pipelines[key]

    def annotate(self, items: list, docs: Mapping[str, str], steps: Sequence[str], utilrank_k: float = 10.0) -> list[dict]:
        """Run the steps over a batch of :class:`~uptrain.annotate.steps.QueryAnnotation` items; their records."""
        self.pipeline(steps, utilrank_k).run(items, docs)
        return [item.to_dict() for item in items]

    def run_shards(self, work: Path, items: Sequence[Any], process_batch: Callable[[list], list[dict]],
                   desc: str, what: str, out: Path | None = None, time_key: str | None = "seconds") -> list[dict]:
        """:func:`uptrain.annotate.shards.run_sharded` over ``work/shards`` in batches of ``batch_queries``."""
        return run_sharded(work / "shards", items, self.batch_queries, process_batch, desc, what=what, out=out,
                           time_key=time_key)
