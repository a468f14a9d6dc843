"""The seams of the run graph: label sources and their producers, structured label specs,
artifact facets, the ranking plan (first stage, reranking), configured evaluation paths,
query segments and per-stage report sections."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, needs_data, run_cli
from test_labels import POOL as LABEL_POOL, Entry
from uptrain.cache import ArtifactCache
from uptrain.errors import ConfigError, UserError
from uptrain.evaluate.metrics import EvalResult
from uptrain.evaluate.paths import plan_ranking
from uptrain.evaluate.segments import QueryLength, SegmentFile, segment_results, split_result
from uptrain.graph import Runner, Stage
from uptrain.labels import (
    PRODUCERS, BuildContext, LabelConfigError, LabelSource, build_examples, describe, input_requests, parse_spec,
    producer, required_inputs, spec_key,
)
from uptrain.pipeline import significance_markers, validate


POOL = LABEL_POOL[:2]  # q1 "aspirin heart" (d1 | d3 d1 d2 d4), q2 "vitamin d bones" (d5 | d5 d6 d7)


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# ---- label specs -----------------------------------------------------------------------

def test_string_specs_keep_their_cache_key_and_structured_specs_carry_params_and_weights():
    # a string spec must key exactly as before (no cache invalidation for existing runs)
    assert spec_key("human+llm:utilsel") == "human+llm:utilsel"
    structured = [{"source": "human"}, {"source": "llm", "step": "utilsel", "weight": 0.5}]
    assert spec_key(structured) == [
        {"source": "human", "weight": 1.0}, {"source": "llm", "weight": 0.5, "step": "utilsel"}]
    assert describe(structured) == "human + llm:utilsel (weight 0.5)"
    assert required_inputs(structured) == ("annotations",)
    with pytest.raises(LabelConfigError, match="weight must be > 0"):
        parse_spec([{"source": "human", "weight": 0}])
    with pytest.raises(LabelConfigError, match="needs a step"):
        parse_spec([{"source": "llm"}])
    with pytest.raises(LabelConfigError, match="needs 'source'"):
        parse_spec([{"step": "utilsel"}])
    with pytest.raises(LabelConfigError, match="cannot be imported"):
        parse_spec([{"_target_": "no_such_module.Source"}])
    with pytest.raises(LabelConfigError, match="is not a uptrain.labels.LabelSource"):
        parse_spec([{"_target_": "collections.OrderedDict"}])


class _Ann:
    def __init__(self, pos):
        self.pos = pos

    def positives(self, step):
        return self.pos


def test_example_weight_is_the_largest_weight_of_the_sources_that_labelled_the_query():
    # q1: human (w 1) and llm (w 3) -> 3; q2: only human labels it (llm returns no annotation) -> 1
    values = {"annotations": {"q1": _Ann(["d2"])}}
    spec = [{"source": "human"}, {"source": "llm", "step": "utilsel", "weight": 3}]
    ex, stats = build_examples(spec, POOL, values)
    assert {e.query_id: e.weight for e in ex} == {"q1": 3.0, "q2": 1.0}
    assert ex[0].positives == ("d1", "d2") and ex[0].negatives == ("d3", "d4")
    assert stats.per_source == {"human": 2, "llm:utilsel (weight 3)": 1}


# ---- a label source and its producer defined outside the package ---------------------------

class LongWordStage(Stage[dict]):
    """Positives: pool candidates sharing a word of >= min_len letters with the query."""

    name = "long_words"
    inputs = ("pool",)

    def __init__(self, min_len: int):
        self.min_len = min_len

    def spec(self):
        return {"min_len": self.min_len}

    def build(self, out, work, inputs):
        docs = {"d1": "aspirin", "d2": "heart attack", "d3": "nothing", "d4": "x", "d5": "bones", "d6": "vitamin", "d7": "d"}
        res = {}
        for e in inputs["pool"].value:
            words = {w for w in e.query.split() if len(w) >= self.min_len}
            res[e.query_id] = [d for d in e.candidates if words & set(docs[d].split())]
        (out / "hits.json").write_text(json.dumps(res))

    def load(self, path):
        return json.loads((path / "hits.json").read_text())


class PoolStage(Stage[list]):
    name = "toy_pool"

    def spec(self):
        return {}

    def build(self, out, work, inputs):
        (out / "pool.json").write_text(json.dumps([e.__dict__ for e in POOL]))

    def load(self, path):
        return [Entry(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
                for d in json.loads((path / "pool.json").read_text())]


class LongWordSource(LabelSource):
    name = "long_words"
    inputs = ("long_words",)

    def __init__(self, min_len: int = 5, weight: float = 1.0):
        super().__init__(weight)
        self.min_len = int(min_len)

    def params(self):
        return {"min_len": self.min_len}

    def requests(self):
        return {"long_words": {"min_len": self.min_len}}

    def positives(self, entry, values):
        return values["long_words"].get(entry.query_id) or None


@producer("long_words")
def _long_words(ctx, params):
    return ctx.runner.run(LongWordStage(params["min_len"]), {"pool": ctx.require("pool")})


def test_a_source_defined_elsewhere_plugs_in_through_its_producer(tmp_path):
    """The pipeline's path (spec -> requests -> producers -> build_examples) with no edit to the package."""
    from omegaconf import DictConfig

    saved = PRODUCERS["pool"]
    PRODUCERS["pool"] = lambda ctx, params: ctx.runner.run(PoolStage())
    try:
        spec = [{"_target_": f"{__name__}.LongWordSource", "min_len": 6, "weight": 2}]
        assert input_requests(spec) == {"long_words": {"min_len": 6}}
        runner = Runner(ArtifactCache(tmp_path / "cache"), tmp_path / "run")
        ctx = BuildContext(runner, DictConfig({}), None)
        values = {k: a.value for k, a in ctx.inputs_for(input_requests(spec)).items()}
        ctx.inputs_for(input_requests(spec))  # asked again (a second phase): no second build
        assert [r.stage for r in runner.records] == ["toy_pool", "long_words"]
        ex, stats = build_examples(spec, values=values, pool=runner.built[0][1].value)
        # q1 "aspirin heart": d1 (aspirin); "heart" has 5 letters < 6. q2 "vitamin d bones": d6 (vitamin)
        assert [(e.query_id, e.positives, e.weight) for e in ex] == [("q1", ("d1",), 2.0), ("q2", ("d6",), 2.0)]
        with pytest.raises(ConfigError, match="no producer is registered for the artifact 'nope'"):
            ctx.require("nope")
    finally:
        PRODUCERS["pool"] = saved


