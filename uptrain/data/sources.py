"""What every loader shares: the ``Source`` interface, the cleaning that counts
problems instead of failing on them, and the one subsampling rule for shrunk runs."""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

from uptrain.data.collection import Collection
from uptrain.errors import UserError

log = logging.getLogger("uptrain.data")

# counted while loading; each is recorded in Collection.stats (0 when absent)
PROBLEMS = (
    "empty_docs",
    "duplicate_doc_ids",
    "empty_queries",
    "duplicate_query_ids",
    "qrels_unknown_queries",
    "qrels_unknown_docs",
    "duplicate_qrels",
    "queries_without_positives",
    "markup_removed",
    "unclosed_tags",
)

_PROBLEM_TEXT = {
    "empty_docs": "documents with empty text (kept with text '')",
    "duplicate_doc_ids": "repeated document ids (first occurrence kept)",
    "empty_queries": "queries with empty text (kept)",
    "duplicate_query_ids": "repeated query ids (first occurrence kept)",
    "qrels_unknown_queries": "qrels naming an unknown query (dropped)",
    "qrels_unknown_docs": "qrels naming an unknown document (dropped)",
    "duplicate_qrels": "repeated (query, document) judgements (first kept)",
    "queries_without_positives": "queries without any positive judgement (kept; evaluation skips them)",
    "markup_removed": "documents whose text lost markup other than the known TREC tags (tags removed, "
                      "their text kept; a literal '<' in text is kept)",
    "unclosed_tags": "documents with a <TITLE>, <TEXT>, <HEADLINE> or <HEAD> opened and never closed (a damaged "
                     "document; its text kept)",
}


class DatasetUnavailableError(UserError, RuntimeError):
    """A collection's files cannot be found or fetched; the message says how to provide them."""


class Problems:
    """Counts (and the first few examples) of the data problems in PROBLEMS, found while loading."""

    def __init__(self) -> None:
        self.counts = {p: 0 for p in PROBLEMS}
        self.examples: dict[str, list[str]] = {p: [] for p in PROBLEMS}

    def note(self, problem: str, example: str) -> None:
        self.counts[problem] += 1
        if len(self.examples[problem]) < 5:
            self.examples[problem].append(example)

    def warn(self, name: str) -> None:
        for problem in PROBLEMS:
            if self.counts[problem]:
                log.warning("%s: %d %s, e.g. %s", name, self.counts[problem], _PROBLEM_TEXT[problem],
                            ", ".join(self.examples[problem]))


def join_fields(values: Iterable[object]) -> str:
    """Join document fields with one space, skipping empty ones, as BEIR/MTEB build passages."""
    texts = ("" if v is None else str(v) for v in values)
    return " ".join(t for t in texts if t.strip()).strip()


def as_field_list(fields: str | Sequence[str] | None) -> list[str] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        return [fields]
    out = [str(f) for f in fields]
    if not out:
        raise ValueError("fields must name at least one document field")
    return out


def natural_key(text: str) -> tuple:
    """Sort key that orders '2' before '10' and stays total for mixed ids."""
    parts = re.split(r"(\d+)", text)
    # re.split puts text at even and digit runs at odd positions, so element types always line up
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
    return int(value)


def data_root_hint() -> str:
    """One sentence on the UPTRAIN_DATA variable as it is set now, for error messages."""
    value = os.environ.get("UPTRAIN_DATA")
    if value is None:
        return "UPTRAIN_DATA is not set, so configs read the relative folder 'data' under the current directory."
    if not value.strip():
        return (
            "UPTRAIN_DATA is set but empty, so paths like ${oc.env:UPTRAIN_DATA,data}/raw/... "
            "became absolute paths under /raw; unset it or give it a folder."
        )
    return f"UPTRAIN_DATA is {value!r}."


def config_roots() -> list[Path]:
    """The folders the shipped configs may be in: the installed ``uptrain.conf`` package, then the
    repository's conf/ (a source checkout)."""
    import importlib.util

    roots: list[Path] = []
    try:
        spec = importlib.util.find_spec("uptrain.conf")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        roots += [Path(p) for p in (spec.submodule_search_locations or [])]
    roots.append(Path(__file__).resolve().parents[2] / "conf")
    return roots


