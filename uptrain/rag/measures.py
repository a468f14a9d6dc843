"""Answer-quality measures of the RAG evaluation path: EM, token F1, ROUGE-L, BLEU, answer recall@k.

Definitions (all scores are fractions in [0, 1], never percent):

* **Normalisation** (:func:`normalize_answer`) is the official SQuAD v1.1 one (Rajpurkar, Zhang,
  Lopyrev, Liang, "SQuAD: 100,000+ Questions for Machine Comprehension of Text", EMNLP 2016, and
  its ``evaluate-v1.1.py``): lower case, every character of ``string.punctuation`` removed, the
  articles *a*, *an*, *the* removed as whole words, whitespace collapsed to single spaces.
* **EM** (:func:`exact_match`): 1 when the normalised prediction equals some normalised gold
  answer, else 0. **F1** (:func:`token_f1`): the harmonic mean of token precision and recall over
  the whitespace tokens of the normalised strings, the overlap counted as a multiset (a token
  repeated twice in both counts twice); the maximum over the gold answers. These are SQuAD's
  definitions, and :func:`score_answers` reproduces the leaderboard's numbers (checked on five
  published SQuAD v1.1 dev prediction files). One deliberate difference from the official script:
  a gold answer that normalises to the empty string (SQuAD dev has three, each ``"."``) is
  ignored, so an empty or all-punctuation prediction can never "exactly match" it; a question
  none of whose gold answers survive normalisation is not scored at all (counted).
* **ROUGE-L** (:func:`rouge_l`): the LCS-based F-measure of Lin, "ROUGE: A Package for Automatic
  Evaluation of Summaries" (ACL 2004 workshop), computed by Google's ``rouge_score`` package
  (``RougeScorer(["rougeL"], use_stemmer=False)``: lower case, non-alphanumerics as separators,
  no stemming), the maximum over the gold answers.
* **BLEU** (:func:`corpus_bleu`, :func:`sentence_bleu`): Papineni, Roukos, Ward, Zhu, "BLEU: a
  Method for Automatic Evaluation of Machine Translation" (ACL 2002), computed by ``sacrebleu``
  (Post, WMT 2018) with its default ``13a`` tokenisation, case-sensitive, up to n-grams of order
  3 or 4, every gold answer a reference (clipped counts take the maximum over references; the
  brevity penalty uses the reference length closest to the hypothesis).
* **Answer recall@k** (:func:`has_answer`, :func:`answer_recall`): the "top-k retrieval accuracy"
  of Karpukhin et al., "Dense Passage Retrieval for Open-Domain Question Answering" (EMNLP 2020):
  1 when some gold answer occurs in one of the top-k retrieved passages. DPR matches token
  sequences after its own uncased tokenizer; here both sides use the SQuAD normalisation above and
  a match is a contiguous run of whole tokens ("1999" does not match inside "11999").

MS MARCO (Nguyen et al., 2016) reports ROUGE-L and BLEU-1..4 with its own scorer (a
``pycocoevalcap``-derived script): its tokenisation differs, and it scores a question's references
jointly rather than taking the best single one, so the ROUGE-L and BLEU values here are comparable
in kind with MS MARCO's, not digit for digit.

:func:`score_answers` and :func:`answer_recall` return a :class:`RagScores`: per-query values,
aggregates and counts of everything dropped or defaulted (each also logged as a warning).
``python -m uptrain.rag.measures --data DEV.json --predictions PRED.json`` prints EM and F1 of a
SQuAD-format prediction file in the leaderboard's form (x100, two decimals) and the counts.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import string
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger("uptrain")

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ALLOWED_BLEU_ORDERS = (3, 4)


# --------------------------------------------------------------------------------------------
# Per-answer measures
# --------------------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, then ``string.punctuation`` removed (characters are
    deleted, not replaced by spaces: "11,999" becomes "11999"), then the articles a/an/the removed
    as whole words, then runs of whitespace collapsed to one space with none at either end."""
    if not isinstance(text, str):
        raise TypeError(f"an answer must be a string, got {type(text).__name__}: {text!r}")
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _normalised_golds(golds: Sequence[str]) -> list[str]:
    if isinstance(golds, str):
        raise TypeError(f"golds must be a sequence of answer strings, not one string: {golds!r}")
    normed = [g for g in (normalize_answer(g) for g in golds) if g]
    if not normed:
        raise ValueError(f"no gold answer is left after normalisation (empty, or only punctuation and "
                         f"articles): {list(golds)!r}; such a question cannot be scored")
    return normed


