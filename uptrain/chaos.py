"""Fault injection: kill experiments with SIGKILL at seeded random moments, re-run, and check that the
result is the uninterrupted run's.

    python -m uptrain.chaos --kills 20                      # make chaos [CHAOS_KILLS=20]
    python -m uptrain.chaos --kills 3 --exp utilsel_cl20 --out /tmp/chaos

For each experiment (``--exp``, comma-separated; the default list touches every stage kind: data,
pool, LLM annotation, REPLUG, two training phases, FAISS and BM25 indexes, retrieval, cross-encoder
re-ranking, RAG generation, click models, the judge, evaluation and the report):

1. a reference run, uninterrupted, on its own fresh cache;
2. rounds, each on a fresh cache: an attempt runs the same command in its own process group and
   kills the whole group with SIGKILL at a seeded random moment: mostly inside the build of a stage
   that the cache does not hold yet (the stage drawn uniformly, the moment uniformly within its build
   time in the reference), else (one in five) at a moment drawn from the reference's whole duration,
   which reaches start-up and the code between stages. The next attempt resumes from whatever the
   cache holds. After ``--per-round`` kills (or when an attempt finishes before its kill) the round
   runs to the end and is checked; rounds go on until ``--kills`` kills are spent over all
   experiments (shared out in turn);
3. the checks of every finished round: ``metrics.json`` equals the reference's (numbers within
   ``--tolerance``, 0 by default: the tiny profile's computation is deterministic on one machine;
   timings and cache states are not compared), every artifact the reference built exists with the same
   files, and the same checksums except where a stage records how it was run (``train_stats.json``,
   ``annotation_stats.json`` and the like, which say what was resumed; their checksums are not
   compared, but annotation records are: a shard lost or repeated changes them); no temporary
   (``.tmp-*``), set-aside (``.corrupt-*``) or work (``*.work``) directory is left; no lock is held or
   left on disk.

The kill point of an attempt is the stage being built when it died (from the attempt's log), or
``startup`` (before the first stage) or ``outside a stage`` (evaluation and report code between stages).
The report (``chaos.md`` and ``chaos.json`` in ``--out``) gives the kill points per stage and each
round's verdict; the command exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EXPS = ["utilsel_cl20", "rerank_human", "rag_replug_human", "cvl_click_dbn", "judge_trec_dl"]
BASE_OVERRIDES = ["profile=tiny", "eval.baseline=null", "eval.second_baseline=null"]
#: metrics.json keys that describe how a run went (time, cache state, paths, the report's prose with its
#: timings), not what it computed
VOLATILE = {"stages", "sections", "seconds", "build_seconds", "wall_seconds", "elapsed", "created", "run_dir", "path",
            "tokens_per_second", "queries_per_second", "started", "finished", "cache_dir", "resumed_from",
            "time", "throughput", "duration", "seconds_per_query", "passages_per_second"}
#: artifact files that record how the build ran (resumed from where, how long) or describe it in prose with
#: its timings: not compared. JSON and JSONL files that differ are compared again as data, without the
#: VOLATILE keys and with each cache's own path replaced by <cache> (a warm start names its phase 1).
RUN_RECORDS = re.compile(r"(^|/)(\w*stats\w*\.json|progress\.json|events\.out\.\S+|hparams\.yaml|metrics\.csv|[^/]*\.md)$")
_BUILDING = re.compile(r"\[stage (?P<label>[^\]]+)\] building (?P<stage>[\w\-]+)/(?P<key>\w+)")
_DONE = re.compile(r"\[stage (?P<label>[^\]]+)\] cache (?:built|hit) (?P<stage>[\w\-]+)/(?P<key>\w+)")


@dataclass
class Attempt:
    exp: str
    round: int
    index: int
    target: str | None     # the stage/key whose build the kill waited for (None: timed from the start)
    kill_after: float | None
    killed: bool
    kill_point: str | None
    seconds: float
    returncode: int | None


@dataclass
class RoundCheck:
    exp: str
    round: int
    kills: int
    equal: bool
    max_abs_diff: float
    problems: list[str] = field(default_factory=list)


def command(exp: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "uptrain.cli", f"+exp={exp}", *BASE_OVERRIDES, *overrides,
            f"hydra.run.dir={run_dir}"]


def environment(cache: Path) -> dict:
    env = dict(os.environ)
    env["UPTRAIN_CACHE_DIR"] = str(cache)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def kill_point(log_text: str) -> str:
    """The stage being built when the log ends (the innermost open build), else startup / outside a stage."""
    open_builds: list[str] = []
    seen = False
    for line in log_text.splitlines():
        m = _BUILDING.search(line)
        if m:
            open_builds.append(m["stage"])
            seen = True
            continue
        m = _DONE.search(line)
        if m:
            seen = True
            if m["stage"] in open_builds:
                # the latest open build of this stage name is the one that finished
                del open_builds[len(open_builds) - 1 - open_builds[::-1].index(m["stage"])]
    if open_builds:
        return open_builds[-1]
    return "outside a stage" if seen else "startup"


_BUILT = re.compile(r"\[stage (?P<label>[^\]]+)\] cache built (?P<stage>[\w\-]+)/(?P<key>\w+) \((?P<s>[\d.]+)s\)")


def built_stages(log_text: str) -> list[tuple[str, str, float]]:
    """(stage, key, seconds) of every stage an uninterrupted run built, in order."""
    return [(m["stage"], m["key"], float(m["s"])) for m in _BUILT.finditer(log_text)]


@dataclass
class Kill:
    """When to kill an attempt: ``after`` seconds, counted from the moment its log shows the build of
    ``target`` (stage/key) starting, or from the process start when ``target`` is None."""

    after: float
    target: str | None = None


def run_once(exp: str, run_dir: Path, cache: Path, overrides: list[str], kill: Kill | None,
             timeout: float) -> tuple[bool, int | None, float, str]:
    """Run one attempt, killing its process group as ``kill`` says. -> (killed, rc, seconds, log)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "attempt.log"
    t0 = time.monotonic()
    killed = False
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(command(exp, run_dir, overrides), env=environment(cache), stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        armed = t0 if kill is not None and kill.target is None else None
        pattern = re.compile(rf"\] building {re.escape(kill.target)}\b") if kill is not None and kill.target else None
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"{exp}: the run took longer than {timeout:.0f} s; see {log_path}")
            if armed is None and pattern is not None and pattern.search(log_path.read_text(errors="replace")):
                armed = now
            if armed is not None and now - armed >= kill.after:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
                break
            time.sleep(0.05)
        try:  # children that outlived the leader (none should): the group goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed, proc.returncode, time.monotonic() - t0, log_path.read_text(errors="replace")


