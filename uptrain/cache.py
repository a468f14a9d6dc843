"""The artifact cache: one directory per (stage, key), published atomically, checked on every load.

An artifact is a directory. It is built in a private temporary directory next to
its final place and renamed into place only when the builder returns, so a
reader never sees a half-written artifact; a killed build leaves only a
``.tmp-*`` directory that the next build of the same key removes. Stages that
resume (training, annotation) keep their state in a persistent ``<key>.work``
directory that survives a kill and is removed once the artifact is published.

Every artifact carries a manifest (``_uptrain_artifact.json``): its files with
their sizes and sha256 checksums, the stage spec it was built from and the code
version. A cache hit checks the artifact against it (``UPTRAIN_CACHE_VERIFY``:
``full``, the default, re-hashes each file once per process; ``size`` compares
sizes only; ``off`` trusts the manifest's presence); a truncated or corrupted
artifact is set aside with a warning and rebuilt, never read.

Builds of one key are serialised by an exclusive lock (``<key>.lock``, an
``flock`` that the kernel releases when its holder dies). The lock file names its
holder (host, boot, pid, process start); a holder that is gone while the lock is
still held (an orphaned child that inherited it, a record from before a reboot)
is detected and its lock broken with a warning. A live holder is waited for with
a message naming it, every minute, and ``UPTRAIN_LOCK_TIMEOUT`` (seconds) turns
the wait into an error.

Each run that links an artifact is recorded under ``_runs/``, so ``uptrain cache
ls`` can say which runs use an artifact and when it was last used, and ``uptrain
cache gc`` can remove what no run uses (uptrain/cache_cli.py).

The key is a hash of exactly the config that determines the artifact (its
``spec``) plus the keys of the artifacts it was built from, so a sweep over a
parameter reuses every artifact upstream of that parameter.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from uptrain.errors import UserError

log = logging.getLogger("uptrain")

MANIFEST = "_uptrain_artifact.json"
MANIFEST_FORMAT = 2
RUNS_DIR = "_runs"
VERIFY_LEVELS = ("full", "size", "off")
#: write errors that mean the cache cannot take the artifact (not a bug in the stage)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class CacheWriteError(UserError):
    """The cache could not store an artifact (disk full, quota, read-only or unwritable)."""


class LockTimeout(UserError):
    """A lock was held longer than UPTRAIN_LOCK_TIMEOUT by a live holder."""


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


_code_version: str | None = None


def code_version() -> str:
    """``uptrain <version>``, with the git commit (and ``+dirty``) when run from a checkout."""
    global _code_version
    if _code_version is None:
        import subprocess

        from uptrain import __version__

        version = f"uptrain {__version__}"
        src = Path(__file__).resolve().parent.parent
        if (src / ".git").exists():
            try:
                head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"],
                                      capture_output=True, text=True, timeout=10)
                dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=10)
                if head.returncode == 0:
                    version += f" ({head.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''})"
            except (OSError, subprocess.SubprocessError):
                pass
        _code_version = version
    return _code_version


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
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tree_size(path: Path) -> int:
    total = 0
    for p in Path(path).rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# ----------------------------------------------------------------------------- manifest

def file_table(root: Path) -> dict[str, dict]:
    """Every file under ``root`` (the manifest itself excepted): size and sha256; a symlink by its target."""
    table: dict[str, dict] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        if rel == MANIFEST:
            continue
        if p.is_symlink():
            table[rel] = {"link": os.readlink(p)}
        elif p.is_file():
            table[rel] = {"size": p.stat().st_size, "sha256": file_digest(p)}
    return table


def check_files(root: Path, table: dict[str, dict], level: str = "full") -> list[str]:
    """What is wrong with ``root`` against its manifest's file table (empty: intact)."""
    problems = []
    for rel, want in table.items():
        p = root / rel
        if "link" in want:
            if not p.is_symlink() or os.readlink(p) != want["link"]:
                problems.append(f"{rel}: link changed or missing")
            continue
        try:
            size = p.stat().st_size
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if size != want["size"]:
            problems.append(f"{rel}: {size} bytes, the manifest says {want['size']}")
        elif level == "full" and file_digest(p) != want["sha256"]:
            problems.append(f"{rel}: checksum differs from the manifest")
    return problems