OUTSIDE_SOURCE = '''
"""A label source written by a user, outside uptrain: positives are the pool candidates
that share a word of at least min_len letters with the query."""
import json
from uptrain.graph import Stage
from uptrain.labels import LabelSource, producer


class SharedWordStage(Stage):
    name = "shared_words"
    inputs = ("data", "pool")

    def __init__(self, min_len):
        self.min_len = int(min_len)

    def spec(self):
        return {"min_len": self.min_len}

    def build(self, out, work, inputs):
        docs = inputs["data"].value.docs
        hits = {}
        for e in inputs["pool"].value:
            words = {w.lower() for w in e.query.split() if len(w) >= self.min_len}
            hits[e.query_id] = [d for d in e.candidates if words & {w.lower() for w in docs.get(d, "").split()}]
        (out / "hits.json").write_text(json.dumps(hits))

    def load(self, path):
        return json.loads((path / "hits.json").read_text())


class SharedWordSource(LabelSource):
    name = "shared_words"
    inputs = ("shared_words",)

    def __init__(self, min_len=7, weight=1.0):
        super().__init__(weight)
        self.min_len = int(min_len)

    def params(self):
        return {"min_len": self.min_len}

    def requests(self):
        return {"shared_words": self.params()}

    def positives(self, entry, values):
        return values["shared_words"].get(entry.query_id) or None


@producer("shared_words")
def shared_words(ctx, params):
    return ctx.runner.run(SharedWordStage(params["min_len"]),
                          {"data": ctx.train_data, "pool": ctx.require("pool")}, label="shared_words")
'''


