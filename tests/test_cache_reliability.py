"""The cache held to a database's standard: manifests that prove integrity, damaged artifacts rebuilt
and never read, stale locks broken, live holders waited for, full disks reported, and the
``uptrain cache`` commands (ls, verify, gc, rm)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uptrain.cache import (MANIFEST, ArtifactCache, CacheWriteError, LockTimeout, exclusive_lock, file_digest,
                           lock_is_held)
from uptrain.cache_cli import main as cache_main
from uptrain.graph import Runner, Stage


class Payload(Stage[str]):
    """Writes a value and a 64 KB blob; counts its builds."""

    name = "payload"
    builds = 0

    def __init__(self, value: str):
        self.value = value

    def spec(self) -> dict:
        return {"value": self.value}

    def build(self, out, work, inputs):
        Payload.builds += 1
        (out / "value.txt").write_text(self.value)
        (out / "sub").mkdir()
        (out / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 256)

    def load(self, path):
        return (path / "value.txt").read_text()


@pytest.fixture(autouse=True)
def _reset():
    Payload.builds = 0


def _artifact(tmp_path, value="v"):
    runner = Runner(ArtifactCache(tmp_path / "cache"), tmp_path / "run")
    return runner, runner.run(Payload(value))


def test_manifest_lists_every_file_with_size_checksum_spec_and_code_version(tmp_path):
    _, art = _artifact(tmp_path)
    manifest = json.loads((art.path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"value.txt", "sub/blob.bin"}
    blob = manifest["files"]["sub/blob.bin"]
    assert blob["size"] == 65536
    import hashlib

    assert blob["sha256"] == hashlib.sha256(bytes(range(256)) * 256).hexdigest()
    assert manifest["spec"]["spec"] == {"value": "v"} and manifest["code_version"].startswith("uptrain ")
    # the lock is released and its file removed; no temp or work directory is left
    left = sorted(p.name for p in (tmp_path / "cache" / "payload").iterdir())
    assert left == [art.key]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_artifact_is_rebuilt_with_a_warning_never_read(tmp_path, damage, caplog):
    _, art = _artifact(tmp_path)
    blob = art.path / "sub" / "blob.bin"
    if damage == "truncate":
        with open(blob, "r+b") as f:
            f.truncate(1000)
    elif damage == "flip":  # same size, one byte changed: only the checksum sees it
        data = bytearray(blob.read_bytes())
        data[4000] ^= 0xFF
        blob.write_bytes(bytes(data))
    else:
        blob.unlink()
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        runner, again = _artifact(tmp_path)
    assert Payload.builds == 2 and runner.records[-1].cache == "built"
    assert "is damaged" in caplog.text and "sub/blob.bin" in caplog.text
    assert (again.path / "sub" / "blob.bin").read_bytes() == bytes(range(256)) * 256
    assert not list((tmp_path / "cache" / "payload").glob(".corrupt-*"))


def test_size_level_misses_a_flipped_byte_and_full_level_catches_it(tmp_path, monkeypatch):
    """The documented trade-off of UPTRAIN_CACHE_VERIFY=size: cheaper, blind to same-size damage."""
    _, art = _artifact(tmp_path)
    blob = art.path / "sub" / "blob.bin"
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x01
    blob.write_bytes(bytes(data))
    cache = ArtifactCache(tmp_path / "cache")
    assert cache.problems("payload", art.key, "size") == []
    assert cache.problems("payload", art.key, "full") == ["sub/blob.bin: checksum differs from the manifest"]
    monkeypatch.setenv("UPTRAIN_CACHE_VERIFY", "sizes")
    with pytest.raises(Exception, match="UPTRAIN_CACHE_VERIFY='sizes' is not one of full, size, off"):
        ArtifactCache(tmp_path / "cache")


def test_intact_hit_builds_nothing(tmp_path):
    _artifact(tmp_path)
    runner, _ = _artifact(tmp_path)
    assert Payload.builds == 1 and runner.records[-1].cache == "hit"


# ----------------------------------------------------------------------------- locks

_HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from uptrain.cache import exclusive_lock
    lock, ready, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    with exclusive_lock(lock, "test/key"):
        if mode == "orphan":
            if os.fork() == 0:      # a child (a data loader worker, say) inherits the lock and outlives us
                time.sleep(60)
                os._exit(0)
            ready.write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)
        ready.write_text(str(os.getpid()))
        time.sleep(float(sys.argv[4]))
""")


