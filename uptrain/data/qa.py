"""Question answering collections: passages, questions, gold passages and gold answers.

A QA collection is a :class:`~uptrain.data.collection.Collection` whose ``answers`` hold each
question's gold answer strings. They are the ground truth of the RAG path's answer measures
(:mod:`uptrain.rag`) and the answers REPLUG (Human) scores (``labels.replug_answers=gold``).

Readers:

``SquadSource``   the SQuAD v1.1 JSON layout (Rajpurkar et al., 2016):
                  ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
                  "answers": [{"text", ...}]}]}]}]}``. Every paragraph is a passage (id
                  ``<article>_<paragraph>``, 0-based positions in the file), every question a
                  query whose one relevant passage (grade 1) is its own paragraph, and its answer
                  texts (repeats of the same string kept once) its gold answers.
                  ``part: train | test`` keeps the articles of one side of a seeded split by
                  article title (an article is in the test part when a uniform draw from
                  (seed, title) falls below ``test_fraction``), so retrievers train on some
                  articles and are evaluated on unseen ones; ``corpus: part`` (the default)
                  keeps the passages of that part's articles only, ``corpus: all`` every passage.
the BEIR folder   ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` and, beside them, an
                  ``answers.jsonl`` of ``{"query_id": ..., "answers": [...]}`` rows
                  (:class:`uptrain.data.BeirFolderSource` reads it when present); TREC files take
                  the same file as ``answers: PATH``.

Answers of unknown questions, empty answer strings and questions without any answer are
counted in the collection's stats (``answers_unknown_queries``, ``answers_empty``,
``questions_without_answers``) and warned about, never silently dropped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from uptrain.cache import file_digest
from uptrain.data.collection import Collection
from uptrain.data.sources import Problems, Source, assemble, missing_file_error
from uptrain.data.split import check_holdout, holdout_draw
from uptrain.errors import ConfigError, DataFormatError, UserError

log = logging.getLogger("uptrain.data")

PARTS = ("all", "train", "test")
CORPORA = ("part", "all")


class QAFormatError(DataFormatError):
    """A QA file that is not in the layout its reader expects; the message names the file and the place."""


def read_answers_jsonl(path: str | Path) -> dict[str, list[str]]:
    """query_id -> answers from JSONL rows ``{"query_id": ..., "answers": [...]}`` (or ``"answer": "..."``).

    A malformed line is a :class:`QAFormatError` naming the file and line; answer strings are
    kept as given (stripped), repeats of one string once (an empty one is dropped and counted by
    :func:`attach_answers`); a question on several rows gets the answers of all, and is warned about.
    """
    from uptrain.data.local import json_lines

    path = Path(path)
    out: dict[str, list[str]] = {}
    repeated: list[str] = []
    for n, row, line in json_lines(path, QAFormatError):
        if not isinstance(row, dict) or "query_id" not in row or not ("answers" in row or "answer" in row):
            raise QAFormatError(f'{path}:{n}: expected {{"query_id": ..., "answers": [...]}}, got {line.strip()[:120]!r}')
        value = row.get("answers", row.get("answer"))
        values = value if isinstance(value, list) else [value]
        qid = str(row["query_id"])
        if qid in out:
            repeated.append(qid)
        answers = out.setdefault(qid, [])
        for a in values:
            text = "" if a is None else str(a).strip()
            if text not in answers:  # an empty one is counted (answers_empty) by attach_answers
                answers.append(text)
    if not out:
        raise QAFormatError(f'{path}: holds no answers; expected one JSON line {{"query_id": ..., "answers": [...]}} '
                            "per question")
    if repeated:
        log.warning("%s: %d questions are listed more than once (e.g. %s); their answers are merged", path,
                    len(repeated), ", ".join(repeated[:5]))
    return out


def attach_answers(collection: Collection, answers: Mapping[str, Iterable[str]]) -> Collection:
    """Set ``collection.answers`` from ``answers`` (query id -> strings), counting what does not fit."""
    kept: dict[str, list[str]] = {}
    unknown = empty = 0
    for qid, values in answers.items():
        if qid not in collection.queries:
            unknown += 1
            continue
        texts = [t for t in values if str(t).strip()]
        empty += sum(1 for t in values if not str(t).strip())
        if texts:
            kept[qid] = list(dict.fromkeys(str(t).strip() for t in texts))
    without = sum(1 for q in collection.queries if q not in kept)
    collection.answers = {q: kept[q] for q in collection.queries if q in kept}
    counts = {"answers_unknown_queries": unknown, "answers_empty": empty, "questions_without_answers": without}
    collection.stats.update(counts)
    for key, text in (("answers_unknown_queries", "answer rows naming an unknown question (dropped)"),
                      ("answers_empty", "empty answer strings (dropped)"),
                      ("questions_without_answers", "questions without any gold answer (no answer measures)")):
        if counts[key]:
            log.warning("%s: %d %s", collection.name, counts[key], text)
    return collection


class SquadSource(Source):
    """The SQuAD v1.1 JSON layout (see the module docstring), optionally one part of a split by article."""

    kind = "squad"

    def __init__(self, path: str | Path, name: str = "squad", part: str = "all", test_fraction: float = 0.5,
                 seed: int = 0, corpus: str = "part", max_queries: int | None = None, max_docs: int | None = None):
        super().__init__(name, None, max_queries, max_docs)
        self.path = Path(path).expanduser()
        if part not in PARTS:
            raise ConfigError(f"SquadSource {name}: part must be one of {', '.join(PARTS)}, got {part!r}")
        if corpus not in CORPORA:
            raise ConfigError(f"SquadSource {name}: corpus must be one of {', '.join(CORPORA)}, got {corpus!r}")
        self.part, self.corpus = part, corpus
        self.test_fraction, self.seed = check_holdout(test_fraction, seed, f"SquadSource {name}")

    def provides_answers(self) -> bool:
        return True

    def validate(self) -> None:
        if not self.path.is_file():
            raise missing_file_error(self.name, "SQuAD JSON", self.path)

    def content_spec(self) -> dict:
        self.validate()
        return {"file": {"file": self.path.name, "sha256": file_digest(self.path)}, "part": self.part,
                "test_fraction": self.test_fraction, "seed": self.seed, "corpus": self.corpus}

    def in_test(self, title: str) -> bool:
        return holdout_draw(str(title), self.seed) < self.test_fraction

    def _articles(self) -> list[dict]:
        self.validate()
        try:
            payload = json.loads(self.path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise QAFormatError(f"{self.path}: not UTF-8 text (byte {exc.start}: {exc.reason}); SQuAD files are "
                                "UTF-8 JSON") from None
        except json.JSONDecodeError as exc:
            raise QAFormatError(f"{self.path}: not a JSON file ({exc}); expected the SQuAD layout "
                                '{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}') from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise QAFormatError(f"{self.path}: no top-level \"data\" list; expected the SQuAD layout "
                                '{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}')
        for i, article in enumerate(data):
            if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
                raise QAFormatError(f"{self.path}: data[{i}] has no \"paragraphs\" list")
        return data

    def load_full(self) -> Collection:
        data = self._articles()
        docs: list[tuple[str, str]] = []
        queries: list[tuple[str, str]] = []
        qrels: list[tuple[str, str, int]] = []
        answers: dict[str, list[str]] = {}
        parts = {"train": 0, "test": 0}
        kept_articles = 0
        for i, article in enumerate(data):
            title = str(article.get("title", i))
            side = "test" if self.in_test(title) else "train"
            parts[side] += 1
            keep_questions = self.part in ("all", side)
            keep_passages = keep_questions or self.corpus == "all"
            if not keep_passages:
                continue
            kept_articles += keep_questions
            for j, para in enumerate(article["paragraphs"]):
                if not isinstance(para, dict) or "context" not in para:
                    raise QAFormatError(f"{self.path}: data[{i}].paragraphs[{j}] has no \"context\"")
                did = f"{i}_{j}"
                docs.append((did, str(para["context"])))
                if not keep_questions:
                    continue
                for k, qa in enumerate(para.get("qas") or []):
                    if not isinstance(qa, dict) or "id" not in qa or "question" not in qa:
                        raise QAFormatError(f"{self.path}: data[{i}].paragraphs[{j}].qas[{k}] needs \"id\" and \"question\"")
                    qid = str(qa["id"])
                    queries.append((qid, str(qa["question"])))
                    qrels.append((qid, did, 1))
                    texts = []
                    for a in qa.get("answers") or []:
                        texts.append(str(a.get("text", "")) if isinstance(a, dict) else str(a))
                    answers.setdefault(qid, []).extend(texts)
        if not queries:
            raise QAFormatError(f"{self.path}: part '{self.part}' holds no question ({parts['train']} train and "
                                f"{parts['test']} test articles at test_fraction {self.test_fraction:g}, seed {self.seed})")
        collection = assemble(self.name, docs, queries, qrels, Problems())
        collection.stats["articles"] = kept_articles
        if self.part != "all":
            collection.stats["article_split"] = (
                f"part {self.part}: {kept_articles} of {len(data)} articles (test_fraction {self.test_fraction:g}, "
                f"seed {self.seed}; corpus: {self.corpus})")
        return attach_answers(collection, answers)


def provides_answers(source: Any) -> bool:
    """Whether a collection source will carry gold answers (cheap: no loading)."""
    check = getattr(source, "provides_answers", None)
    return bool(check()) if callable(check) else False
