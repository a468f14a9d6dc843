"""The artifact cache: one directory per (stage, key), published atomically.

An artifact is a directory. It is built in a private temporary directory next to
its final place and renamed into place only when the builder returns, so a
reader never sees a half-written artifact; a killed build leaves only a
``.tmp-*`` directory that the next build of the same key removes. Stages that
resume (training) keep their checkpoints in a persistent ``<key>.work``
directory that survives a kill and is removed once the artifact is published.

The key is a hash of exactly the config that determines the artifact (its
``spec``) plus the keys of the artifacts it was built from, so a sweep over a
parameter reuses every artifact upstream of that parameter.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

MANIFEST = "_uptrain_artifact.json"


def default_cache_dir() -> Path:
    env = os.environ.get("UPTRAIN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/uptrain").expanduser()


_digest_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, memoized by (path, size, mtime): model weights are large and
    hashed once per process. A missing file is an error, never the hash of nothing."""
    path = Path(path)
    st = path.stat()  # FileNotFoundError for a missing file
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digest_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _digest_memo[memo] = digest.hexdigest()
    return _digest_memo[memo]


def dir_digest(path: str | Path, suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 over the relative names and contents of a directory's files (optionally only
    those with the given suffixes), so a changed local model directory changes its key."""
    root = Path(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        if suffixes and not f.name.endswith(suffixes):
            continue
        digest.update(str(f.relative_to(root)).encode() + b"\0" + file_digest(f).encode())
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same config gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def spec_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class CacheEntry:
    stage: str
    key: str
    path: Path
    hit: bool


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write one file atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ArtifactCache:
    """Content-addressed store of stage artifacts under ``root/<stage>/<key>``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def work_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.work"

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).is_file()

    @contextmanager
    def _lock(self, stage: str, key: str) -> Iterator[None]:
        # Parallel sweep jobs asking for the same artifact build it once; the others wait.
        lock_path = self.root / stage / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get_or_build(
        self,
        stage: str,
        key: str,
        spec: dict,
        build: Callable[[Path, Path], None],
    ) -> CacheEntry:
        """Return the artifact for ``(stage, key)``, building it with ``build(tmp, work)`` if absent.

        ``tmp`` is an empty directory that becomes the artifact on success; ``work``
        is a persistent scratch directory for resumable state (checkpoints, shards).
        """
        final = self.path(stage, key)
        if self.is_complete(stage, key):
            return CacheEntry(stage, key, final, True)
        with self._lock(stage, key):
            if self.is_complete(stage, key):
                return CacheEntry(stage, key, final, True)
            for stale in final.parent.glob(f".tmp-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            work = self.work_dir(stage, key)
            work.mkdir(parents=True, exist_ok=True)
            started = time.time()
            try:
                build(tmp, work)
                manifest = {
                    "stage": stage,
                    "key": key,
                    "spec": spec,
                    "build_seconds": round(time.time() - started, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, default=str))
                if final.exists():  # an incomplete leftover without manifest
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(work, ignore_errors=True)
            return CacheEntry(stage, key, final, False)

    def manifest(self, stage: str, key: str) -> dict:
        return json.loads((self.path(stage, key) / MANIFEST).read_text())
