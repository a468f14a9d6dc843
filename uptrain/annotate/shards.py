"""Append-only JSONL shards with per-record commits, so a killed annotation loses nothing done.

Each record is one line written with a single ``write`` and fsync'd. A process killed
in the middle of a line leaves a torn last line; the reader drops it (and truncates
the file to the last complete line), so the next run redoes only that query.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

log = logging.getLogger("uptrain")


class ShardWriter:
    def __init__(self, directory: Path, records_per_shard: int = 1000):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.records_per_shard = int(records_per_shard)
        self._fh = None
        self._count = 0

    def _open_next(self) -> None:
        if self._fh:
            self._fh.close()
        n = len(list(self.directory.glob("shard-*.jsonl")))
        self._fh = open(self.directory / f"shard-{n:05d}.jsonl", "a", encoding="utf-8")
        self._count = 0

    def append(self, record: dict) -> None:
        if self._fh is None or self._count >= self.records_per_shard:
            self._open_next()
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._count += 1

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


def read_shards(directory: Path, repair: bool = True) -> Iterator[dict]:
    """Every complete record of every shard, in order; a torn last line is dropped (and cut off)."""
    directory = Path(directory)
    for shard in sorted(directory.glob("shard-*.jsonl")):
        good_bytes = 0
        with open(shard, "rb") as f:
            data = f.read()
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
            yield record
        if repair and good_bytes < len(data):
            with open(shard, "r+b") as f:
                f.truncate(good_bytes)


def collect(directory: Path, query_ids: list[str], what: str, out: Path | None = None) -> list[dict]:
    """The committed record of every query, in the given order (RuntimeError naming ``what`` if
    one is missing); with ``out``, also written there as one JSONL file."""
    records = {r["query_id"]: r for r in read_shards(directory)}
    missing = [q for q in query_ids if q not in records]
    if missing:
        raise RuntimeError(f"{what} incomplete: {len(missing)} queries missing, e.g. {missing[:3]}")
    ordered = [records[q] for q in query_ids]
    if out is not None:
        with open(out, "w", encoding="utf-8") as f:
            for r in ordered:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return ordered


def pending(directory: Path, query_ids: list[str], what: str) -> list[str]:
    """The query ids not yet committed to the shards, in order; says so when resuming."""
    done = {r["query_id"] for r in read_shards(directory)}
    if done:
        log.info("[%s] resuming: %d of %d queries already done", what, len(done & set(query_ids)), len(query_ids))
    return [q for q in query_ids if q not in done]
