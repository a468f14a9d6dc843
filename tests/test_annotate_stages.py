"""The annotator stages (annotation, REPLUG, the LLM test collection) on a stand-in backend:
one resumable shard loop, cache keys that follow the model's files and resolved dtype/device,
checks before anything slow, and prompt truncation counted in the stats.

The stand-in is named by ``_target_`` as a user's backend would be, so the stages build it
exactly as they build the real ones; no model loads, every test takes milliseconds.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from uptrain.annotate.backends import VLLMUnavailableError
from uptrain.annotate.replug import ReplugStage
from uptrain.annotate.shards import run_sharded
from uptrain.annotate.stage import AnnotateStage
from uptrain.data.collection import Collection
from uptrain.errors import ConfigError, UserError
from uptrain.evaluate.llm_testset import LLMTestSetStage
from uptrain.pool.pool import PoolEntry

from scripted_backend import ScriptedBackend

HERE = __name__


class EchoBackend(ScriptedBackend):
    """Whitespace tokens; selects passage [1] of every window, answers with the query's first word."""

    name = "echo"
    built = 0

    def __init__(self, model: str = "echo", max_context: int = 4096, batch_size: int = 8):
        type(self).built += 1
        super().__init__(model, max_context, batch_size)
        self.seen: list = []

    def answer(self, prompt) -> tuple[str, int]:
        user = prompt[-1]["content"]
        return ("[1]" if "Passages:" in user else user.split("Question:")[-1].split()[0]), 1

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        self.seen += list(prompts)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in out)
        return out

    def loglikelihood(self, contexts, continuations):
        self.seen += list(contexts)
        self.stats.prompt_tokens += sum(self.prompt_length(c) for c in contexts)
        return [-float(len(c[-1]["content"].split())) for c in contexts]


@pytest.fixture(autouse=True)
def _reset():
    EchoBackend.built = EchoBackend.generate_calls = 0
    EchoBackend.fail_on_call = None


def annotator(**backend) -> dict:
    return {
        "backend": {"_target_": f"{HERE}.EchoBackend", **backend},
        "generation": {"max_new_tokens": 8},
        "prompt_version": "v1",
        "window": 2,
        "max_passage_words": 100,
    }


DOCS = {f"d{i}": f"passage {i} about vitamin d and bone health" for i in range(8)}
DOCS["long"] = "calcium " * 400
QUERIES = {f"q{i}": f"vitamin{i} and bones?" for i in range(5)}


def _pool() -> list[PoolEntry]:
    return [PoolEntry(q, text, [f"d{i}"], [f"d{(i + 1) % 8}", "long"], [f"d{i}", "long", f"d{(i + 1) % 8}"])
            for i, (q, text) in enumerate(QUERIES.items())]


def _inputs(**extra):
    collection = Collection("toy", dict(DOCS), dict(QUERIES), {q: {f"d{i}": 1} for i, q in enumerate(QUERIES)})
    return {"data": types.SimpleNamespace(value=collection), "pool": types.SimpleNamespace(value=_pool()), **extra}


def build(stage, out: Path, work: Path, inputs) -> None:
    out.mkdir(parents=True, exist_ok=True)  # the artifact cache hands a stage an empty directory
    stage.build(out, work, inputs)


# --- the shard loop -------------------------------------------------------------------


def test_run_sharded_processes_only_pending_items_and_keeps_order(tmp_path):
    batches = []

    def process(batch):
        batches.append(list(batch))
        return [{"query_id": q, "v": q.upper()} for q in batch]

    ids = ["c", "a", "b", "d", "e"]
    out = run_sharded(tmp_path, ids[:3], 2, process, "test")
    assert [r["v"] for r in out] == ["C", "A", "B"] and batches == [["c", "a"], ["b"]]
    assert all("seconds" in r for r in out)
    batches.clear()
    out = run_sharded(tmp_path, ids, 2, process, "test", out=tmp_path / "all.jsonl")
    assert batches == [["d", "e"]]  # the committed ones are not redone
    assert [json.loads(x)["query_id"] for x in (tmp_path / "all.jsonl").read_text().splitlines()] == ids
    batches.clear()
    run_sharded(tmp_path, ids, 2, process, "test")
    assert batches == []  # nothing pending: process_batch (and so the model) is never touched
    with pytest.raises(RuntimeError, match="returned records for"):
        run_sharded(tmp_path / "other", ["x"], 1, lambda b: [{"query_id": "y"}], "test")