def shipped_collection(collection: str) -> bool:
    """Whether the shipped configs hold a collection of this name (``eval_data/<name>.yaml``)."""
    return any((root / "eval_data" / f"{collection}.yaml").is_file() for root in config_roots())


def missing_file_error(collection: str, what: str, path: Path) -> DatasetUnavailableError:
    """A local collection's file is missing: say where it was looked for and how to point uptrain
    at the data (the shipped configs through UPTRAIN_DATA, the user's own through overrides or
    a config directory of their own, never by editing the installed package's files)."""
    shipped = shipped_collection(collection)
    own = "NAME" if shipped else collection
    where = (
        f"'{collection}' is a shipped collection whose paths follow UPTRAIN_DATA: set it to a folder shaped like "
        f"the project's shared data folder (raw/ and irds/ inside, see its README.md), or override its paths, e.g. "
        f"eval.collections.{collection}.docs=PATH (topics=, qrels=; path= for a BEIR folder). "
        if shipped else
        "Fix the path where this collection is configured (the command line or your own config). "
    )
    return DatasetUnavailableError(
        f"Collection '{collection}': the {what} file {str(path)!r} (absolute: {str(Path(path).absolute())!r}) "
        f"does not exist. {data_root_hint()} {where}To evaluate on a collection of your own, name its files on "
        f"the command line: '+eval.collections.{own}={{_target_: uptrain.data.TrecSource, name: {own}, "
        f"docs: /data/docs.trec, topics: /data/topics.tsv, qrels: /data/qrels.txt}}' "
        f"'eval.groups.out_of_domain=[{own}]' (uptrain.data.BeirFolderSource with path: and split: for a BEIR "
        f"folder); or write that config as DIR/eval_data/{own}.yaml in a directory of your own, add it with "
        f"--config-dir DIR (or 'hydra.searchpath=[file://DIR]') and select it with "
        f"+eval_data@eval.collections.{own}={own}."
    )


def _unique_texts(rows: Iterable[tuple[str, str]], problems: Problems, duplicate: str, empty: str) -> dict[str, str]:
    """id -> text, the first occurrence kept (the others counted as ``duplicate``), empty texts kept
    as '' (counted as ``empty``)."""
    out: dict[str, str] = {}
    for key, text in rows:
        key = str(key)
        if key in out:
            problems.note(duplicate, key)
            continue
        text = text or ""
        if not text.strip():
            problems.note(empty, key)
            text = ""
        out[key] = text
    return out


def assemble(
    name: str,
    docs: Iterable[tuple[str, str]],
    queries: Iterable[tuple[str, str]],
    qrels: Iterable[tuple[str, str, int]],
    problems: Problems | None = None,
) -> Collection:
    """Build a clean :class:`Collection`, counting (never raising on) the problems in PROBLEMS.

    ``problems`` may already hold counts from the readers (e.g. markup removed while parsing
    the documents); they are logged and recorded with the rest.
    """
    problems = problems or Problems()
    doc_map = _unique_texts(docs, problems, "duplicate_doc_ids", "empty_docs")
    query_map = _unique_texts(queries, problems, "duplicate_query_ids", "empty_queries")

    judged: dict[str, dict[str, int]] = {}
    for qid, did, rel in qrels:
        qid, did = str(qid), str(did)
        if qid not in query_map:
            problems.note("qrels_unknown_queries", f"{qid} {did}")
            continue
        if did not in doc_map:
            problems.note("qrels_unknown_docs", f"{qid} {did}")
            continue
        row = judged.setdefault(qid, {})
        if did in row:
            problems.note("duplicate_qrels", f"{qid} {did}")
            continue
        row[did] = int(rel)

    # qrels follow query order so the saved file and iteration order are stable
    ordered = {q: judged[q] for q in query_map if q in judged}
    for qid in query_map:
        if not any(r > 0 for r in ordered.get(qid, {}).values()):
            problems.note("queries_without_positives", qid)

    problems.warn(name)
    return Collection(name=name, docs=doc_map, queries=query_map, qrels=ordered, stats=dict(problems.counts))


