"""The RAG side: QA collections (SQuAD JSON split by article, BEIR folders and TREC files with gold
answers), the generator stage (contexts, parsing, resumption), the rag path's checks, REPLUG on
gold answers, and `uptrain +exp=rag_human` on a user's QA folder."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest
from conftest import DATA, TINY, needs_data, run_cli
from omegaconf import OmegaConf

from uptrain.annotate.backends.base import Backend, Generation
from uptrain.annotate.parse import parse_short_answer
from uptrain.data import BeirFolderSource, Collection, SquadSource, TrecSource, subsample
from uptrain.data.qa import QAFormatError, read_answers_jsonl
from uptrain.data.sources import DatasetUnavailableError
from uptrain.errors import ConfigError
from uptrain.rag.generate import GenerateStage, question_sample

HERE = __name__

ARTICLES = [  # four articles, two paragraphs each; every answer occurs in its paragraph
    ("Alpha", [("The alpha river flows north into the cold sea.", [("q_a1", "Where does the alpha river flow?", ["north", "north into the cold sea", "north"])]),
               ("Alpha town was founded in 1901 by farmers.", [("q_a2", "When was alpha town founded?", ["1901"])])]),
    ("Beta", [("Beta bears eat honey in the forest.", [("q_b1", "What do beta bears eat?", ["honey"])]),
              ("The beta forest has tall pines.", [("q_b2", "What trees grow in the beta forest?", ["tall pines", "pines"])])]),
    ("Gamma", [("Gamma rays come from the nucleus of atoms.", [("q_g1", "Where do gamma rays come from?", ["the nucleus"])]),
               ("Gamma ray bursts last seconds.", [("q_g2", "How long do gamma ray bursts last?", ["seconds"])])]),
    ("Delta", [("The delta of the river is wide and green.", [("q_d1", "What is the delta like?", ["wide and green"])]),
               ("Delta airlines flies from Atlanta.", [("q_d2", "Where does Delta fly from?", ["Atlanta"])])]),
]


def squad_json(path: Path) -> Path:
    data = [{"title": t, "paragraphs": [{"context": c, "qas": [{"id": i, "question": q, "answers": [
        {"text": a, "answer_start": c.find(a)} for a in ans]} for i, q, ans in qas]} for c, qas in paras]}
        for t, paras in ARTICLES]
    path.write_text(json.dumps({"data": data, "version": "1.1"}))
    return path


def qa_folder(root: Path, extra_answers: list[dict] | None = None) -> Path:
    """The generic QA layout: a BEIR folder with answers.jsonl beside corpus.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "corpus.jsonl", "w") as c, open(root / "queries.jsonl", "w") as q, \
            open(root / "qrels" / "test.tsv", "w") as r, open(root / "answers.jsonl", "w") as a:
        r.write("query-id\tcorpus-id\tscore\n")
        for i, (title, paras) in enumerate(ARTICLES):
            for j, (text, qas) in enumerate(paras):
                c.write(json.dumps({"_id": f"p{i}{j}", "title": "", "text": text}) + "\n")
                for qid, question, answers in qas:
                    q.write(json.dumps({"_id": qid, "text": question}) + "\n")
                    r.write(f"{qid}\tp{i}{j}\t1\n")
                    a.write(json.dumps({"query_id": qid, "answers": answers}) + "\n")
        for row in extra_answers or []:
            a.write(json.dumps(row) + "\n")
    return root


# --- QA collections -------------------------------------------------------------------------

def test_squad_split_by_article_is_disjoint_complete_and_keeps_gold_passages_and_answers(tmp_path):
    path = squad_json(tmp_path / "dev.json")
    full = SquadSource(path, part="all").load()
    train = SquadSource(path, part="train", test_fraction=0.5, seed=3).load()
    test = SquadSource(path, part="test", test_fraction=0.5, seed=3).load()
    assert len(full.queries) == 8 and len(full.docs) == 8
    # every question in exactly one part, with its whole article on that side
    assert set(train.queries) | set(test.queries) == set(full.queries)
    assert not set(train.queries) & set(test.queries)
    article_of = {qid: t for t, paras in ARTICLES for _, qas in paras for qid, _, _ in qas}
    for part in (train, test):
        titles = {article_of[q] for q in part.queries}
        assert {q for q, t in article_of.items() if t in titles} == set(part.queries)
        # corpus: part keeps only the part's own paragraphs
        assert len(part.docs) == 2 * len(titles)
    # the one relevant passage is the question's own paragraph; repeated answer strings kept once
    assert full.qrels["q_b1"] == {"1_0": 1} and full.docs["1_0"].startswith("Beta bears")
    assert full.answers["q_a1"] == ["north", "north into the cold sea"]
    # corpus: all keeps every paragraph; the split follows the seed, not the file order
    assert len(SquadSource(path, part="test", seed=3, corpus="all").load().docs) == 8
    assert SquadSource(path, part="test", seed=3).in_test("Beta") == SquadSource(path, part="test", seed=3).in_test("Beta")