def _start_holder(tmp_path, mode, hold=0.0):
    lock, ready = tmp_path / "k.lock", tmp_path / f"ready-{mode}"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock), str(ready), mode, str(hold)],
                            start_new_session=True)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the lock holder did not start"
    return proc, lock, int(ready.read_text())


def test_lock_held_by_an_orphan_of_a_killed_holder_is_broken_with_a_warning(tmp_path, caplog):
    proc, lock, pid = _start_holder(tmp_path, "orphan")
    proc.wait()
    try:
        assert lock_is_held(lock), "the orphaned child should still hold the flock"
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="uptrain"):
            with exclusive_lock(lock, "test/key", timeout=20):
                took = time.monotonic() - t0
        assert took < 10
        assert f"breaking the stale lock {lock}" in caplog.text and f"process {pid} no longer exists" in caplog.text
        assert not lock.exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_lock_from_before_a_reboot_is_broken(tmp_path, caplog):
    """A record naming this host with another boot id: the machine rebooted since it was written."""
    proc, lock, pid = _start_holder(tmp_path, "live", hold=30)
    try:
        record = json.loads(lock.read_text())
        lock.write_text(json.dumps({**record, "boot_id": "another-boot"}))
        with caplog.at_level(logging.WARNING, logger="uptrain"):
            with exclusive_lock(lock, "test/key", timeout=20):
                pass
        assert "its machine has rebooted since" in caplog.text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_live_holder_is_waited_for_with_a_message_then_released(tmp_path, caplog):
    proc, lock, pid = _start_holder(tmp_path, "live", hold=1.5)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="uptrain"):
        with exclusive_lock(lock, "test/key", timeout=30):
            took = time.monotonic() - t0
    proc.wait()
    assert 0.3 < took < 25
    assert f"waiting for test/key: being built by pid {pid} on" in caplog.text
    assert "breaking" not in caplog.text


def test_lock_timeout_names_the_live_holder(tmp_path, monkeypatch):
    proc, lock, pid = _start_holder(tmp_path, "live", hold=30)
    monkeypatch.setenv("UPTRAIN_LOCK_TIMEOUT", "0.5")
    try:
        with pytest.raises(LockTimeout, match=f"test/key is being built by pid {pid} on .*UPTRAIN_LOCK_TIMEOUT=0.5"):
            with exclusive_lock(lock, "test/key"):
                pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from uptrain.cache import ArtifactCache
    root, log = sys.argv[1], Path(sys.argv[2])
    def build(out, work):
        with open(log, "a") as f:
            f.write("build\\n")
        time.sleep(1.0)
        (out / "x").write_text("1")
    entry = ArtifactCache(root).get_or_build("s", "k", {}, build)
    with open(log, "a") as f:
        f.write("hit\\n" if entry.hit else "built\\n")