def draw_kill(rng: random.Random, ref_seconds: float, stages: list[tuple[str, str, float]], cache: Path,
              at_random: float = 0.2) -> Kill:
    """A kill inside a stage the cache does not hold yet (a random moment of its reference build time),
    or, with probability ``at_random`` (or when every stage is held), at a random moment of the run."""
    pending = [(s, k, sec) for s, k, sec in stages if not (cache / s / k / "_uptrain_artifact.json").is_file()]
    if not pending or rng.random() < at_random:
        return Kill(rng.uniform(0.0, ref_seconds))
    stage, key, seconds = rng.choice(pending)
    return Kill(rng.uniform(0.0, max(seconds, 0.2)), f"{stage}/{key}")


def compare(ref: Any, got: Any, tolerance: float, where: str = "") -> tuple[list[str], float]:
    """Differences between two metrics trees (volatile keys skipped) and the largest numeric one."""
    diffs: list[str] = []
    worst = 0.0
    if isinstance(ref, dict) and isinstance(got, dict):
        for k in sorted(set(ref) | set(got)):
            if volatile(k):
                continue
            if k not in ref or k not in got:
                diffs.append(f"{where}.{k}: only in the {'reference' if k in ref else 'chaos run'}")
                continue
            d, w = compare(ref[k], got[k], tolerance, f"{where}.{k}")
            diffs += d
            worst = max(worst, w)
    elif isinstance(ref, list) and isinstance(got, list):
        if len(ref) != len(got):
            return [f"{where}: {len(ref)} items in the reference, {len(got)} here"], math.inf
        for i, (a, b) in enumerate(zip(ref, got)):
            d, w = compare(a, b, tolerance, f"{where}[{i}]")
            diffs += d
            worst = max(worst, w)
    elif isinstance(ref, (int, float)) and isinstance(got, (int, float)) and not isinstance(ref, bool):
        if isinstance(ref, float) and math.isnan(ref) and isinstance(got, float) and math.isnan(got):
            return [], 0.0
        gap = abs(float(ref) - float(got))
        if gap > tolerance:
            diffs.append(f"{where}: {ref} in the reference, {got} here")
        return diffs, gap
    elif ref != got:
        diffs.append(f"{where}: {ref!r} in the reference, {got!r} here")
    return diffs, worst