def test_killed_annotation_resumes_with_the_same_labels(tmp_path):
    stage = AnnotateStage(annotator(), steps=["relsel", "answer", "utilsel", "utilrank"], batch_queries=2)
    EchoBackend.fail_on_call = 5  # each batch makes 4 generate calls: dies in the second batch
    with pytest.raises(KeyboardInterrupt):
        build(stage, tmp_path / "out", tmp_path / "work", _inputs())
    committed = [json.loads(x) for s in sorted((tmp_path / "work" / "shards").glob("*.jsonl")) for x in s.read_text().splitlines()]
    assert [r["query_id"] for r in committed] == ["q0", "q1"]

    EchoBackend.fail_on_call, EchoBackend.generate_calls = None, 0
    resumed = AnnotateStage(annotator(), steps=["relsel", "answer", "utilsel", "utilrank"], batch_queries=2)
    build(resumed, tmp_path / "out2", tmp_path / "work", _inputs())
    assert EchoBackend.generate_calls == 2 * 4  # the three queries left, in two batches
    clean = AnnotateStage(annotator(), steps=["relsel", "answer", "utilsel", "utilrank"], batch_queries=2)
    build(clean, tmp_path / "out3", tmp_path / "work3", _inputs())
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "out2" / "labels.jsonl") == strip(tmp_path / "out3" / "labels.jsonl")
    assert len(strip(tmp_path / "out2" / "labels.jsonl")) == 5


def test_the_three_stages_share_one_constructor_and_one_loop(tmp_path):
    runs = {"bm25": {q: {f"d{i}": 2.0, "long": 1.0} for i, q in enumerate(QUERIES)}}
    stages = [
        AnnotateStage(annotator(), steps=["relsel"], batch_queries=3),
        ReplugStage(annotator(), answers=str(_answers(tmp_path)), batch_queries=3),
        LLMTestSetStage(annotator(), systems=["bm25"], queries=4, depth=2, steps=["relsel"], label_step="relsel",
                        batch_queries=3),
    ]
    for n, stage in enumerate(stages):
        assert stage.renderer.version == "v1" and stage.batch_queries == 3
        stage.validate()
        extra = {"run_bm25": types.SimpleNamespace(value=runs["bm25"])} if isinstance(stage, LLMTestSetStage) else {}
        build(stage, tmp_path / f"out{n}", tmp_path / f"work{n}", _inputs(**extra))
        assert len(list((tmp_path / f"work{n}" / "shards").glob("shard-*.jsonl"))) == 1
    assert EchoBackend.built == 3  # one backend per stage, built lazily once
    sections = {}
    for n, stage in enumerate(stages):  # each stage writes its own report sections from its artifact
        sections.update(stage.report(types.SimpleNamespace(path=tmp_path / f"out{n}")))
    assert set(sections) == {"Annotation quality against human labels (Table 1 layout)", "Annotation cost",
                             "REPLUG utilities", "LLM test collection"}
    assert "| relsel |" in sections["Annotation quality against human labels (Table 1 layout)"]
    assert "GPU-hours" in sections["Annotation cost"] and "over the token budget" not in sections["Annotation cost"]
    assert {"precision", "truncation"} <= set(json.loads((tmp_path / "out2" / "agreement.json").read_text()))


# --- truncation counted in the stats --------------------------------------------------