def test_squad_errors_name_the_file_and_the_place(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="SQuAD JSON"):
        SquadSource(tmp_path / "missing.json").validate()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(QAFormatError, match=r"bad\.json.*\"data\""):
        SquadSource(bad).load()
    bad.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [{"question": "q?"}]}]}]}))
    with pytest.raises(QAFormatError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]"):
        SquadSource(bad).load()
    with pytest.raises(ConfigError, match="part must be one of"):
        SquadSource(bad, part="dev")


@needs_data
def test_shipped_squad_dev_counts_and_split():
    path = DATA / "raw" / "squad_v1.1_dev" / "dev-v1.1.reconstructed.json"
    full = SquadSource(path, part="all").load()
    # the official counts (SOURCE.txt): 48 articles, 2,067 paragraphs, 10,570 questions
    assert (full.stats["articles"], len(full.docs), len(full.queries), len(full.answers)) == (48, 2067, 10570, 10570)
    train, test = SquadSource(path, part="train").load(), SquadSource(path, part="test").load()
    assert len(train.queries) + len(test.queries) == 10570 and len(train.docs) + len(test.docs) == 2067
    assert train.stats["articles"] + test.stats["articles"] == 48


def test_answers_travel_through_save_load_and_subsample(tmp_path):
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    coll.save(tmp_path / "art")
    rows = [json.loads(x) for x in (tmp_path / "art" / "answers.jsonl").read_text().splitlines()]
    assert {r["query_id"] for r in rows} == set(coll.queries)
    back = Collection.load(tmp_path / "art")
    assert back.answers == coll.answers and back.summary()["questions_with_answers"] == 8
    small = subsample(back, max_queries=3)
    assert set(small.answers) == set(small.queries) and len(small.queries) == 3
    # a collection without answers writes no answers file and loads with none
    plain = Collection("p", {"d": "x"}, {"q": "y"}, {"q": {"d": 1}})
    plain.save(tmp_path / "plain")
    assert not (tmp_path / "plain" / "answers.jsonl").exists() and Collection.load(tmp_path / "plain").answers == {}


def test_beir_folder_reads_answers_beside_the_corpus_and_counts_what_does_not_fit(tmp_path):
    folder = qa_folder(tmp_path / "qa", extra_answers=[{"query_id": "nope", "answers": ["x"]},
                                                         {"query_id": "q_d2", "answers": ["", "ATL"]}])
    source = BeirFolderSource(folder, name="qa")
    assert source.provides_answers()
    coll = source.load()
    assert coll.answers["q_b2"] == ["tall pines", "pines"]
    assert coll.answers["q_d2"] == ["Atlanta", "ATL"]  # a second row for a question adds its answers
    assert coll.stats["answers_unknown_queries"] == 1 and coll.stats["answers_empty"] == 1
    assert coll.stats["questions_without_answers"] == 0
    # the answers file is part of the cache key only when present: a plain BEIR folder keeps its key
    with_answers = source.spec()
    (folder / "answers.jsonl").unlink()
    plain = BeirFolderSource(folder, name="qa")
    assert not plain.provides_answers() and "answers" not in plain.spec()["files"]
    assert with_answers["files"]["answers"]["file"] == "answers.jsonl"


