"""Collections with a standard ir_datasets ID, usable offline from a seeded cache.

ir_datasets reads ``IR_DATASETS_HOME`` when it is imported (each dataset's source
paths are fixed then), so set it before anything imports ir_datasets. With
``UPTRAIN_DATA`` pointing at a folder like the project's shared data folder, its
``irds/`` tree is copied into that home first, so the standard IDs load without
network.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from uptrain.data.collection import Collection
from uptrain.data.sources import DatasetUnavailableError, Source, assemble, join_fields

log = logging.getLogger("uptrain.data")


def irds_home() -> Path:
    """The ir_datasets home, resolved as ``ir_datasets.util.home_path`` does (without importing it)."""
    return Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))


def resolve_data_root(path: str | Path | None = None) -> Path | None:
    """The shared data folder: the argument, else ``UPTRAIN_DATA`` when set and non-empty."""
    if path is not None:
        return Path(path).expanduser()
    value = os.environ.get("UPTRAIN_DATA", "").strip()
    return Path(value).expanduser() if value else None


def seed_ir_datasets_home(data_root: str | Path | None = None) -> list[Path]:
    """Copy ``<data_root>/irds/**`` into the ir_datasets home; returns the paths copied.

    Files already there with the same size are skipped, so a second call copies
    nothing. Copies, never links: ir_datasets writes its docstore beside the source.
    """
    root = resolve_data_root(data_root)
    if root is None:
        return []
    src = root / "irds"
    if not src.is_dir():
        log.debug("no irds/ folder under %s; nothing to seed", root)
        return []
    home = irds_home()
    copied: list[Path] = []
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        dest = home / file.relative_to(src)
        if dest.is_file() and dest.stat().st_size == file.stat().st_size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        # temp file + rename: a concurrent reader never sees a half-written archive
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(file, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        copied.append(dest)
    if copied:
        log.info("seeded %d file(s) from %s into the ir_datasets home %s", len(copied), src, home)
    return copied


def _data_root_state() -> str:
    root = resolve_data_root()
    if root is None:
        return "UPTRAIN_DATA is not set."
    if not (root / "irds").is_dir():
        return f"UPTRAIN_DATA is {str(root)!r}, which has no irds/ folder."
    return f"UPTRAIN_DATA is {str(root)!r}; its irds/ folder was copied in but does not hold this dataset."


def _remedies(dataset_id: str) -> str:
    return (
        f"{_data_root_state()} To use '{dataset_id}': either set UPTRAIN_DATA to a folder holding an irds/ copy of "
        f"ir_datasets' files (shaped like the project's shared data folder; it is copied into the "
        f"ir_datasets home, now {str(irds_home())!r}, on load), or run where ir_datasets can download "
        f"it; or point a local-collection config at a copy of the collection "
        f"(uptrain.data.BeirFolderSource for a BEIR folder, uptrain.data.TrecSource for TREC files)."
    )


def _lookup(dataset_id: str, collection: str):
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        known = list(ir_datasets.registry)
        close = difflib.get_close_matches(dataset_id, known, n=5, cutoff=0.6)
        hint = f" Close known IDs: {', '.join(close)}." if close else ""
        raise DatasetUnavailableError(
            f"Collection '{collection}': ir_datasets {ir_datasets.__version__} has no dataset "
            f"'{dataset_id}'.{hint} Check dataset_id in the config. {_remedies(dataset_id)}"
        ) from None


class IrdsSource(Source):
    """A collection loaded through ``ir_datasets.load(dataset_id)``.

    ``fields=None`` joins ``[title, text]`` when the document type has a title that the
    text does not already start with (Cranfield's does), else ``[text]``.
    """

    kind = "ir_datasets"

    def __init__(
        self,
        dataset_id: str,
        name: str | None = None,
        fields: str | Sequence[str] | None = None,
        max_queries: int | None = None,
        max_docs: int | None = None,
        relevance_map: dict | None = None,
    ):
        super().__init__(name or dataset_id.replace("/", "_"), fields, max_queries, max_docs, relevance_map)
        self.dataset_id = str(dataset_id)

    def content_spec(self) -> dict:
        return {"dataset_id": self.dataset_id}

    def _fields_for(self, ds, first_doc) -> list[str]:
        available = list(ds.docs_cls()._fields)
        if self.fields is not None:
            unknown = [f for f in self.fields if f not in available]
            if unknown:
                raise ValueError(
                    f"Collection '{self.name}': {self.dataset_id} documents have no field(s) {unknown}; "
                    f"available: {available}"
                )
            return self.fields
        if "title" in available and "text" in available:
            title = (getattr(first_doc, "title", "") or "").strip() if first_doc is not None else ""
            text = (getattr(first_doc, "text", "") or "").strip() if first_doc is not None else ""
            if title and text.startswith(title):
                return ["text"]
            return ["title", "text"]
        return ["text"] if "text" in available else [available[1]]

    def load_full(self) -> Collection:
        seed_ir_datasets_home()
        ds = _lookup(self.dataset_id, self.name)
        for part in ("docs", "queries", "qrels"):
            if not getattr(ds, f"has_{part}")():
                raise ValueError(
                    f"Collection '{self.name}': ir_datasets '{self.dataset_id}' provides no {part}; "
                    f"name a split that has documents, queries and qrels (e.g. beir/scifact/test)."
                )
        from ir_datasets.util import HashVerificationError

        try:
            raw_docs = list(ds.docs_iter())
            fields = self._fields_for(ds, raw_docs[0] if raw_docs else None)
            docs = [(d.doc_id, join_fields(getattr(d, f) for f in fields)) for d in raw_docs]
            del raw_docs
            queries = [(q.query_id, _query_text(q)) for q in ds.queries_iter()]
            qrels = [(r.query_id, r.doc_id, r.relevance) for r in ds.qrels_iter()]
        except (OSError, RuntimeError, HashVerificationError) as exc:
            # offline with the files absent, ir_datasets' download fails with one of these
            raise DatasetUnavailableError(
                f"Collection '{self.name}': ir_datasets could not load '{self.dataset_id}': its files are "
                f"not in the ir_datasets home {str(irds_home())!r} and fetching them failed "
                f"({_cause_text(exc)}). {_remedies(self.dataset_id)}"
            ) from exc
        log.info("%s: %s documents use fields %s", self.name, self.dataset_id, fields)
        return assemble(self.name, docs, queries, qrels)


def _query_text(query) -> str:
    text = getattr(query, "text", None)
    if text is None and hasattr(query, "default_text"):
        text = query.default_text()
    if text is None:
        text = getattr(query, "title", "")
    return str(text).strip()


def _cause_text(exc: BaseException) -> str:
    # ir_datasets wraps per-mirror failures as RuntimeError(msg, [(mirror, error), ...])
    args = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[1], list) and args[1]:
        last = args[1][-1]
        inner = last[1] if isinstance(last, tuple) and len(last) == 2 else last
        if isinstance(inner, BaseException):
            return f"{args[0]}; last: {_cause_text(inner)}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"