@pytest.mark.slow
@needs_data
def test_cli_trains_on_a_label_source_defined_outside_the_package(cli_env, tmp_path):
    """A user's module (one class + its producer) and one override: no edit to uptrain."""
    (tmp_path / "user_sources.py").write_text(textwrap.dedent(OUTSIDE_SOURCE))
    env = dict(cli_env, PYTHONPATH=f"{tmp_path}:{cli_env.get('PYTHONPATH', '')}")
    phases = "phases=[{name: words, labels: [{_target_: user_sources.SharedWordSource, min_len: 7}]}]"
    run_cli(["+exp=human", "profile=tiny", phases, "hydra.run.dir=run"], env, tmp_path)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    stages = [s["stage"] for s in metrics["stages"]]
    assert "shared_words" in stages and stages.index("shared_words") < stages.index("train")
    hits = json.loads((run / "artifacts" / "shared_words" / "hits.json").read_text())
    train = json.loads((run / "artifacts" / "train_words" / "train_stats.json").read_text())
    # the phase trained on exactly the queries the user's source labelled
    assert train["label_stats"]["labelled"] == sum(1 for v in hits.values() if v) > 0
    assert train["label_stats"]["human_queries"] is None
    assert metrics["label_source"] == "shared_words:7"


# ---- artifact facets -------------------------------------------------------------------

class ModelLike(Stage[str]):
    name = "modellike"

    def __init__(self, query_len, passage_len):
        self.q, self.p = query_len, passage_len

    def spec(self):
        return {"q": self.q, "p": self.p}

    def facets(self):
        return {"passage": {"p": self.p}}

    def build(self, out, work, inputs):
        (out / "v").write_text(f"{self.q},{self.p}")

    def load(self, path):
        return (path / "v").read_text()


class IndexLike(Stage[str]):
    name = "indexlike"
    inputs = ("model",)
    input_facets = {"model": "passage"}

    def spec(self):
        return {}

    def build(self, out, work, inputs):
        (out / "v").write_text("i")

    def load(self, path):
        return "i"


class SearchLike(IndexLike):
    name = "searchlike"
    input_facets = {}


def test_an_index_keys_on_the_models_passage_side_only(tmp_path):
    # the query length must not re-encode the corpus; it must still change the retrieval's key
    runner = Runner(ArtifactCache(tmp_path), tmp_path / "run")
    m64, m256, m256p = (runner.run(ModelLike(q, p)) for q, p in ((64, 256), (256, 256), (256, 128)))
    assert len({m64.key, m256.key, m256p.key}) == 3
    idx = [runner.run(IndexLike(), {"model": m}).key for m in (m64, m256, m256p)]
    assert idx[0] == idx[1] != idx[2]
    search = [runner.run(SearchLike(), {"model": m}).key for m in (m64, m256)]
    assert search[0] != search[1]


def test_the_run_tag_is_in_the_retrieve_key():
    from uptrain.index.bm25_index import BM25Indexer
    from uptrain.retrieve.stage import RetrieveStage

    a, b = RetrieveStage(BM25Indexer(), 10, tag="human"), RetrieveStage(BM25Indexer(), 10, tag="utilsel")
    assert a.spec() != b.spec()


# ---- the ranking plan and early validation ----------------------------------------------

def test_lexical_index_with_training_phases_is_refused_before_anything_runs():
    cfg = compose_cfg("+exp=utilsel", "index=bm25")
    with pytest.raises(ConfigError, match="no reranking is configured"):
        plan_ranking(cfg)
    # the same with reranking is a real experiment: BM25's top-k re-scored by the trained model
    plan = plan_ranking(compose_cfg("+exp=utilsel", "index=bm25", "rerank.enabled=true"))
    assert plan.rerank == {"depth": 100, "batch_size": 64} and not plan.index_needs_model
    assert plan_ranking(compose_cfg("+exp=bm25")).needs_model is False


@pytest.mark.parametrize("override, message", [
    ("eval.measures=[nDCG@10,Foo@3]", "eval.measures: ir_measures cannot evaluate these measures: 'Foo@3'"),
    ("eval.groups.in_domain=[nope]", "eval.groups.in_domain names 'nope', which is not in eval.collections"),
    ("eval.llm_test.label_step=answer", "eval.llm_test.label_step must be a selection step"),
    ("eval.llm_test.measures=[P@x]", "eval.llm_test.measures"),
    ("eval.llm_test.collection=nowhere", "eval.llm_test.collection 'nowhere' is not in eval.collections"),
    ("eval.llm_test.pool=everything", "eval.llm_test.pool must be one of fixed, with_run"),
    ("rerank.depth=5000", "rerank.depth \\(5000\\) exceeds eval.depth"),
    ("+eval.segments.len={_target_: uptrain.evaluate.segments.QueryLength, edges: [5, 2]}", "edges must be increasing"),
    ("+eval.paths.bogus={_target_: collections.OrderedDict}", "is not a uptrain.evaluate.paths.EvalPath"),
])
def test_bad_values_fail_in_validate(override, message):
    cfg = compose_cfg("+exp=human", "eval.llm_test.enabled=true", "rerank.enabled=true", "index=bm25", override)
    with pytest.raises(UserError, match=message):
        validate(cfg)


