"""The artifact cache and the run graph: keys, hits, atomic publication, resumable work dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uptrain.cache import MANIFEST, ArtifactCache, canonical_json, spec_hash, write_atomic
from uptrain.graph import Runner, Stage


class CountingStage(Stage[str]):
    name = "count"
    builds = 0

    def __init__(self, value: str, inputs=()):
        self.value = value
        self.inputs = tuple(inputs)

    def spec(self) -> dict:
        return {"value": self.value}

    def build(self, out, work, inputs):
        CountingStage.builds += 1
        upstream = "+".join(inputs[k].value for k in sorted(inputs))
        (out / "value.txt").write_text(self.value + ("|" + upstream if upstream else ""))

    def load(self, path):
        return (path / "value.txt").read_text()


def test_spec_hash_ignores_key_order_and_sees_values():
    assert spec_hash({"a": 1, "b": [1, 2]}) == spec_hash({"b": [1, 2], "a": 1})
    assert spec_hash({"a": 1}) != spec_hash({"a": 2})
    assert canonical_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_runner_builds_once_then_hits(tmp_path):
    CountingStage.builds = 0
    runner = Runner(ArtifactCache(tmp_path / "cache"), tmp_path / "run")
    a = runner.run(CountingStage("x"))
    b = runner.run(CountingStage("x"))
    assert CountingStage.builds == 1
    assert a.key == b.key and a.value == "x"
    assert [r.cache for r in runner.records] == ["built", "hit"]
    assert (tmp_path / "run" / "artifacts" / "count").resolve() == a.path.resolve()
    manifest = json.loads((a.path / MANIFEST).read_text())
    assert manifest["spec"]["spec"] == {"value": "x"}


def test_downstream_key_follows_upstream_key(tmp_path):
    runner = Runner(ArtifactCache(tmp_path), tmp_path / "run")
    up1 = runner.run(CountingStage("u1"), label="u1")
    up2 = runner.run(CountingStage("u2"), label="u2")
    d1 = runner.run(CountingStage("d", inputs=("up",)), {"up": up1}, label="d1")
    d2 = runner.run(CountingStage("d", inputs=("up",)), {"up": up2}, label="d2")
    assert d1.key != d2.key
    assert d1.value == "d|u1" and d2.value == "d|u2"


def test_missing_input_is_an_error(tmp_path):
    runner = Runner(ArtifactCache(tmp_path), tmp_path / "run")
    with pytest.raises(ValueError, match="needs inputs"):
        runner.run(CountingStage("d", inputs=("up",)))


def test_failed_build_publishes_nothing_and_keeps_work_dir(tmp_path):
    cache = ArtifactCache(tmp_path)

    def failing(out, work):
        (out / "half.txt").write_text("half")
        (work / "ckpt").write_text("state")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_build("s", "k", {}, failing)
    assert not cache.is_complete("s", "k")
    assert not cache.path("s", "k").exists()
    assert not list((tmp_path / "s").glob(".tmp-*"))
    assert (cache.work_dir("s", "k") / "ckpt").read_text() == "state"  # resumable state survives

    def resuming(out, work):
        (out / "from_ckpt.txt").write_text((work / "ckpt").read_text())

    entry = cache.get_or_build("s", "k", {}, resuming)
    assert not entry.hit and (entry.path / "from_ckpt.txt").read_text() == "state"
    assert not cache.work_dir("s", "k").exists()  # cleaned once published


def test_killed_build_leaves_no_artifact(tmp_path):
    """SIGKILL in the middle of a build: the next reader sees no artifact and rebuilds."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from uptrain.cache import ArtifactCache
        def slow(out, work):
            (out / "part").write_text("x")
            Path({str(tmp_path / 'started')!r}).write_text("1")
            time.sleep(60)
        ArtifactCache({str(tmp_path / 'cache')!r}).get_or_build("s", "k", {{}}, slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = ArtifactCache(tmp_path / "cache")
    assert not cache.is_complete("s", "k")
    entry = cache.get_or_build("s", "k", {}, lambda out, work: (out / "ok").write_text("1"))
    assert not entry.hit and (entry.path / "ok").is_file() and not (entry.path / "part").exists()
    assert not list((tmp_path / "cache" / "s").glob(".tmp-*"))


def test_write_atomic_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "f.json"
    write_atomic(p, "one")
    write_atomic(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.json"]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("UPTRAIN_CACHE_DIR", str(tmp_path / "c"))
    assert ArtifactCache().root == tmp_path / "c"