def volatile(key: str) -> bool:
    """A timing or run-state key: named in VOLATILE, or a duration or rate (a name with ``seconds`` in it,
    ``*_per_second``)."""
    return key in VOLATILE or "seconds" in key or key.endswith("_per_second")


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not volatile(k)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def same_data(a: Path, a_root: Path, b: Path, b_root: Path, tolerance: float) -> bool:
    """Whether two JSON or JSONL files hold the same data once timings and cache paths are set aside."""
    if a.suffix not in (".json", ".jsonl"):
        return False
    try:
        texts = [p.read_text().replace(str(root), "<cache>") for p, root in ((a, a_root), (b, b_root))]
        if a.suffix == ".json":
            rows = [[json.loads(t)] for t in texts]
        else:
            rows = [[json.loads(line) for line in t.splitlines() if line.strip()] for t in texts]
    except (OSError, ValueError):
        return False
    return compare(_strip(rows[0]), _strip(rows[1]), tolerance)[0] == []


def artifact_tables(cache: Path) -> dict[str, dict]:
    """stage/key -> the manifest's file table, for every published artifact."""
    out = {}
    for manifest in cache.glob("*/*/_uptrain_artifact.json"):
        try:
            out[f"{manifest.parent.parent.name}/{manifest.parent.name}"] = json.loads(manifest.read_text()).get("files", {})
        except (OSError, ValueError):
            out[f"{manifest.parent.parent.name}/{manifest.parent.name}"] = {"<unreadable manifest>": {}}
    return out


def leftovers(cache: Path) -> list[str]:
    from uptrain.cache import lock_is_held

    found = []
    for p in sorted(cache.glob("*/*")):
        name = p.name
        if name.startswith((".tmp-", ".corrupt-")) or name.endswith(".work"):
            found.append(f"{p.relative_to(cache)} left behind")
        elif name.endswith(".lock"):
            found.append(f"{p.relative_to(cache)} {'held' if lock_is_held(p) else 'left on disk'}")
    return found


def check_round(exp: str, rnd: int, kills: int, ref_dir: Path, ref_cache: Path, run_dir: Path, cache: Path,
                tolerance: float) -> RoundCheck:
    problems: list[str] = []
    try:
        ref = json.loads((ref_dir / "metrics.json").read_text())
        got = json.loads((run_dir / "metrics.json").read_text())
        diffs, worst = compare(ref, got, tolerance)
    except (OSError, ValueError) as exc:
        diffs, worst = [f"metrics.json unreadable ({exc})"], math.inf
    problems += diffs[:20] + ([f"... and {len(diffs) - 20} more differences"] if len(diffs) > 20 else [])
    ref_tables, tables = artifact_tables(ref_cache), artifact_tables(cache)
    for art, files in sorted(ref_tables.items()):
        if art not in tables:
            problems.append(f"artifact {art} of the reference is missing")
            continue
        mine = tables[art]
        if set(files) != set(mine):
            problems.append(f"artifact {art}: files differ ({sorted(set(files) ^ set(mine))[:5]})")
            continue
        for rel, want in files.items():
            if RUN_RECORDS.search(rel) or want.get("sha256") == mine[rel].get("sha256"):
                continue
            stage, key = art.split("/")
            if not same_data(ref_cache / stage / key / rel, ref_cache, cache / stage / key / rel, cache, tolerance):
                problems.append(f"artifact {art}: {rel} differs from the reference")
    problems += leftovers(cache)
    return RoundCheck(exp, rnd, kills, not problems, worst if math.isfinite(worst) else -1.0, problems)