def subsample(collection: Collection, max_queries: int | None = None, max_docs: int | None = None) -> Collection:
    """Shrink a collection for smoke runs, the same way for every source.

    Keeps the first ``max_queries`` judged queries (>= 1 positive) in id order with their
    qrels, then every document judged for those queries plus the first documents in
    corpus order until ``max_docs`` documents are kept (judged ones are never dropped).
    """
    max_queries = _check_limit("max_queries", max_queries)
    max_docs = _check_limit("max_docs", max_docs)
    if max_queries is None and max_docs is None:
        return collection

    if max_queries is None:
        kept_q = list(collection.queries)
    else:
        kept_q = sorted(collection.judged_queries(), key=natural_key)[:max_queries]
        kept_set = set(kept_q)
        # keep the corpus's own query order, only the choice uses the sorted ids
        kept_q = [q for q in collection.queries if q in kept_set]
    queries = {q: collection.queries[q] for q in kept_q}
    qrels = {q: dict(collection.qrels[q]) for q in kept_q if q in collection.qrels}

    if max_docs is None:
        docs = dict(collection.docs)
    else:
        judged_docs = {d for rels in qrels.values() for d in rels}
        room = max(0, max_docs - len(judged_docs))
        docs = {}
        for did, text in collection.docs.items():
            if did in judged_docs:
                docs[did] = text
            elif room > 0:
                docs[did] = text
                room -= 1

    stats = dict(collection.stats)
    # a text note, not a count: the report lists counts as warnings
    stats["subsampled_from"] = f"{len(collection.docs)} docs, {len(collection.queries)} queries"
    log.info(
        "%s: subsampled to %d/%d queries and %d/%d documents",
        collection.name,
        len(queries),
        len(collection.queries),
        len(docs),
        len(collection.docs),
    )
    answers = {q: list(collection.answers[q]) for q in kept_q if q in collection.answers}
    return Collection(name=collection.name, docs=docs, queries=queries, qrels=qrels, stats=stats, answers=answers)


class Source(ABC):
    """Where a collection comes from. ``load`` reads it; ``spec`` is its cache key.

    ``fields`` are the document fields joined (one space, empty ones skipped) into the
    text; ``max_queries``/``max_docs`` shrink the collection with :func:`subsample`.
    """

    kind: str = "source"

    def __init__(
        self,
        name: str,
        fields: str | Sequence[str] | None = None,
        max_queries: int | None = None,
        max_docs: int | None = None,
        relevance_map: dict | None = None,
    ):
        if not name:
            raise ValueError("a collection needs a non-empty name")
        self.name = str(name)
        self.fields = as_field_list(fields)
        self.max_queries = _check_limit("max_queries", max_queries)
        self.max_docs = _check_limit("max_docs", max_docs)
        # grade -> gain, for collections whose codes are not "higher is more relevant"
        self.relevance_map = {int(k): int(v) for k, v in relevance_map.items()} if relevance_map else None

    def spec(self) -> dict:
        """Exactly what determines the loaded collection (JSON-serialisable)."""
        return {
            "source": self.kind,
            "name": self.name,
            **self.content_spec(),
            "fields": self.fields,
            "max_queries": self.max_queries,
            "max_docs": self.max_docs,
            **({"relevance_map": {str(k): v for k, v in sorted(self.relevance_map.items())}} if self.relevance_map else {}),
        }

    def validate(self) -> None:
        """Check cheaply that the collection can be loaded (its files exist); a UserError says how to fix it."""

    def provides_answers(self) -> bool:
        """Whether the loaded collection carries gold answers (a QA collection), known without loading it."""
        return False

    def load(self) -> Collection:
        full = self.load_full()
        if self.relevance_map:
            full.qrels = {
                q: {d: self.relevance_map.get(r, r) for d, r in rels.items()} for q, rels in full.qrels.items()
            }
        log.info("%s: loaded %s", self.name, full.summary())
        return subsample(full, self.max_queries, self.max_docs)

    @abstractmethod
    def content_spec(self) -> dict:
        """What identifies the underlying data (dataset ID, file fingerprints)."""

    @abstractmethod
    def load_full(self) -> Collection:
        """The whole collection, cleaned by :func:`assemble`, before subsampling."""

    def __repr__(self) -> str:
        # spec() may read files, so the repr stays cheap
        return f"{type(self).__name__}(name={self.name!r})"