def test_cross_encoder_on_a_dense_index_takes_bm25_as_first_stage_and_says_so():
    plan = plan_ranking(compose_cfg("+exp=utilsel_cl20", "model=cross_encoder"))
    assert plan.rerank is not None and not plan.index_needs_model
    assert plan.index._target_ == "uptrain.index.BM25Indexer"
    assert any("cannot retrieve" in n for n in plan.notes)
    with pytest.raises(ConfigError, match="cannot build a dense index"):
        plan_ranking(compose_cfg("+exp=utilsel_cl20", "model=cross_encoder", "rerank.enabled=false"))
    # a lexical baseline without training does not rerank with a carried model
    assert plan_ranking(compose_cfg("+exp=bm25", "model=cross_encoder")).rerank is None


@pytest.mark.slow
@needs_data
def test_cli_rejects_a_bad_measure_before_training(cli_env, tmp_path):
    proc = run_cli(["+exp=human", "profile=tiny", "eval.measures=[nDCG@10,Bogus@5]"], cli_env, tmp_path, check=False)
    assert proc.returncode == 2
    assert "uptrain: error: eval.measures: ir_measures cannot evaluate these measures: 'Bogus@5'" in proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing was built: the check ran before the first stage
    assert not (Path(cli_env["UPTRAIN_CACHE_DIR"]) / "train").exists()
    assert not (Path(cli_env["UPTRAIN_CACHE_DIR"]) / "data").exists()


# ---- query segments --------------------------------------------------------------------

def _result(values: dict[str, float]) -> EvalResult:
    return EvalResult(["nDCG@10"], {"nDCG@10": sum(values.values()) / len(values)}, {"nDCG@10": values}, len(values))


