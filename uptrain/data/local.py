"""Collections from local files: a BEIR folder, or TREC-style docs/topics/qrels files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from uptrain.data.collection import Collection
from uptrain.data.sources import Source, assemble, join_fields, missing_file_error

_HEADER_IDS = {"id", "_id", "docid", "doc_id", "docno", "qid", "query_id", "query-id", "corpus-id", "pid"}
_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def _open_text(path: Path) -> io.TextIOBase:
    # old TREC collections are not always valid UTF-8; a replaced byte beats a failed load
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _fingerprint(path: Path) -> dict:
    """Name and content hash: the cache key follows the data, not where it is mounted."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FINGERPRINTS[key] = h.hexdigest()
    return {"file": path.name, "sha256": _FINGERPRINTS[key]}


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

_DOC_END = re.compile(r"</DOC>", re.IGNORECASE)
_DOC_START = re.compile(r"<DOC>", re.IGNORECASE)
_DOCNO = re.compile(r"<DOCNO>\s*(.*?)\s*</DOCNO>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _sgml_docs(path: Path) -> Iterator[tuple[str, dict]]:
    """``<DOC><DOCNO>id</DOCNO> ... </DOC>``; a <TITLE> becomes the title, the rest (tags stripped) the text."""
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
                    raise ValueError(f"{path}: </DOC> without <DOC> near {block[-80:]!r}")
                yield _parse_sgml_doc(path, block[start.end() :])


def _parse_sgml_doc(path: Path, body: str) -> tuple[str, dict]:
    docno = _DOCNO.search(body)
    if docno is None:
        raise ValueError(f"{path}: a <DOC> has no <DOCNO>: {body[:120]!r}")
    body = body[: docno.start()] + body[docno.end() :]
    title = ""
    found = _TITLE.search(body)
    if found is not None:
        title = _TAG.sub(" ", found.group(1)).strip()
        body = body[: found.start()] + body[found.end() :]
    return docno.group(1), {"title": title, "text": _TAG.sub(" ", body).strip()}


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


def _jsonl_rows(path: Path) -> Iterator[dict]:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON line ({exc})") from None
            key = next((row[k] for k in ("_id", "doc_id", "docid", "id", "query_id") if k in row), None)
            if key is None:
                raise ValueError(f"{path}:{n}: no _id/doc_id/id field")
            row["_id"] = str(key)
            yield row


def read_docs(path: Path, fields: Sequence[str]) -> Iterator[tuple[str, str]]:
    fmt = _format_of(path)
    if fmt == "sgml":
        for did, rec in _sgml_docs(path):
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
    # old TREC topics leave <title>/<desc>/<narr> unclosed: a field runs to the next tag
    found = re.search(rf"<{tag}>(.*?)(?=<[/a-zA-Z]|\Z)", block, re.IGNORECASE | re.DOTALL)
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
                raise ValueError(f"{path}: a <top> has no <num>: {block[:120]!r}")
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
                raise ValueError(f"{path}:{n}: expected 'qid iter docid rel' or 'qid docid rel', got {line!r}")
            try:
                value = int(float(rel))
            except ValueError:
                if n == 1:
                    continue  # a header such as 'query-id corpus-id score'
                raise ValueError(f"{path}:{n}: relevance {rel!r} is not a number") from None
            yield qid, did, value


# ----- sources -----


class BeirFolderSource(Source):
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

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
        for what, p in files.items():
            if not p.is_file() and Path(f"{p}.gz").is_file():
                files[what] = Path(f"{p}.gz")
        for what, p in files.items():
            if not p.is_file():
                raise missing_file_error(self.name, f"BEIR {what}", p)
        return files

    def content_spec(self) -> dict:
        files = self._files()
        return {"split": self.split, "files": {k: _fingerprint(p) for k, p in files.items()}}

    def load_full(self) -> Collection:
        files = self._files()
        qrels = list(read_qrels(files["qrels"]))
        in_split = {q for q, _, _ in qrels}
        queries = [(q, t) for q, t in read_topics(files["queries"], ["text"]) if q in in_split]
        return assemble(self.name, read_docs(files["corpus"], self.fields), queries, qrels)


class TrecSource(Source):
    """TREC-style files.

    ``docs``: SGML ``<DOC><DOCNO>..</DOCNO>..</DOC>`` (a <TITLE> is the title field, other
    tags are stripped), ``.tsv`` (``doc_id<TAB>text``) or ``.jsonl`` (BEIR ``_id``/``title``/``text``).
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
    ):
        super().__init__(name, fields or ("title", "text"), max_queries, max_docs, relevance_map)
        self.docs = Path(docs).expanduser()
        self.topics = Path(topics).expanduser()
        self.qrels = Path(qrels).expanduser()
        self.topic_fields = [topic_field] if isinstance(topic_field, str) else [str(t) for t in topic_field]

    def _files(self) -> dict[str, Path]:
        files = {"docs": self.docs, "topics": self.topics, "qrels": self.qrels}
        for what, p in files.items():
            if not p.is_file():
                raise missing_file_error(self.name, what, p)
        return files

    def content_spec(self) -> dict:
        files = self._files()
        return {"topic_field": self.topic_fields, "files": {k: _fingerprint(p) for k, p in files.items()}}

    def load_full(self) -> Collection:
        files = self._files()
        return assemble(
            self.name,
            read_docs(files["docs"], self.fields),
            read_topics(files["topics"], self.topic_fields),
            read_qrels(files["qrels"]),
        )