def verify_level() -> str:
    level = os.environ.get("UPTRAIN_CACHE_VERIFY", "full").strip().lower() or "full"
    if level not in VERIFY_LEVELS:
        raise UserError(f"UPTRAIN_CACHE_VERIFY={level!r} is not one of {', '.join(VERIFY_LEVELS)}")
    return level


# ----------------------------------------------------------------------------- locks

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def holder_record() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start": _process_start(pid),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def holder_gone(record: dict) -> str | None:
    """Why the recorded holder no longer exists (None: alive, or on another host, where only the
    file system's own lock service can tell)."""
    if not record or record.get("host") != socket.gethostname():
        return None
    if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
        return "its machine has rebooted since"
    pid = record.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} no longer exists"
    except PermissionError:
        pass
    start = _process_start(pid)
    if record.get("start") and start and start != record["start"]:
        return f"process {pid} is another process now (its id was reused)"
    return None


def _describe(record: dict) -> str:
    if not record:
        return "a holder that has not written its name yet"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')}"


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def exclusive_lock(lock_path: Path, what: str, poll: float = 0.2, message_every: float = 60.0,
                   timeout: float | None = None) -> Iterator[None]:
    """Hold ``lock_path`` exclusively (see the module docstring); removed on release."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if timeout is None and os.environ.get("UPTRAIN_LOCK_TIMEOUT"):
        timeout = float(os.environ["UPTRAIN_LOCK_TIMEOUT"])
    started = time.monotonic()
    told = None
    fd = -1
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read_record(lock_path)
            gone = holder_gone(record)
            if gone:
                log.warning("breaking the stale lock %s on %s: it names %s, and %s", lock_path, what,
                            _describe(record), gone)
                try:
                    if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                        os.unlink(lock_path)  # the orphan keeps its lock on the old file; we take a new one
                except FileNotFoundError:
                    pass
                os.close(fd)
                continue
            os.close(fd)
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise LockTimeout(
                    f"{what} is being built by {_describe(record)} (lock {lock_path}); waited {waited:.0f} s, "
                    f"longer than UPTRAIN_LOCK_TIMEOUT={timeout:g}. Wait for that run to finish, or, if it is "
                    "gone on another machine, remove the lock file.")
            if told is None or time.monotonic() - told >= message_every:
                log.info("waiting for %s: being built by %s (lock %s)", what, _describe(record), lock_path)
                told = time.monotonic()
            time.sleep(poll)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the file was removed (released or broken) after we opened it: lock the new one
            os.close(fd)
            continue
        break
    previous = _read_record(lock_path)
    if previous and holder_gone(previous):
        log.info("taking over %s from %s, which ended without releasing it", what, _describe(previous))
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_record()).encode())
    except OSError:
        pass  # the record is informative; the flock is the lock
    try:
        yield
    finally:
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def lock_is_held(lock_path: Path) -> bool:
    """Whether a live process holds ``lock_path`` now (a free or absent lock: False)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ----------------------------------------------------------------------------- the cache