def test_trec_files_take_answers_and_a_malformed_line_is_named(tmp_path):
    (tmp_path / "docs.tsv").write_text("d1\tParis is the capital of France.\n")
    (tmp_path / "topics.tsv").write_text("q1\tWhat is the capital of France?\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    (tmp_path / "answers.jsonl").write_text('{"query_id": "q1", "answer": "Paris"}\n')
    src = TrecSource(tmp_path / "docs.tsv", tmp_path / "topics.tsv", tmp_path / "qrels.txt", name="t",
                     answers=tmp_path / "answers.jsonl")
    assert src.load().answers == {"q1": ["Paris"]}
    (tmp_path / "answers.jsonl").write_text('{"query_id": "q1", "answer": "Paris"}\n{"id": "q2"}\n')
    with pytest.raises(QAFormatError, match=r"answers\.jsonl:2"):
        read_answers_jsonl(tmp_path / "answers.jsonl")


# --- the generator stage --------------------------------------------------------------------

class EchoGenerator(Backend):
    """Answers "1. <the first word of the first passage>" plus a second line; no passage: "none"."""

    name = "echo"
    calls = 0
    fail_on_call: int | None = None
    prompts: list = []

    def __init__(self, model: str = "echo", max_context: int = 4096, batch_size: int = 8):
        self.model_name, self._max_context = model, max_context

    def spec(self):
        return {"backend": self.name, "model": self.model_name}

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, params):
        cls = type(self)
        cls.calls += 1
        if cls.fail_on_call is not None and cls.calls >= cls.fail_on_call:
            raise KeyboardInterrupt("killed")
        cls.prompts.extend(prompts)
        out = []
        for p in prompts:
            found = re.search(r"^\[1\] (\S+)", p[-1]["content"], re.MULTILINE)
            out.append(Generation(f"1. {found.group(1) if found else 'none'}\nmore text", self.prompt_length(p), 4))
        return out

    def loglikelihood(self, contexts, continuations):
        raise NotImplementedError


@pytest.fixture(autouse=True)
def _reset_echo():
    EchoGenerator.calls, EchoGenerator.fail_on_call, EchoGenerator.prompts = 0, None, []


def echo_cfg():
    return {"backend": {"_target_": f"{HERE}.EchoGenerator"}, "generation": {"max_new_tokens": 8},
            "prompt_version": "v1", "max_passage_words": 100}


def build(stage, out: Path, work: Path, inputs) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stage.build(out, work, inputs)
    return stage.load(out)


def test_generator_shows_the_runs_top_k_in_rank_order_and_parses_the_answer(tmp_path):
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    # the run ranks a wrong passage first for q_b1, its own paragraph second
    run = {"q_b1": {"1_1": 3.0, "1_0": 2.0, "0_0": 1.0}, "q_a2": {"0_1": 5.0}}
    inputs = {"data": types.SimpleNamespace(value=coll), "run": types.SimpleNamespace(value=run)}
    got = build(GenerateStage(echo_cfg(), k=2, context="run", batch_queries=3), tmp_path / "o", tmp_path / "w", inputs)
    rec = got["answers"]["q_b1"]
    assert rec["passages"] == ["1_1", "1_0"]
    assert rec["answer"] == "The" and rec["raw"].startswith("1. The\n")  # "1." removed, first line kept
    assert rec["cut_to_first_line"] and rec["label_removed"]
    prompt = next(p[-1]["content"] for p in EchoGenerator.prompts if "What do beta bears eat?" in p[-1]["content"])
    assert prompt.index("[1] The beta forest") < prompt.index("[2] Beta bears eat honey")
    assert "[3]" not in prompt
    # questions the run does not rank get no passage, counted
    assert got["stats"]["questions"] == 8 and got["stats"]["questions_without_passages"] == 6
    assert got["stats"]["cut_to_first_line"] == 8


def test_generator_gold_and_closed_book_contexts(tmp_path):
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    inputs = {"data": types.SimpleNamespace(value=coll)}
    gold = build(GenerateStage(echo_cfg(), k=5, context="gold"), tmp_path / "g", tmp_path / "gw", inputs)
    assert all(r["passages"] == list(coll.qrels[q]) for q, r in gold["answers"].items())
    assert gold["answers"]["q_b1"]["answer"] == "Beta"
    none = build(GenerateStage(echo_cfg(), k=5, context="none"), tmp_path / "n", tmp_path / "nw", inputs)
    assert all(r["passages"] == [] and r["answer"] == "none" for r in none["answers"].values())
    assert GenerateStage(echo_cfg(), k=5, context="none").inputs == ("data",)
    # the context and k are in the cache key; closed book ignores k
    spec = GenerateStage(echo_cfg(), k=5, context="gold").spec
    assert spec() != GenerateStage(echo_cfg(), k=1, context="gold").spec() != GenerateStage(echo_cfg(), k=5).spec()
    assert GenerateStage(echo_cfg(), k=5, context="none").spec() == GenerateStage(echo_cfg(), k=1, context="none").spec()


