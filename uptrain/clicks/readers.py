"""Click-log readers: a file in one of four formats becomes a :class:`~uptrain.clicks.log.ClickLog`.

Every reader streams its file into a :class:`~uptrain.clicks.log.ClickLogBuilder`, so what is
not a clean session is counted in the log's :class:`~uptrain.clicks.log.LogStats` (and warned
once per file), and notes particular to a format are counted in a ``reader_notes`` dict set on
the returned log (warned too when non-zero). A session is one SERP: a query key, the documents
shown in rank order, and the clicked ranks in click order. Repeated clicks on one document are
kept (Chuklin, Markov, de Rijke, "Click Models for Web Search", 2015, Ch. 2: a click log is the
sequence of these events; PyClick's old Yandex reader collapsed repeats, this one does not).
Ranks are 0-based in memory, whatever the file says. Files may be gzip-compressed (told by their
first bytes); a file over ``PROGRESS_BYTES`` (50 MB) shows a progress bar when tqdm is installed.

Formats (``READERS`` names them; :func:`read_log` dispatches, :func:`detect_format` sniffs):

``pyclick_yandex``
    The aggregated Yandex WSCD sample that PyClick ships (``trainSample``): one line per query,
    ``<queryId>_<region>\\t<10 comma-separated result ids> : <clicked ids in click order>;``
    repeated per session with ``;`` separators (an empty click list is a session without clicks).
    Query key ``<queryId>_<region>`` as written; a clicked id becomes the rank of that id in that
    SERP (its first rank if the SERP shows it twice: counted as ``serps_with_repeated_docs``).
    No session ids, no times. A session record that cannot be parsed counts as a malformed line.
``wscd2011``
    The raw Yandex WSCD 2011 relevance-prediction log, tab-separated, one action per line:
    ``SessionID TimePassed Q QueryID RegionID URL1 ... URL10`` (a query: one SERP) and
    ``SessionID TimePassed C URLID`` (a click). Query key ``QueryID_RegionID`` (the form of
    ``pyclick_yandex``). The k-th Q line of a session (k from 0) is the session ``SessionID:k``;
    a click belongs to the most recent SERP of its SessionID that showed the URL, with time
    TimePassed. Streamed: lines of one SessionID are contiguous in the real log, and one session's
    lines are held at a time. A SessionID that comes back after another session is counted
    (``sessions_not_contiguous``); its SERPs go on numbering, but its clicks can reach only the
    SERPs of its new group.
``session_xml``
    The TREC Session Track session XML, which TianGong-ST follows:
    ``<session num><topic num/><interaction num><query_id?/><query/><results><result rank>
    <clueweb09id|docid/><url/><title/><snippet/></result>...</results><clicked><click num
    starttime endtime><rank/></click>...</clicked></interaction>...<currentquery/></session>``.
    One interaction is one SERP, session id ``"<session num>:<interaction num>"``. Query key: the
    ``<query_id>`` text when present (TianGong-ST), else the query text lower-cased with whitespace
    collapsed (``key_by_topic=True`` prefixes ``"<topic>/"`` so that one text typed for two topics
    gives two keys). Texts: ``query_text`` (the query as typed), ``doc_text`` (``title + " " +
    snippet``, the first seen: snippets depend on the query, so later differing ones are counted as
    ``doc_text_variants``), ``query_topic`` (key -> topic num; a key met under a second topic keeps
    the first, counted as ``query_topic_conflicts``). XML ranks are 1-based. Click times are the
    click's ``starttime`` in seconds (``HH:MM:SS.ffffff`` or a number). ``<currentquery>`` (the
    last query of a session, shown no results) is not a SERP: counted as ``currentquery_skipped``.
    Entities left escaped in the text (``&amp;amp;`` in the 2012 file) are decoded
    (``texts_unescaped``). Results are put in rank order; a SERP whose ranks are not 1..n is
    counted (``serps_ranks_not_1_to_n``) and its clicks matched by rank. A click naming its
    document instead of a rank is matched by document; a click without a time gets NaN
    (``click_times_missing``). A result without a document id counts as a malformed line. Plain
    counts of the file: ``session_elements``, ``interactions`` (SERPs with no result are dropped
    by the builder as ``empty_serps``).
``jsonl``
    uptrain's own format, the inverse of :meth:`ClickLog.write_jsonl`: one session per line,
    ``{"session_id", "query", "docs", "clicks" (1-based), "times" (null = unknown), "query_text",
    "doc_texts", "topic"}``, only ``query`` and ``docs`` required. A line that is not JSON or lacks
    them is malformed (its line number is in the warning).

Counted by every reader (``log.stats``): ``short_serps`` / ``long_serps`` (fewer / more results
than ``ranks``: padded / cut), ``clicks_not_shown`` (a click on a document or rank the SERP did
not show, or below the cut: dropped), ``duplicate_sessions`` (a session id seen before: dropped),
``empty_serps`` (no results: dropped), ``malformed_lines`` (dropped). When more than half of a
file's records are malformed the file is probably in another format: :class:`ClickLogError`.

Judgments: :func:`read_judgments` reads TREC qrels (``topic 0 docid grade``) and
:func:`judgments_for_log` maps the log's shown (query, document) pairs to them through
``query_topic``.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import inspect
import io
import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from uptrain.clicks.log import ClickLog, ClickLogBuilder, ClickLogError, Session

log = logging.getLogger("uptrain")

READERS: dict[str, Callable[..., ClickLog]] = {}
PROGRESS_BYTES = 50 * 2**20  # files above this size show a progress bar (when tqdm is installed)
_SNIFF_BYTES = 2**20
_EXAMPLES = 5  # malformed records quoted by line number in the warning


def register(name: str) -> Callable[[Callable[..., ClickLog]], Callable[..., ClickLog]]:
    """Add a reader to :data:`READERS` under ``name`` (the value of ``format=``)."""

    def add(fn: Callable[..., ClickLog]) -> Callable[..., ClickLog]:
        READERS[name] = fn
        return fn

    return add


# ---- files -------------------------------------------------------------------------------
def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ClickLogError(f"click log {path} does not exist: check the path (clicks.train / clicks.test)")
    if not path.is_file():
        raise ClickLogError(f"click log {path} is not a file")
    if path.stat().st_size == 0:
        raise ClickLogError(f"click log {path} is empty: there are no sessions to read")
    return path


class _Source:
    """A file opened as bytes (gzip by its magic number) with a progress bar over its size."""

    def __init__(self, path: Path, desc: str, progress: bool = True):
        self.path = path
        self.raw = open(path, "rb")
        compressed = self.raw.read(2) == b"\x1f\x8b"
        self.raw.seek(0)
        self.binary = gzip.GzipFile(fileobj=self.raw) if compressed else self.raw
        self._last = 0
        self.bar = None
        size = path.stat().st_size
        if progress and size > PROGRESS_BYTES:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # optional: the reading is the same without it
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=size, unit="B", unit_scale=True, desc=desc, leave=False)

    def tick(self) -> None:
        if self.bar is not None:
            pos = self.raw.tell()
            self.bar.update(pos - self._last)
            self._last = pos

    def lines(self) -> Iterator[tuple[int, str]]:
        """(line number from 1, line without its newline), ticking the bar now and then."""
        text = io.TextIOWrapper(self.binary, encoding="utf-8", newline=None)
        lineno = 0
        try:
            for lineno, line in enumerate(text, 1):
                if lineno % 8192 == 0:
                    self.tick()
                if not line.endswith("\n"):
                    log.warning("%s does not end with a newline: if the file was cut short, its last line (%d) "
                                "is incomplete", self.path, lineno)
                yield lineno, line.rstrip("\n")
        except UnicodeDecodeError as e:
            raise ClickLogError(f"{self.path}: not UTF-8 text after line {lineno} ({e.reason}): is it a click log?") from e
        except (EOFError, OSError) as e:  # gzip: truncated or damaged
            raise ClickLogError(f"{self.path}: a damaged or truncated gzip file after line {lineno} ({e}); "
                                "decompress it to check, or fetch it again") from e
        finally:
            with contextlib.suppress(ValueError):
                text.detach()  # the file is closed by close(), not by the wrapper's garbage collection

    def close(self) -> None:
        if not self.raw.closed:
            self.tick()
        if self.bar is not None:
            self.bar.close()
        self.raw.close()

    def __enter__(self) -> "_Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(path: Path) -> str:
    """The first non-empty line (at most ~1 MB of it), for sniffing."""
    head = b""
    with _Source(path, "sniff", progress=False) as src:
        while True:
            chunk = src.binary.read(_SNIFF_BYTES)
            head += chunk
            text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
            if not chunk or len(head) >= _SNIFF_BYTES or (text and "\n" in text):
                break
    if not text:
        raise ClickLogError(f"click log {path} is empty (only whitespace): there are no sessions to read")
    return text.split("\n", 1)[0].rstrip("\r")


def _formats() -> str:
    return ", ".join(sorted(READERS))


def detect_format(path: str | Path) -> str:
    """The format of a click log, from its first non-empty line.

    ``<`` opens ``session_xml``; ``{`` opens ``jsonl``; tab-separated fields with ``Q`` or ``C``
    third and a number second are ``wscd2011``; ``key<TAB>id,id,... :`` is ``pyclick_yandex``.
    """
    path = _check_file(path)
    line = _first_line(path)
    if line.startswith("<"):
        return "session_xml"
    if line.startswith("{"):
        return "jsonl"
    fields = line.split("\t")
    if len(fields) >= 4 and fields[2] in ("Q", "C") and _number(fields[1]) is not None:
        return "wscd2011"
    if re.match(r"[^\t;]+\t[^\t:;]+:", line):
        return "pyclick_yandex"
    raise ClickLogError(
        f"cannot tell the format of click log {path} from its first line ({line[:80]!r}...): "
        f"pass it as format=NAME (read_log(path, format=...) or clicks.format=...), one of {_formats()}"
    )


def read_log(path: str | Path, format: str = "auto", ranks: int | None = 10, **options) -> ClickLog:
    """Read a click log. ``format="auto"`` sniffs it (:func:`detect_format`); ``ranks`` is the SERP
    length kept (None: the longest seen); ``options`` go to the format's reader."""
    path = _check_file(path)
    if format == "auto":
        format = detect_format(path)
    reader = READERS.get(format)
    if reader is None:
        raise ClickLogError(f"unknown click-log format {format!r}: use one of {_formats()}, or 'auto' to detect it")
    try:
        inspect.signature(reader).bind(path, ranks=ranks, **options)
    except TypeError as e:
        allowed = [p for p in inspect.signature(reader).parameters if p not in ("path", "ranks")]
        raise ClickLogError(
            f"format {format!r} does not take the options {sorted(options)} ({e}); its options: {allowed or 'none'}"
        ) from e
    return reader(path, ranks=ranks, **options)


# ---- shared bookkeeping --------------------------------------------------------------------
class _Malformed:
    """Counts malformed records into the builder's stats and keeps the first few for the warning."""

    def __init__(self, builder: ClickLogBuilder):
        self.builder = builder
        self.examples: list[str] = []

    def __call__(self, where: int | str, why: str) -> None:
        """``where``: a line number, or a place in words (an XML element)."""
        self.builder.stats.malformed_lines += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{'line ' if isinstance(where, int) else ''}{where}: {why}")

    @property
    def count(self) -> int:
        return self.builder.stats.malformed_lines


def _finish(
    builder: ClickLogBuilder, path: Path, fmt: str, bad: _Malformed, records: int, notes: dict, info: dict | None = None
) -> ClickLog:
    """Raise if the file is mostly not this format; warn once; build; attach the reader's notes
    (``notes``: what was skipped or chosen, warned when non-zero; ``info``: plain counts of the file)."""
    if bad.count * 2 > records or (records == 0 and fmt != "session_xml"):
        raise ClickLogError(
            f"{path}: {bad.count} of {records} records are not {fmt} ({'; '.join(bad.examples) or 'no records found'}): "
            f"it is probably another format; pass format=NAME, one of {_formats()}"
        )
    if bad.examples:
        log.warning("%s: %d malformed records dropped (%s%s)", path, bad.count, "; ".join(bad.examples),
                    ", ..." if bad.count > len(bad.examples) else "")
    builder.stats.warn(str(path))
    noted = {k: v for k, v in notes.items() if v}
    if noted:
        log.warning("%s: %s", path, ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in noted.items()))
    out = builder.build()
    out.reader_notes = {**(info or {}), **notes}
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _first_ranks(docs: Sequence[str]) -> tuple[dict[str, int], bool]:
    """id -> its first rank, and whether some id is shown twice."""
    index: dict[str, int] = {}
    for r, d in enumerate(docs):
        index.setdefault(d, r)
    return index, len(index) != len(docs)


