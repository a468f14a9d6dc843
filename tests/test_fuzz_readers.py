"""Every reader of user files against damaged input: truncated files, wrong encodings, binary garbage,
missing fields, duplicate ids, huge lines, empty files.

Each (reader, damage) must end one of three ways, and the test says which bug it catches otherwise:
- a UserError (one paragraph, naming the file): not a traceback (KeyError, IndexError,
  UnicodeDecodeError, EOFError ... escaping a reader is the bug caught);
- a result with a warning logged (counted problems): the damage is reported, not silent;
- a result identical to the undamaged file's: nothing was lost.
A result that differs from the clean one with no warning is silent data loss, and fails. Duplicates
must always be reported (an error or a warning). A huge line that is valid data must be read whole.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from pathlib import Path

import pytest

from uptrain.clicks.readers import read_judgments, read_log
from uptrain.data.local import BeirFolderSource, TrecSource
from uptrain.data.qa import SquadSource, read_answers_jsonl
from uptrain.errors import UserError
from uptrain.retrieve.runfile import read_trec_run

HUGE = 2_000_000  # characters of one valid line

SGML_DOCS = "".join(f"<DOC>\n<DOCNO>d{i}</DOCNO>\n<TITLE>title {i}</TITLE>\n<TEXT>text of document {i} café</TEXT>\n</DOC>\n"
                    for i in range(1, 7))
SGML_TOPICS = "".join(f"<top>\n<num> Number: {q}\n<title> query {q}\n<desc> Description: about {q}\n</top>\n\n"
                      for q in (1, 2, 3))
QRELS = "".join(f"{q} 0 d{d} {r}\n" for q, d, r in [(1, 1, 1), (1, 2, 0), (2, 3, 2), (2, 4, 1), (3, 5, 1), (3, 6, 0)])
TSV_DOCS = "".join(f"d{i}\ttext of document {i} café\n" for i in range(1, 7))
CORPUS = "".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"text {i} café"}) + "\n" for i in range(1, 7))
QUERIES = "".join(json.dumps({"_id": str(q), "text": f"query {q}"}) + "\n" for q in (1, 2, 3))
BEIR_QRELS = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\td{d}\t{r}\n" for q, d, r in [(1, 1, 1), (2, 3, 2), (3, 5, 1)])
RUN = "".join(f"{q} Q0 d{d} {r} {10 - r}.5 sys\n" for q in (1, 2) for r, d in enumerate((1, 2, 3), 1))
ANSWERS = "".join(json.dumps({"query_id": str(q), "answers": [f"answer {q}"]}) + "\n" for q in (1, 2, 3))
SQUAD = json.dumps({"version": "1.1", "data": [
    {"title": f"article {a}", "paragraphs": [
        {"context": f"context {a}-{p} with the answer {a}{p}.",
         "qas": [{"id": f"q{a}{p}", "question": f"question {a}-{p}?", "answers": [{"text": f"answer {a}{p}", "answer_start": 1}]}]}
        for p in range(2)]} for a in range(4)]})
CLICK_JSONL = "".join(json.dumps({"session": f"s{i}", "query": f"q{i % 3}", "docs": ["a", "b", "c"],
                                  "clicks": [i % 3]}) + "\n" for i in range(8))
PYCLICK = "".join(f"q{i % 3}_{i % 3}\ta,b,c : {'abc'[i % 3]};\n" for i in range(8))
WSCD = "".join(f"{i}\t0\tQ\t{10 + i}\t{i % 3}\tu1\tu2\tu3\n{i}\t5\tC\tu{1 + i % 3}\n" for i in range(8))
SESSION_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n<sessiontrack2012>\n' + "".join(
    f' <session num="{s}" starttime="10:00:00.0">\n  <topic num="{s}"><desc>d</desc></topic>\n'
    f'  <interaction num="1" starttime="10:00:00.5">\n   <query>query {s}</query>\n   <results>'
    + "".join(f'<result rank="{r}"><url>http://x/d{r}</url><clueweb09id>d{r}</clueweb09id><title>t</title>'
              f'<snippet>s</snippet></result>' for r in (1, 2, 3))
    + f'</results>\n   <clicked><click num="1" starttime="10:00:01.0" endtime="10:00:02.0"><rank>{1 + s % 3}</rank>'
      '</click></clicked>\n  </interaction>\n </session>\n' for s in range(1, 5)) + "</sessiontrack2012>\n")
JUDGMENTS = "1 0 a 1\n1 0 b 0\n2 0 c 2\n"


def _trec(tmp, docs=SGML_DOCS, topics=SGML_TOPICS, qrels=QRELS, docs_name="docs.trec"):
    for name, text in ((docs_name, docs), ("topics.txt", topics), ("qrels.txt", qrels)):
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    c = TrecSource(tmp / docs_name, tmp / "topics.txt", tmp / "qrels.txt", name="fuzz", topic_field="title").load()
    return c.docs, c.queries, c.qrels


def _beir(tmp, corpus=CORPUS, queries=QUERIES, qrels=BEIR_QRELS):
    (tmp / "qrels").mkdir(exist_ok=True)
    for name, text in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/test.tsv", qrels)):
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    c = BeirFolderSource(tmp, split="test", name="fuzz").load()
    return c.docs, c.queries, c.qrels


def _one(name, read):
    def run(tmp, data):
        path = tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return read(path)
    return run


def _sessions(log):
    return [(s.query, list(s.docs), list(s.clicks)) for s in log.sessions()]


# reader -> (clean file text, how to read a damaged copy of it, the file's name in messages, how to add a huge valid line)
READERS = {
    "trec_docs_sgml": (SGML_DOCS, lambda tmp, data: _trec(tmp, docs=data), "docs.trec",
                       lambda t: t + f"<DOC>\n<DOCNO>d9</DOCNO>\n<TEXT>{'x' * HUGE}</TEXT>\n</DOC>\n"),
    "trec_docs_tsv": (TSV_DOCS, lambda tmp, data: _trec(tmp, docs=data, docs_name="docs.tsv"), "docs.tsv",
                      lambda t: t + f"d9\t{'x' * HUGE}\n"),
    "trec_topics": (SGML_TOPICS, lambda tmp, data: _trec(tmp, topics=data), "topics.txt",
                    lambda t: t + f"<top>\n<num> Number: 9\n<title> {'x' * HUGE}\n</top>\n"),
    "trec_qrels": (QRELS, lambda tmp, data: _trec(tmp, qrels=data), "qrels.txt",
                   lambda t: t + f"1 0 d{'9' * HUGE} 1\n"),
    "beir_corpus": (CORPUS, lambda tmp, data: _beir(tmp, corpus=data), "corpus.jsonl",
                    lambda t: t + json.dumps({"_id": "d9", "text": "x" * HUGE}) + "\n"),
    "beir_queries": (QUERIES, lambda tmp, data: _beir(tmp, queries=data), "queries.jsonl",
                     lambda t: t.replace('"query 3"', json.dumps("x" * HUGE))),
    "beir_qrels": (BEIR_QRELS, lambda tmp, data: _beir(tmp, qrels=data), "test.tsv",
                   lambda t: t + f"1\td{'9' * HUGE}\t1\n"),
    "run_file": (RUN, _one("run.trec", read_trec_run), "run.trec", lambda t: t + f"3 Q0 d{'9' * HUGE} 1 1.0 sys\n"),
    "answers_jsonl": (ANSWERS, _one("answers.jsonl", read_answers_jsonl), "answers.jsonl",
                      lambda t: t + json.dumps({"query_id": "9", "answers": ["x" * HUGE]}) + "\n"),
    "squad_json": (SQUAD, _one("squad.json", lambda p: sorted(SquadSource(p, name="fuzz").load_full().queries.items())),
                   "squad.json", None),
    "clicks_jsonl": (CLICK_JSONL, _one("log.jsonl", lambda p: _sessions(read_log(p, ranks=3))), "log.jsonl",
                     lambda t: t + json.dumps({"session": "s9", "query": "x" * HUGE, "docs": ["a", "b", "c"], "clicks": [0]}) + "\n"),
    "clicks_pyclick": (PYCLICK, _one("log.txt", lambda p: _sessions(read_log(p, format="pyclick_yandex", ranks=3))),
                       "log.txt", lambda t: t + f"{'x' * HUGE}_0\ta,b,c : a;\n"),
    "clicks_wscd2011": (WSCD, _one("log.tsv", lambda p: _sessions(read_log(p, format="wscd2011", ranks=3))), "log.tsv",
                        lambda t: t + f"99\t0\tQ\t{'9' * HUGE}\t0\tu1\tu2\tu3\n"),
    "clicks_session_xml": (SESSION_XML, _one("sessions.xml", lambda p: _sessions(read_log(p, format="session_xml", ranks=3))),
                           "sessions.xml", None),
    "judgments": (JUDGMENTS, _one("judgments.txt", read_judgments), "judgments.txt",
                  lambda t: t + f"1 0 {'x' * HUGE} 1\n"),
}


def _damaged(kind: str, text: str, rng: random.Random) -> bytes:
    data = text.encode()
    lines = text.splitlines(keepends=True)
    if kind == "truncated":
        return data[: int(len(data) * 0.6)]
    if kind == "latin1":
        return text.replace("query 1", "requête 1").replace("text 1", "text 1 naïve").encode("latin-1", "replace")
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "binary":
        return bytes(rng.randrange(256) for _ in range(2048))
    if kind == "garbage_line":
        mid = len(lines) // 2
        return "".join(lines[:mid]).encode() + bytes(rng.randrange(256) for _ in range(80)) + b"\n" + "".join(lines[mid:]).encode()
    if kind == "missing_fields":  # every line cut to its first token
        return "".join((ln.split()[0] if ln.split() else "") + "\n" for ln in lines).encode()
    if kind == "duplicate":
        return (text + "".join(lines[: max(1, len(lines) // 3)])).encode()
    if kind == "empty":
        return b""
    if kind == "gzip_truncated":
        return gzip.compress(data)[:-30]
    raise AssertionError(kind)


DROPPED_WITH_A_WARNING = {"trec_qrels", "beir_qrels"}
DAMAGE = ["truncated", "latin1", "utf16", "binary", "garbage_line", "missing_fields", "duplicate", "empty"]


def _outcome(read, tmp, data, name, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        try:
            out = read(tmp, data)
        except UserError as exc:
            msg = str(exc)
            assert name in msg, f"the error does not name the file {name}: {msg}"
            return "error", msg
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return ("warned" if warned else "clean"), out


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_damaged_file_is_an_error_a_counted_warning_or_lossless(tmp_path, caplog, reader, damage):
    text, read, name, _ = READERS[reader]
    (tmp_path / "clean").mkdir()
    clean = read(tmp_path / "clean", text)
    (tmp_path / "bad").mkdir()
    kind, out = _outcome(read, tmp_path / "bad", _damaged(damage, text, random.Random(7)), name, caplog)
    if kind == "clean":
        # a click log without session ids cannot tell a repeated session from a copied line: both are data
        if reader == "clicks_pyclick" and damage == "duplicate":
            return
        assert damage != "duplicate", f"{reader}: duplicated records were accepted without a word"
        assert out == clean, f"{reader}/{damage}: the result changed and nothing was reported"


@pytest.mark.parametrize("reader", sorted(r for r in READERS if READERS[r][3] is not None))
def test_a_huge_valid_line_is_read_whole(tmp_path, caplog, reader):
    text, read, name, grow = READERS[reader]
    kind, out = _outcome(read, tmp_path, grow(text), name, caplog)
    assert kind in ("clean", "warned"), f"{reader}: a valid 2-MB line was refused: {out}"
    kept = "x" * HUGE in repr(out) or "9" * HUGE in repr(out)
    # a qrels line naming an unknown document, a query outside the split: dropped, and said so
    assert kept or (reader in DROPPED_WITH_A_WARNING and kind == "warned"), f"{reader}: the huge line was cut or dropped"


@pytest.mark.parametrize("reader", ["trec_docs_sgml", "trec_qrels", "clicks_jsonl"])
def test_truncated_gzip_is_a_clear_error(tmp_path, caplog, reader):
    text, read, name, _ = READERS[reader]
    data = _damaged("gzip_truncated", text, random.Random(0))

    def read_gz(tmp, payload):
        if reader == "clicks_jsonl":
            (tmp / "log.jsonl.gz").write_bytes(payload)
            return read_log(tmp / "log.jsonl.gz", format="jsonl", ranks=3)
        if reader == "trec_docs_sgml":
            (tmp / "docs.trec.gz").write_bytes(payload)
            (tmp / "topics.txt").write_text(SGML_TOPICS)
            (tmp / "qrels.txt").write_text(QRELS)
            return TrecSource(tmp / "docs.trec.gz", tmp / "topics.txt", tmp / "qrels.txt", name="fuzz").load().docs
        (tmp / "docs.trec").write_text(SGML_DOCS)
        (tmp / "topics.txt").write_text(SGML_TOPICS)
        (tmp / "qrels.txt.gz").write_bytes(payload)
        return TrecSource(tmp / "docs.trec", tmp / "topics.txt", tmp / "qrels.txt.gz", name="fuzz").load().qrels

    kind, msg = _outcome(read_gz, tmp_path, data, ".gz", caplog)
    assert kind == "error" and "truncated gzip" in msg