def chaos(exps: list[str], kills: int, out: Path, seed: int = 0, overrides: list[str] | None = None,
          tolerance: float = 0.0, timeout: float = 1800.0, per_round: int = 3, progress=print) -> dict:
    overrides = list(overrides or [])
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    refs: dict[str, tuple[Path, Path, float]] = {}
    for exp in exps:
        ref_dir, ref_cache = out / exp / "reference", out / exp / "reference-cache"
        shutil.rmtree(ref_dir, ignore_errors=True)
        shutil.rmtree(ref_cache, ignore_errors=True)
        progress(f"[chaos] {exp}: reference run")
        killed, rc, seconds, text = run_once(exp, ref_dir, ref_cache, overrides, None, timeout)
        if rc != 0:
            raise RuntimeError(f"{exp}: the reference run failed (exit {rc}); its log: {ref_dir / 'attempt.log'}\n"
                               + text[-3000:])
        refs[exp] = (ref_dir, ref_cache, seconds)
        progress(f"[chaos] {exp}: reference took {seconds:.0f} s")
    share = {exp: kills // len(exps) + (1 if i < kills % len(exps) else 0) for i, exp in enumerate(exps)}
    attempts: list[Attempt] = []
    checks: list[RoundCheck] = []
    for exp in exps:
        ref_dir, ref_cache, ref_seconds = refs[exp]
        stages = built_stages((ref_dir / "attempt.log").read_text(errors="replace"))
        left, rnd = share[exp], 0
        while left > 0:
            rnd += 1
            cache = out / exp / f"round-{rnd}-cache"
            shutil.rmtree(cache, ignore_errors=True)
            budget = min(left, per_round)
            kills_this_round, index = 0, 0
            while True:
                index += 1
                run_dir = out / exp / f"round-{rnd}" / f"attempt-{index}"
                shutil.rmtree(run_dir, ignore_errors=True)
                kill = draw_kill(rng, ref_seconds, stages, cache) if kills_this_round < budget else None
                killed, rc, seconds, text = run_once(exp, run_dir, cache, overrides, kill, timeout)
                point = kill_point(text) if killed else None
                attempts.append(Attempt(exp, rnd, index, kill.target if kill else None,
                                        round(kill.after, 2) if kill else None, killed, point,
                                        round(seconds, 2), rc))
                if killed:
                    left -= 1
                    kills_this_round += 1
                    progress(f"[chaos] {exp} round {rnd} attempt {index}: killed after {seconds:.1f} s in {point}")
                    continue
                if rc != 0:
                    checks.append(RoundCheck(exp, rnd, kills_this_round, False, -1.0,
                                             [f"attempt {index} failed (exit {rc}): {text.strip().splitlines()[-1:]}"]))
                    progress(f"[chaos] {exp} round {rnd}: attempt {index} FAILED (exit {rc}); log {run_dir}/attempt.log")
                    left = 0
                    break
                check = check_round(exp, rnd, kills_this_round, ref_dir, ref_cache, run_dir, cache, tolerance)
                checks.append(check)
                write_result(out, exps, seed, tolerance, overrides, refs, attempts, checks, finished=False)
                progress(f"[chaos] {exp} round {rnd}: finished after {kills_this_round} kills: "
                         + ("identical to the reference" if check.equal else "; ".join(check.problems[:3])))
                break
    return write_result(out, exps, seed, tolerance, overrides, refs, attempts, checks, finished=True)


def write_result(out: Path, exps, seed, tolerance, overrides, refs, attempts, checks, finished: bool) -> dict:
    """chaos.json and chaos.md as they stand: written after every round, so an interrupted run keeps
    what it measured (``finished`` says whether every kill was spent)."""
    per_stage = Counter(a.kill_point for a in attempts if a.killed)
    result = {
        "experiments": exps, "kills": sum(1 for a in attempts if a.killed), "seed": seed, "tolerance": tolerance,
        "overrides": BASE_OVERRIDES + list(overrides), "finished": finished,
        "reference_seconds": {e: round(r[2], 1) for e, r in refs.items()},
        "kill_points": dict(sorted(per_stage.items(), key=lambda kv: (-kv[1], kv[0]))),
        "kill_points_by_experiment": {e: dict(Counter(a.kill_point for a in attempts if a.killed and a.exp == e))
                                      for e in exps},
        "rounds": [asdict(c) for c in checks],
        "attempts": [asdict(a) for a in attempts],
        "ok": all(c.equal for c in checks) and bool(checks),
    }
    (out / "chaos.json").write_text(json.dumps(result, indent=1))
    (out / "chaos.md").write_text(markdown(result))
    return result


def recheck(out: Path, tolerance: float = 0.0) -> dict:
    """Check every finished round of an earlier ``chaos`` run in ``out`` again (the caches and run
    directories are still there), e.g. with another tolerance; rewrites chaos.json and chaos.md."""
    result = json.loads((out / "chaos.json").read_text())
    rounds = []
    for c in result["rounds"]:
        exp, rnd = c["exp"], c["round"]
        finished = [a for a in result["attempts"] if a["exp"] == exp and a["round"] == rnd and not a["killed"]
                    and a["returncode"] == 0]
        if not finished:
            rounds.append(c)
            continue
        run_dir = out / exp / f"round-{rnd}" / f"attempt-{finished[-1]['index']}"
        rounds.append(asdict(check_round(exp, rnd, c["kills"], out / exp / "reference", out / exp / "reference-cache",
                                         run_dir, out / exp / f"round-{rnd}-cache", tolerance)))
    result.update(rounds=rounds, tolerance=tolerance, ok=all(c["equal"] for c in rounds) and bool(rounds))
    (out / "chaos.json").write_text(json.dumps(result, indent=1))
    (out / "chaos.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        "# Chaos: kill anywhere, resume, same result", "",
        f"{result['kills']} SIGKILLs at seeded random moments (seed {result['seed']}) over "
        f"{', '.join(result['experiments'])} (`{' '.join(result['overrides'])}`); each round re-runs the "
        "same command after every kill until one finishes, then checks it against the uninterrupted run."
        + ("" if result.get("finished", True) else " The run was interrupted: these are the rounds it finished."), "",
        "| Kill point (stage being built) | Kills |", "| --- | ---: |",
    ]
    lines += [f"| {stage} | {n} |" for stage, n in result["kill_points"].items()]
    lines += ["", "| Experiment | Round | Kills | Identical to the reference | Largest numeric difference | Problems |",
              "| --- | ---: | ---: | --- | ---: | --- |"]
    for c in result["rounds"]:
        diff = "-" if c["max_abs_diff"] < 0 else f"{c['max_abs_diff']:.3g}"
        lines.append(f"| {c['exp']} | {c['round']} | {c['kills']} | {'yes' if c['equal'] else 'NO'} | {diff} | "
                     f"{'; '.join(c['problems'][:3]) or '-'} |")
    lines += ["", f"Tolerance for numbers: {result['tolerance']:g}. Reference durations (s): "
              + ", ".join(f"{e} {s:g}" for e, s in result["reference_seconds"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m uptrain.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in all (shared out over the experiments)")
    p.add_argument("--exp", default=",".join(DEFAULT_EXPS), help="experiments, comma-separated")
    p.add_argument("--out", default="chaos-results", help="working folder and report (chaos.md, chaos.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.0, help="largest accepted difference of a metric")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one uninterrupted attempt may take")
    p.add_argument("--per-round", type=int, default=3, help="kills before a round runs to the end and is checked")
    p.add_argument("--recheck", action="store_true",
                   help="check the finished rounds of an earlier run in --out again (no run is started)")
    p.add_argument("overrides", nargs="*", help="further overrides for every run (after the tiny profile)")
    args = p.parse_args(argv)
    if args.recheck:
        result = recheck(Path(args.out), tolerance=args.tolerance)
        print(markdown(result))
        return 0 if result["ok"] else 1
    if args.kills < 1:
        p.error("--kills must be at least 1")
    exps = [e.strip() for e in args.exp.split(",") if e.strip()]
    result = chaos(exps, args.kills, Path(args.out), seed=args.seed, overrides=args.overrides,
                   tolerance=args.tolerance, timeout=args.timeout,
                   per_round=args.per_round)
    print(markdown(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
