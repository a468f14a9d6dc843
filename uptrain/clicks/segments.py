"""Query-frequency buckets as query segments: every ranking measure per bucket of the click log.

``eval.segments.frequency: {_target_: uptrain.clicks.segments.ClickFrequency}`` assigns each
evaluated query to the frequency bucket its key has in the experiment's click log (the log
``clicks.train`` names, or the one simulated over the training collection: the same artifact
the click labels read, from the same cache). Buckets are computed over every query of the
log (:func:`uptrain.clicks.buckets.frequency_buckets`: by default the Baidu-ULTR convention,
10 equal-size buckets by descending frequency, 0-2 ``high``, 3-6 ``medium``, 7-9 ``low``), so an
evaluated query's bucket does not depend on which other queries are evaluated. A simulated
log's queries that drew no session have frequency 0 and are ranked last; an evaluated query
the log does not know at all is put in the ``unseen`` segment, counted and warned about.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from uptrain.errors import ConfigError
from uptrain.evaluate.segments import Segmentation

log = logging.getLogger("uptrain")

UNSEEN = "unseen"


def query_frequencies(clicks) -> dict[str, int]:
    """Query key -> sessions, from a click artifact's value: a simulated log's frequencies
    include the queries that drew no session (0); a read log's are the queries it holds."""
    freq = getattr(clicks, "frequencies", None)
    if callable(freq):  # SimulatedClicks: zero-session queries included
        return {str(q): int(f) for q, f in freq().items()}
    return {str(q): int(f) for q, f in clicks.log.frequencies().items()}


class ClickFrequency(Segmentation):
    """Segments by the query's frequency bucket in the click log (see the module docstring).

    ``scheme``: ``rank`` (``buckets`` equal-size groups merged by ``groups``), ``edges``
    (absolute sessions-per-query thresholds, descending, with ``labels``) or ``quantile``
    (``quantiles`` of sessions per query, descending).
    """

    def __init__(self, scheme: str = "rank", buckets: int = 10, groups: Mapping[str, Sequence[int]] | None = None,
                 edges: Sequence[float] | None = None, labels: Sequence[str] | None = None,
                 quantiles: Sequence[float] | None = None, collections: Sequence[str] | str | None = None):
        super().__init__(collections)
        from uptrain.clicks.buckets import check_bucketing

        self.params = {"scheme": str(scheme), "buckets": int(buckets),
                       "groups": {str(k): [int(i) for i in v] for k, v in groups.items()} if groups else None,
                       "edges": list(edges) if edges is not None else None,
                       "labels": [str(x) for x in labels] if labels is not None else None,
                       "quantiles": list(quantiles) if quantiles is not None else None}
        check_bucketing(**self.params)
        self.table: dict[str, str] | None = None
        self.frequencies: dict[str, int] = {}
        self._unseen = 0
        self._evaluated: dict[str, int] = {}
        self._assigned: dict[str, str] = {}

    def prepare(self, ctx) -> None:
        from uptrain.clicks.buckets import frequency_buckets

        self.frequencies = query_frequencies(ctx.require("clicks").value)
        if not self.frequencies:
            raise ConfigError("eval.segments (ClickFrequency): the click log has no query to bucket")
        self.table = frequency_buckets(self.frequencies, **self.params)

    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        if self.table is None:
            raise RuntimeError("ClickFrequency.assign before prepare(): the click log is not loaded")
        out = {q: self.table.get(str(q), UNSEEN) for q in queries}
        self._unseen = sum(1 for s in out.values() if s == UNSEEN)
        for s in out.values():
            self._evaluated[s] = self._evaluated.get(s, 0) + 1
        self._assigned.update(out)
        if self._unseen:
            log.warning("frequency buckets: %d of %d evaluated queries are not in the click log (segment '%s')",
                        self._unseen, len(out), UNSEEN)
        return out

    def order(self) -> list[str]:
        from uptrain.clicks.buckets import bucket_order

        names = bucket_order(self.table or {})
        if self.params["labels"]:
            names = [n for n in self.params["labels"] if n in set(names)] + [n for n in names if n not in self.params["labels"]]
        return names + [UNSEEN]

    def summary(self) -> dict | None:
        if self.table is None:
            return None
        out: dict = {"params": {k: v for k, v in self.params.items() if v is not None}, "buckets": {}}
        for name in self.order():
            fs = [self.frequencies[q] for q, b in self.table.items() if b == name]
            if not fs:
                continue
            out["buckets"][name] = {"queries": len(fs), "sessions": int(sum(fs)), "min_frequency": int(min(fs)),
                                    "max_frequency": int(max(fs))}
        out["evaluated"] = dict(self._evaluated)
        out["unseen"] = self._unseen
        # evaluated query -> (bucket, sessions): what per-bucket tests of a sweep read
        out["queries"] = {q: [b, int(self.frequencies.get(q, 0))] for q, b in sorted(self._assigned.items())}
        return out

    def report(self) -> dict[str, str]:
        info = self.summary()
        if not info:
            return {}
        rows = [f"| {b} | {v['queries']} | {v['sessions']} | {v['min_frequency']}-{v['max_frequency']} | "
                f"{info['evaluated'].get(b, 0)} |" for b, v in info["buckets"].items()]
        if info["unseen"]:
            rows.append(f"| {UNSEEN} | - | - | - | {info['unseen']} |")
        scheme = info["params"].get("scheme")
        how = ("queries sorted by sessions (most first) into 10 equal-size buckets; 0-2 high, 3-6 medium, 7-9 low "
               "(the Baidu-ULTR convention)" if scheme == "rank" and not info["params"].get("groups")
               else f"scheme {scheme}, {info['params']}")
        return {"Query-frequency buckets": (
            f"Buckets over every query of the click log: {how}. Each measure is reported per bucket.\n\n"
            "| bucket | log queries | sessions | sessions per query | evaluated queries |\n"
            "| --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))}