def test_annotation_stats_count_truncated_prompts_and_keep_the_question(tmp_path, caplog):
    stage = AnnotateStage(annotator(max_context=120), steps=["relsel", "answer", "utilsel"], batch_queries=5)
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        build(stage, tmp_path / "out", tmp_path / "work", _inputs())
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    trunc = stats["truncation"]
    assert trunc["prompts"] == stats["prompts"] and 0 < trunc["prompts_truncated"] <= stats["prompts"]
    assert trunc["passages_shortened"] >= trunc["prompts_truncated"] and trunc["words_cut"] > 0
    labels = [json.loads(x) for x in (tmp_path / "out" / "labels.jsonl").read_text().splitlines()]
    assert sum(r["truncation"].get("prompts_truncated", 0) for r in labels) == trunc["prompts_truncated"]
    assert any("prompts were over the token budget" in r.getMessage() for r in caplog.records)
    cost = stage.report(types.SimpleNamespace(path=tmp_path / "out"))["Annotation cost"]
    assert f"{trunc['prompts_truncated']} of {trunc['prompts']} prompts were over the token budget" in cost
    seen = stage.backend().seen
    assert len(seen) == stats["prompts"]
    for prompt in seen:  # every prompt fits and still asks its question
        assert EchoBackend.prompt_length(None, prompt) <= 120 - 8
        assert any(f"Question: {q}" in prompt[-1]["content"] for q in QUERIES.values())


def test_replug_prompts_leave_room_for_the_answer(tmp_path):
    stage = ReplugStage(annotator(max_context=80), answers=str(_answers(tmp_path)), batch_queries=5)
    build(stage, tmp_path / "out", tmp_path / "work", _inputs())
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["truncation"]["prompts_truncated"] == 5  # the long passage of each query
    utilities = [json.loads(x) for x in (tmp_path / "out" / "utilities.jsonl").read_text().splitlines()]
    assert all(len(u["utilities"]) == 3 for u in utilities)


# --- cache keys -----------------------------------------------------------------------


def _model_dir(tmp_path: Path, weights: bytes, dtype: str = "float32") -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": dtype}))
    (d / "model.safetensors").write_bytes(weights)
    return d


def _transformers(model: str, **kw) -> dict:
    return {**annotator(), "backend": {"_target_": "uptrain.annotate.backends.TransformersBackend", "model": model,
                                       "device": "auto", "batch_size": 8, **kw}}


def test_model_file_hash_is_in_every_annotator_key(tmp_path):
    model = _model_dir(tmp_path, b"weights-A")
    answers = _answers(tmp_path)

    def keys():
        return [s.spec() for s in (
            AnnotateStage(_transformers(str(model))),
            ReplugStage(_transformers(str(model)), answers=str(answers)),
            LLMTestSetStage(_transformers(str(model)), systems=["bm25"]),
        )]

    before = keys()
    (model / "model.safetensors").write_bytes(b"weights-B")  # same name, same size, other weights
    after = keys()
    for b, a in zip(before, after):
        assert b["backend"]["model_sha"] != a["backend"]["model_sha"]
        assert b != a
    assert before[0]["backend"]["model_sha"] == before[1]["backend"]["model_sha"]
    hub = AnnotateStage(_transformers("some-org/not-on-this-disk")).spec()
    assert hub["backend"]["model_sha"] == "hub:some-org/not-on-this-disk"


