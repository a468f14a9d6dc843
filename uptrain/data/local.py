"""Collections from local files: a BEIR folder, or TREC-style docs/topics/qrels files."""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from uptrain.cache import file_digest
from uptrain.errors import DataFormatError
from uptrain.data.collection import Collection
from uptrain.data.sources import Problems, Source, assemble, join_fields, missing_file_error

log = logging.getLogger("uptrain")

_HEADER_IDS = {"id", "_id", "docid", "doc_id", "docno", "qid", "query_id", "query-id", "corpus-id", "pid"}


class _Text:
    """The lines of a text file (gzip by its name), decoded as UTF-8. Old TREC collections are not always
    valid UTF-8, and a replaced byte beats a failed load: a line that does not decode has its bad bytes
    replaced by U+FFFD, and the lines so changed are counted and warned about when the file is closed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = gzip.open(path, "rb") if self.path.suffix == ".gz" else open(path, "rb")
        self.replaced = 0
        self.unterminated = 0  # the number of a last line without a newline

    def __iter__(self) -> Iterator[str]:
        lines = iter(self._f)
        n = 0
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError) as exc:  # gzip: truncated, or not gzip at all
                raise DataFormatError(f"{self.path}: a damaged or truncated gzip file after line {n} ({exc}); "
                                      "decompress it to check, or fetch it again") from None
            n += 1
            self.unterminated = n if not raw.endswith(b"\n") else 0
            if raw.endswith(b"\r\n"):  # as text mode reads it: one newline
                raw = raw[:-2] + b"\n"
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.replaced += 1
                yield raw.decode("utf-8", errors="replace")

    def read(self) -> str:
        return "".join(self)

    def __enter__(self) -> "_Text":
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()
        if self.replaced:
            log.warning("%s: %d lines are not valid UTF-8; their undecodable bytes were replaced by U+FFFD",
                        self.path, self.replaced)
        if self.unterminated and exc == (None, None, None):
            log.warning("%s does not end with a newline: if the file was cut short, its last line (%d) is "
                        "incomplete", self.path, self.unterminated)


def _open_text(path: Path) -> _Text:
    return _Text(path)


def _fingerprint(path: Path) -> dict:
    """Name and content hash: the cache key follows the data, not where it is mounted."""
    return {"file": path.name, "sha256": file_digest(path)}


def existing_files(collection: str, files: dict[str, Path], label: str = "") -> dict[str, Path]:
    """The files, each one (or its ``.gz``) checked to exist; a missing one names the remedies."""
    out = {}
    for what, p in files.items():
        if not p.is_file() and Path(f"{p}.gz").is_file():
            p = Path(f"{p}.gz")
        if not p.is_file():
            raise missing_file_error(collection, f"{label}{what}", p)
        out[what] = p
    return out


def _first_line(path: Path) -> str:
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                return line.lstrip()
    return ""


def _format_of(path: Path) -> str:
    """'sgml', 'tsv' or 'jsonl', from the extension, else from the first line."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".tsv", ".tab"):
        return "tsv"
    if ext in (".jsonl", ".json"):
        return "jsonl"
    if ext in (".trec", ".sgml", ".sgm", ".xml"):
        return "sgml"
    first = _first_line(path)
    if first.startswith("<"):
        return "sgml"
    if first.startswith("{"):
        return "jsonl"
    return "tsv"


def _is_header(first_col: str) -> bool:
    return first_col.strip().lower() in _HEADER_IDS


# ----- documents -----

