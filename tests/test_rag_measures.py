"""Answer-quality measures of the RAG path: hand-computed EM/F1/ROUGE-L/BLEU, answer recall, counts,
the SQuAD readers and command line, and the SQuAD v1.1 dev leaderboard numbers on the real files."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest

from uptrain.rag import measures as M
from uptrain.rag.measures import (RagScores, answer_recall, corpus_bleu, exact_match, has_answer, normalize_answer,
                                  read_squad_golds, read_squad_predictions, rouge_l, score_answers, sentence_bleu,
                                  token_f1)

# ---------------------------------------------------------------------------------------------
# normalisation, EM, F1
# ---------------------------------------------------------------------------------------------


def test_normalize_answer_squad_rules():
    # lower case, punctuation deleted (not replaced by a space), articles as words, whitespace collapsed
    assert normalize_answer("  The Cat,  sat!\ton a   mat. ") == "cat sat on mat"
    assert normalize_answer("11,999") == "11999"
    # articles only as whole words: "Theater", "another", "Anna" keep their letters
    assert normalize_answer("Theater another Anna an") == "theater another anna"
    assert normalize_answer("A.") == ""


def test_exact_match_articles_punctuation_and_max_over_golds():
    assert exact_match("the Denver Broncos!", ["Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos"]) == 0.0
    assert exact_match("Broncos", ["Denver Broncos", "broncos."]) == 1.0  # the best gold counts
    assert exact_match("", ["Denver Broncos"]) == 0.0


def test_token_f1_multiset_overlap_hand_computed():
    # pred tokens red red blue, gold red blue blue green: overlap min(2,1)+min(1,2) = 2,
    # P = 2/3, R = 2/4, F1 = 4/7 (a set overlap or an unclipped count gives something else)
    assert token_f1("red red blue", ["red blue blue green"]) == pytest.approx(4 / 7)
    # max over golds: P = 1, R = 2/3 -> 0.8
    assert token_f1("red blue", ["green", "red blue yellow"]) == pytest.approx(0.8)
    # articles and punctuation do not count as tokens
    assert token_f1("The red, the blue.", ["red blue"]) == 1.0
    assert token_f1("", ["red"]) == 0.0
    assert token_f1("green", ["red"]) == 0.0


def test_gold_answers_normalising_to_empty_are_ignored():
    # the official script would call "." an exact match of the gold "."; here that gold is ignored
    assert exact_match(".", [".", "yes"]) == 0.0
    assert token_f1("yes", [".", "yes"]) == 1.0
    with pytest.raises(ValueError, match="no gold answer is left"):
        exact_match("x", ["the", "."])
    with pytest.raises(ValueError, match="no gold answer is left"):
        token_f1("x", [])
    with pytest.raises(TypeError, match="not one string"):
        exact_match("x", "red")


# ---------------------------------------------------------------------------------------------
# ROUGE-L
# ---------------------------------------------------------------------------------------------


def test_rouge_l_hand_computed_lcs():
    # LCS of (alpha beta gamma delta epsilon) and (alpha zeta gamma eta epsilon theta iota) is
    # alpha gamma epsilon: L = 3, m = 5, n = 7, F = 2L / (m + n) = 0.5 (a longest common
    # *substring* would give L = 1)
    pred = "alpha beta gamma delta epsilon"
    gold = "alpha zeta gamma eta epsilon theta iota"
    assert rouge_l(pred, [gold]) == pytest.approx(0.5)
    assert rouge_l(pred, ["kappa", gold]) == pytest.approx(0.5)  # max over golds
    assert rouge_l(pred, [pred.upper()]) == pytest.approx(1.0)  # rouge_score lower-cases
    assert rouge_l("", [gold]) == 0.0


# ---------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------


def test_bleu_identical_is_one_and_fraction_not_percent():
    s = "the cat sat on the mat"
    assert corpus_bleu([s], [[s]], 4) == pytest.approx(1.0)
    assert sentence_bleu(s, [s], 4) == pytest.approx(1.0)
    assert corpus_bleu([s], [[s]], 3) == pytest.approx(1.0)


def test_bleu_ngram_precisions_hand_computed():
    # equal lengths (BP = 1); 1/2/3-gram precisions 4/5, 3/4, 2/3 -> (0.4)^(1/3)
    hyp, ref = "one two three four five", "one two three four six"
    assert corpus_bleu([hyp], [[ref]], 3) == pytest.approx(0.4 ** (1 / 3))


def test_bleu_brevity_penalty_hand_computed():
    # all precisions 1, hypothesis 4 tokens, reference 8: BP = exp(1 - 8/4) = e^-1
    assert corpus_bleu(["one two three four"], [["one two three four five six seven eight"]], 4) \
        == pytest.approx(math.exp(-1))


def test_sentence_bleu_effective_order_and_exp_smoothing():
    # effective order: a 2-token hypothesis is scored on 1- and 2-grams only (precisions 1),
    # BP = exp(1 - 3/2); without it, the empty 3- and 4-gram orders would make BLEU 0
    assert sentence_bleu("one two", ["one two three"], 4) == pytest.approx(math.exp(-0.5))
    # exp smoothing: 4-gram 0/1 -> 1 / (2 * 1); precisions 3/4, 2/3, 1/2, 1/2 -> (1/8)^(1/4)
    assert sentence_bleu("one two three four", ["one two three five"], 4) == pytest.approx(0.125 ** 0.25)


def test_corpus_bleu_differs_from_mean_of_sentence_bleu():
    hyps = ["one two three four", "five six seven eight nine"]
    refs = [["one two three four"], ["five six seven ten eleven"]]
    # pooled counts: 1-grams 7/9, 2-grams 5/7, 3-grams 3/5, lengths 9 and 9 -> (1/3)^(1/3)
    corpus = corpus_bleu(hyps, refs, 3)
    assert corpus == pytest.approx((1 / 3) ** (1 / 3))
    sentences = [sentence_bleu(h, r, 3) for h, r in zip(hyps, refs)]
    assert sentences == pytest.approx([1.0, 0.1 ** (1 / 3)])
    assert abs(corpus - sum(sentences) / 2) > 0.03


def test_corpus_bleu_multi_reference_with_unequal_counts():
    # the second question has one reference, the first two: padding must make sacrebleu accept it,
    # and the matching reference of the first question must be found
    hyps = ["one two three four", "five six seven eight"]
    refs = [["nine ten eleven twelve", "one two three four"], ["five six seven eight"]]
    assert corpus_bleu(hyps, refs, 4) == pytest.approx(1.0)
    # padding by repetition is neutral: same score as with the duplicate spelled out
    refs2 = [["one two three five"], ["five six seven nine", "five six seven eight nine"]]
    assert corpus_bleu(hyps, refs2, 4) == pytest.approx(
        corpus_bleu(hyps, [refs2[0] * 2, refs2[1]], 4))


def test_bleu_bad_arguments():
    with pytest.raises(ValueError, match="order must be one of"):
        corpus_bleu(["a"], [["a"]], 2)
    with pytest.raises(ValueError, match="order must be one of"):
        sentence_bleu("a", ["a"], 5)
    with pytest.raises(ValueError, match="2 predictions and 1 reference lists"):
        corpus_bleu(["a", "b"], [["a"]], 4)
    with pytest.raises(ValueError, match=r"references\[0\] is empty"):
        corpus_bleu(["a"], [[]], 4)


# ---------------------------------------------------------------------------------------------
# has_answer, answer recall
# ---------------------------------------------------------------------------------------------


def test_has_answer_token_boundaries_and_normalisation():
    assert not has_answer(["1999"], ["it was founded in 11999 years ago"])
    assert has_answer(["1999"], ["it was founded in 1999, then"])
    assert not has_answer(["york"], ["in yorkshire"])
    assert has_answer(["the Beatles"], ["Beatles were a band"])
    assert has_answer(["Beatles"], ["they were The Beatles."])
    assert not has_answer(["new york"], ["new jersey and york"])  # contiguous tokens only
    assert has_answer(["new york"], ["a flight to New York."])
    assert has_answer(["nope", "york"], ["nothing", "new york"])  # any gold, any passage
    assert not has_answer(["."], ["a . b"])  # a gold empty after normalisation never matches
    assert not has_answer(["x"], [])


def test_answer_recall_values_and_counts(caplog):
    docs = {"d1": "Paris is the capital of France.", "d2": "Berlin is in Germany.", "d3": "Nothing here."}
    golds = {"q1": ["paris"], "q2": ["Germany"], "q3": ["Rome"], "q4": ["."], "q5": ["Berlin"]}
    rankings = {"q1": ["d3", "d1", "d2"], "q2": ["dx", "d2"], "q5": ["d2"], "qz": ["d1"]}
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        s = answer_recall(rankings, docs, golds, ks=[1, 2])
    assert s.measures == ["answer_recall@1", "answer_recall@2"]
    assert s.per_query["answer_recall@1"] == {"q1": 0.0, "q2": 0.0, "q3": 0.0, "q5": 1.0}
    assert s.per_query["answer_recall@2"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q5": 1.0}
    assert s.aggregate == {"answer_recall@1": 0.25, "answer_recall@2": 0.75}
    assert s.counts["questions"] == 4
    assert s.counts["questions_without_gold"] == 1  # q4
    assert s.counts["missing_rankings"] == 1  # q3
    assert s.counts["unknown_rankings"] == 1  # qz
    assert s.counts["unknown_docs"] == 1  # dx
    assert s.counts["short_rankings"] == 1  # q5 has 1 < 2 documents
    text = caplog.text
    for needle in ("no ranking", "not in the documents", "not in the gold answers", "shorter than 2",
                   "no gold answer left"):
        assert needle in text


def test_answer_recall_normalises_each_passage_once(monkeypatch):
    docs = {f"d{i}": f"passage number {i} about topic {i % 3}" for i in range(5)}
    golds = {f"q{j}": [f"topic {j % 3}"] for j in range(30)}
    rankings = {q: list(docs) for q in golds}
    seen = []
    real = M.normalize_answer

    def counting(text):
        seen.append(text)
        return real(text)

    monkeypatch.setattr(M, "normalize_answer", counting)
    s = answer_recall(rankings, docs, golds, ks=[1, 5])
    doc_calls = [t for t in seen if t in docs.values()]
    assert sorted(doc_calls) == sorted(docs.values())  # each passage exactly once over 30 questions
    # q0: topic 0 first at d0 (rank 1); q1: topic 1 at d1 (rank 2); q2: topic 2 at d2 (rank 3)
    assert s.per_query["answer_recall@1"]["q0"] == 1.0
    assert s.per_query["answer_recall@1"]["q1"] == 0.0
    assert s.per_query["answer_recall@5"]["q2"] == 1.0


def test_answer_recall_bad_cutoffs():
    for ks in ([], [0], [2, 2], [1.5]):
        with pytest.raises(ValueError, match="cutoff"):
            answer_recall({}, {}, {"q": ["a"]}, ks=ks)


# ---------------------------------------------------------------------------------------------
# score_answers
# ---------------------------------------------------------------------------------------------


def test_score_answers_values_and_counts(caplog):
    golds = {"q1": ["Denver Broncos"], "q2": ["Paris", "the"], "q3": [".", "the"], "q4": ["blue"]}
    preds = {"q1": "the Denver Broncos", "q2": "Paris France", "q3": "x", "qx": "foo"}
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        s = score_answers(preds, golds)
    assert s.measures == ["EM", "F1", "ROUGE-L", "BLEU-3", "BLEU-4"]
    assert s.counts == {"questions": 3, "questions_without_gold": 1, "empty_gold_answers": 3,
                        "missing_predictions": 1, "unknown_predictions": 1}
    assert s.per_query["EM"] == {"q1": 1.0, "q2": 0.0, "q4": 0.0}
    # q2: P = 1/2, R = 1 -> F1 = 2/3; q4 has no prediction -> 0
    assert s.per_query["F1"] == pytest.approx({"q1": 1.0, "q2": 2 / 3, "q4": 0.0})
    assert s.aggregate["EM"] == pytest.approx(1 / 3)
    assert s.aggregate["F1"] == pytest.approx(5 / 9)
    # rouge_score keeps "the": q1 = 2*2/(3+2) = 0.8; q2 = 2*1/(2+1) = 2/3
    assert s.per_query["ROUGE-L"] == pytest.approx({"q1": 0.8, "q2": 2 / 3, "q4": 0.0})
    assert s.aggregate["ROUGE-L"] == pytest.approx((0.8 + 2 / 3) / 3)
    # BLEU: aggregate is corpus BLEU over the scored questions (missing one as ""), per query sentence BLEU
    hyps = ["the Denver Broncos", "Paris France", ""]
    refs = [["Denver Broncos"], ["Paris"], ["blue"]]
    for o in (3, 4):
        assert s.aggregate[f"BLEU-{o}"] == pytest.approx(corpus_bleu(hyps, refs, o))
        assert s.per_query[f"BLEU-{o}"] == pytest.approx(
            {q: sentence_bleu(h, r, o) for q, h, r in zip(["q1", "q2", "q4"], hyps, refs)})
    assert s.per_query["BLEU-4"]["q4"] == 0.0
    for needle in ("no prediction", "not in the gold answers", "no gold answer left", "normalise to the empty"):
        assert needle in caplog.text
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"measures", "per_query", "aggregate", "counts"}
    assert isinstance(s, RagScores)


def test_score_answers_bleu_orders():
    s = score_answers({"q": "a b"}, {"q": ["a b"]}, bleu_orders=(4,))
    assert s.measures == ["EM", "F1", "ROUGE-L", "BLEU-4"]
    s = score_answers({"q": "a b"}, {"q": ["a b"]}, bleu_orders=())
    assert s.measures == ["EM", "F1", "ROUGE-L"]
    with pytest.raises(ValueError, match="order must be one of"):
        score_answers({}, {"q": ["x"]}, bleu_orders=(2,))
    with pytest.raises(TypeError, match="prediction for question 'q'"):
        score_answers({"q": None}, {"q": ["x"]})


# ---------------------------------------------------------------------------------------------
# SQuAD files and the command line
# ---------------------------------------------------------------------------------------------

def _squad(qas_by_para):
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": "ctx", "qas": [{"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0}
                                                                             for t in answers]}
                                   for qid, answers in qas]} for qas in qas_by_para]}]}


def test_read_squad_golds_and_predictions(tmp_path):
    data = tmp_path / "dev.json"
    data.write_text(json.dumps(_squad([[("a", ["x", "y"]), ("b", [])], [("c", ["z"])]])))
    assert read_squad_golds(data) == {"a": ["x", "y"], "b": [], "c": ["z"]}
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a": "x", "c": "w"}))
    assert read_squad_predictions(pred) == {"a": "x", "c": "w"}


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    (json.dumps([1]), 'the top level should be an object with a "data" list'),
    (json.dumps({"data": [{"title": "T"}]}), r'data\[0\] should be an object with a "paragraphs" list'),
    (json.dumps({"data": [{"paragraphs": [{"context": "c"}]}]}), r'data\[0\]\.paragraphs\[0\] should'),
    (json.dumps({"data": [{"paragraphs": [{"qas": [{"id": "q", "answers": "x"}]}]}]}), r"'q'.*\"answers\" list"),
    (json.dumps({"data": [{"paragraphs": [{"qas": [{"id": "q", "answers": [{"answer_start": 0}]}]}]}]}),
     r'answers\[0\].*string "text"'),
    (json.dumps(_squad([[("a", ["x"])], [("a", ["y"])]])), "'a' occurs more than once"),
])
def test_read_squad_golds_malformed(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=needle) as err:
        read_squad_golds(path)
    assert str(path) in str(err.value)


def test_read_squad_predictions_malformed(tmp_path):
    for content, needle in ((json.dumps(["a"]), "one JSON object"), (json.dumps({"q": 3}), "question 'q' must be")):
        path = tmp_path / "bad.json"
        path.write_text(content)
        with pytest.raises(ValueError, match=needle) as err:
            read_squad_predictions(path)
        assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        read_squad_predictions(tmp_path / "missing.json")


def test_command_line(tmp_path, capsys):
    data = tmp_path / "dev.json"
    data.write_text(json.dumps(_squad([[("a", ["red blue"]), ("b", ["green"])]])))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"a": "red", "zz": "x"}))
    assert M.main(["--data", str(data), "--predictions", str(pred)]) == 0
    out = capsys.readouterr().out.splitlines()
    # a: EM 0, F1 = 2*(1*0.5)/1.5 = 2/3; b: missing -> 0; means 0 and 1/3
    assert out[:2] == ["EM 0.00", "F1 33.33"]
    assert "missing_predictions 1" in out and "unknown_predictions 1" in out and "questions 2" in out
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert M.main(["--data", str(bad), "--predictions", str(pred)]) == 2
    assert str(bad) in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the real check: SQuAD v1.1 dev leaderboard numbers
# ---------------------------------------------------------------------------------------------

LEADERBOARD = {  # EM, F1 as stated in raw/squad_v1.1_dev/SOURCE.txt
    "bert_ensemble": (86.21, 92.20),
    "rnet_plus_ensemble": (82.47, 88.48),
    "slqa_plus_ensemble": (81.95, 88.38),
    "match_lstm_ensemble": (67.63, 76.76),
    "logistic_regression": (40.14, 50.98),
}


def _squad_dir() -> Path:
    root = os.environ.get("UPTRAIN_DATA")
    if not root:
        pytest.skip("UPTRAIN_DATA is not set")
    folder = Path(root) / "raw" / "squad_v1.1_dev"
    if not (folder / "dev-v1.1.reconstructed.json").is_file():
        pytest.skip(f"{folder}/dev-v1.1.reconstructed.json is missing")
    return folder


@pytest.fixture(scope="module")
def squad_golds():
    return read_squad_golds(_squad_dir() / "dev-v1.1.reconstructed.json")


@pytest.mark.parametrize("system", sorted(LEADERBOARD))
def test_squad_dev_leaderboard_em_f1(squad_golds, system):
    path = _squad_dir() / "predictions" / f"{system}.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    s = score_answers(read_squad_predictions(path), squad_golds, bleu_orders=())
    em, f1 = LEADERBOARD[system]
    assert s.counts["questions"] == 10570
    assert abs(100 * s.aggregate["EM"] - em) <= 0.01
    assert abs(100 * s.aggregate["F1"] - f1) <= 0.01