def test_generator_resumes_after_a_kill_without_repeating_a_question(tmp_path):
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    inputs = {"data": types.SimpleNamespace(value=coll)}
    EchoGenerator.fail_on_call = 3  # killed in the third batch of two
    with pytest.raises(KeyboardInterrupt):
        build(GenerateStage(echo_cfg(), context="gold", batch_queries=2), tmp_path / "o", tmp_path / "w", inputs)
    first = [p[-1]["content"] for p in EchoGenerator.prompts]
    assert len(first) == 4
    EchoGenerator.fail_on_call, EchoGenerator.prompts = None, []
    got = build(GenerateStage(echo_cfg(), context="gold", batch_queries=2), tmp_path / "o", tmp_path / "w", inputs)
    second = [p[-1]["content"] for p in EchoGenerator.prompts]
    assert len(second) == 4 and not set(first) & set(second)  # only the four not committed
    assert list(got["answers"]) == list(coll.queries)


def test_a_prompt_seen_before_reuses_its_answer_and_a_torn_memo_line_is_ignored(tmp_path):
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    inputs = {"data": types.SimpleNamespace(value=coll)}
    first = build(GenerateStage(echo_cfg(), k=5, context="gold", memo_dir=tmp_path / "memo"), tmp_path / "a",
                  tmp_path / "aw", inputs)
    calls = EchoGenerator.calls
    assert first["stats"]["answers_reused"] == 0 and calls == 2  # two batches of four
    memo = next((tmp_path / "memo").glob("*.jsonl"))
    with open(memo, "a") as f:
        f.write('{"prompt": "torn')  # a writer killed in the middle of a line
    # gold passages up to 5 and up to 1 are the same one passage here: the same prompts, no model call
    second = build(GenerateStage(echo_cfg(), k=1, context="gold", memo_dir=tmp_path / "memo"), tmp_path / "b",
                   tmp_path / "bw", inputs)
    assert EchoGenerator.calls == calls and second["stats"]["answers_reused"] == 8
    assert {q: r["answer"] for q, r in second["answers"].items()} == {q: r["answer"] for q, r in first["answers"].items()}
    # another prompt (no passage) is generated, and the memo is not in the cache key
    build(GenerateStage(echo_cfg(), context="none", memo_dir=tmp_path / "memo"), tmp_path / "c", tmp_path / "cw", inputs)
    assert EchoGenerator.calls == calls + 2
    assert GenerateStage(echo_cfg(), memo_dir=tmp_path).spec() == GenerateStage(echo_cfg()).spec()


def test_question_sample_is_seeded_and_independent_of_order(tmp_path):
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    a = question_sample(coll, 3, seed=1)
    coll.queries = dict(reversed(list(coll.queries.items())))
    b = question_sample(coll, 3, seed=1)
    assert len(a) == 3 and set(a) == set(b)
    assert question_sample(coll, None) == list(coll.queries)
    coll.answers = {}
    with pytest.raises(ConfigError, match="no question with a gold answer"):
        GenerateStage(echo_cfg(), context="gold").build(tmp_path / "x", tmp_path / "xw", {"data": types.SimpleNamespace(value=coll)})


def test_parse_short_answer_removes_labels_but_keeps_numbers():
    assert parse_short_answer("[2] Thomas Davis") == ("Thomas Davis", {"cut_to_first_line": False, "label_removed": True})
    assert parse_short_answer("The answer is: 2014.")[0] == "2014."
    assert parse_short_answer("1999")[0] == "1999" and parse_short_answer("3 million people")[0] == "3 million people"
    assert parse_short_answer("12. Dec")[0] == "12. Dec"
    assert parse_short_answer("Paris\nIt is in France", first_line=False)[0] == "Paris\nIt is in France"


# --- the rag path's checks, before anything runs ---------------------------------------------

def compose(*overrides):
    from hydra import compose as hcompose, initialize_config_dir

    from uptrain.cli import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hcompose("config", overrides=list(overrides))