def test_segment_means_are_means_over_their_queries():
    res = _result({"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.25})
    queries = {"a": "one", "b": "one two three", "c": "a b c d e f g", "d": "x y"}
    segs = segment_results({"len": QueryLength(edges=[2, 5])}, "col", queries, res)
    assert list(segs) == ["words<=2", "words3-5", "words>5"]
    assert segs["words<=2"].aggregate["nDCG@10"] == pytest.approx((1.0 + 0.25) / 2)
    assert segs["words3-5"].num_queries == 1 and segs["words3-5"].aggregate["nDCG@10"] == 0.0
    assert segs["words>5"].aggregate["nDCG@10"] == 0.5
    # the segments partition the queries: their query-weighted means give the overall mean
    total = sum(r.aggregate["nDCG@10"] * r.num_queries for r in segs.values()) / res.num_queries
    assert total == pytest.approx(res.aggregate["nDCG@10"])


def test_segment_file_counts_unassigned_queries_and_respects_its_collection(tmp_path, caplog):
    f = tmp_path / "seg.tsv"
    f.write_text("# query\tbucket\na\thigh\nb\tlow\nbroken line\n")
    seg = SegmentFile(str(f), collection="col")
    res = _result({"a": 1.0, "b": 0.0, "c": 0.5})
    segs = segment_results({"freq": seg}, "col", {}, res)
    assert {s: r.num_queries for s, r in segs.items()} == {"high": 1, "low": 1, "unassigned": 1}
    assert "1 of 3 queries unassigned" in caplog.text and "1 malformed lines skipped" in caplog.text
    assert segment_results({"freq": seg}, "other", {}, res) == {}
    with pytest.raises(ConfigError, match="does not exist"):
        SegmentFile(str(tmp_path / "missing.tsv"))
    with pytest.raises(ConfigError, match="produced twice"):
        segment_results({"a": seg, "b": SegmentFile(str(f))}, "col", {}, res)


def test_segment_markers_compare_the_same_segment_of_the_baseline():
    from uptrain.pipeline import ExperimentResult

    ours = {"g": {"c": split_result(_result({f"q{i}": 1.0 if i < 10 else 0.5 + 0.01 * i for i in range(20)}),
                                     {f"q{i}": "head" if i < 10 else "tail" for i in range(20)})}}
    theirs = {"g": {"c": split_result(_result({f"q{i}": 0.1 * (i % 3) if i < 10 else 0.5 + 0.01 * i for i in range(20)}),
                                       {f"q{i}": "head" if i < 10 else "tail" for i in range(20)})}}
    base = ExperimentResult("base", Path("."), {}, [], ["nDCG@10"], segments=theirs)
    marks = significance_markers(ours, base, segments=True)
    assert marks["g"]["c"]["head"]["nDCG@10"] == "+"  # better on head queries
    assert marks["g"]["c"]["tail"]["nDCG@10"] == ""  # identical on tail queries


# ---- per-stage report sections ---------------------------------------------------------

class Reporting(ModelLike):
    name = "reporting"

    def report(self, artifact):
        return {"Reporting stage": f"value {artifact.value}"}


def test_each_built_stage_contributes_its_report_section(tmp_path):
    from uptrain.pipeline import stage_sections

    runner = Runner(ArtifactCache(tmp_path), tmp_path / "run")
    runner.run(ModelLike(1, 2))
    runner.run(Reporting(3, 4))
    assert stage_sections(runner) == {"Reporting stage": "value 3,4"}


# ---- the CLI: flags anywhere, a user's own collection from a config directory -------------

def test_hydra_flags_are_accepted_after_the_overrides():
    from uptrain.cli import flags_first

    assert flags_first(["+exp=bm25", "--config-dir", "/c", "a=1", "--multirun", "b=2", "--cfg", "job"]) == [
        "--config-dir", "/c", "--multirun", "--cfg", "job", "+exp=bm25", "a=1", "b=2"]
    assert flags_first(["~loss", "+exp=x", "-m"]) == ["-m", "~loss", "+exp=x"]


@pytest.mark.slow
def test_own_collection_from_a_config_dir_as_the_readme_says(cli_env, tmp_path):
    """The README's worked example: a collection config in the user's directory, --config-dir."""
    data = tmp_path / "mycol"
    data.mkdir()
    (data / "docs.tsv").write_text("d1\taspirin lowers the risk of heart attack\nd2\tthe eiffel tower is in paris\n"
                                   "d3\tvitamin d and bone fractures\n")
    (data / "topics.tsv").write_text("q1\taspirin heart attack\nq2\tbone fractures vitamin\n")
    (data / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d3 2\n")
    conf = tmp_path / "my-conf" / "eval_data"
    conf.mkdir(parents=True)
    (conf / "mycol.yaml").write_text(
        f"_target_: uptrain.data.TrecSource\nname: mycol\ndocs: {data}/docs.tsv\ntopics: {data}/topics.tsv\n"
        f"qrels: {data}/qrels.txt\nfields: [text]\n")
    run_cli(["+exp=bm25", "--config-dir", str(tmp_path / "my-conf"), "+eval_data@eval.collections.mycol=mycol",
             "eval.groups.in_domain=[mycol]", "eval.groups.out_of_domain=[]", "hydra.run.dir=run"], cli_env, tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # both queries find their one relevant document first
    assert metrics["results"]["mycol"]["RR@10"] == 1.0 and metrics["results"]["mycol"]["nDCG@10"] == 1.0


def test_judged_at_10_counts_the_share_of_the_top_10_the_pool_judged():
    # the LLM test path adds Judged@10 so a run scored on passages nobody judged is visible
    from uptrain.evaluate.metrics import evaluate_run
    from uptrain.evaluate.paths import LLMTestPath

    cfg = compose_cfg("+exp=human", "eval.llm_test.enabled=true")
    assert LLMTestPath().measures(cfg)[-1] == "Judged@10"
    qrels = {"q": {"d0": 1, "d1": 0, "d2": 0}}
    run = {"q": {f"d{i}": 10.0 - i for i in range(10)}}  # d0..d2 judged, d3..d9 not
    assert evaluate_run(run, qrels, ["Judged@10"]).aggregate["Judged@10"] == pytest.approx(0.3)


def test_a_source_named_by_target_keys_by_its_class_and_parses_back():
    # the pipeline hands spec_key's form to the train stage, which parses it again
    spec = [{"_target_": f"{__name__}.LongWordSource", "min_len": 6}]
    key = spec_key(spec)
    assert key == [{"_target_": f"{__name__}.LongWordSource", "weight": 1.0, "min_len": 6}]
    assert spec_key(key) == key and required_inputs(key) == ("long_words",)
