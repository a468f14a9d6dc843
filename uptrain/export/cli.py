"""``uptrain export RUN_DIR [--out DIR]`` (also ``uptrain-export``): a run's labels for other toolkits.

Writes, under ``--out`` (default ``RUN_DIR/export``): per training phase a Hugging Face dataset
folder with its TREC qrels, every label artifact of the run as Parquet (and its qrels), and
``export.json`` listing what was written. See :mod:`uptrain.export.tables` for the columns.
"""

from __future__ import annotations

import argparse
import logging
import sys

from uptrain.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uptrain export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory (the folder holding metrics.json and artifacts/)")
    parser.add_argument("--out", help="where to write (default: RUN_DIR/export)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from uptrain.export.tables import export_run

    try:
        written = export_run(args.run_dir, args.out)
    except UserError as exc:
        print(f"uptrain export: error: {exc}", file=sys.stderr)
        return 2
    for name, info in written.items():
        extra = f" (+ {info['qrels']})" if info.get("qrels") else ""
        print(f"{name}: {info['kind']}, {info['rows']} rows -> {info['path']}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