class ArtifactCache:
    """Content-addressed store of stage artifacts under ``root/<stage>/<key>``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CacheWriteError(
                f"the artifact cache {self.root} cannot be written ({exc.strerror or exc}). Point "
                "cache_dir=... (or UPTRAIN_CACHE_DIR) at a writable directory with room for the run's "
                "artifacts.") from None
        self.verify = verify_level()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def work_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.work"

    def lock_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.lock"

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).is_file()

    def problems(self, stage: str, key: str, level: str | None = None) -> list[str]:
        """What is wrong with a published artifact (empty: intact or, with level off, present)."""
        level = level or self.verify
        path = self.path(stage, key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            return ["no manifest"]
        except (OSError, ValueError) as exc:
            return [f"unreadable manifest ({exc})"]
        if level == "off":
            return []
        table = manifest.get("files")
        if table is None:  # written before manifests listed their files: cannot be checked
            return []
        return check_files(path, table, level)

    @contextmanager
    def _lock(self, stage: str, key: str) -> Iterator[None]:
        # Parallel sweep jobs asking for the same artifact build it once; the others wait.
        with exclusive_lock(self.lock_path(stage, key), f"{stage}/{key}"):
            yield

    def _quarantine(self, stage: str, key: str, problems: list[str]) -> None:
        final = self.path(stage, key)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        log.warning("the cached artifact %s/%s is damaged (%s): it is set aside and rebuilt", stage, key, shown)
        aside = final.parent / f".corrupt-{key}-{uuid.uuid4().hex[:8]}"
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def get_or_build(
        self,
        stage: str,
        key: str,
        spec: dict,
        build: Callable[[Path, Path], None],
    ) -> CacheEntry:
        """Return the artifact for ``(stage, key)``, building it with ``build(tmp, work)`` if absent
        or damaged.

        ``tmp`` is an empty directory that becomes the artifact on success; ``work``
        is a persistent scratch directory for resumable state (checkpoints, shards).
        """
        final = self.path(stage, key)
        if self.is_complete(stage, key) and not self.problems(stage, key):
            return CacheEntry(stage, key, final, True)
        with self._lock(stage, key):
            if self.is_complete(stage, key):
                problems = self.problems(stage, key)
                if not problems:
                    return CacheEntry(stage, key, final, True)
                self._quarantine(stage, key, problems)
            for stale in final.parent.glob(f".tmp-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            work = self.work_dir(stage, key)
            started = time.time()
            try:
                tmp.mkdir(parents=True)
                work.mkdir(parents=True, exist_ok=True)
                build(tmp, work)
                manifest = {
                    "format": MANIFEST_FORMAT,
                    "stage": stage,
                    "key": key,
                    "spec": spec,
                    "code_version": code_version(),
                    "build_seconds": round(time.time() - started, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "files": file_table(tmp),
                }
                write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2, default=str))
                if final.exists():  # an incomplete leftover without manifest
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except OSError as exc:
                written = tree_size(tmp) if tmp.exists() else 0
                shutil.rmtree(tmp, ignore_errors=True)
                if exc.errno in _WRITE_ERRNOS:
                    raise self._write_error(stage, key, exc, written) from None
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(work, ignore_errors=True)
            return CacheEntry(stage, key, final, False)

    def _write_error(self, stage: str, key: str, exc: OSError, written: int) -> CacheWriteError:
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        where = exc.filename or self.path(stage, key)
        room = f"{_human(free)} free there" if free is not None else "free space unknown"
        return CacheWriteError(
            f"the artifact {stage}/{key} could not be written to the cache: {exc.strerror or exc} at {where} "
            f"({_human(written)} written before the failure, {room}; the artifact needs at least that much "
            f"more). Nothing was published and the cache is as it was; resumable work is kept in "
            f"{self.work_dir(stage, key)}. Free space (`uptrain cache gc`), or point cache_dir=... (or "
            "UPTRAIN_CACHE_DIR) at a larger disk, and run again.")

    def manifest(self, stage: str, key: str) -> dict:
        return json.loads((self.path(stage, key) / MANIFEST).read_text())

    # ------------------------------------------------------------------ run references

    def record_run(self, run_dir: Path, links: dict[str, tuple[str, str]]) -> None:
        """Note that ``run_dir`` links these artifacts (label -> (stage, key)), for ls and gc."""
        run_dir = Path(run_dir).resolve()
        record = {"run_dir": str(run_dir), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "artifacts": {label: {"stage": s, "key": k} for label, (s, k) in sorted(links.items())}}
        try:
            write_atomic(self.root / RUNS_DIR / f"{spec_hash(str(run_dir))}.json", json.dumps(record, indent=1))
        except OSError as exc:  # the record serves ls and gc; a run does not fail for it
            log.warning("could not record the run %s in the cache (%s)", run_dir, exc)
