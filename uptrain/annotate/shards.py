"""Append-only JSONL shards with per-record commits, so a killed annotation loses nothing done.

Each record is one line written with a single ``write`` and fsync'd. A process killed
in the middle of a line leaves a torn last line; the reader drops it (and truncates
the file to the last complete line), so the next run redoes only that query.

:func:`run_sharded` is the one resumable loop of the annotator stages (annotation, REPLUG
scoring, the judge, the generator, the LLM test collection): the items not yet committed, in
batches, one record per item, then every record in order.

Across jobs (``annotate.shard=K annotate.num_shards=N``, :class:`JobShard`): job K takes the
queries whose id hashes to K (the same split in every stage and every re-run), commits them to
files of its own (``shard-K-of-N-*.jsonl``) in the stage's shared work directory, and stops there
(:class:`ShardFinished`); then it tries the merge, the stage's ordinary build under the artifact's
lock, which finds every query committed and publishes the artifact, or finds some missing and
raises :class:`ShardsPending`. A job whose share is done waits for the shards other jobs are working
on (their locks), and for ``annotate.shard_wait`` seconds for one no job has started, then tries the
merge again; when a missing shard has no job, it exits saying which shards are left. So jobs that run
at once (a SLURM array) go through every sharded stage together, each doing its share, and jobs run
one after another each do their share of one stage per run; either way a finished share is never redone. A job reads the other jobs' files but repairs
(cuts a torn line from) only its own, since another job may be writing to them.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

from uptrain.errors import ConfigError, UserError

log = logging.getLogger("uptrain")


@dataclass(frozen=True)
class JobShard:
    """Job ``index`` of ``count`` jobs that split a stage's queries between them."""

    index: int
    count: int
    #: seconds a job whose share is done waits for a missing shard that no job is working on yet
    #: (``annotate.shard_wait``); a shard another job is working on is always waited for
    wait: float = 120.0

    @classmethod
    def from_config(cls, shard: Any, num_shards: Any, wait: Any = 120.0) -> "JobShard | None":
        """``annotate.shard`` / ``annotate.num_shards`` / ``annotate.shard_wait`` checked; None for one job."""
        def whole(value, name):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"annotate.{name} must be an integer, got {value!r}")
            return value

        count = 1 if num_shards is None else whole(num_shards, "num_shards")
        if count < 1:
            raise ConfigError(f"annotate.num_shards must be at least 1, got {count}")
        if shard is None:
            if count > 1:
                raise ConfigError(f"annotate.num_shards={count} needs annotate.shard=K (0..{count - 1}): the shard "
                                  "this job annotates; a sweep runs them all: annotate.shard=" + ",".join(
                                      str(k) for k in range(min(count, 4))) + ("..." if count > 4 else ""))
            return None
        index = whole(shard, "shard")
        if not 0 <= index < count:
            raise ConfigError(f"annotate.shard={index} is outside 0..{count - 1} (annotate.num_shards={count})")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ConfigError(f"annotate.shard_wait must be a number of seconds >= 0, got {wait!r}")
        return cls(index, count, float(wait)) if count > 1 else None

    @property
    def tag(self) -> str:
        return f"{self.index}-of-{self.count}"

    def lock_name(self, key: str, index: int | None = None) -> str:
        """The lock file a job holds while it works on its share of artifact ``key``."""
        return f"{key}.shard-{self.index if index is None else index}-of-{self.count}.lock"

    def owns(self, item_id: str) -> bool:
        """Whether this job takes the query: a hash of its id (the same in every stage and process)."""
        digest = hashlib.sha1(str(item_id).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


class ShardFinished(Exception):
    """Internal: this job's share of a stage is committed (raised out of the stage's build)."""

    def __init__(self, desc: str, done: int, total: int):
        super().__init__(f"{desc}: this job's {done} of {total} queries are committed")
        self.desc, self.done, self.total = desc, done, total


class ShardsPending(UserError):
    """The merge of a sharded stage found queries of other jobs not yet committed."""

    def __init__(self, desc: str, shard: JobShard, missing: dict[int, int], total: int):
        left = ", ".join(f"shard {k} ({n} queries)" for k, n in sorted(missing.items()))
        super().__init__(
            f"{desc}: shard {shard.index} of {shard.count} is committed, but {sum(missing.values())} of {total} "
            f"queries belong to shards not finished yet: {left}. Run those jobs (annotate.shard=K "
            f"annotate.num_shards={shard.count}, same overrides otherwise); the last one to finish merges the "
            "shards and goes on with the experiment. Re-running a finished shard redoes nothing"
        )
        self.shard, self.missing, self.total = shard, dict(missing), total


#: (the job's shard, "work" | "merge") while a sharded job runs a stage; None: the whole stage in this process
_JOB: contextvars.ContextVar[tuple[JobShard, str] | None] = contextvars.ContextVar("uptrain_job_shard", default=None)


@contextlib.contextmanager
def job_shard(shard: JobShard, mode: str):
    """Run a stage's build as ``shard``'s ``work`` (its share, then :class:`ShardFinished`) or its
    ``merge`` (every query must be committed, else :class:`ShardsPending`)."""
    if mode not in ("work", "merge"):
        raise ValueError(f"mode must be work or merge, got {mode!r}")
    token = _JOB.set((shard, mode))
    try:
        yield
    finally:
        _JOB.reset(token)


def _own_tag() -> str | None:
    job = _JOB.get()
    return job[0].tag if job else None


def job_path(path: Path) -> Path:
    """A side file of a stage's work directory for this process to append to: ``path`` itself for one
    job, ``<stem>.<K-of-N><suffix>`` for job K (appends of concurrent jobs never share a file)."""
    tag = _own_tag()
    path = Path(path)
    return path.with_name(f"{path.stem}.{tag}{path.suffix}") if tag else path


def job_paths(path: Path) -> list[Path]:
    """``path`` and every job's :func:`job_path` of it, those that exist."""
    path = Path(path)
    found = [path] if path.is_file() else []
    return found + sorted(path.parent.glob(f"{path.stem}.*-of-*{path.suffix}"))


def _tag_of(shard: Path) -> str | None:
    """``shard-3-of-4-00000.jsonl`` -> ``3-of-4``; ``shard-00000.jsonl`` (one job) -> None."""
    parts = shard.stem.split("-")
    return "-".join(parts[1:4]) if len(parts) == 5 and parts[2] == "of" else None


class ShardWriter:
    """Appends records to ``shard-NNNNN.jsonl`` files, or ``shard-<K-of-N>-NNNNN.jsonl`` for job ``tag``."""

    def __init__(self, directory: Path, records_per_shard: int = 1000, tag: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.records_per_shard = int(records_per_shard)
        self.tag = tag
        self._fh = None
        self._count = 0

    def _open_next(self) -> None:
        if self._fh:
            self._fh.close()
        n = sum(1 for f in self.directory.glob("shard-*.jsonl") if _tag_of(f) == self.tag)
        name = f"shard-{self.tag}-{n:05d}.jsonl" if self.tag else f"shard-{n:05d}.jsonl"
        self._fh = open(self.directory / name, "a", encoding="utf-8")
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
    """Every complete record of every shard, in order; a torn last line is dropped (and cut off, in
    this process's own files only: another job's may be in the middle of a write)."""
    directory = Path(directory)
    own = _own_tag()
    for shard in sorted(directory.glob("shard-*.jsonl")):
        mine = _tag_of(shard) == own
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
        if repair and mine and good_bytes < len(data):
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
    job = _JOB.get()
    if job is not None and job[1] == "merge" and todo:
        shard = job[0]
        missing: dict[int, int] = {}
        for item in todo:
            owner = next(k for k in range(shard.count) if JobShard(k, shard.count).owns(key(item)))
            missing[owner] = missing.get(owner, 0) + 1
        raise ShardsPending(desc, shard, missing, len(items))
    if job is not None and job[1] == "work":
        mine = [item for item in items if job[0].owns(key(item))]
        todo = [item for item in todo if job[0].owns(key(item))]
        log.info("[%s] shard %s: %d of %d queries are this job's, %d of them to do", desc, job[0].tag,
                 len(mine), len(items), len(todo))
    if todo:
        writer = ShardWriter(directory, tag=_own_tag())
        scope = len(mine) if job is not None else len(items)  # a job's bar counts its own share
        bar = tqdm(total=scope, initial=scope - len(todo), unit="q", desc=desc if job is None else f"{desc} [{job[0].tag}]",
                   dynamic_ncols=True)
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
    if job is not None and job[1] == "work":
        raise ShardFinished(desc, len(mine), len(items))
    return collect(directory, ids, what or desc, out)