""")


def test_concurrent_processes_build_one_key_once(tmp_path):
    log_file = tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(tmp_path / "cache"), str(log_file)])
             for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = log_file.read_text().split()
    assert lines.count("build") == 1 and lines.count("built") == 1 and lines.count("hit") == 2


# ----------------------------------------------------------------------------- disk full, unwritable

def test_disk_full_leaves_the_cache_as_it_was_and_names_path_and_space(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    cache.get_or_build("s", "other", {}, lambda out, work: (out / "x").write_text("kept"))
    before = sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*") if "_runs" not in str(p))

    def fills_the_disk(out, work):
        (work / "shard-0.jsonl").write_text("resumable\n")
        (out / "part.bin").write_bytes(b"\0" * (3 << 20))
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "index.faiss"))

    with pytest.raises(CacheWriteError) as err:
        cache.get_or_build("s", "k", {}, fills_the_disk)
    msg = str(err.value)
    assert "No space left on device at " in msg and "index.faiss" in msg
    assert "3.0 MB written before the failure" in msg and "free there" in msg and "\n" not in msg
    after = sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*") if "_runs" not in str(p))
    # nothing published, no temp directory; only the resumable work directory was added
    assert [p for p in after if p not in before] == ["s/k.work", "s/k.work/shard-0.jsonl"]
    assert (cache.work_dir("s", "k") / "shard-0.jsonl").read_text() == "resumable\n"


def test_a_bug_in_a_stage_is_not_reported_as_a_full_disk(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")

    def buggy(out, work):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nonexistent/input")

    with pytest.raises(FileNotFoundError):
        cache.get_or_build("s", "k", {}, buggy)


def test_unwritable_cache_directory_is_one_paragraph_before_anything_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheWriteError, match=r"the artifact cache .*file/cache cannot be written .*cache_dir="):
        ArtifactCache(blocker / "cache")


# ----------------------------------------------------------------------------- uptrain cache

def test_cache_commands_ls_verify_gc_rm(tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    keep = Runner(ArtifactCache(cache_dir), tmp_path / "run_keep")
    a = keep.run(Payload("a"))
    gone = Runner(ArtifactCache(cache_dir), tmp_path / "run_gone")
    b = gone.run(Payload("b"))
    c = gone.run(Payload("c"))

    assert cache_main(["--cache-dir", str(cache_dir), "ls", "--json"]) == 0
    listed = {i["key"]: i for i in json.loads(capsys.readouterr().out)}
    assert set(listed) == {a.key, b.key, c.key}
    assert listed[a.key]["runs"] == [str((tmp_path / "run_keep").resolve())]
    assert listed[b.key]["size"] == 65536 + 1 + len((b.path / MANIFEST).read_bytes())

    # verify: intact, then a truncated blob is reported (exit 1) and --fix removes it
    assert cache_main(["--cache-dir", str(cache_dir), "verify"]) == 0
    with open(c.path / "sub" / "blob.bin", "r+b") as f:
        f.truncate(10)
    assert cache_main(["--cache-dir", str(cache_dir), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED payload/{c.key}: sub/blob.bin: 10 bytes, the manifest says 65536" in out
    assert "3 artifacts checked (full), 1 damaged" in out
    assert cache_main(["--cache-dir", str(cache_dir), "verify", "--fix"]) == 0
    assert not c.path.exists()

    # gc: the deleted run's artifact goes, the kept run's stays, leftovers of a killed build go
    import shutil

    shutil.rmtree(tmp_path / "run_gone")
    leftover = cache_dir / "payload" / f".tmp-{a.key}-deadbeef"
    leftover.mkdir()
    (cache_dir / "payload" / "0123456789abcdef.lock").write_text("{}")
    capsys.readouterr()
    assert cache_main(["--cache-dir", str(cache_dir), "gc", "--unreferenced", "--dry-run"]) == 0
    assert b.path.exists() and leftover.exists()
    assert cache_main(["--cache-dir", str(cache_dir), "gc", "--unreferenced"]) == 0
    out = capsys.readouterr().out
    assert not b.path.exists() and not leftover.exists() and a.path.exists()
    assert "linked by no existing run" in out and "left by a killed build" in out and "a lock no process holds" in out

    # gc --before: only artifacts last used before the date
    assert cache_main(["--cache-dir", str(cache_dir), "gc", "--before", "2000-01-01"]) == 0
    assert a.path.exists()
    assert cache_main(["--cache-dir", str(cache_dir), "gc", "--before", "yesterday"]) == 2

    # rm by a unique prefix; an unknown key is an error
    assert cache_main(["--cache-dir", str(cache_dir), "rm", a.key[:6]]) == 0
    assert not a.path.exists()
    assert cache_main(["--cache-dir", str(cache_dir), "rm", "ffffffff"]) == 2
    assert "matches 0 artifacts" in capsys.readouterr().err


def test_gc_never_removes_what_a_live_build_holds(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    tmp = cache.root / "s" / ".tmp-k-12345678"
    tmp.mkdir(parents=True)
    with exclusive_lock(cache.lock_path("s", "k"), "s/k"):
        assert cache_main(["--cache-dir", str(cache.root), "gc"]) == 0
        assert tmp.exists()
    assert cache_main(["--cache-dir", str(cache.root), "gc"]) == 0
    assert not tmp.exists()


def test_uptrain_cache_subcommand_from_the_command_line(tmp_path):
    _artifact(tmp_path)
    from conftest import uptrain_command

    out = subprocess.run([*uptrain_command(), "cache", "--cache-dir", str(tmp_path / "cache"), "ls"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "payload" in out.stdout and "1 artifacts" in out.stdout


def test_file_digest_sees_a_rewritten_file(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"one")
    first = file_digest(f)
    time.sleep(0.01)
    f.write_bytes(b"two")
    assert file_digest(f) != first