def _f1_tokens(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when ``normalize_answer(prediction)`` equals the normalised form of some gold answer,
    else 0.0 (SQuAD v1.1 EM). Gold answers that normalise to "" are ignored; ValueError when none
    is left. An empty prediction therefore always scores 0."""
    normed = _normalised_golds(golds)
    pred = normalize_answer(prediction)
    return 1.0 if pred in normed else 0.0


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD v1.1 token F1, the maximum over the gold answers: with P the whitespace tokens of the
    normalised prediction, G those of a normalised gold answer and ``overlap`` the size of their
    multiset intersection, F1 = 2 p r / (p + r), p = overlap / |P|, r = overlap / |G| (0 when the
    overlap is empty, so an empty prediction scores 0). Gold answers that normalise to "" are
    ignored; ValueError when none is left."""
    normed = _normalised_golds(golds)
    pred_tokens = normalize_answer(prediction).split()
    if not pred_tokens:
        return 0.0
    return max(_f1_tokens(pred_tokens, g.split()) for g in normed)


_ROUGE_SCORER = None


def _rouge_scorer():
    global _ROUGE_SCORER
    if _ROUGE_SCORER is None:
        from rouge_score import rouge_scorer

        _ROUGE_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _ROUGE_SCORER


def rouge_l(prediction: str, golds: Sequence[str]) -> float:
    """ROUGE-L F-measure (Lin 2004) of ``prediction`` against each gold answer, the maximum over
    the gold answers, from ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)``:
    with L the length of the longest common token subsequence of the prediction (m tokens) and the
    gold answer (n tokens), P = L/m, R = L/n and F = 2PR/(P+R) (= 2L/(m+n)). ``rouge_score``
    lower-cases and splits on non-alphanumerics; a side with no token scores 0.

    MS MARCO's official scorer tokenises differently and scores the references of a question
    jointly, so these values are comparable with its ROUGE-L in kind, not digit for digit."""
    if isinstance(golds, str):
        raise TypeError(f"golds must be a sequence of answer strings, not one string: {golds!r}")
    if not golds:
        raise ValueError("rouge_l needs at least one gold answer")
    if not isinstance(prediction, str):
        raise TypeError(f"a prediction must be a string, got {type(prediction).__name__}")
    scorer = _rouge_scorer()
    return max(scorer.score(g, prediction)["rougeL"].fmeasure for g in golds)


def _check_order(order: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order not in _ALLOWED_BLEU_ORDERS:
        raise ValueError(f"the BLEU n-gram order must be one of {_ALLOWED_BLEU_ORDERS}, got {order!r}")
    return order


_BLEU_CACHE: dict[tuple[int, bool], object] = {}


def _bleu(order: int, sentence: bool):
    key = (order, sentence)
    if key not in _BLEU_CACHE:
        from sacrebleu.metrics import BLEU

        if sentence:
            _BLEU_CACHE[key] = BLEU(max_ngram_order=order, smooth_method="exp", effective_order=True)
        else:
            _BLEU_CACHE[key] = BLEU(max_ngram_order=order)
    return _BLEU_CACHE[key]


def _reference_streams(references: Sequence[Sequence[str]], n: int) -> list[list[str]]:
    """sacrebleu wants one stream per reference position, all of length n: a question with fewer
    references than the most any question has is padded by repeating its first reference. This
    changes nothing: clipped n-gram counts take the maximum over the references and the brevity
    penalty the closest reference length, both unchanged by a duplicate."""
    if len(references) != n:
        raise ValueError(f"corpus_bleu needs one list of references per prediction: got {n} predictions "
                         f"and {len(references)} reference lists")
    width = 0
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise TypeError(f"references[{i}] must be a sequence of reference strings, not one string: {refs!r}")
        if not refs:
            raise ValueError(f"references[{i}] is empty: every prediction needs at least one reference")
        width = max(width, len(refs))
    return [[refs[j] if j < len(refs) else refs[0] for refs in references] for j in range(width)]


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], order: int) -> float:
    """Corpus BLEU (Papineni et al. 2002) from ``sacrebleu`` (``BLEU(max_ngram_order=order)``:
    13a tokenisation, case-sensitive, clipped n-gram counts and hypothesis/closest-reference
    lengths summed over the corpus before the geometric mean and brevity penalty), divided by 100.
    ``references[i]`` holds the references of ``predictions[i]`` (any number, at least one);
    questions with fewer references than others are padded by repeating their first reference,
    which leaves the score unchanged. ``order`` is 3 or 4."""
    _check_order(order)
    if isinstance(predictions, str):
        raise TypeError("predictions must be a sequence of strings, not one string")
    predictions = list(predictions)
    if not predictions:
        raise ValueError("corpus_bleu needs at least one prediction")
    streams = _reference_streams(references, len(predictions))
    return _bleu(order, sentence=False).corpus_score(predictions, streams).score / 100.0


