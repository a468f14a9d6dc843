"""The run graph: stages with typed inputs and outputs, run through the artifact cache.

A :class:`Stage` says what determines its artifact (``spec``), how to build it
from its inputs, and how to load it. The :class:`Runner` keys each stage by the
hash of its spec, its code version and the keys of its inputs, builds it only on
a cache miss, links the artifact into the run directory, and records a line per
stage (cache hit or built, seconds) for the log and the report.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Mapping, TypeVar

from uptrain.cache import ArtifactCache, spec_hash

log = logging.getLogger("uptrain")

T = TypeVar("T")


class Artifact(Generic[T]):
    """A built stage output: where it lies, its cache key, and its value (loaded on first use)."""

    _UNSET = object()

    def __init__(self, stage: str, key: str, path: Path, loader: Callable[[Path], T],
                 facets: Mapping[str, str] | None = None):
        self.stage = stage
        self.key = key
        self.path = Path(path)
        self._loader = loader
        self._value: Any = self._UNSET
        # keys of parts of the artifact (e.g. a model's passage side), for consumers that read only a part
        self.facets = dict(facets or {})

    def facet_key(self, facet: str | None) -> str:
        """The key of one facet; the whole artifact's key when the artifact has no such facet."""
        return self.facets.get(facet, self.key) if facet else self.key

    @property
    def value(self) -> T:
        if self._value is self._UNSET:
            self._value = self._loader(self.path)
        return self._value

    def __repr__(self) -> str:
        return f"Artifact({self.stage}/{self.key})"


class Stage(ABC, Generic[T]):
    """One node of the run graph.

    Subclasses set ``name`` (the cache namespace), ``inputs`` (names of the
    artifacts ``build`` receives) and bump ``version`` whenever a code change
    alters what the stage writes, so old artifacts stop matching.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[int] = 1
    #: input name -> the facet of that input this stage reads (its key replaces the input's key)
    input_facets: ClassVar[Mapping[str, str]] = {}

    def facets(self) -> dict[str, dict]:
        """Parts of the artifact that consumers may key on alone: facet name -> the part of
        the spec that determines it (e.g. a shipped encoder's passage side leaves out its
        query length). The facet key also covers the stage's name, version and inputs."""
        return {}

    def validate(self) -> None:
        """Check the configuration before anything slow runs; raise a UserError that says what to fix."""

    def report(self, artifact: "Artifact") -> dict[str, str]:
        """This stage's sections of the run report (title -> Markdown), read from its artifact."""
        return {}

    @abstractmethod
    def spec(self) -> dict:
        """Exactly the configuration that determines this stage's artifact."""

    @abstractmethod
    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        """Write the artifact into ``out`` (empty, becomes the artifact on success).

        ``work`` persists across a killed run (checkpoints, shards) until the artifact
        is published.
        """

    @abstractmethod
    def load(self, path: Path) -> T:
        """Read the artifact back into its typed value."""


@dataclass
class StageRecord:
    stage: str
    label: str
    key: str
    cache: str  # "hit" or "built"
    seconds: float
    path: str

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "label": self.label,
            "key": self.key,
            "cache": self.cache,
            "seconds": round(self.seconds, 2),
            "path": self.path,
        }


