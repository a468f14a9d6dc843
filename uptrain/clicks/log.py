"""One in-memory model of a click log, in arrays so that click models fit it vectorised.

A log is a sequence of sessions (one SERP each): a query key, the ranked document ids
shown, the clicked ranks in click order (a document clicked twice appears twice: repeated
clicks are kept, never collapsed) and optional click times. Query and document texts are
kept when the source has them (the TREC Session Track and TianGong-ST logs do).

Arrays (``n`` sessions, ``R`` ranks, ranks 0-based in memory):

``query``         (n,) int    index into ``queries`` (the query keys)
``docs``          (n, R) int  index into ``doc_ids``; -1 where the SERP is shorter than R
``click_ranks``   flat int    clicked ranks in click order, session s owns
                              ``click_ranks[click_offsets[s]:click_offsets[s + 1]]``
``click_times``   flat float  the time of each click (None when the log has none)

``clicked`` (n, R) bool is derived: a rank with one or more clicks. Click models read it;
``click_counts`` keeps the repeats. uptrain's own file format is JSONL, one session per
line, ranks 1-based as people count them::

    {"session_id": "s1", "query": "q7", "docs": ["d1", ..., "d10"], "clicks": [2, 1, 2],
     "times": [3.1, 9.0, 20.5], "query_text": "...", "doc_texts": ["...", ...]}

(``times``, ``query_text``, ``doc_texts``, ``session_id`` and ``topic`` optional; ``topic`` is the
query's topic id where the log has one, e.g. the TREC Session Track's ``<topic num>``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from uptrain.errors import DataFormatError, UserError

log = logging.getLogger("uptrain")


class ClickLogError(DataFormatError):
    """A click log that cannot be read (a malformed line, an unknown format): said in one paragraph."""


@dataclass
class Session:
    """One SERP: the query key, the documents shown (rank order) and the clicked ranks (0-based, click order)."""

    query: str
    docs: Sequence[str]
    clicks: Sequence[int] = ()
    times: Sequence[float] | None = None
    session_id: str | None = None


@dataclass
class LogStats:
    """What a reader or builder met that was not a clean session: counted, reported, not fatal."""

    sessions: int = 0
    short_serps: int = 0  # fewer results than the log's ranks (padded)
    long_serps: int = 0  # more results than the log's ranks (cut to the first R)
    clicks_not_shown: int = 0  # clicks on a rank or document that was not shown (dropped)
    duplicate_sessions: int = 0  # a session id seen before (dropped)
    empty_serps: int = 0  # sessions without results (dropped)
    malformed_lines: int = 0  # lines a reader could not parse (dropped)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def problems(self) -> dict[str, int]:
        return {k: v for k, v in self.as_dict().items() if k != "sessions" and v}

    def warn(self, where: str) -> None:
        problems = self.problems()
        if problems:
            log.warning("%s: %s", where, ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in problems.items()))


class ClickLog:
    """Sessions as arrays (see the module docstring); build one with :class:`ClickLogBuilder`."""

    def __init__(
        self,
        queries: Sequence[str],
        doc_ids: Sequence[str],
        query: np.ndarray,
        docs: np.ndarray,
        click_ranks: np.ndarray,
        click_offsets: np.ndarray,
        click_times: np.ndarray | None = None,
        session_ids: Sequence[str] | None = None,
        query_text: Mapping[str, str] | None = None,
        doc_text: Mapping[str, str] | None = None,
        stats: LogStats | None = None,
        query_topic: Mapping[str, str] | None = None,
    ):
        self.queries = list(queries)
        self.doc_ids = list(doc_ids)
        self.query = np.asarray(query, dtype=np.int64)
        self.docs = np.asarray(docs, dtype=np.int64)
        if self.docs.ndim != 2 or len(self.docs) != len(self.query):
            raise ValueError(f"docs must be (sessions, ranks), got {self.docs.shape} for {len(self.query)} sessions")
        self.click_ranks = np.asarray(click_ranks, dtype=np.int64)
        self.click_offsets = np.asarray(click_offsets, dtype=np.int64)
        if len(self.click_offsets) != len(self.query) + 1:
            raise ValueError("click_offsets must have one entry per session plus one")
        self.click_times = None if click_times is None else np.asarray(click_times, dtype=np.float64)
        self.session_ids = list(session_ids) if session_ids is not None else None
        self.query_text = dict(query_text or {})
        self.doc_text = dict(doc_text or {})
        self.stats = stats or LogStats(sessions=len(self.query))
        self.query_topic = dict(query_topic or {})  # query key -> topic id (judged topics), when the log has them
        self._clicked: np.ndarray | None = None
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ---- shape -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.query)

    @property
    def n_ranks(self) -> int:
        return self.docs.shape[1]

    @property
    def shown(self) -> np.ndarray:
        """(n, R) bool: a document was shown at the rank."""
        return self.docs >= 0

    @property
    def clicked(self) -> np.ndarray:
        """(n, R) bool: the rank was clicked at least once."""
        if self._clicked is None:
            out = np.zeros(self.docs.shape, dtype=bool)
            sess = np.repeat(np.arange(len(self)), np.diff(self.click_offsets))
            out[sess, self.click_ranks] = True
            self._clicked = out
        return self._clicked

    @property
    def click_counts(self) -> np.ndarray:
        """(n, R) int: clicks per rank, repeated clicks counted."""
        out = np.zeros(self.docs.shape, dtype=np.int64)
        sess = np.repeat(np.arange(len(self)), np.diff(self.click_offsets))
        np.add.at(out, (sess, self.click_ranks), 1)
        return out

    @property
    def n_clicks(self) -> int:
        return len(self.click_ranks)

    def frequencies(self) -> dict[str, int]:
        """Query key -> sessions in this log (its frequency)."""
        counts = np.bincount(self.query, minlength=len(self.queries))
        return {q: int(c) for q, c in zip(self.queries, counts) if c}

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, R) int pair index per (session, rank) (-1 where nothing was shown), and per pair its
        query index and document index: the parameter layout of every (query, document) model."""
        if self._pairs is None:
            n, r = self.docs.shape
            shown = self.shown
            key = np.where(shown, self.query[:, None] * (len(self.doc_ids) + 1) + self.docs, -1)
            flat = key[shown]
            uniq, inv = np.unique(flat, return_inverse=True)
            index = np.full((n, r), -1, dtype=np.int64)
            index[shown] = inv
            self._pairs = (index, uniq // (len(self.doc_ids) + 1), uniq % (len(self.doc_ids) + 1))
        return self._pairs

    # ---- sessions ----------------------------------------------------------------------
    def session(self, s: int) -> Session:
        a, b = self.click_offsets[s], self.click_offsets[s + 1]
        return Session(
            query=self.queries[self.query[s]],
            docs=[self.doc_ids[d] for d in self.docs[s] if d >= 0],
            clicks=[int(r) for r in self.click_ranks[a:b]],
            times=None if self.click_times is None else [float(t) for t in self.click_times[a:b]],
            session_id=None if self.session_ids is None else self.session_ids[s],
        )

    def sessions(self) -> Iterator[Session]:
        for s in range(len(self)):
            yield self.session(s)

    def subset(self, index: Sequence[int] | np.ndarray) -> "ClickLog":
        """The sessions at ``index`` (in that order), sharing the key and document tables."""
        index = np.asarray(index, dtype=np.int64)
        counts = np.diff(self.click_offsets)[index]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        starts = self.click_offsets[index]
        take = (np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])) if len(index) else np.zeros(0, np.int64)
        return ClickLog(
            self.queries, self.doc_ids, self.query[index], self.docs[index], self.click_ranks[take], offsets,
            None if self.click_times is None else self.click_times[take],
            None if self.session_ids is None else [self.session_ids[i] for i in index],
            self.query_text, self.doc_text, LogStats(sessions=len(index)), query_topic=self.query_topic,
        )

    def split(self, test_fraction: float = 0.25, by: str = "query") -> tuple["ClickLog", "ClickLog"]:
        """(train, test) by session order.

        ``by="query"`` (default): the last ``test_fraction`` of each query's sessions are its test
        sessions (a query with one session stays in train), so every test query is seen in
        training, whatever order the file lists sessions in (PyClick's Yandex sample groups them
        by query: a global cut would put whole queries in the test log). ``by="session"``: the
        last ``test_fraction`` of all sessions.
        """
        if not 0 < test_fraction < 1:
            raise ClickLogError(f"clicks.test_fraction must be in (0, 1), got {test_fraction}")
        if by == "session":
            cut = int(round(len(self) * (1 - test_fraction)))
            if cut <= 0 or cut >= len(self):
                raise ClickLogError(f"a log of {len(self)} sessions cannot be split at test fraction {test_fraction}")
            return self.subset(np.arange(cut)), self.subset(np.arange(cut, len(self)))
        if by != "query":
            raise ClickLogError(f"clicks.split must be 'query' or 'session', got {by!r}")
        order = np.argsort(self.query, kind="stable")  # sessions grouped by query, in log order within
        counts = np.bincount(self.query, minlength=len(self.queries))
        starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
        position = np.empty(len(self), dtype=np.int64)
        position[order] = np.arange(len(self)) - np.repeat(starts, counts)
        n_test = np.floor(counts * test_fraction + 0.5).astype(np.int64)
        n_test = np.where(counts > 1, np.minimum(n_test, counts - 1), 0)
        is_test = position >= (counts - n_test)[self.query]
        if not is_test.any() or is_test.all():
            raise ClickLogError(f"a log of {len(self)} sessions cannot be split at test fraction {test_fraction}")
        return self.subset(np.nonzero(~is_test)[0]), self.subset(np.nonzero(is_test)[0])

    def summary(self) -> dict:
        freq = np.bincount(self.query, minlength=len(self.queries))
        return {
            "sessions": len(self),
            "queries": int((freq > 0).sum()),
            "documents": int(len(np.unique(self.docs[self.shown]))) if len(self) else 0,
            "ranks": self.n_ranks,
            "clicks": self.n_clicks,
            "sessions_with_clicks": int(self.clicked.any(axis=1).sum()),
            "repeated_clicks": int(self.n_clicks - self.clicked.sum()),
            "ctr_at": [round(float(x), 6) for x in self.clicked.mean(axis=0)] if len(self) else [],
            "has_text": bool(self.query_text or self.doc_text),
            "problems": self.stats.problems(),
        }

    # ---- uptrain's JSONL format --------------------------------------------------------
    def write_jsonl(self, path: str | Path) -> None:
        """One session per line (ranks 1-based); written to a temp file, then renamed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for s in range(len(self)):
                sess = self.session(s)
                row: dict = {}
                if sess.session_id is not None:
                    row["session_id"] = sess.session_id
                row["query"] = sess.query
                row["docs"] = list(sess.docs)
                row["clicks"] = [r + 1 for r in sess.clicks]
                if sess.times is not None:
                    row["times"] = [None if t != t else t for t in sess.times]  # NaN (unknown) -> null
                if sess.query in self.query_text:
                    row["query_text"] = self.query_text[sess.query]
                if sess.query in self.query_topic:
                    row["topic"] = self.query_topic[sess.query]
                if self.doc_text and any(d in self.doc_text for d in sess.docs):
                    row["doc_texts"] = [self.doc_text.get(d, "") for d in sess.docs]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)


@dataclass
class ClickLogBuilder:
    """Collects sessions one at a time (readers), counting what is not clean, then builds a :class:`ClickLog`.

    ``ranks``: SERP length (10 by default; None takes the longest SERP seen). A shorter SERP
    is padded (counted), a longer one cut to ``ranks`` (counted, with clicks below the cut
    dropped and counted). A click on a rank that was not shown is dropped and counted.
    """

    ranks: int | None = 10
    dedupe_sessions: bool = True
    stats: LogStats = field(default_factory=LogStats)
    _queries: dict[str, int] = field(default_factory=dict)
    _docs: dict[str, int] = field(default_factory=dict)
    _q: list[int] = field(default_factory=list)
    _serps: list[list[int]] = field(default_factory=list)
    _clicks: list[int] = field(default_factory=list)
    _counts: list[int] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _has_times: bool = False
    _ids: list[str | None] = field(default_factory=list)
    _seen: set = field(default_factory=set)
    query_text: dict[str, str] = field(default_factory=dict)
    doc_text: dict[str, str] = field(default_factory=dict)
    query_topic: dict[str, str] = field(default_factory=dict)

    def add(self, session: Session) -> bool:
        """Add one session; False when it was dropped (empty SERP, duplicate id)."""
        docs = [str(d) for d in session.docs]
        if not docs:
            self.stats.empty_serps += 1
            return False
        if session.session_id is not None and self.dedupe_sessions:
            if session.session_id in self._seen:
                self.stats.duplicate_sessions += 1
                return False
            self._seen.add(session.session_id)
        if self.ranks is not None:
            if len(docs) < self.ranks:
                self.stats.short_serps += 1
            elif len(docs) > self.ranks:
                self.stats.long_serps += 1
                docs = docs[: self.ranks]
        self._q.append(self._queries.setdefault(str(session.query), len(self._queries)))
        self._serps.append([self._docs.setdefault(d, len(self._docs)) for d in docs])
        times = list(session.times) if session.times is not None else None
        if times is not None:
            self._has_times = True
        kept = 0
        for i, r in enumerate(session.clicks):
            r = int(r)
            if not 0 <= r < len(docs):
                self.stats.clicks_not_shown += 1
                continue
            self._clicks.append(r)
            self._times.append(float(times[i]) if times is not None and i < len(times) else float("nan"))
            kept += 1
        self._counts.append(kept)
        self._ids.append(session.session_id)
        self.stats.sessions += 1
        return True

    def extend(self, sessions: Iterable[Session]) -> "ClickLogBuilder":
        for s in sessions:
            self.add(s)
        return self

    def build(self) -> ClickLog:
        n = len(self._q)
        width = self.ranks if self.ranks is not None else max((len(s) for s in self._serps), default=0)
        docs = np.full((n, width), -1, dtype=np.int64)
        for i, serp in enumerate(self._serps):
            docs[i, : len(serp)] = serp
        offsets = np.concatenate([[0], np.cumsum(np.asarray(self._counts, dtype=np.int64))]).astype(np.int64)
        ids = self._ids if any(i is not None for i in self._ids) else None
        if ids is not None:
            ids = [i if i is not None else f"s{k}" for k, i in enumerate(ids)]
        return ClickLog(
            list(self._queries), list(self._docs), np.asarray(self._q, dtype=np.int64), docs,
            np.asarray(self._clicks, dtype=np.int64), offsets,
            np.asarray(self._times, dtype=np.float64) if self._has_times else None,
            ids, self.query_text, self.doc_text, self.stats, query_topic=self.query_topic,
        )


def from_arrays(
    query: np.ndarray,
    docs: np.ndarray,
    clicked: np.ndarray,
    queries: Sequence[str],
    doc_ids: Sequence[str],
    **kwargs,
) -> ClickLog:
    """A log from a (n, R) click matrix (one click per clicked rank, in rank order): the simulator's form."""
    clicked = np.asarray(clicked, dtype=bool) & (np.asarray(docs) >= 0)
    sess, ranks = np.nonzero(clicked)  # row-major: sessions in order, ranks ascending
    offsets = np.concatenate([[0], np.cumsum(clicked.sum(axis=1))]).astype(np.int64)
    return ClickLog(queries, doc_ids, query, docs, ranks.astype(np.int64), offsets, **kwargs)