def sentence_bleu(prediction: str, golds: Sequence[str], order: int) -> float:
    """Sentence BLEU of one prediction against its gold answers (all references), from
    ``sacrebleu`` with ``max_ngram_order=order``, ``effective_order=True`` (only the n-gram orders
    the prediction is long enough to have enter the geometric mean) and ``smooth_method="exp"``
    (Chen and Cherry 2014's method 3, mteval-v13a's NIST smoothing: the k-th order with no match
    gets precision 1 / (2^k * its n-gram count)), divided by 100. Exists for per-question paired
    tests; the aggregate BLEU of a system is :func:`corpus_bleu`, not the mean of these."""
    _check_order(order)
    if isinstance(golds, str):
        raise TypeError(f"golds must be a sequence of answer strings, not one string: {golds!r}")
    if not golds:
        raise ValueError("sentence_bleu needs at least one gold answer")
    return _bleu(order, sentence=True).sentence_score(prediction, list(golds)).score / 100.0


def _padded(normalised: str) -> str:
    return f" {normalised} "


def _has_answer_padded(padded_golds: Sequence[str], padded_passages) -> bool:
    return any(g in p for p in padded_passages for g in padded_golds)


def has_answer(golds: Sequence[str], passages: Sequence[str]) -> bool:
    """True when the token sequence of some normalised, non-empty gold answer occurs contiguously
    in the normalised token sequence of some passage: DPR's answer-recall match (Karpukhin et al.
    2020) with the SQuAD v1.1 normalisation of :func:`normalize_answer` on both sides. Matches are
    whole tokens ("1999" does not match "11999"); articles and punctuation do not matter ("the
    Beatles" matches "Beatles."). Gold answers that normalise to "" never match."""
    if isinstance(golds, str) or isinstance(passages, str):
        raise TypeError("has_answer takes a sequence of gold answers and a sequence of passages, not strings")
    padded_golds = [_padded(g) for g in (normalize_answer(g) for g in golds) if g]
    if not padded_golds:
        return False
    return _has_answer_padded(padded_golds, (_padded(normalize_answer(p)) for p in passages))


# --------------------------------------------------------------------------------------------
# Collection-level scoring
# --------------------------------------------------------------------------------------------