# ---- pyclick_yandex ------------------------------------------------------------------------
@register("pyclick_yandex")
def read_pyclick_yandex(path: str | Path, ranks: int | None = 10) -> ClickLog:
    """PyClick's aggregated Yandex WSCD sample (see the module docstring)."""
    path = _check_file(path)
    builder = ClickLogBuilder(ranks=ranks)
    bad = _Malformed(builder)
    records = 0
    notes = {"serps_with_repeated_docs": 0}
    with _Source(path, path.name) as src:
        for lineno, line in src.lines():
            for record in line.split(";"):
                record = record.strip()
                if not record:
                    continue
                records += 1
                key, tab, rest = record.partition("\t")
                serp, colon, clicked = rest.partition(":")
                docs = [d.strip() for d in serp.split(",")]
                key = key.strip()
                if not tab or not colon or not key or not all(docs):
                    bad(lineno, f"{record[:60]!r} is not 'key<TAB>id,...,id : id , id'")
                    continue
                index, repeated = _first_ranks(docs)
                notes["serps_with_repeated_docs"] += repeated
                clicks = []
                for c in clicked.split(","):
                    c = c.strip()
                    if not c:
                        continue
                    r = index.get(c)
                    if r is None:
                        builder.stats.clicks_not_shown += 1
                    else:
                        clicks.append(r)
                builder.add(Session(query=key, docs=docs, clicks=clicks))
    return _finish(builder, path, "pyclick_yandex", bad, records, notes)