@dataclass
class Runner:
    cache: ArtifactCache
    run_dir: Path
    records: list[StageRecord] = field(default_factory=list)
    built: list[tuple[Stage, Artifact]] = field(default_factory=list)  # every stage run, with its artifact
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (stage, key), recorded in the cache
    #: a launched training process other than rank 0 (:mod:`uptrain.train.distributed`): it joins the
    #: distributed stages' work and takes their artifacts from rank 0, and writes nothing into the run directory
    follower: bool = False
    #: this job's share of the sharded stages (``annotate.shard`` of ``annotate.num_shards``;
    #: :mod:`uptrain.annotate.shards`), None when one job builds each stage whole
    shard: Any = None

    def key(self, stage: Stage, inputs: Mapping[str, Artifact]) -> tuple[str, dict]:
        missing = set(stage.inputs) - set(inputs)
        if missing:
            raise ValueError(f"stage {stage.name} needs inputs {sorted(missing)}")
        full = {
            "stage": stage.name,
            "version": stage.version,
            "spec": stage.spec(),
            "inputs": {k: inputs[k].facet_key(stage.input_facets.get(k)) for k in sorted(stage.inputs)},
        }
        return spec_hash(full), full

    @staticmethod
    def facet_keys(stage: Stage, full: dict) -> dict[str, str]:
        return {
            name: spec_hash({**full, "spec": part, "facet": name}) for name, part in stage.facets().items()
        }

    def run(self, stage: Stage[T], inputs: Mapping[str, Artifact] | None = None, label: str | None = None) -> Artifact[T]:
        inputs = dict(inputs or {})
        label = label or stage.name
        key, full = self.key(stage, inputs)
        t0 = time.time()
        if not self.cache.is_complete(stage.name, key):
            log.info("[stage %s] building %s/%s", label, stage.name, key)
        if self.follower and getattr(stage, "distributed", False) and not self.cache.is_complete(stage.name, key):
            entry = self._follow(stage, key, inputs, label)
        elif self.shard is not None and getattr(stage, "shardable", False) and not self.cache.is_complete(stage.name, key):
            entry = self._sharded(stage, key, full, inputs, label)
        else:
            entry = self.cache.get_or_build(
                stage.name, key, full, lambda out, work: stage.build(out, work, inputs)
            )
        seconds = time.time() - t0
        status = "hit" if entry.hit else "built"
        log.info("[stage %s] cache %s %s/%s (%.1fs)", label, status, stage.name, key, seconds)
        if not self.follower:
            self._link(label, entry.path)
            self.links[label.replace("/", "_")] = (stage.name, key)
            self.cache.record_run(self.run_dir, self.links)
        self.records.append(StageRecord(stage.name, label, key, status, seconds, str(entry.path)))
        artifact = Artifact(stage.name, key, entry.path, stage.load, facets=self.facet_keys(stage, full))
        self.built.append((stage, artifact))
        return artifact

    def _follow(self, stage: Stage, key: str, inputs: Mapping[str, Artifact], label: str):
        """Join rank 0's build of a distributed stage, then wait for rank 0 to publish it."""
        from uptrain.cache import CacheEntry, exclusive_lock

        work = self.cache.work_dir(stage.name, key)
        work.mkdir(parents=True, exist_ok=True)
        log.info("[stage %s] joining rank 0's build of %s/%s", label, stage.name, key)
        stage.follow(work, inputs)
        # rank 0 holds the artifact's lock from before its fit until it has published: taking the
        # lock after the fit returns waits for the publication (a holder on another host is waited for)
        with exclusive_lock(self.cache.lock_path(stage.name, key), f"{stage.name}/{key} (rank 0's publication)"):
            pass
        if not self.cache.is_complete(stage.name, key):
            raise RuntimeError(f"rank 0 did not publish {stage.name}/{key} after the distributed fit; see its log")
        return CacheEntry(stage.name, key, self.cache.path(stage.name, key), True)

    def _sharded(self, stage: Stage, key: str, full: dict, inputs: Mapping[str, Artifact], label: str):
        """This job's share of a shardable stage, then the merge (see :mod:`uptrain.annotate.shards`)."""
        import shutil

        from uptrain.annotate.shards import ShardFinished, ShardsPending, job_shard
        from uptrain.cache import exclusive_lock, lock_is_held

        shard = self.shard
        work = self.cache.work_dir(stage.name, key)
        work.mkdir(parents=True, exist_ok=True)
        lock_dir = self.cache.lock_path(stage.name, key).parent
        with exclusive_lock(lock_dir / shard.lock_name(key), f"{stage.name}/{key} shard {shard.tag}"):
            scratch = work / "jobs" / shard.tag  # the build's output in work mode is thrown away
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            try:
                with job_shard(shard, "work"):
                    stage.build(scratch, work, inputs)
            except ShardFinished as done:
                log.info("[stage %s] shard %s: %s", label, shard.tag, done)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        # the merge: the stage's own build under the artifact's lock, with every query committed
        deadline = time.monotonic() + shard.wait
        while True:
            try:
                with job_shard(shard, "merge"):
                    return self.cache.get_or_build(stage.name, key, full, lambda out, w: stage.build(out, w, inputs))
            except ShardsPending as pending:
                running = [k for k in sorted(pending.missing) if lock_is_held(lock_dir / shard.lock_name(key, k))]
                if running:  # another job is on it: wait for its share, then merge again
                    log.info("[stage %s] shard %s done; waiting for shard %d, which another job is annotating",
                             label, shard.tag, running[0])
                    with exclusive_lock(lock_dir / shard.lock_name(key, running[0]),
                                        f"{stage.name}/{key} shard {running[0]}-of-{shard.count}", message_every=300):
                        pass
                    deadline = time.monotonic() + shard.wait
                elif time.monotonic() < deadline:  # a job that has not started its share yet
                    time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))
                else:
                    raise

    def _link(self, label: str, target: Path) -> None:
        # the run directory points at the cached artifacts instead of copying them
        links = Path(self.run_dir) / "artifacts"
        links.mkdir(parents=True, exist_ok=True)
        link = links / label.replace("/", "_")
        try:
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(target, link, target_is_directory=True)
        except OSError:  # file systems without symlinks: the stage table still names the path
            pass

    def summary(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.records]
