"""Query-frequency buckets: every click-model and ranking measure reported per bucket.

The default follows the Baidu-ULTR starter kit's convention: queries sorted by search
frequency (sessions per query, most frequent first) into 10 buckets, buckets 0-2 reported
as ``high``, 3-6 as ``medium`` and 7-9 as ``low``. The kit does not say whether its buckets
hold equal numbers of queries or of sessions; here they hold equal numbers of queries
(``numpy.array_split`` of the sorted list, ties broken by query key), which is stated
wherever a table shows them. ``quantile`` thresholds over sessions and absolute ``edges``
are the options.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from uptrain.errors import ConfigError

DEFAULT_GROUPS = {"high": (0, 1, 2), "medium": (3, 4, 5, 6), "low": (7, 8, 9)}


def frequency_buckets(
    frequencies: Mapping[str, int],
    scheme: str = "rank",
    buckets: int = 10,
    groups: Mapping[str, Sequence[int]] | None = None,
    edges: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    quantiles: Sequence[float] | None = None,
) -> dict[str, str]:
    """Query key -> bucket name.

    ``rank``: the Baidu-ULTR convention (``buckets`` equal-size groups of queries by
    descending frequency, merged by ``groups``; default high/medium/low as above).
    ``edges``: absolute thresholds on sessions per query, descending order of the names in
    ``labels`` (one more label than edges): with edges [100, 10] and labels [high, medium,
    low], a query with f >= 100 is high, 10 <= f < 100 medium, else low.
    ``quantile``: the same with edges at the given quantiles of sessions per query (descending,
    each in (0, 1); numpy's linear interpolation): [0.9, 0.5] makes the top decile of
    frequencies high, the rest above the median medium, the others low.
    """
    if not frequencies:
        return {}
    if scheme == "quantile":
        if not quantiles:
            raise ConfigError("frequency buckets with scheme=quantile need quantiles (descending, each in (0, 1))")
        qs = [float(x) for x in quantiles]
        if qs != sorted(qs, reverse=True) or not all(0 < x < 1 for x in qs) or len(set(qs)) != len(qs):
            raise ConfigError(f"frequency bucket quantiles must be distinct, descending and in (0, 1), got {list(quantiles)}")
        values = np.array([int(v) for v in frequencies.values()], dtype=np.float64)
        cut = [float(np.quantile(values, x)) for x in qs]
        names = list(labels) if labels is not None else (["high", "medium", "low"] if len(qs) == 2 else
                                                         [f"q>={qs[0]:g}"] + [f"q{b:g}-{a:g}" for a, b in zip(qs, qs[1:])]
                                                         + [f"q<{qs[-1]:g}"])
        if len(names) != len(qs) + 1:
            raise ConfigError(f"{len(qs)} frequency quantiles need {len(qs) + 1} labels, got {names}")
        return {q: names[sum(1 for e in cut if int(f) < e)] for q, f in frequencies.items()}
    if scheme == "rank":
        groups = dict(groups or DEFAULT_GROUPS)
        covered = sorted(i for g in groups.values() for i in g)
        if covered != list(range(buckets)):
            raise ConfigError(f"frequency bucket groups {groups} must cover buckets 0..{buckets - 1} once each")
        order = sorted(frequencies, key=lambda q: (-int(frequencies[q]), q))
        name_of = {i: g for g, idx in groups.items() for i in idx}
        out = {}
        for i, part in enumerate(np.array_split(np.array(order, dtype=object), buckets)):
            for q in part:
                out[str(q)] = name_of[i]
        return out
    if scheme == "edges":
        if not edges:
            raise ConfigError("frequency buckets with scheme=edges need edges (sessions per query, descending)")
        edges = [float(e) for e in edges]
        if edges != sorted(edges, reverse=True):
            raise ConfigError(f"frequency bucket edges must be descending, got {edges}")
        labels = list(labels or ([f"f>={edges[0]:g}"] + [f"f{b:g}-{a:g}" for a, b in zip(edges, edges[1:])]
                                 + [f"f<{edges[-1]:g}"]))
        if len(labels) != len(edges) + 1:
            raise ConfigError(f"{len(edges)} frequency edges need {len(edges) + 1} labels, got {labels}")
        return {q: labels[sum(1 for e in edges if f < e)] for q, f in frequencies.items()}
    raise ConfigError(f"frequency bucket scheme must be 'rank', 'edges' or 'quantile', got {scheme!r}")


def check_bucketing(**settings) -> dict:
    """The settings of :func:`frequency_buckets`, checked on a toy table (so a bad scheme, group,
    edge or label fails before anything slow runs); a ConfigError names what is wrong."""
    try:
        n = max(int(settings.get("buckets", 10)), 10)
        frequency_buckets({f"q{i}": 100 - i for i in range(n)}, **settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"frequency bucketing {settings}: {exc}") from None
    return settings


def bucket_order(assignment: Mapping[str, str]) -> list[str]:
    seen: list[str] = []
    for name in list(DEFAULT_GROUPS) + sorted(set(assignment.values())):
        if name in set(assignment.values()) and name not in seen:
            seen.append(name)
    return seen