@dataclass
class RagScores:
    """Scores of one system on one collection.

    ``measures``: the measure names in report order; ``per_query``: measure -> query id -> value;
    ``aggregate``: measure -> collection value; ``counts``: questions scored and everything
    dropped or defaulted (see :func:`score_answers`, :func:`answer_recall`)."""

    measures: list[str]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregate: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _select_questions(golds: Mapping[str, Sequence[str]], counts: dict[str, int]) -> dict[str, list[str]]:
    """The scorable questions: query id -> its gold answers that survive normalisation."""
    kept: dict[str, list[str]] = {}
    without = 0
    empty_answers = 0
    for qid, answers in golds.items():
        if isinstance(answers, str):
            raise TypeError(f"the gold answers of question {qid!r} must be a sequence of strings, not one string")
        good = []
        for a in answers:
            if normalize_answer(a):
                good.append(a)
            else:
                empty_answers += 1
        if good:
            kept[qid] = good
        else:
            without += 1
    counts["questions_without_gold"] = without
    counts["empty_gold_answers"] = empty_answers
    if without:
        log.warning("%d of %d questions have no gold answer left after normalisation: not scored",
                    without, len(golds))
    if empty_answers:
        log.warning("%d gold answers normalise to the empty string (only punctuation or articles): ignored",
                    empty_answers)
    return kept


