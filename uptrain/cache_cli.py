"""``uptrain cache`` (also ``uptrain-cache``): inspect, check and prune the artifact cache.

    uptrain cache ls [--stage S] [--json]          artifacts: size, built, last use, the runs that link them
    uptrain cache verify [--size-only] [--fix]     check every artifact against its manifest
    uptrain cache gc [--unreferenced] [--before DATE] [--dry-run]
                                                   remove artifacts no existing run links, or unused since DATE,
                                                   and the leftovers of killed builds
    uptrain cache rm KEY [KEY ...]                 remove artifacts by key (a unique prefix will do)

The cache is ``--cache-dir``, else ``UPTRAIN_CACHE_DIR``, else ``~/.cache/uptrain``. An artifact that
a live process is building (its lock is held) is never removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from uptrain.cache import (MANIFEST, RUNS_DIR, ArtifactCache, _human, _read_record, default_cache_dir,
                           holder_gone, lock_is_held, tree_size)


@dataclass
class Item:
    stage: str
    key: str
    path: Path
    size: int
    created: str
    runs: list[str] = field(default_factory=list)
    last_used: str = ""

    def as_dict(self) -> dict:
        return {"stage": self.stage, "key": self.key, "path": str(self.path), "size": self.size,
                "created": self.created, "last_used": self.last_used, "runs": self.runs}


def _stage_dirs(root: Path):
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith((".", "_")):
            yield d


def artifacts(root: Path) -> list[Item]:
    """Every published artifact, with the runs whose links still point at it."""
    items: dict[Path, Item] = {}
    for stage_dir in _stage_dirs(root):
        for art in sorted(stage_dir.iterdir()):
            if art.name.startswith(".") or not art.is_dir() or art.name.endswith(".work"):
                continue
            created = ""
            try:
                created = json.loads((art / MANIFEST).read_text()).get("created", "")
            except (OSError, ValueError):
                continue  # no manifest: not an artifact (gc removes such leftovers)
            items[art.resolve()] = Item(stage_dir.name, art.name, art, tree_size(art), created,
                                        last_used=created)
    for rec_path in sorted((root / RUNS_DIR).glob("*.json")) if (root / RUNS_DIR).is_dir() else []:
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        run_dir = Path(rec.get("run_dir", ""))
        for label, ref in (rec.get("artifacts") or {}).items():
            link = run_dir / "artifacts" / label
            try:
                target = link.resolve(strict=True) if link.is_symlink() else None
            except OSError:
                target = None
            item = items.get(target) if target else None
            if item is None:
                continue
            item.runs.append(str(run_dir))
            item.last_used = max(item.last_used, rec.get("updated", ""))
    return list(items.values())


def _leftovers(root: Path) -> list[tuple[Path, str]]:
    """Half-written builds, damaged artifacts set aside, free lock files and directories without a manifest."""
    out = []
    for stage_dir in _stage_dirs(root):
        for p in sorted(stage_dir.iterdir()):
            name = p.name
            if name.startswith((".tmp-", ".corrupt-")):
                key = name.split("-")[1]
                if not lock_is_held(stage_dir / f"{key}.lock"):
                    out.append((p, "left by a killed build"))
            elif name.endswith(".lock") and not lock_is_held(p):
                out.append((p, "a lock no process holds"))
            elif p.is_dir() and not name.endswith(".work") and not name.startswith(".") and not (p / MANIFEST).is_file():
                if not lock_is_held(stage_dir / f"{name}.lock"):
                    out.append((p, "no manifest (never completed)"))
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def cmd_ls(cache: ArtifactCache, args) -> int:
    items = [i for i in artifacts(cache.root) if not args.stage or i.stage == args.stage]
    if args.json:
        print(json.dumps([i.as_dict() for i in items], indent=1))
        return 0
    if not items:
        print(f"{cache.root}: no artifacts")
        return 0
    print(f"{'stage':<24} {'key':<16} {'size':>9}  {'built':<19}  {'last used':<19}  runs")
    for i in items:
        runs = ", ".join(i.runs[:2]) + (f" (+{len(i.runs) - 2})" if len(i.runs) > 2 else "") if i.runs else "-"
        print(f"{i.stage:<24} {i.key:<16} {_human(i.size):>9}  {i.created:<19}  {i.last_used:<19}  {runs}")
    total = sum(i.size for i in items)
    print(f"{len(items)} artifacts, {_human(total)}, {sum(1 for i in items if not i.runs)} linked by no existing run")
    return 0


def cmd_verify(cache: ArtifactCache, args) -> int:
    level = "size" if args.size_only else "full"
    bad = 0
    items = artifacts(cache.root)
    for i in items:
        problems = cache.problems(i.stage, i.key, level)
        if problems:
            bad += 1
            print(f"DAMAGED {i.stage}/{i.key}: " + "; ".join(problems[:5]))
            if args.fix:
                _remove(i.path)
                print(f"  removed (the next run that needs it rebuilds it)")
    print(f"{len(items)} artifacts checked ({level}), {bad} damaged")
    return 1 if bad and not args.fix else 0


def cmd_gc(cache: ArtifactCache, args) -> int:
    before = args.before
    victims: list[tuple[Path, str]] = []
    for i in artifacts(cache.root):
        if lock_is_held(cache.lock_path(i.stage, i.key)):
            continue
        if args.unreferenced and not i.runs:
            victims.append((i.path, "linked by no existing run"))
        elif before and (i.last_used or i.created) < before:
            victims.append((i.path, f"last used {i.last_used or i.created}"))
    victims += _leftovers(cache.root)
    freed = 0
    for path, why in victims:
        size = tree_size(path) if path.is_dir() else 0
        print(f"{'would remove' if args.dry_run else 'removed'} {path.relative_to(cache.root)} ({why}, {_human(size)})")
        if not args.dry_run:
            _remove(path)
        freed += size
    for rec_path in sorted((cache.root / RUNS_DIR).glob("*.json")) if (cache.root / RUNS_DIR).is_dir() else []:
        run_dir = Path(_read_record(rec_path).get("run_dir", "/nonexistent"))
        if not run_dir.exists() and not args.dry_run:
            rec_path.unlink(missing_ok=True)  # the run directory was deleted: its record goes too
    print(f"{len(victims)} removed{' (dry run)' if args.dry_run else ''}, {_human(freed)}")
    return 0


def cmd_rm(cache: ArtifactCache, args) -> int:
    items = artifacts(cache.root)
    status = 0
    for want in args.keys:
        found = [i for i in items if i.key.startswith(want) or f"{i.stage}/{i.key}".startswith(want)]
        if len(found) != 1:
            print(f"uptrain cache rm: {want!r} matches {len(found)} artifacts"
                  + (": " + ", ".join(f"{i.stage}/{i.key}" for i in found[:6]) if found else ""), file=sys.stderr)
            status = 2
            continue
        item = found[0]
        if lock_is_held(cache.lock_path(item.stage, item.key)):
            print(f"uptrain cache rm: {item.stage}/{item.key} is being used by a build now; not removed",
                  file=sys.stderr)
            status = 2
            continue
        _remove(item.path)
        print(f"removed {item.stage}/{item.key} ({_human(item.size)})")
    return status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uptrain cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=None, help="the cache (default: UPTRAIN_CACHE_DIR or ~/.cache/uptrain)")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("ls", help="list artifacts: size, built, last use, the runs that link them")
    ls.add_argument("--stage", default=None)
    ls.add_argument("--json", action="store_true")
    v = sub.add_parser("verify", help="check every artifact's files against its manifest")
    v.add_argument("--size-only", action="store_true", help="compare sizes, not checksums")
    v.add_argument("--fix", action="store_true", help="remove damaged artifacts (rebuilt when next needed)")
    g = sub.add_parser("gc", help="remove unreferenced or old artifacts and leftovers of killed builds")
    g.add_argument("--unreferenced", action="store_true", help="artifacts that no existing run directory links")
    g.add_argument("--before", default=None, help="artifacts last used before this date (YYYY-MM-DD)")
    g.add_argument("--dry-run", action="store_true")
    r = sub.add_parser("rm", help="remove artifacts by key or stage/key (a unique prefix)")
    r.add_argument("keys", nargs="+")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "gc" and args.before:
        try:
            time.strptime(args.before[:10], "%Y-%m-%d")
        except ValueError:
            print(f"uptrain cache gc: --before {args.before!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
            return 2
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if not root.is_dir():
        print(f"uptrain cache: {root} does not exist (no run has used it yet)", file=sys.stderr)
        return 2
    cache = ArtifactCache(root)
    return {"ls": cmd_ls, "verify": cmd_verify, "gc": cmd_gc, "rm": cmd_rm}[args.cmd](cache, args)


if __name__ == "__main__":
    sys.exit(main())
