"""Click stages of the run graph: read a log, fit a click model, evaluate every click model.

``clicks_read``        a click log file (any reader format) -> uptrain's JSONL log, keyed by the
                       file's sha256 (an edited file is a new artifact)
``click_model``        one click model fit on a log -> its relevance estimate per (query, document),
                       its parameters and fit statistics
``click_models_eval``  every configured model fit on a train log and evaluated on a test log
                       (given, or the last ``test_fraction`` of the train log by session order):
                       log-likelihood, perplexity (overall and per rank), CTR error, overall and
                       per query-frequency bucket, a Markdown table and a PNG of perplexity per rank
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from uptrain.cache import file_digest, write_atomic
from uptrain.clicks.log import ClickLog, ClickLogError
from uptrain.errors import ConfigError
from uptrain.graph import Artifact, Stage

log = logging.getLogger("uptrain")

LOG_FILE = "log.jsonl"


@dataclass
class LoadedClicks:
    """A click log artifact's value: the log, and the simulator's truth when it was simulated."""

    log: ClickLog
    truth: dict | None = None
    source: str = ""


def _read_jsonl(path: Path) -> ClickLog:
    from uptrain.clicks.readers import read_log

    return read_log(path, format="jsonl", ranks=None)


class ReadClicksStage(Stage[LoadedClicks]):
    """A user's click log (``clicks.train`` / ``clicks.test``) read once into uptrain's format."""

    name = "clicks_read"
    version = 1

    def __init__(self, path: str, format: str = "auto", ranks: int | None = 10, role: str = "train"):
        self.path = str(path)
        self.format = str(format)
        self.ranks = None if ranks is None else int(ranks)
        self.role = role

    def validate(self) -> None:
        from uptrain.clicks.readers import READERS, detect_format

        p = Path(self.path).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"clicks.{self.role} = {self.path!r} is not a file. Give a click log: uptrain's JSONL, the Yandex "
                f"WSCD sample (PyClick's layout) or raw 2011 log, or TREC Session Track / TianGong-ST XML "
                f"(formats: {', '.join(sorted(READERS))}; clicks.format=auto detects them)"
            )
        if self.format != "auto" and self.format not in READERS:
            raise ConfigError(f"clicks.format must be auto or one of {', '.join(sorted(READERS))}, got {self.format!r}")
        if self.format == "auto":
            detect_format(p)  # an unknown layout fails here, before anything slow

    def spec(self) -> dict:  # keyed by content (file_digest memoizes by path, size and mtime)
        return {"sha256": file_digest(Path(self.path).expanduser()), "format": self.format, "ranks": self.ranks}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        from uptrain.clicks.readers import read_log

        clicks = read_log(Path(self.path).expanduser(), format=self.format, ranks=self.ranks)
        if len(clicks) == 0:
            raise ClickLogError(f"clicks.{self.role} = {self.path}: no session could be read ({clicks.stats.as_dict()})")
        clicks.write_jsonl(out / LOG_FILE)
        summary = {"source": self.path, "format": self.format, **clicks.summary(),
                   "reader_notes": getattr(clicks, "reader_notes", None) or {}}
        (out / "stats.json").write_text(json.dumps(summary, indent=2))

    def load(self, path: Path) -> LoadedClicks:
        return LoadedClicks(_read_jsonl(path / LOG_FILE), None, self.path)

    def report(self, artifact: Artifact) -> dict[str, str]:
        st = json.loads((artifact.path / "stats.json").read_text())
        problems = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in (st.get("problems") or {}).items())
        return {f"Click log ({self.role})": (
            f"`{st['source']}`: {st['sessions']} sessions, {st['queries']} queries, {st['documents']} documents, "
            f"{st['clicks']} clicks ({st['repeated_clicks']} repeated clicks kept)"
            + (f"; counted while reading: {problems}" if problems else "") + ".")}


class FitClickModelStage(Stage[Any]):
    """One click model fit on a log: what ``click:<model>`` and ``click:ips`` labels read."""

    name = "click_model"
    inputs = ("clicks",)
    version = 1

    def __init__(self, model: str, **model_kwargs):
        self.model = str(model)
        self.model_kwargs = dict(model_kwargs)

    def validate(self) -> None:
        from uptrain.clicks.models import make

        make(self.model, **self.model_kwargs)

    def spec(self) -> dict:
        return {"model": self.model, "kwargs": self.model_kwargs}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        from uptrain.clicks.models import make

        clicks = inputs["clicks"].value.log
        model = make(self.model, **self.model_kwargs).fit(clicks, progress=True)
        table = model.relevance_table()
        index, pq, pd = clicks.pairs()
        shown = index >= 0
        impressions = {}
        counts = np.bincount(index[shown], minlength=len(pq))
        for i, (q, d) in enumerate(zip(pq, pd)):
            impressions[(clicks.queries[q], clicks.doc_ids[d])] = int(counts[i])
        with open(out / "relevance.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["query", "doc", "relevance", "impressions"])
            for (q, d), v in sorted(table.items()):
                w.writerow([q, d, f"{v:.6g}", impressions.get((q, d), 0)])
        (out / "model.json").write_text(json.dumps(
            {"model": self.model, "params": model.params(), "fit_stats": _jsonable(model.fit_stats)}, indent=2))

    def load(self, path: Path) -> "FittedClickModel":
        return FittedClickModel.load(path)


@dataclass
class FittedClickModel:
    model: str
    relevance: dict[tuple[str, str], float]
    impressions: dict[tuple[str, str], int]
    params: dict

    @classmethod
    def load(cls, path: Path) -> "FittedClickModel":
        rel, imp = {}, {}
        with open(path / "relevance.tsv", newline="") as f:
            r = csv.reader(f, delimiter="\t")
            next(r)
            for q, d, v, n in r:
                rel[(q, d)] = float(v)
                imp[(q, d)] = int(n)
        meta = json.loads((path / "model.json").read_text())
        return cls(meta["model"], rel, imp, meta.get("params") or {})

    def by_query(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (q, d), v in self.relevance.items():
            out.setdefault(q, {})[d] = v
        return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class ClickModelsStage(Stage[dict]):
    """Every configured click model fit on ``train`` and evaluated on ``test`` (or a split of train)."""

    name = "click_models_eval"
    version = 1

    def __init__(self, models: Sequence[str], test_fraction: float = 0.25, has_test: bool = False,
                 buckets: Mapping | None = None, model_kwargs: Mapping | None = None, split: str = "query",
                 judgments: str | None = None):
        if split not in ("query", "session"):
            raise ConfigError(f"clicks.split must be 'query' or 'session', got {split!r}")
        self.split = split
        self.models = [str(m) for m in models]
        self.test_fraction = float(test_fraction)
        self.has_test = bool(has_test)
        self.buckets = dict(buckets or {})
        self.model_kwargs = {str(k): dict(v or {}) for k, v in (model_kwargs or {}).items()}
        self.inputs = ("train", "test") if self.has_test else ("train",)
        self.judgments = None if not judgments else str(judgments)

    def validate(self) -> None:
        from uptrain.clicks.models import CLICK_MODELS, make

        if not self.models:
            raise ConfigError(f"clicks.models is empty: name click models among {', '.join(CLICK_MODELS)}")
        for m in self.models:
            make(m, **self.model_kwargs.get(m, {}))
        if self.judgments and not Path(self.judgments).expanduser().is_file():
            raise ConfigError(f"clicks.judgments = {self.judgments!r} is not a file (TREC qrels: 'topic 0 docid grade')")
        if not self.has_test and not 0 < self.test_fraction < 1:
            raise ConfigError(f"clicks.test_fraction must be in (0, 1) when clicks.test is unset, got {self.test_fraction}")

    def spec(self) -> dict:
        return {"models": self.models, "test_fraction": None if self.has_test else self.test_fraction,
                "split": None if self.has_test else self.split,
                "buckets": self.buckets, "model_kwargs": self.model_kwargs,
                **({"judgments_sha256": file_digest(Path(self.judgments).expanduser())} if self.judgments else {})}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        from uptrain.clicks.buckets import frequency_buckets
        from uptrain.clicks.evaluate import evaluate_all

        train = inputs["train"].value.log
        full = train
        if self.has_test:
            test = inputs["test"].value.log
            split = "given test log"
        else:
            train, test = train.split(self.test_fraction, by=self.split)
            split = (f"the last {self.test_fraction:g} of each query's sessions, in log order" if self.split == "query"
                     else f"the last {self.test_fraction:g} of the sessions, in log order")
        buckets = frequency_buckets(train.frequencies(), **self.buckets) if self.buckets is not None else None
        results = {}
        for name in self.models:
            results.update(evaluate_all([name], train, test, buckets=buckets, progress=True,
                                        **self.model_kwargs.get(name, {})))
        payload = {"split": split, "train_sessions": len(train), "test_sessions": len(test),
                   "buckets": self.buckets or {"scheme": "rank", "buckets": 10}, "models": _jsonable(results)}
        table = click_model_table(payload)
        if self.judgments:
            from uptrain.clicks.agreement import agreement_table, grade_agreement
            from uptrain.clicks.readers import judgments_for_log, read_judgments

            grades, unjudged = judgments_for_log(full, read_judgments(Path(self.judgments).expanduser()))
            if not grades:
                raise ClickLogError(f"clicks.judgments = {self.judgments}: no shown (query, document) pair of the log "
                                    "is judged (do the log's topics and the judgments' topic ids agree?)")
            agreement = grade_agreement(full, grades, self.models, self.model_kwargs)
            payload["grade_agreement"] = {"judged_pairs": len(grades), "unjudged_pairs": unjudged,
                                          "models": _jsonable(agreement)}
            table += "\n\nClicks against the human grades (`clicks.judgments`): " + agreement_table(
                agreement, len(grades), unjudged)
        write_atomic(out / "results.json", json.dumps(payload, indent=2))
        write_atomic(out / "table.md", table)
        try:
            from uptrain.report.plots import perplexity_plot

            perplexity_plot({n: r.get("perplexity_at") or [] for n, r in payload["models"].items()},
                            payload["test_sessions"], out / "perplexity_at.png")
        except Exception as exc:  # noqa: BLE001 - a plot never loses the numbers
            log.warning("click models: the perplexity plot could not be drawn (%s); results.json has the numbers", exc)

    def load(self, path: Path) -> dict:
        return json.loads((path / "results.json").read_text())

    def report(self, artifact: Artifact) -> dict[str, str]:
        body = (artifact.path / "table.md").read_text()
        if (artifact.path / "perplexity_at.png").is_file():
            body += f"\n\n![perplexity per rank]({artifact.path / 'perplexity_at.png'})"
        return {"Click models": body}


def click_model_table(payload: dict) -> str:
    models = payload["models"]
    ranks = max((len(r.get("perplexity_at") or []) for r in models.values()), default=0)
    head = ("| model | log-likelihood | perplexity | CTR error | " + " | ".join(f"PPL@{i + 1}" for i in range(ranks))
            + " |")
    sep = "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in range(ranks)) + " |"
    rows = []
    for name, r in models.items():
        at = r.get("perplexity_at") or []
        rows.append(f"| {name} | {_num(r.get('log_likelihood'))} | {_num(r.get('perplexity'))} | {_num(r.get('ctr_error'))} | "
                    + " | ".join("n/a" if x is None or x != x else f"{x:.4f}" for x in at) + " |")
    text = (f"Fit on {payload['train_sessions']} sessions, evaluated on {payload['test_sessions']} "
            f"({payload['split']}). Log-likelihood: mean over sessions of the mean over ranks of "
            "ln P(C_r = c_r | clicks above r); perplexity per rank: 2^(-mean log2 P(C_r = c_r)) with unconditional "
            "probabilities, overall = mean over ranks (lower is better; 1 is perfect, 2 is a coin).\n\n"
            + "\n".join([head, sep, *rows]))
    segs = sorted({s for r in models.values() for s in (r.get("segments") or {})})
    if segs:
        from uptrain.clicks.buckets import bucket_order

        order = [s for s in bucket_order({s: s for s in segs}) if s in segs]
        head = "| model | " + " | ".join(f"PPL {s} | LL {s}" for s in order) + " |"
        sep = "| --- | " + " | ".join("---: | ---:" for _ in order) + " |"
        rows = []
        for name, r in models.items():
            cells = []
            for s in order:
                seg = (r.get("segments") or {}).get(s)
                cells.append("n/a | n/a" if not seg else f"{_num(seg.get('perplexity'))} | {_num(seg.get('log_likelihood'))}")
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        text += ("\n\nPer query-frequency bucket (queries sorted by sessions in the train log into 10 equal-size "
                 "buckets; 0-2 high, 3-6 medium, 7-9 low, the Baidu-ULTR convention):\n\n" + "\n".join([head, sep, *rows]))
    return text


def _num(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.4f}"