def score_answers(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]],
                  bleu_orders: Sequence[int] = (3, 4)) -> RagScores:
    """EM, F1, ROUGE-L and BLEU-n (n in ``bleu_orders``) of ``predictions`` (query id -> answer)
    against ``golds`` (query id -> gold answers).

    The questions are the keys of ``golds`` with at least one gold answer that does not normalise
    to "" (the others are dropped: ``counts["questions_without_gold"]``; the ignored answers:
    ``counts["empty_gold_answers"]``). A question without a prediction is scored as the empty
    answer, 0 on every measure (``counts["missing_predictions"]``); predictions for questions not
    in ``golds`` are ignored (``counts["unknown_predictions"]``). Each non-zero count is logged as
    a warning. ``counts["questions"]`` is the number of questions scored.

    Aggregates: EM, F1 and ROUGE-L are means of the per-question values (SQuAD's EM/F1). BLEU-n's
    aggregate is corpus BLEU (:func:`corpus_bleu`), the collection-level BLEU MS MARCO reports,
    while ``per_query["BLEU-n"]`` holds smoothed sentence BLEU (:func:`sentence_bleu`), which
    exists for per-question paired tests; the aggregate is not the mean of the per-query values."""
    orders = [_check_order(o) for o in bleu_orders]
    if len(set(orders)) != len(orders):
        raise ValueError(f"bleu_orders repeats an order: {list(bleu_orders)!r}")
    counts: dict[str, int] = {}
    questions = _select_questions(golds, counts)
    unknown = sum(1 for qid in predictions if qid not in golds)
    missing = [qid for qid in questions if qid not in predictions]
    counts["missing_predictions"] = len(missing)
    counts["unknown_predictions"] = unknown
    counts["questions"] = len(questions)
    if missing:
        log.warning("%d of %d questions have no prediction: scored as the empty answer (0), e.g. %s",
                    len(missing), len(questions), missing[:3])
    if unknown:
        log.warning("%d predictions are for questions not in the gold answers: ignored", unknown)

    measures = ["EM", "F1", "ROUGE-L"] + [f"BLEU-{o}" for o in orders]
    per_query: dict[str, dict[str, float]] = {m: {} for m in measures}
    hyps: list[str] = []
    refs: list[list[str]] = []
    for qid, answers in questions.items():
        pred = predictions.get(qid, "")
        if not isinstance(pred, str):
            raise TypeError(f"the prediction for question {qid!r} must be a string, got {type(pred).__name__}")
        normed_golds = [normalize_answer(a) for a in answers]
        normed_pred = normalize_answer(pred)
        pred_tokens = normed_pred.split()
        per_query["EM"][qid] = 1.0 if normed_pred in normed_golds else 0.0
        per_query["F1"][qid] = (max(_f1_tokens(pred_tokens, g.split()) for g in normed_golds)
                                if pred_tokens else 0.0)
        per_query["ROUGE-L"][qid] = rouge_l(pred, answers)
        for o in orders:
            per_query[f"BLEU-{o}"][qid] = sentence_bleu(pred, answers, o)
        hyps.append(pred)
        refs.append(answers)

    aggregate: dict[str, float] = {}
    n = len(questions)
    for m in ("EM", "F1", "ROUGE-L"):
        aggregate[m] = sum(per_query[m].values()) / n if n else 0.0
    for o in orders:
        aggregate[f"BLEU-{o}"] = corpus_bleu(hyps, refs, o) if n else 0.0
    if not n:
        log.warning("no question could be scored: every aggregate is 0")
    return RagScores(measures=measures, per_query=per_query, aggregate=aggregate, counts=counts)


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ValueError("answer_recall needs at least one cutoff k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"a cutoff k must be an integer of at least 1, got {k!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"the cutoffs repeat a value: {ks!r}")
    return ks


def answer_recall(rankings: Mapping[str, Sequence[str]], docs: Mapping[str, str],
                  golds: Mapping[str, Sequence[str]], ks: Sequence[int]) -> RagScores:
    """Answer recall@k (DPR's top-k retrieval accuracy, see :func:`has_answer`): per question 1.0
    when some gold answer occurs in the text of one of its top-k ranked documents, else 0.0; the
    aggregate is the mean over questions. ``rankings``: query id -> document ids, best first;
    ``docs``: document id -> text.

    Questions as in :func:`score_answers` (``counts["questions_without_gold"]``,
    ``counts["empty_gold_answers"]``). A question without a ranking scores 0
    (``counts["missing_rankings"]``); rankings of questions not in ``golds`` are ignored
    (``counts["unknown_rankings"]``); a ranked document id missing from ``docs`` has no text and
    never matches (``counts["unknown_docs"]``, occurrences within the top max(ks)); a ranking
    shorter than max(ks) is scored on what it has (``counts["short_rankings"]``). Each non-zero
    count is logged as a warning. Every passage is normalised once, however many questions rank it.
    """
    ks = _check_ks(ks)
    kmax = max(ks)
    counts: dict[str, int] = {}
    questions = _select_questions(golds, counts)
    counts["unknown_rankings"] = sum(1 for qid in rankings if qid not in golds)
    missing = unknown_docs = short = 0
    cache: dict[str, str | None] = {}
    measures = [f"answer_recall@{k}" for k in ks]
    per_query: dict[str, dict[str, float]] = {m: {} for m in measures}
    for qid, answers in questions.items():
        ranking = rankings.get(qid)
        first_hit = None  # 0-based rank of the first passage holding an answer
        if ranking is None:
            missing += 1
        else:
            if isinstance(ranking, str):
                raise TypeError(f"the ranking of question {qid!r} must be a sequence of document ids, not a string")
            top = list(ranking[:kmax])
            if len(top) < kmax:
                short += 1
            padded_golds = [_padded(normalize_answer(a)) for a in answers]
            for rank, did in enumerate(top):
                if did not in cache:
                    text = docs.get(did)
                    cache[did] = None if text is None else _padded(normalize_answer(text))
                passage = cache[did]
                if passage is None:
                    unknown_docs += 1
                    continue
                if first_hit is None and any(g in passage for g in padded_golds):
                    first_hit = rank
                    # keep walking only to count unknown documents within the top kmax
        for k, m in zip(ks, measures):
            per_query[m][qid] = 1.0 if first_hit is not None and first_hit < k else 0.0
    counts["missing_rankings"] = missing
    counts["unknown_docs"] = unknown_docs
    counts["short_rankings"] = short
    counts["questions"] = len(questions)
    if missing:
        log.warning("%d of %d questions have no ranking: answer recall 0", missing, len(questions))
    if counts["unknown_rankings"]:
        log.warning("%d rankings are for questions not in the gold answers: ignored", counts["unknown_rankings"])
    if unknown_docs:
        log.warning("%d ranked document ids (within the top %d) are not in the documents: treated as "
                    "passages without an answer", unknown_docs, kmax)
    if short:
        log.warning("%d rankings are shorter than %d: scored on the documents they have", short, kmax)
    n = len(questions)
    aggregate = {m: (sum(per_query[m].values()) / n if n else 0.0) for m in measures}
    return RagScores(measures=measures, per_query=per_query, aggregate=aggregate, counts=counts)


# --------------------------------------------------------------------------------------------
# SQuAD files
# --------------------------------------------------------------------------------------------

def _load_json(path, what: str):
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{what} file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} file {path} is not valid JSON ({exc})") from None