_DOC_END = re.compile(r"</DOC\s*>", re.IGNORECASE)
_DOC_START = re.compile(r"<DOC\s*>", re.IGNORECASE)
_DOCNO = re.compile(r"<DOCNO>\s*(.*?)\s*</DOCNO>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.IGNORECASE | re.DOTALL)
# A real tag: '<', an optional '/', a name, attributes as name=value pairs, an optional '/', '>'.
# A '<' that opens none ("1 <= m <= n", "10^8 < 2^27", "a<b and c>d") is text and is kept.
_ATTR = r"""\s+[A-Za-z_][-\w.:]*\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'<>=]+)"""
_TAG_NAME = r"[A-Za-z][\w.:-]*"
_TAG = re.compile(rf"</?({_TAG_NAME})(?:{_ATTR})*\s*/?>")
# The structure of TREC SGML collections (TREC disks 1-5, WT, AQUAINT, CLEF, NTCIR, ...): removed
# without a word. Any other tag is removed too, and the document counted (Problems: markup_removed).
KNOWN_TAGS = frozenset(t.upper() for t in """
    DOC DOCNO DOCID DOCOLDNO DOCHDR TEXT TITLE HEADLINE HEAD HL TTL H3 H4 HT DD DATE DATELINE DATE_TIME LP
    LEADPARA BYLINE FILEID FIRST SECOND NOTE ABSTRACT SUMMARY BODY AUTHOR SOURCE PUB PAGE PROFILE SECTION
    LENGTH TYPE SUBJECT GRAPHIC CORRECTION CORRECTION-DATE CN IN TP SO DE GV CO MS RE XX CR F P FN FIG PHRASE
    TABLE TR TD TH TI TXT DESCRIPT SLUG KEYWORD HEADER TRAILER PRE BR IMG HTML META LINK SCRIPT STYLE
""".split())


SGML_PARSER_VERSION = 2  # in TREC sources' cache keys: bump when parsing SGML documents changes their text


def strip_tags(text: str) -> tuple[str, list[str]]:
    """``text`` with its real tags replaced by a space, and the names of the unknown ones removed."""
    unknown: list[str] = []

    def drop(match: re.Match) -> str:
        if match.group(1).upper() not in KNOWN_TAGS:
            unknown.append(match.group(0))
        return " "

    return _TAG.sub(drop, text), unknown


def _sgml_docs(path: Path, problems: Problems | None = None) -> Iterator[tuple[str, dict]]:
    """``<DOC><DOCNO>id</DOCNO> ... </DOC>``; a <TITLE> becomes the title, the rest (tags removed) the text."""
    pending = ""
    with _open_text(path) as f:
        for line in f:
            pending += line
            while True:
                end = _DOC_END.search(pending)
                if end is None:
                    break
                block, pending = pending[: end.start()], pending[end.end() :]
                start = _DOC_START.search(block)
                if start is None:
                    raise DataFormatError(f"{path}: </DOC> without <DOC> near {block[-80:]!r}")
                yield _parse_sgml_doc(path, block[start.end() :], problems)
    if _DOC_START.search(pending):
        log.warning("%s: the file ends inside a <DOC> (no </DOC> after %r): that document is dropped; the file "
                    "may be truncated", path, pending.strip()[:80])


# tags that TREC documents always close: one left open means a damaged document (its text is kept)
_CLOSED_TAGS = ("TITLE", "TEXT", "HEADLINE", "HEAD")


def _parse_sgml_doc(path: Path, body: str, problems: Problems | None = None) -> tuple[str, dict]:
    docno = _DOCNO.search(body)
    if docno is None:
        raise DataFormatError(f"{path}: a <DOC> has no <DOCNO>: {body[:120]!r}")
    body = body[: docno.start()] + body[docno.end() :]
    title = ""
    found = _TITLE.search(body)
    if found is not None:
        title = found.group(1)
        body = body[: found.start()] + body[found.end() :]
    for tag in _CLOSED_TAGS:
        opened = len(re.findall(rf"<{tag}\b[^>]*>", body, re.IGNORECASE))
        if opened != len(re.findall(rf"</{tag}\s*>", body, re.IGNORECASE)):
            if problems is not None:
                problems.note("unclosed_tags", f"{docno.group(1)} <{tag}>")
            break
    title, unknown_title = strip_tags(title)
    text, unknown_text = strip_tags(body)
    unknown = unknown_title + unknown_text
    if unknown and problems is not None:
        problems.note("markup_removed", f"{docno.group(1)} {' '.join(dict.fromkeys(unknown))[:60]}")
    return docno.group(1), {"title": title.strip(), "text": text.strip()}


def _tsv_rows(path: Path) -> Iterator[tuple[str, str]]:
    """``id<TAB>text``; only the first tab splits, later ones belong to the text."""
    with _open_text(path) as f:
        for n, line in enumerate(f):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, _, text = line.partition("\t")
            if n == 0 and _is_header(key):
                continue
            yield key.strip(), text


def json_lines(path: Path, error: type[DataFormatError] = DataFormatError) -> Iterator[tuple[int, Any, str]]:
    """(line number, parsed value, line) of each non-blank line of a JSONL file; a line that is not
    JSON is an ``error`` naming the file and line. Undecodable bytes are replaced and counted (_Text)."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line), line
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{n}: not a JSON line ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[dict]:
    for n, row, _ in json_lines(path):
        key = next((row[k] for k in ("_id", "doc_id", "docid", "id", "query_id") if k in row), None) \
            if isinstance(row, dict) else None
        if key is None:
            raise DataFormatError(f"{path}:{n}: no _id/doc_id/id field")
        row["_id"] = str(key)
        yield row


def read_docs(path: Path, fields: Sequence[str], problems: Problems | None = None) -> Iterator[tuple[str, str]]:
    fmt = _format_of(path)
    if fmt == "sgml":
        for did, rec in _sgml_docs(path, problems):
            yield did, join_fields(rec.get(f) for f in fields)
    elif fmt == "jsonl":
        for row in _jsonl_rows(path):
            yield row["_id"], join_fields(_as_text(row.get(f)) for f in fields)
    else:
        # a two-column file has only a text; any configured title is simply absent
        for did, text in _tsv_rows(path):
            yield did, join_fields([text] if "text" in fields else [])


def _as_text(value) -> str:
    return "" if value is None else str(value)


# ----- topics -----

_TOP = re.compile(r"<top>(.*?)</top>", re.IGNORECASE | re.DOTALL)
_NUM = re.compile(r"<num>\s*(?:Number:)?\s*([^<\s]+)", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:Topic|Description|Narrative)\s*:\s*", re.IGNORECASE)


def _topic_field(block: str, tag: str) -> str:
    # old TREC topics leave <title>/<desc>/<narr> unclosed: a field runs to the next real tag
    found = re.search(rf"<{tag}>(.*?)(?={_TAG.pattern}|\Z)", block, re.IGNORECASE | re.DOTALL)
    if found is None:
        return ""
    return " ".join(_PREFIX.sub("", found.group(1)).split())


def read_topics(path: Path, topic_fields: Sequence[str]) -> Iterator[tuple[str, str]]:
    fmt = _format_of(path)
    if fmt == "sgml":
        with _open_text(path) as f:
            content = f.read()
        for block in _TOP.findall(content):
            num = _NUM.search(block)
            if num is None:
                raise DataFormatError(f"{path}: a <top> has no <num>: {block[:120]!r}")
            yield num.group(1), join_fields(_topic_field(block, t) for t in topic_fields)
    elif fmt == "jsonl":
        for row in _jsonl_rows(path):
            # BEIR query lines carry only 'text'; named topic fields win when present
            chosen = [row[t] for t in topic_fields if t in row] or [row.get("text")]
            yield row["_id"], join_fields(_as_text(v) for v in chosen)
    else:
        for qid, text in _tsv_rows(path):
            yield qid, text.strip()


# ----- qrels -----


def read_qrels(path: Path) -> Iterator[tuple[str, str, int]]:
    """TREC ``qid iter docid rel``, or three columns ``qid docid rel`` (BEIR tsv, header skipped)."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) == 4:
                qid, _, did, rel = cols
            elif len(cols) == 3:
                qid, did, rel = cols
            else:
                raise DataFormatError(f"{path}:{n}: expected 'qid iter docid rel' or 'qid docid rel', got {line!r}")
            try:
                value = int(float(rel))
            except ValueError:
                if n == 1:
                    continue  # a header such as 'query-id corpus-id score'
                raise DataFormatError(f"{path}:{n}: relevance {rel!r} is not a number") from None
            yield qid, did, value


# ----- sources -----


def check_not_empty(collection: Collection, docs: Path, queries: Path) -> None:
    """A collection with no document or no query read from its files is an error naming the file."""
    for what, path, found in (("documents", docs, collection.docs), ("queries", queries, collection.queries)):
        if not found:
            raise DataFormatError(
                f"{path}: no {what} could be read from it ({_format_of(path)} by its name or first line): is it "
                f"the right file, and in a format the collection '{collection.name}' reads (TREC SGML, "
                "TSV 'id<TAB>text' or JSONL)?")


class BeirFolderSource(Source):
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, and optionally
    ``answers.jsonl`` beside corpus.jsonl (``{"query_id": ..., "answers": [...]}`` per question:
    a QA collection, see :mod:`uptrain.data.qa`).

    Only the queries that appear in the split's qrels are kept.
    """

    kind = "beir_folder"

    def __init__(
        self,
        path: str | Path,
        split: str = "test",
        name: str | None = None,
        fields: str | Sequence[str] | None = ("title", "text"),
        max_queries: int | None = None,
        max_docs: int | None = None,
        relevance_map: dict | None = None,
    ):
        self.path = Path(path).expanduser()
        self.split = str(split)
        super().__init__(name or f"{self.path.name}_{self.split}", fields or ("title", "text"), max_queries, max_docs, relevance_map)

    def _files(self) -> dict[str, Path]:
        files = {
            "corpus": self.path / "corpus.jsonl",
            "queries": self.path / "queries.jsonl",
            "qrels": self.path / "qrels" / f"{self.split}.tsv",
        }
        return existing_files(self.name, files, "BEIR ")

    def validate(self) -> None:
        self._files()

    def _answers_file(self) -> Path | None:
        path = self.path / "answers.jsonl"
        return path if path.is_file() else None

    def provides_answers(self) -> bool:
        return self._answers_file() is not None

    def content_spec(self) -> dict:
        files = self._files()
        answers = self._answers_file()
        if answers is not None:
            files = {**files, "answers": answers}  # only when present: a plain BEIR folder keeps its key
        return {"split": self.split, "files": {k: _fingerprint(p) for k, p in files.items()}}

    def load_full(self) -> Collection:
        files = self._files()
        qrels = list(read_qrels(files["qrels"]))
        if not qrels:
            raise DataFormatError(f"{files['qrels']}: holds no judgments ('query-id corpus-id score' lines): the "
                                  f"split '{self.split}' would have no queries")
        in_split = {q for q, _, _ in qrels}
        queries = [(q, t) for q, t in read_topics(files["queries"], ["text"]) if q in in_split]
        problems = Problems()
        collection = assemble(self.name, read_docs(files["corpus"], self.fields, problems), queries, qrels, problems)
        check_not_empty(collection, files["corpus"], files["queries"])
        answers = self._answers_file()
        if answers is not None:
            from uptrain.data.qa import attach_answers, read_answers_jsonl

            # answers of the folder's queries outside this split belong to another split, not "unknown"
            other = {q for q, _ in read_topics(files["queries"], ["text"])} - in_split
            attach_answers(collection, {q: a for q, a in read_answers_jsonl(answers).items() if q not in other})
        return collection


class TrecSource(Source):
    """TREC-style files.

    ``docs``: SGML ``<DOC><DOCNO>..</DOCNO>..</DOC>`` (a <TITLE> is the title field; the text
    of every other field is the text, with its tags removed: a tag is ``<``, an optional ``/``, a
    name, ``name=value`` attributes and ``>``, so a literal ``<`` in text such as ``1 <= m <= n``
    is kept; documents that lose tags outside the known TREC structure are counted as
    ``markup_removed`` and warned about), ``.tsv`` (``doc_id<TAB>text``) or ``.jsonl`` (BEIR ``_id``/``title``/``text``).
    ``topics``: SGML ``<top><num>..</num><title>..`` (``topic_field`` picks title/desc/narr)
    or ``.tsv`` (``qid<TAB>text``). ``qrels``: ``qid iter docid rel``.
    """

    kind = "trec"

    def __init__(
        self,
        docs: str | Path,
        topics: str | Path,
        qrels: str | Path,
        name: str,
        fields: str | Sequence[str] | None = ("title", "text"),
        topic_field: str | Sequence[str] = "title",
        max_queries: int | None = None,
        max_docs: int | None = None,
        relevance_map: dict | None = None,
        answers: str | Path | None = None,
    ):
        super().__init__(name, fields or ("title", "text"), max_queries, max_docs, relevance_map)
        self.docs = Path(docs).expanduser()
        self.topics = Path(topics).expanduser()
        self.qrels = Path(qrels).expanduser()
        self.topic_fields = [topic_field] if isinstance(topic_field, str) else [str(t) for t in topic_field]
        self.answers = Path(answers).expanduser() if answers else None  # JSONL gold answers (a QA collection)

    def validate(self) -> None:
        self._files()

    def provides_answers(self) -> bool:
        return self.answers is not None

    def _files(self) -> dict[str, Path]:
        files = {"docs": self.docs, "topics": self.topics, "qrels": self.qrels}
        if self.answers is not None:
            files["answers"] = self.answers
        return existing_files(self.name, files)

    def content_spec(self) -> dict:
        files = self._files()
        spec = {"topic_field": self.topic_fields, "files": {k: _fingerprint(p) for k, p in files.items()}}
        if _format_of(files["docs"]) == "sgml":
            spec["sgml_parser"] = SGML_PARSER_VERSION  # a literal '<' in text no longer swallows the rest
        return spec

    def load_full(self) -> Collection:
        files = self._files()
        problems = Problems()
        collection = assemble(
            self.name,
            read_docs(files["docs"], self.fields, problems),
            read_topics(files["topics"], self.topic_fields),
            read_qrels(files["qrels"]),
            problems,
        )
        check_not_empty(collection, files["docs"], files["topics"])
        if "answers" in files:
            from uptrain.data.qa import attach_answers, read_answers_jsonl

            attach_answers(collection, read_answers_jsonl(files["answers"]))
        return collection