# ---- wscd2011 ------------------------------------------------------------------------------
@register("wscd2011")
def read_wscd2011(path: str | Path, ranks: int | None = 10) -> ClickLog:
    """The raw Yandex WSCD 2011 relevance-prediction log (see the module docstring)."""
    path = _check_file(path)
    builder = ClickLogBuilder(ranks=ranks)
    bad = _Malformed(builder)
    records = 0
    notes = {"sessions_not_contiguous": 0, "serps_with_repeated_docs": 0}
    finished: dict[str, int] = {}  # SessionID -> SERPs numbered so far (to number a returning session on)
    current: str | None = None
    serps: list[tuple[str, list[str], dict[str, int], list[int], list[float]]] = []

    def flush() -> None:
        first = finished.get(current, 0)
        for k, (key, docs, _, clicks, times) in enumerate(serps, first):
            builder.add(Session(query=key, docs=docs, clicks=clicks, times=times, session_id=f"{current}:{k}"))
        finished[current] = first + len(serps)
        serps.clear()

    with _Source(path, path.name) as src:
        for lineno, line in src.lines():
            if not line.strip():
                continue
            records += 1
            f = line.rstrip("\r").split("\t")
            kind = f[2] if len(f) > 2 else ""
            t = _number(f[1]) if len(f) > 1 else None
            if not f[0] or t is None or not (
                (kind == "Q" and len(f) >= 6 and f[3] and f[4]) or (kind == "C" and len(f) == 4 and f[3])
            ):
                bad(lineno, f"{line[:60]!r} is neither 'SessionID TimePassed Q QueryID RegionID URL...' "
                            "nor 'SessionID TimePassed C URLID'")
                continue
            sid = f[0]
            if sid != current:
                if current is not None:
                    flush()
                if sid in finished:
                    notes["sessions_not_contiguous"] += 1
                current = sid
            if kind == "Q":
                docs = f[5].split(",") if len(f) == 6 and "," in f[5] else f[5:]  # comma-joined URLs too
                docs = [d.strip() for d in docs]
                if not all(docs):
                    bad(lineno, "an empty URL id in the SERP")
                    continue
                index, repeated = _first_ranks(docs)
                notes["serps_with_repeated_docs"] += repeated
                serps.append((f"{f[3]}_{f[4]}", docs, index, [], []))
            else:
                url = f[3].strip()
                for _, _, index, clicks, times in reversed(serps):  # the most recent SERP that showed it
                    r = index.get(url)
                    if r is not None:
                        clicks.append(r)
                        times.append(t)
                        break
                else:
                    builder.stats.clicks_not_shown += 1
        if current is not None:
            flush()
    return _finish(builder, path, "wscd2011", bad, records, notes)