def read_squad_predictions(path) -> dict[str, str]:
    """The official SQuAD prediction file: one JSON object ``{question_id: answer_text}``.
    ValueError naming the file when it is not such an object of strings."""
    data = _load_json(path, "SQuAD prediction")
    if not isinstance(data, dict):
        raise ValueError(f"SQuAD prediction file {path} must hold one JSON object {{question_id: answer}}, "
                         f"found a {type(data).__name__}")
    for qid, answer in data.items():
        if not isinstance(answer, str):
            raise ValueError(f"SQuAD prediction file {path}: the answer for question {qid!r} must be a string, "
                             f"found {type(answer).__name__} {answer!r}")
    return dict(data)


def read_squad_golds(path) -> dict[str, list[str]]:
    """Question id -> gold answer texts, in file order, from a SQuAD v1.1 dataset file
    (``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
    "answers": [{"text", "answer_start"}]}]}]}]}``). A question with an empty ``answers`` list
    (as in SQuAD 2.0's unanswerable ones) maps to an empty list, which :func:`score_answers` drops
    and counts. ValueError naming the file and the place on a malformed layout or a repeated id."""
    data = _load_json(path, "SQuAD dataset")

    def bad(where: str, expected: str):
        return ValueError(f"SQuAD dataset file {path} is not in the SQuAD v1.1 layout "
                          f"({{\"data\": [{{\"title\", \"paragraphs\": [{{\"context\", \"qas\": [{{\"id\", "
                          f"\"question\", \"answers\": [{{\"text\", \"answer_start\"}}]}}]}}]}}]}}): "
                          f"{where} should be {expected}")

    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise bad("the top level", 'an object with a "data" list')
    golds: dict[str, list[str]] = {}
    for ai, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise bad(f"data[{ai}]", 'an object with a "paragraphs" list')
        for pi, para in enumerate(article["paragraphs"]):
            where = f"data[{ai}].paragraphs[{pi}]"
            if not isinstance(para, dict) or not isinstance(para.get("qas"), list):
                raise bad(where, 'an object with a "qas" list')
            for qi, qa in enumerate(para["qas"]):
                qwhere = f"{where}.qas[{qi}]"
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), str):
                    raise bad(qwhere, 'an object with a string "id"')
                answers = qa.get("answers")
                if not isinstance(answers, list):
                    raise bad(f"{qwhere} (id {qa['id']!r})", 'an object with an "answers" list')
                texts = []
                for xi, ans in enumerate(answers):
                    if not isinstance(ans, dict) or not isinstance(ans.get("text"), str):
                        raise bad(f"{qwhere}.answers[{xi}] (id {qa['id']!r})", 'an object with a string "text"')
                    texts.append(ans["text"])
                if qa["id"] in golds:
                    raise ValueError(f"SQuAD dataset file {path}: question id {qa['id']!r} occurs more than once "
                                     f"(again at {qwhere}); ids must be unique")
                golds[qa["id"]] = texts
    return golds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uptrain.rag.measures",
        description="EM and F1 (SQuAD v1.1 definitions, x100) of a SQuAD prediction file against a dataset file.")
    parser.add_argument("--data", required=True, help="SQuAD v1.1 dataset JSON (e.g. dev-v1.1.json)")
    parser.add_argument("--predictions", required=True, help="prediction JSON {question_id: answer}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        golds = read_squad_golds(args.data)
        predictions = read_squad_predictions(args.predictions)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The leaderboard's two numbers only: ROUGE-L is cheap but not needed, BLEU is skipped.
    scores = score_answers(predictions, golds, bleu_orders=())
    print(f"EM {100 * scores.aggregate['EM']:.2f}")
    print(f"F1 {100 * scores.aggregate['F1']:.2f}")
    for name, value in scores.counts.items():
        print(f"{name} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
