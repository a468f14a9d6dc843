"""Append-only JSONL shards with per-record commits, so a killed annotation loses nothing done.

Each record is one line written with a single ``write`` and fsync'd. A process killed
in the middle of a line leaves a torn last line; the reader drops it (and truncates
the file to the last complete line), so the next run redoes only that query.

:func:`run_sharded` is the one resumable loop of the annotator stages (annotation, REPLUG
scoring, the LLM test collection): the items not yet committed, in batches, one record
per item, then every record in order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

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


def _item_id(item: Any) -> str:
    return item if isinstance(item, str) else item.query_id


def run_sharded(
    directory: Path,
    items: Sequence[Any],
    batch_size: int,
    process_batch: Callable[[list], list[dict]],
    desc: str,
    what: str | None = None,
    out: Path | None = None,
    key: Callable[[Any], str] = _item_id,
    time_key: str | None = "seconds",
) -> list[dict]:
    """Process the items not yet committed to the shards in ``directory``, then return every item's record.

    ``items`` are query ids or objects with a ``query_id`` (``key`` says otherwise); batches of
    ``batch_size`` pending items go to ``process_batch``, which returns one record (with the
    item's ``query_id``) per item, in order; each record is committed before the next batch
    starts, with the batch's seconds per item under ``time_key`` (None: no timing). Nothing
    is processed (so no model is loaded) when every item is already done. The records come
    back in the order of ``items`` (:func:`collect`, written to ``out`` when given); ``desc``
    labels the progress bar and the resume message, ``what`` the error of a missing record.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    ids = [key(item) for item in items]
    left = set(pending(directory, ids, desc))
    todo = [item for item, i in zip(items, ids) if i in left]
    if todo:
        writer = ShardWriter(directory)
        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="q", desc=desc, dynamic_ncols=True)
        tokens, t0 = 0, time.time()
        try:
            for start in range(0, len(todo), int(batch_size)):
                batch = todo[start : start + int(batch_size)]
                b0 = time.time()
                records = process_batch(batch)
                if [r.get("query_id") for r in records] != [key(item) for item in batch]:
                    raise RuntimeError(f"{desc}: a batch returned records for {[r.get('query_id') for r in records]}, "
                                       f"not for {[key(item) for item in batch]}")
                per_item = (time.time() - b0) / len(batch)
                for record in records:
                    if time_key:
                        record[time_key] = round(per_item, 3)
                    writer.append(record)
                    tokens += int(record.get("prompt_tokens", 0)) + int(record.get("output_tokens", 0))
                bar.update(len(batch))
                bar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
        finally:
            writer.close()
            bar.close()
    return collect(directory, ids, what or desc, out)