# ---- session_xml ---------------------------------------------------------------------------
_CLOCK = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


def _seconds(text: str | None) -> float | None:
    """``HH:MM:SS.ffffff`` (or a plain number) in seconds; None when it is neither."""
    if text is None:
        return None
    text = text.strip()
    m = _CLOCK.match(text)
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return _number(text)


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


@register("session_xml")
def read_session_xml(
    path: str | Path,
    ranks: int | None = 10,
    doc_id_elements: Sequence[str] = ("clueweb09id", "docid"),
    key_by_topic: bool = False,
    unescape: bool = True,
) -> ClickLog:
    """TREC Session Track / TianGong-ST session XML (see the module docstring).

    ``doc_id_elements``: the child elements of ``<result>`` that hold the document id, tried in
    order (the first non-empty wins). ``key_by_topic``: query key ``"<topic>/<key>"``.
    ``unescape``: decode entities left in the text after XML parsing (``&amp;`` -> ``&``).
    """
    path = _check_file(path)
    doc_id_elements = (doc_id_elements,) if isinstance(doc_id_elements, str) else tuple(doc_id_elements)
    builder = ClickLogBuilder(ranks=ranks)
    bad = _Malformed(builder)
    notes = {
        "currentquery_skipped": 0, "doc_text_variants": 0, "query_topic_conflicts": 0,
        "serps_ranks_not_1_to_n": 0, "click_times_missing": 0, "texts_unescaped": 0,
    }
    varied: set[str] = set()
    conflicted: set[str] = set()
    records = 0
    sessions = 0

    def text(elem: ET.Element | None) -> str:
        if elem is None or elem.text is None:
            return ""
        value = elem.text.strip()
        if unescape and "&" in value:
            decoded = html.unescape(value)
            if decoded != value:
                notes["texts_unescaped"] += 1
                value = decoded
        return value

    def child(elem: ET.Element, name: str) -> ET.Element | None:
        for c in elem:
            if _local(c.tag) == name:
                return c
        return None

    def interaction(elem: ET.Element, session_num: str, topic: str | None, k: int) -> None:
        where = f"session {session_num} interaction {elem.get('num') or k}"
        query = text(child(elem, "query"))
        query_id = text(child(elem, "query_id"))
        key = query_id or " ".join(query.lower().split())
        if not key:
            bad(where, "no query")
            return
        if key_by_topic and topic is not None:
            key = f"{topic}/{key}"
        results = child(elem, "results")
        shown: list[tuple[int, int, str, str]] = []  # (rank, document order, doc id, text)
        for i, res in enumerate(results if results is not None else ()):
            if _local(res.tag) != "result":
                continue
            doc = next((v for v in (text(child(res, n)) for n in doc_id_elements) if v), "")
            rank = res.get("rank")
            if not doc or (rank is not None and not rank.strip().isdigit()):
                bad(where, f"a result with {'rank ' + repr(rank) if doc else 'no ' + '/'.join(doc_id_elements)}")
                continue
            body = " ".join(p for p in (text(child(res, "title")), text(child(res, "snippet"))) if p)
            shown.append((int(rank) if rank is not None else i + 1, i, doc, body))
        shown.sort()
        position = {rank: p for p, (rank, *_) in enumerate(shown)}
        docs = [d for _, _, d, _ in shown]
        notes["serps_ranks_not_1_to_n"] += bool(shown) and list(position) != list(range(1, len(shown) + 1))
        clicks: list[tuple[float, int, int, float]] = []  # (num, order, position, time)
        clicked = child(elem, "clicked")
        for j, click in enumerate(clicked if clicked is not None else ()):
            if _local(click.tag) != "click":
                continue
            rank_text = text(child(click, "rank"))
            if rank_text.isdigit():
                p = position.get(int(rank_text))
            else:  # a click naming its document instead of its rank
                doc = next((v for v in (text(child(click, n)) for n in doc_id_elements) if v), "")
                if not doc:
                    bad(where, "a click with neither a rank nor a document id")
                    continue
                p = docs.index(doc) if doc in docs else None
            if p is None:
                builder.stats.clicks_not_shown += 1
                continue
            t = _seconds(click.get("starttime"))
            if t is None:
                notes["click_times_missing"] += 1
                t = float("nan")
            num = _number(click.get("num") or "")
            clicks.append((num if num is not None else float(j), j, p, t))
        clicks.sort()
        sid = f"{session_num}:{elem.get('num') or k}"
        added = builder.add(
            Session(query=key, docs=docs, clicks=[c[2] for c in clicks], times=[c[3] for c in clicks], session_id=sid)
        )
        if not added:
            return
        builder.query_text.setdefault(key, query)
        if topic is not None:
            first = builder.query_topic.setdefault(key, topic)
            if first != topic and key not in conflicted:
                conflicted.add(key)
                notes["query_topic_conflicts"] += 1
        for _, _, doc, body in shown[: ranks if ranks is not None else None]:
            if not body:
                continue
            first = builder.doc_text.setdefault(doc, body)
            if first != body and doc not in varied:
                varied.add(doc)
                notes["doc_text_variants"] += 1

    with _Source(path, path.name) as src:
        stack: list[ET.Element] = []
        session_num, topic, k = "", None, 0
        try:
            for event, elem in ET.iterparse(src.binary, events=("start", "end")):
                tag = _local(elem.tag)
                if event == "start":
                    stack.append(elem)
                    if tag == "session":
                        sessions += 1
                        session_num, topic, k = elem.get("num") or str(sessions), None, 0
                    continue
                stack.pop()
                if tag == "topic" and topic is None:
                    topic = elem.get("num") or None
                elif tag == "interaction":
                    k += 1
                    records += 1
                    interaction(elem, session_num, topic, k)
                    elem.clear()
                elif tag == "currentquery":
                    notes["currentquery_skipped"] += 1
                    elem.clear()
                elif tag == "session":
                    elem.clear()
                    if stack:
                        stack[-1].remove(elem)  # drop finished sessions: memory stays one session
                    src.tick()
        except ET.ParseError as e:
            raise ClickLogError(
                f"{path}: not well-formed XML at line {e.position[0]}, column {e.position[1]} ({e}): is it session XML?"
            ) from e
    if sessions == 0:
        raise ClickLogError(
            f"{path}: no <session> elements: not TREC Session Track / TianGong-ST session XML; "
            f"pass format=NAME, one of {_formats()}"
        )
    return _finish(builder, path, "session_xml", bad, records, notes, {"session_elements": sessions, "interactions": records})