def test_dtype_auto_is_keyed_as_what_it_resolves_to(tmp_path):
    model = str(_model_dir(tmp_path, b"w"))
    auto = AnnotateStage(_transformers(model, dtype="auto")).spec()["backend"]
    import torch

    from uptrain import precision

    expected = precision.resolve_dtype("auto", "auto")  # bf16 on a GPU with bf16 or a CPU with AMX / AVX-512 BF16
    assert auto["dtype"] == expected and auto["dtype"] in ("fp32", "bf16")
    assert auto["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    explicit = AnnotateStage(_transformers(model, dtype=expected)).spec()["backend"]
    assert {k: v for k, v in explicit.items() if k != "dtype"} == {k: v for k, v in auto.items() if k != "dtype"}
    assert "batch_size" not in auto  # speed, not outputs
    cpu = AnnotateStage(_transformers(model, device="cpu")).spec()["backend"]
    assert cpu["device"] == "cpu"


def test_vllm_dtype_auto_follows_the_checkpoint(tmp_path, monkeypatch):
    from uptrain.annotate.backends import VLLMBackend

    bf16 = _model_dir(tmp_path, b"w", dtype="bfloat16")
    assert VLLMBackend.config_spec({"model": str(bf16), "dtype": "auto"})["dtype"] == "bfloat16"
    (bf16 / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    spec = VLLMBackend.config_spec({"model": str(bf16), "dtype": "auto"})
    assert spec["dtype"] == "float16" and spec["device"] == "cuda"  # vLLM runs float32 checkpoints in float16


def _answers(tmp_path: Path, text: str = "bones") -> Path:
    f = tmp_path / "answers.jsonl"
    f.write_text("".join(json.dumps({"query_id": q, "answers": [text]}) + "\n" for q in QUERIES))
    return f


def test_replug_answer_file_is_checked_first_and_hashed(tmp_path):
    missing = tmp_path / "no-answers.jsonl"
    with pytest.raises(ConfigError) as err:
        ReplugStage(annotator(), answers=str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "replug_answers=pseudo" in msg and "JSONL" in msg
    assert EchoBackend.built == 0
    f = _answers(tmp_path)
    stage = ReplugStage(annotator(), answers=str(f))
    first = stage.spec()
    _answers(tmp_path, "other answers")
    assert stage.spec()["answers"] != first["answers"]
    f.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        stage.validate()


# --- checks before anything slow ------------------------------------------------------


def test_vllm_missing_is_a_user_error_found_by_validate(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    cfg = {**annotator(), "backend": {"_target_": "uptrain.annotate.backends.VLLMBackend", "model": "org/m"}}
    stage = AnnotateStage(cfg)
    with pytest.raises(VLLMUnavailableError) as err:
        stage.validate()
    assert isinstance(err.value, UserError) and isinstance(err.value, ImportError)
    assert "pip install .[vllm]" in str(err.value) and "CUDA" in str(err.value)


@pytest.mark.parametrize("change, match", [
    ({"window": 0}, "annotator.window"),
    ({"max_passage_words": -1}, "annotator.max_passage_words"),
    ({"generation": {"max_new_tokens": 8, "beams": 2}}, "annotator.generation"),
    ({"prompt_version": "v999"}, "annotator.prompt_version"),
    ({"backend": {"_target_": "no.such.Backend"}}, "cannot be imported"),
    ({"backend": {"_target_": f"{HERE}.EchoBackend", "max_context": 8}}, "leaves no room"),
    ({"backend": {"_target_": "uptrain.annotate.backends.TransformersBackend", "model": "./no/such/dir"}}, "does not exist"),
    ({"backend": {"_target_": "uptrain.annotate.backends.TransformersBackend", "dtype": "float8"}}, "dtype"),
])
def test_bad_annotator_settings_are_config_errors(change, match):
    with pytest.raises(ConfigError, match=match):
        AnnotateStage({**annotator(), **change}).validate()
    assert EchoBackend.built == 0


def test_bad_stage_settings_are_config_errors():
    with pytest.raises(ConfigError, match="needs 'relsel'"):
        AnnotateStage(annotator(), steps=["answer"])
    with pytest.raises(ConfigError, match="annotate.batch_queries"):
        AnnotateStage(annotator(), batch_queries=0)
    with pytest.raises(ConfigError, match="label_step"):
        LLMTestSetStage(annotator(), systems=["bm25"], label_step="answer")
    with pytest.raises(ConfigError, match="systems is empty"):
        LLMTestSetStage(annotator(), systems=[])