def test_rag_path_refuses_bad_settings_with_the_key_named(tmp_path):
    from uptrain.rag.path import RagPath

    folder = qa_folder(tmp_path / "qa")
    user = [f"+eval.collections.myqa={{_target_: uptrain.data.BeirFolderSource, path: {folder}, name: myqa}}",
            "eval.groups.in_domain=[myqa]"]
    cfg = compose("+exp=rag_zeroshot", *user)
    settings = RagPath.settings(cfg)
    assert RagPath._collections(cfg, settings) == ["myqa"]
    assert settings["recall_k"] == [1, 5, 10, 20] and settings["primary_k"] == 5
    with pytest.raises(ConfigError, match="rag.primary_k"):
        RagPath.settings(compose("+exp=rag_zeroshot", *user, "rag.primary_k=3"))
    with pytest.raises(ConfigError, match="rag.references"):
        RagPath.settings(compose("+exp=rag_zeroshot", *user, "rag.references=[oracle]"))
    with pytest.raises(ConfigError, match="eval.depth"):
        RagPath.settings(compose("+exp=rag_zeroshot", *user, "eval.depth=10"))
    plain = qa_folder(tmp_path / "plain")
    (plain / "answers.jsonl").unlink()
    no_answers = [f"+eval.collections.plain={{_target_: uptrain.data.BeirFolderSource, path: {plain}, name: plain}}",
                  "eval.groups.in_domain=[plain]"]
    cfg = compose("+exp=rag_zeroshot", *no_answers)
    with pytest.raises(ConfigError, match="no QA collection.*answers.jsonl"):
        RagPath._collections(cfg, RagPath.settings(cfg))
    cfg = compose("+exp=rag_zeroshot", *no_answers, "rag.collections=[plain]")
    with pytest.raises(ConfigError, match="'plain', which carries no gold answers"):
        RagPath._collections(cfg, RagPath.settings(cfg))


def test_replug_gold_needs_a_training_collection_with_answers(tmp_path):
    from uptrain.annotate.replug import ReplugStage
    from uptrain.labels.producers import _replug_stage

    with pytest.raises(ConfigError, match="replug_answers=gold.*data=squad"):
        _replug_stage(compose("+exp=replug", "labels.replug_answers=gold"), {})
    coll = SquadSource(squad_json(tmp_path / "dev.json")).load()
    stage = ReplugStage({"backend": {"_target_": f"{HERE}.EchoGenerator"}, "prompt_version": "v1"}, answers="gold")
    assert stage.inputs == ("data", "pool") and stage.spec()["answers"] == {"kind": "gold"}
    answers = stage._answers({"data": types.SimpleNamespace(value=coll)})
    assert answers["q_a1"] == "north" and answers["q_b2"] == "tall pines"  # the first gold answer of each


# --- the interface: +exp=rag_human on any QA collection in the generic layout --------------------

@pytest.mark.slow
@needs_data
def test_rag_human_on_a_users_qa_folder_writes_the_rag_measures_and_resumes(tmp_path, cli_env):
    folder = qa_folder(tmp_path / "myqa")
    args = ["+exp=rag_human", *TINY, f"+eval.collections.myqa={{_target_: uptrain.data.BeirFolderSource, path: {folder}, name: myqa}}",
            "eval.groups.in_domain=[myqa]", "rag.max_questions=null", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli(args, cli_env, tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rag = metrics["rag"]["myqa"]
    for key in ("EM", "F1", "ROUGE-L", "BLEU-3", "BLEU-4", "answer_recall@1", "answer_recall@5"):
        assert 0.0 <= rag[key] <= 1.0, key
    assert rag["questions"] == 8 and set(rag["at_k"]) == {"1", "5"} and "gold" in rag["references"]
    # answer recall@k, recomputed from the run file the experiment wrote: a gold answer in the top k
    docs = {json.loads(x)["_id"]: json.loads(x)["text"].lower() for x in (folder / "corpus.jsonl").read_text().splitlines()}
    answers = {json.loads(x)["query_id"]: json.loads(x)["answers"] for x in (folder / "answers.jsonl").read_text().splitlines()}
    ranking: dict[str, list] = {}
    for line in (tmp_path / "run" / "runs" / "myqa.trec").read_text().splitlines():
        q, _, d, rank, _, _ = line.split()
        ranking.setdefault(q, []).append((int(rank), d))
    for k in (1, 5):
        hits = [any(a.lower() in docs[d] for _, d in sorted(ranking[q])[:k] for a in answers[q]) for q in answers]
        assert rag[f"answer_recall@{k}"] == pytest.approx(sum(hits) / len(hits)), k
    # EM of the top-5 answers, from the answers the run kept, against the gold answers
    kept = [json.loads(x) for x in (tmp_path / "run" / "rag" / "myqa_top5.jsonl").read_text().splitlines()]
    assert len(kept) == 8 and all(len(r["passages"]) == 5 for r in kept)
    assert metrics["results"]["myqa@5"]["EM"] == rag["EM"]
    # a second run: every stage a cache hit
    run_cli(args[:-1] + [f"hydra.run.dir={tmp_path / 'run2'}"], cli_env, tmp_path)
    again = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert again["rag"]["myqa"]["F1"] == rag["F1"]
    assert all(s["cache"] == "hit" for s in again["stages"]), [s for s in again["stages"] if s["cache"] != "hit"]