# ---- jsonl ---------------------------------------------------------------------------------
def _ints(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


@register("jsonl")
def read_jsonl(path: str | Path, ranks: int | None = 10) -> ClickLog:
    """uptrain's JSONL (the inverse of :meth:`ClickLog.write_jsonl`; see the module docstring)."""
    path = _check_file(path)
    builder = ClickLogBuilder(ranks=ranks)
    bad = _Malformed(builder)
    records = 0
    with _Source(path, path.name) as src:
        for lineno, line in src.lines():
            if not line.strip():
                continue
            records += 1
            try:
                row = json.loads(line)
            except ValueError:
                bad(lineno, "not JSON")
                continue
            if not isinstance(row, dict) or "query" not in row or not isinstance(row.get("docs"), list):
                bad(lineno, "no 'query' and 'docs' list")
                continue
            docs = [str(d) for d in row["docs"]]
            clicks = row.get("clicks", [])
            times = row.get("times")
            texts = row.get("doc_texts")
            if not _ints(clicks):
                bad(lineno, "'clicks' is not a list of ranks")
                continue
            if times is not None and (not isinstance(times, list) or len(times) != len(clicks)
                                      or not all(t is None or isinstance(t, (int, float)) for t in times)):
                bad(lineno, "'times' is not one number (or null) per click")
                continue
            if texts is not None and (not isinstance(texts, list) or len(texts) != len(docs)):
                bad(lineno, "'doc_texts' is not one text per document")
                continue
            key = str(row["query"])
            sid = row.get("session_id")
            added = builder.add(Session(
                query=key, docs=docs, clicks=[c - 1 for c in clicks],
                times=None if times is None else [float("nan") if t is None else float(t) for t in times],
                session_id=None if sid is None else str(sid),
            ))
            if not added:
                continue
            if row.get("query_text") is not None:
                builder.query_text.setdefault(key, str(row["query_text"]))
            if row.get("topic") is not None:
                builder.query_topic.setdefault(key, str(row["topic"]))
            for d, t in zip(docs[: ranks if ranks is not None else None], texts or ()):
                if t:
                    builder.doc_text.setdefault(d, str(t))
    return _finish(builder, path, "jsonl", bad, records, {})


# ---- judgments -----------------------------------------------------------------------------
def read_judgments(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels (``topic iteration docid grade``, whitespace-separated) as topic -> doc -> grade.

    Negative grades (-2: spam in the Session Track) are kept. A malformed line is dropped and
    counted; a (topic, doc) judged twice keeps the last grade, counted; both are warned.
    """
    path = Path(path)
    if not path.is_file():
        raise ClickLogError(f"judgments file {path} does not exist: check the path")
    out: dict[str, dict[str, int]] = {}
    lines = malformed = repeated = 0
    first_bad = None
    from uptrain.data.local import _open_text  # undecodable bytes replaced, counted and warned

    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            lines += 1
            if len(fields) != 4 or not re.fullmatch(r"[+-]?\d+", fields[3]):
                malformed += 1
                first_bad = first_bad or f"line {lineno}: {line.strip()[:60]!r}"
                continue
            docs = out.setdefault(fields[0], {})
            repeated += fields[2] in docs
            docs[fields[2]] = int(fields[3])
    if lines == 0:
        raise ClickLogError(f"judgments file {path} is empty")
    if malformed * 2 > lines:
        raise ClickLogError(f"{path}: {malformed} of {lines} lines are not 'topic 0 docid grade' ({first_bad}): not TREC qrels")
    if malformed or repeated:
        log.warning("%s: %d malformed lines dropped (first %s), %d (topic, doc) pairs judged twice (last grade kept)",
                    path, malformed, first_bad, repeated)
    return out


def judgments_for_log(log_: ClickLog, judgments: Mapping[str, Mapping[str, int]]) -> tuple[dict[tuple[str, str], int], int]:
    """The grade of each shown (query key, doc id) pair of the log, looked up as (topic of the
    query, doc) in ``judgments`` (:func:`read_judgments`), and how many shown pairs have none
    (their query has no topic, or the document is not judged for it)."""
    if not log_.query_topic:
        raise ClickLogError(
            "this click log has no query topics (query_topic is empty): judgments are keyed by topic, "
            "so only a log read from session XML with <topic num> (or JSONL with a 'topic' field) can be matched"
        )
    _, pair_query, pair_doc = log_.pairs()
    grades: dict[tuple[str, str], int] = {}
    unjudged = no_topic = 0
    for q, d in zip(pair_query.tolist(), pair_doc.tolist()):
        key, doc = log_.queries[q], log_.doc_ids[d]
        topic = log_.query_topic.get(key)
        if topic is None:
            no_topic += 1
        grade = judgments.get(topic, {}).get(doc) if topic is not None else None
        if grade is None:
            unjudged += 1
        else:
            grades[(key, doc)] = int(grade)
    if no_topic:
        log.warning("%d shown (query, document) pairs belong to queries without a topic: counted as unjudged", no_topic)
    return grades, unjudged


__all__ = [
    "READERS", "detect_format", "judgments_for_log", "read_jsonl", "read_judgments", "read_log",
    "read_pyclick_yandex", "read_session_xml", "read_wscd2011", "register",
]
