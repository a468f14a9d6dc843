"""TREC run files: ``qid Q0 docid rank score tag``, one line per retrieved document.

Rankings are ordered by descending score with ties broken by ascending document
id, so the same scores always produce the same file and the same ranks; the
evaluation orders documents by the same rule (see :func:`ranked`).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

from uptrain.errors import DataFormatError

log = logging.getLogger("uptrain")

Run = dict[str, dict[str, float]]


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs best first: descending score, then ascending doc id."""
    return sorted(((d, float(s)) for d, s in scores.items()), key=lambda ds: (-ds[1], ds[0]))


def _check_token(kind: str, value: str, qid: str | None = None) -> None:
    # whitespace inside an id would shift the columns of the line
    if not value or any(c.isspace() for c in value):
        where = f" (query {qid!r})" if qid is not None else ""
        raise ValueError(f"{kind} {value!r}{where} is empty or contains whitespace; it cannot be written to a TREC run")


def write_trec_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str, depth: int | None = None) -> None:
    """Write ``run`` (query id -> doc id -> score) as a 6-column TREC run, atomically.

    Queries keep the run's order; each ranking is cut to ``depth`` documents when given.
    The file appears complete or not at all: it is written to a temporary file in the
    same directory and renamed over ``path``.
    """
    if depth is not None and (isinstance(depth, bool) or int(depth) != depth or depth < 1):
        raise ValueError(f"depth must be a positive integer or None, got {depth!r}")
    _check_token("run tag", str(tag))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for qid, scores in run.items():
                qid = str(qid)
                _check_token("query id", qid)
                ranking = ranked({str(d): s for d, s in scores.items()})
                if depth is not None:
                    ranking = ranking[: int(depth)]
                for rank, (did, score) in enumerate(ranking, start=1):
                    _check_token("document id", did, qid)
                    if math.isnan(score):
                        raise ValueError(f"score of document {did!r} for query {qid!r} is NaN")
                    f.write(f"{qid} Q0 {did} {rank} {score!r} {tag}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_trec_run(path: str | Path) -> Run:
    """Read a 6-column TREC run into query id -> doc id -> score (documents in file order).

    Raises DataFormatError (a ValueError) naming the file and line for a line that is not
    ``qid Q0 docid rank score tag`` or that repeats a (query, document) pair.
    """
    path = Path(path)
    run: Run = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: not UTF-8 text ({exc.reason}): is it a TREC run file?") from None
            if not line.strip():
                continue
            parts = line.split()
            where = f"{path}:{lineno}"
            if len(parts) != 6:
                raise DataFormatError(
                    f"{where}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}: {line.rstrip()!r}"
                )
            qid, _, did, rank, score, _tag = parts
            try:
                int(rank)
            except ValueError:
                raise DataFormatError(f"{where}: rank {rank!r} is not an integer: {line.rstrip()!r}") from None
            try:
                value = float(score)
            except ValueError:
                raise DataFormatError(f"{where}: score {score!r} is not a number: {line.rstrip()!r}") from None
            if math.isnan(value):
                raise DataFormatError(f"{where}: score is NaN: {line.rstrip()!r}")
            docs = run.setdefault(qid, {})
            if did in docs:
                raise DataFormatError(f"{where}: document {did!r} appears twice for query {qid!r}")
            docs[did] = value
    if not run:  # a system that retrieved nothing (BM25 on paraphrases, say) writes an empty run: said, not refused
        log.warning("%s holds no ranking lines: an empty run (every query scores 0)", path)
    return run
