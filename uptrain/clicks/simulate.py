"""Click logs simulated over a real collection: its queries, a ranker's SERPs and its human grades.

A real test collection has text and graded human labels but no clicks; the simulator adds
clicks, so that text, clicks and human labels exist together. The generative story, with
every random draw seeded (``seed``) and counted where something is skipped or defaulted:

1. **Queries** are the collection's queries with at least one judged document (any grade,
   from the qrels), or the given ``query_ids``. Queries the ranker returns nothing for are
   left out (counted).
2. **Frequencies** are Zipfian: a seeded permutation gives each query a frequency rank
   ``k = 1..Q``; the expected share of sessions is ``k^-s / sum_j j^-s`` (``s`` the
   ``zipf_exponent``), and the realised sessions per query are one multinomial draw of
   ``sessions`` trials. Queries that draw zero sessions are counted and kept in the truth.
   Session order is a seeded shuffle, so a log split by session order mixes all queries.
3. **SERPs** are the ranker's top ``serp_size`` for the query (computed once per query;
   fewer results give a shorter SERP, counted). Exploration: per session, for r = 1..R-1 in
   order, the documents then at ranks r and r+1 are swapped with probability
   ``swap_probability`` (so a document moves up at most one rank and may move down several;
   swaps counted).
4. **Attractiveness** of a (query, document) pair: ``a = sigmoid(logit(A[g]) + noise * e_qd +
   quality_strength * q_d)`` where ``g`` is the document's grade in the qrels (an unjudged
   document takes grade 0, counted), ``A`` the ``attractiveness`` map, ``e_qd ~ N(0, 1)`` drawn
   per pair and ``q_d ~ N(0, 1)`` a latent document quality drawn per document, both seeded
   by the ids (a pair's value does not depend on which other pairs exist). The quality is in
   the truth, never in the human labels. ``A[g]`` of 0 or 1 stays 0 or 1.
   **Satisfaction** (DBN, SDBN) is ``S[g]`` from the ``satisfaction`` map.
5. **Clicks** are sampled from the click model (Chuklin, Markov, de Rijke, "Click Models for
   Web Search", 2015, ch. 3; samplers in :mod:`uptrain.clicks.sampling`), all sessions at once:

   ``pbm``   P(C_r) = exam_r a_r, ``exam`` the ``examination`` curve.
   ``cm``    cascade: top-down until the first click (``examination`` unused).
   ``dcm``   cascade with continuation ``lambda_r = continuation`` after a click.
   ``ubm``   P(E_r | last click at r') = gamma[r, r'+1], derived from the examination (see
             :func:`ubm_gamma`).
   ``dbn``   cascade; a click satisfies with probability S[g]; an unsatisfied user goes on
             with probability ``gamma = continuation``.
   ``sdbn``  ``dbn`` with gamma = 1.

The examination curve is a list of ``serp_size`` probabilities, or PBM's examination fitted
on a click log: ``"yandex"`` (the Yandex WSCD sample PyClick ships,
``$UPTRAIN_DATA/raw/yandex_wscd_clicks_pyclick/trainSample``) or a path to any log.

Everything a later experiment may compare against is in the truth: the model, the
examination and continuation used, each pair's grade, attractiveness and satisfaction,
each document's quality, each query's frequency rank, expected share and realised sessions.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from uptrain.cache import file_digest, write_atomic
from uptrain.clicks.log import ClickLog, from_arrays
from uptrain.errors import ConfigError
from uptrain.graph import Artifact, Stage

log = logging.getLogger("uptrain")

KEY = "clicks.simulator"
MODELS = ("pbm", "cm", "dcm", "ubm", "dbn", "sdbn")
USES_EXAMINATION = ("pbm", "ubm")
USES_SATISFACTION = ("dbn", "sdbn")
USES_CONTINUATION = ("dcm", "dbn")
DEFAULT_ATTRACTIVENESS = {0: 0.05, 1: 0.5, 2: 0.9, 3: 0.95}
DEFAULT_SATISFACTION = {0: 0.05, 1: 0.4, 2: 0.7, 3: 0.9}
YANDEX_SAMPLE = Path("raw") / "yandex_wscd_clicks_pyclick" / "trainSample"
YANDEX_FORMAT = "pyclick_yandex"
FIT_ITERATIONS = 500  # EM cap of the examination fit (PBM converges in about 100 on the Yandex sample)
CHUNK = 1 << 18  # sessions sampled per call (bounds the sampler's temporary arrays)

# independent random streams of one seed: np.random.default_rng([seed, stream])
_PERMUTATION, _MULTINOMIAL, _ORDER, _SWAPS, _CLICKS = 0, 1, 2, 3, 4
_NOISE_TAG, _QUALITY_TAG = 11, 12


# ---- seeded values per id ---------------------------------------------------------------

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _id_hash(ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash of each string (blake2b), independent of Python's hash seed."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little") for s in ids),
        dtype=np.uint64, count=len(ids),
    )


def seeded_normal(ids: Sequence[str], seed: int, tag: int) -> np.ndarray:
    """One N(0, 1) value per id, a function of (seed, tag, id) alone (Box-Muller on splitmix64 bits)."""
    if not len(ids):
        return np.zeros(0)
    base = _splitmix64(np.array([(int(seed) * 1_000_003 + int(tag)) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    h1 = _splitmix64(_id_hash(ids) ^ base)
    h2 = _splitmix64(h1)
    scale = 2.0 ** -53
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) * scale  # in (0, 1)
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * scale
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _logit(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)  # 0 -> -inf, 1 -> +inf: kept at 0 and 1 by the sigmoid


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# ---- model parameters from the examination ------------------------------------------------

def ubm_gamma(exam: Sequence[float]) -> np.ndarray:
    """UBM's gamma (R, R + 1) from a PBM examination curve, in the layout of
    :func:`uptrain.clicks.sampling.sample_ubm` (column 0: no click above r; column r' + 1: the
    last click above r was at r').

    ``gamma[r, 0] = exam[r]`` and ``gamma[r, r' + 1] = min(1, exam[r] / exam[r'])``: the
    examination of rank r given that rank r' was examined (a click implies examination) when
    the user reads top-down and stops at a depth whose survival function is ``exam``
    (P(E_r = 1 | E_r' = 1) = P(depth > r) / P(depth > r') for r' < r). A rank r' with
    ``exam[r'] = 0`` (never clicked) and the unread entries j > r take ``exam[r]``.
    """
    e = np.clip(np.asarray(exam, dtype=np.float64), 0.0, 1.0)
    R = len(e)
    g = np.tile(e[:, None], (1, R + 1))
    for r in range(R):
        for rp in range(r):
            if e[rp] > 0:
                g[r, rp + 1] = min(1.0, e[r] / e[rp])
    return g


def _fit_examination(path: Path, fmt: str | None, ranks: int) -> tuple[list[float], dict]:
    """PBM's examination per rank fitted on the log at ``path`` (its first ``ranks`` ranks)."""
    try:
        from uptrain.clicks.models import make
        from uptrain.clicks.readers import read_log
    except ImportError as exc:  # pragma: no cover - both are part of the package
        raise ConfigError(
            f"{KEY}.examination fits PBM on a click log, which needs uptrain.clicks.readers and "
            f"uptrain.clicks.models ({exc}); give the examination as a list of {ranks} probabilities instead"
        ) from exc
    click_log = read_log(str(path), format=fmt or "auto", ranks=None)
    if click_log.n_ranks < ranks:
        raise ConfigError(
            f"{KEY}.examination: the log {path} has SERPs of {click_log.n_ranks} ranks, fewer than "
            f"serp_size={ranks}; lower serp_size or give a list of {ranks} examination probabilities"
        )
    model = make("pbm", iterations=FIT_ITERATIONS).fit(click_log)
    exam = np.clip(np.asarray(model.params()["examination"], dtype=np.float64), 0.0, 1.0)
    fit = getattr(model, "fit_stats", {}) or {}
    info = {"sessions": len(click_log), "ranks": click_log.n_ranks, "ranks_used": ranks,
            "em_iterations": fit.get("iterations"), "em_converged": fit.get("converged")}
    return [float(x) for x in exam[:ranks]], info


# ---- the simulator -----------------------------------------------------------------------

def _grade_map(value, name: str, default: Mapping[int, float]) -> dict[int, float]:
    if value is None:
        return dict(default)
    if not isinstance(value, MappingABC) and not hasattr(value, "items"):
        raise ConfigError(f"{KEY}.{name} must map each grade to a probability (e.g. {dict(default)}), got {value!r}")
    out: dict[int, float] = {}
    for k, v in value.items():
        try:
            grade = int(k)
            if str(grade) != str(k).strip() and grade != k:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{KEY}.{name}: grade {k!r} is not an integer; the map is {dict(value)}") from None
        try:
            p = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{KEY}.{name}[{grade}] must be a probability, got {v!r}") from None
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{KEY}.{name}[{grade}] must be a probability in [0, 1], got {v!r}; the map is {dict(value)}")
        out[grade] = p
    if not out:
        raise ConfigError(f"{KEY}.{name} is empty: give a probability for every grade the collection uses")
    return dict(sorted(out.items()))


def _probability(value, name: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{KEY}.{name} must be a probability in [0, 1], got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{KEY}.{name} must be a probability in [0, 1], got {value!r}")
    return p


def data_root() -> Path | None:
    env = os.environ.get("UPTRAIN_DATA")
    return Path(env).expanduser() if env else None


class ClickSimulator:
    """Simulate a click log over a collection (see the module docstring for the definitions).

    ``model``: pbm, cm, dcm, ubm, dbn or sdbn. ``sessions``: SERPs in the log. ``zipf_exponent``:
    s in the frequency law k^-s. ``serp_size``: ranks per SERP. ``ranker``: anything with
    ``index(docs)``, ``search(queries, k)`` and ``spec()`` (None: :class:`uptrain.pool.bm25.BM25`).
    ``swap_probability``: per-session adjacent swaps (exploration). ``attractiveness`` /
    ``satisfaction``: grade -> probability (every grade of the judged documents must be there;
    unjudged documents take grade 0). ``noise``: std of the per-pair logit noise.
    ``quality_strength``: weight of the latent document quality on the logit (0: off).
    ``examination``: "yandex", a list of ``serp_size`` probabilities, or a click log path
    (``examination_format`` names its reader format; None lets the reader decide).
    ``continuation``: DCM's lambda and DBN's gamma. ``seed``: every random draw.
    """

    def __init__(
        self,
        model: str = "pbm",
        sessions: int = 100_000,
        zipf_exponent: float = 1.0,
        serp_size: int = 10,
        ranker: Any = None,
        swap_probability: float = 0.0,
        attractiveness: Mapping[int, float] | None = None,
        satisfaction: Mapping[int, float] | None = None,
        noise: float = 0.0,
        quality_strength: float = 0.0,
        examination: str | Sequence[float] = "yandex",
        continuation: float = 0.7,
        seed: int = 0,
        examination_format: str | None = None,
        sessions_per_query: float | None = None,
    ):
        self.model = str(model).lower()
        self.sessions = sessions
        self.sessions_per_query = sessions_per_query
        self.zipf_exponent = zipf_exponent
        self.serp_size = serp_size
        if ranker is None:
            from uptrain.pool.bm25 import BM25

            ranker = BM25()
        self.ranker = ranker
        self.swap_probability = swap_probability
        self.attractiveness_raw = attractiveness
        self.satisfaction_raw = satisfaction
        self.noise = noise
        self.quality_strength = quality_strength
        if examination is not None and not isinstance(examination, (str, Path)) and hasattr(examination, "__iter__"):
            examination = list(examination)  # a Hydra ListConfig becomes a list
        self.examination = examination
        self.examination_format = examination_format
        self.continuation = continuation
        self.seed = seed
        self._resolved: tuple[list[float], dict] | None = None

    # ---- configuration ---------------------------------------------------------------
    def validate(self) -> None:
        """Check every value (no data read, nothing slow); a ConfigError names the key."""
        if self.model not in MODELS:
            raise ConfigError(f"{KEY}.model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.sessions_per_query is not None:
            try:
                spq = float(self.sessions_per_query)
            except (TypeError, ValueError):
                spq = float("nan")
            if not (spq > 0 and math.isfinite(spq)):
                raise ConfigError(f"{KEY}.sessions_per_query must be a number > 0 or null, got {self.sessions_per_query!r}")
        for name, lo in (("sessions", 1), ("serp_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{KEY}.{name} must be an integer >= {lo}, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"{KEY}.seed must be a non-negative integer, got {self.seed!r}")
        try:
            s = float(self.zipf_exponent)
        except (TypeError, ValueError):
            s = float("nan")
        if not (s > 0 and math.isfinite(s)):
            raise ConfigError(f"{KEY}.zipf_exponent must be a finite number > 0, got {self.zipf_exponent!r}")
        _probability(self.swap_probability, "swap_probability")
        _probability(self.continuation, "continuation")
        for name in ("noise", "quality_strength"):
            v = getattr(self, name)
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = float("nan")
            if not (f >= 0 and math.isfinite(f)):
                raise ConfigError(f"{KEY}.{name} must be a finite number >= 0 (0 turns it off), got {v!r}")
        _grade_map(self.attractiveness_raw, "attractiveness", DEFAULT_ATTRACTIVENESS)
        _grade_map(self.satisfaction_raw, "satisfaction", DEFAULT_SATISFACTION)
        for method in ("index", "search", "spec"):
            if not callable(getattr(self.ranker, method, None)):
                raise ConfigError(
                    f"{KEY}.ranker must have index(docs), search(queries, k) and spec(); "
                    f"{type(self.ranker).__name__} has no {method}()"
                )
        if self.model in USES_EXAMINATION:
            self._examination_source()

    @property
    def attractiveness(self) -> dict[int, float]:
        return _grade_map(self.attractiveness_raw, "attractiveness", DEFAULT_ATTRACTIVENESS)

    @property
    def satisfaction(self) -> dict[int, float]:
        return _grade_map(self.satisfaction_raw, "satisfaction", DEFAULT_SATISFACTION)

    def _examination_source(self) -> tuple[str, Any]:
        """("list", [floats]) or ("log", Path): the examination as configured, checked."""
        exam = self.examination
        R = int(self.serp_size)
        if isinstance(exam, str) and exam.strip().lower() == "yandex":
            root = data_root()
            path = root / YANDEX_SAMPLE if root is not None else None
            if path is None or not path.is_file():
                where = (
                    f"UPTRAIN_DATA={root} has no {YANDEX_SAMPLE}" if root is not None else "UPTRAIN_DATA is not set"
                )
                raise ConfigError(
                    f"{KEY}.examination=yandex fits the PBM examination curve on the Yandex WSCD click "
                    f"sample (<data root>/{YANDEX_SAMPLE}, the data root from $UPTRAIN_DATA), but {where}. "
                    f"Point UPTRAIN_DATA at the data root that holds it, or give the examination as a list of "
                    f"serp_size={R} probabilities (e.g. {KEY}.examination=[0.95,0.8,0.65,...]), or as the path "
                    f"to any click log to fit PBM on ({KEY}.examination=/path/to/log.jsonl)."
                )
            return "yandex", path
        if isinstance(exam, (str, Path)):
            path = Path(exam).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"{KEY}.examination must be 'yandex', a list of serp_size={R} probabilities or the path "
                    f"to a click log to fit PBM on; {str(exam)!r} is not a file"
                )
            return "log", path
        if exam is None or not hasattr(exam, "__iter__"):
            raise ConfigError(
                f"{KEY}.examination must be 'yandex', a list of serp_size={R} probabilities or a click log path, got {exam!r}"
            )
        values = []
        for i, v in enumerate(exam):
            try:
                p = float(v)
            except (TypeError, ValueError):
                p = float("nan")
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{KEY}.examination[{i}] must be a probability in [0, 1], got {v!r}")
            values.append(p)
        if len(values) != R:
            raise ConfigError(
                f"{KEY}.examination has {len(values)} probabilities but serp_size is {R}: give one per rank"
            )
        return "list", values

    def resolved_examination(self) -> tuple[list[float], dict]:
        """The examination per rank and where it came from (fitted once per simulator)."""
        if self._resolved is None:
            kind, value = self._examination_source()
            if kind == "list":
                self._resolved = (list(value), {"source": "list"})
            else:
                fmt = YANDEX_FORMAT if kind == "yandex" else self.examination_format
                exam, info = _fit_examination(value, fmt, int(self.serp_size))
                self._resolved = (exam, {"source": kind, "format": fmt, "sha256": file_digest(value), "fit": "pbm",
                                                 "iterations": FIT_ITERATIONS, **info})
        return self._resolved

    def spec(self) -> dict:
        """The configuration that determines the log. Parameters the model does not read are left
        out (``examination`` outside pbm/ubm, ``satisfaction`` outside dbn/sdbn, ``continuation``
        outside dcm/dbn) so they do not split the cache; a fitted examination is keyed by the
        log file's sha256 (not its path), a list by its numbers."""
        spec: dict = {
            "model": self.model,
            "sessions": int(self.sessions) if self.sessions_per_query is None else None,
            **({"sessions_per_query": float(self.sessions_per_query)} if self.sessions_per_query is not None else {}),
            "zipf_exponent": float(self.zipf_exponent),
            "serp_size": int(self.serp_size),
            "ranker": self.ranker.spec(),
            "swap_probability": float(self.swap_probability),
            "attractiveness": {str(k): v for k, v in self.attractiveness.items()},
            "noise": float(self.noise),
            "quality_strength": float(self.quality_strength),
            "seed": int(self.seed),
        }
        if self.model in USES_SATISFACTION:
            spec["satisfaction"] = {str(k): v for k, v in self.satisfaction.items()}
        if self.model in USES_CONTINUATION:
            spec["continuation"] = float(self.continuation)
        if self.model in USES_EXAMINATION:
            kind, value = self._examination_source()
            if kind == "list":
                spec["examination"] = {"source": "list", "values": value}
            else:
                fmt = YANDEX_FORMAT if kind == "yandex" else self.examination_format
                spec["examination"] = {"source": kind, "format": fmt, "sha256": file_digest(value), "fit": "pbm",
                                       "iterations": FIT_ITERATIONS}
        return spec

    # ---- simulation ------------------------------------------------------------------
    def _queries(self, collection, query_ids) -> tuple[list[str], dict]:
        counts: dict = {}
        if query_ids is None:
            chosen = [q for q in collection.queries if collection.qrels.get(q)]
            counts["queries_not_judged"] = len(collection.queries) - len(chosen)
        else:
            ids = [str(q) for q in query_ids]
            unknown = [q for q in ids if q not in collection.queries]
            if unknown:
                raise ConfigError(
                    f"{len(unknown)} of the query_ids are not queries of collection {collection.name!r} "
                    f"(e.g. {', '.join(map(repr, unknown[:5]))})"
                )
            chosen = list(dict.fromkeys(ids))
            counts["duplicate_query_ids"] = len(ids) - len(chosen)
        if not chosen:
            raise ConfigError(
                f"collection {collection.name!r} has no query with a judged document to simulate clicks for"
            )
        return chosen, counts

    def _check_grades(self, collection, queries: Sequence[str]) -> None:
        """Every grade of the chosen queries' judgments (and grade 0, for unjudged documents) must
        be in the grade maps the model reads: checked before the ranker runs."""
        judged = {int(g) for q in queries for g in collection.qrels.get(q, {}).values()}
        maps = [("attractiveness", self.attractiveness)]
        if self.model in USES_SATISFACTION:
            maps.append(("satisfaction", self.satisfaction))
        for name, m in maps:
            missing = sorted((judged | {0}) - set(m))
            if missing:
                raise ConfigError(
                    f"{KEY}.{name} has no probability for grade(s) {missing}: the judged documents of "
                    f"collection {collection.name!r} use grades {sorted(judged)} and unjudged documents take "
                    f"grade 0, but the map is {m}; add a probability for each missing grade"
                )

    def simulate(self, collection, query_ids: Sequence[str] | None = None, progress: bool = True) -> tuple[ClickLog, dict]:
        """(log, truth): the simulated log (no texts: the collection has them) and the truth
        (parameters, frequencies and the counted problems under ``truth["stats"]``)."""
        from uptrain.clicks.sampling import sample

        self.validate()
        t_start = time.time()
        R = int(self.serp_size)
        seed = int(self.seed)
        queries, counts = self._queries(collection, query_ids)
        self._check_grades(collection, queries)
        exam, exam_info = self.resolved_examination() if self.model in USES_EXAMINATION else (None, {"source": "unused"})

        # SERPs: the ranker's top R, once per query
        t0 = time.time()
        self.ranker.index(collection.docs)
        texts = {q: collection.queries[q] for q in queries}
        if "show_progress" in inspect.signature(self.ranker.search).parameters:
            run = self.ranker.search(texts, R, show_progress=progress)
        else:
            run = self.ranker.search(texts, R)
        seconds_rank = time.time() - t0
        serps = {q: list(run.get(q, {}))[:R] for q in queries}
        empty = [q for q in queries if not serps[q]]
        queries = [q for q in queries if serps[q]]
        counts["queries_without_results"] = len(empty)
        if not queries:
            raise ConfigError(f"the ranker returned no document for any of the {len(empty)} queries of {collection.name!r}")
        Q = len(queries)

        # the pair table: (query, rank) -> pair index q * R + r, -1 where the SERP is shorter
        doc_index: dict[str, int] = {}
        pair_doc = np.full((Q, R), -1, dtype=np.int64)
        for i, q in enumerate(queries):
            for r, d in enumerate(serps[q]):
                pair_doc[i, r] = doc_index.setdefault(str(d), len(doc_index))
        doc_ids = list(doc_index)
        lengths = (pair_doc >= 0).sum(axis=1)
        short = lengths < R
        counts["short_serp_queries"] = int(short.sum())
        valid = pair_doc >= 0
        qi, ri = np.nonzero(valid)
        pair_q = [queries[i] for i in qi]
        pair_d = [doc_ids[j] for j in pair_doc[qi, ri]]
        judged_grade = [collection.qrels.get(q, {}).get(d) for q, d in zip(pair_q, pair_d)]
        judged = np.array([g is not None for g in judged_grade], dtype=bool)
        grades = np.array([int(g) if g is not None else 0 for g in judged_grade], dtype=np.int64)
        counts["unjudged_pairs"] = int((~judged).sum())

        amap, smap = self.attractiveness, self.satisfaction
        base = np.array([amap[g] for g in grades], dtype=np.float64)
        quality = seeded_normal(doc_ids, seed, _QUALITY_TAG)
        logit = _logit(base)
        if float(self.noise) > 0:
            logit = logit + float(self.noise) * seeded_normal([f"{q}\t{d}" for q, d in zip(pair_q, pair_d)], seed, _NOISE_TAG)
        if float(self.quality_strength) > 0:
            logit = logit + float(self.quality_strength) * quality[pair_doc[qi, ri]]
        attr_pairs = base if (float(self.noise) == 0 and float(self.quality_strength) == 0) else _sigmoid(logit)
        sat_pairs = np.array([smap.get(g, 0.0) for g in grades], dtype=np.float64)
        pair_attr = np.zeros((Q, R))
        pair_attr[qi, ri] = attr_pairs
        pair_sat = np.zeros((Q, R))
        pair_sat[qi, ri] = sat_pairs

        # frequencies: Zipf over a seeded permutation of the queries, one multinomial draw
        # sessions_per_query scales the log with the collection (a smoke profile's 64 queries keep
        # the head/tail shape of the full collection's log instead of giving every query hundreds)
        n = int(self.sessions) if self.sessions_per_query is None else max(1, round(float(self.sessions_per_query) * Q))
        freq_rank = np.random.default_rng([seed, _PERMUTATION]).permutation(Q) + 1
        weight = freq_rank.astype(np.float64) ** -float(self.zipf_exponent)
        share = weight / weight.sum()
        freq = np.random.default_rng([seed, _MULTINOMIAL]).multinomial(n, share)
        counts["queries_zero_sessions"] = int((freq == 0).sum())
        session_query = np.random.default_rng([seed, _ORDER]).permutation(np.repeat(np.arange(Q), freq))

        # per-session SERPs as pair indices, with the exploration swaps
        base_pairs = np.where(valid, np.arange(Q * R).reshape(Q, R), -1)
        P = base_pairs[session_query]
        swaps = 0
        p_swap = float(self.swap_probability)
        if p_swap > 0 and R > 1:
            rng = np.random.default_rng([seed, _SWAPS])
            for r in range(R - 1):
                m = (rng.random(n) < p_swap) & (P[:, r + 1] >= 0)
                P[m, r], P[m, r + 1] = P[m, r + 1], P[m, r]
                swaps += int(m.sum())
        counts["swaps"] = swaps
        shown = P >= 0
        flat = np.where(shown, P, 0)
        attr = np.where(shown, pair_attr.ravel()[flat], 0.0)
        docs = np.where(shown, pair_doc.ravel()[flat], -1)
        counts["short_serp_sessions"] = int((~shown[:, -1]).sum())
        unjudged_at = np.zeros(Q * R, dtype=bool)
        unjudged_at[(qi * R + ri)[~judged]] = True
        counts["unjudged_impressions"] = int((shown & unjudged_at[flat]).sum())

        # clicks, all sessions vectorised (in fixed chunks of sessions, one generator)
        params: dict = {}
        if self.model == "pbm":
            params["exam"] = np.asarray(exam)
        elif self.model == "dcm":
            params["lam"] = np.full(R, float(self.continuation))
        elif self.model == "ubm":
            params["gamma"] = ubm_gamma(exam)
        elif self.model == "dbn":
            params["gamma"] = float(self.continuation)
        t0 = time.time()
        rng = np.random.default_rng([seed, _CLICKS])
        clicked = np.zeros((n, R), dtype=bool)
        starts = range(0, n, CHUNK)
        bar = None
        if progress and len(starts) > 1:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, desc=f"simulate {self.model} clicks", unit="session", leave=False)
            except ImportError:  # progress bars are optional
                bar = None
        for a in starts:
            b = min(n, a + CHUNK)
            extra = {"sat": np.where(shown[a:b], pair_sat.ravel()[flat[a:b]], 0.0)} if self.model in USES_SATISFACTION else {}
            clicked[a:b] = sample(self.model, rng, attr=attr[a:b], **params, **extra)
            if bar is not None:
                bar.update(b - a)
        if bar is not None:
            bar.close()
        seconds_sample = time.time() - t0

        click_log = from_arrays(session_query, docs, clicked, queries, doc_ids)
        click_log.stats.short_serps = counts["short_serp_sessions"]
        seconds = time.time() - t_start

        ctr = clicked.sum(axis=0) / np.maximum(shown.sum(axis=0), 1)
        stats = {
            "sessions": n,
            "queries_simulated": Q,
            "queries_with_sessions": int((freq > 0).sum()),
            **counts,
            "clicks": int(clicked.sum()),
            "sessions_with_clicks": int(clicked.any(axis=1).sum()),
            "ctr_at": [round(float(x), 6) for x in ctr],
            "frequency": frequency_summary(freq, freq_rank),
            "seconds": round(seconds, 3),
            "seconds_rank": round(seconds_rank, 3),
            "seconds_sample": round(seconds_sample, 3),
            "sessions_per_second": round(n / max(seconds, 1e-9), 1),
        }
        problems = {k: stats[k] for k in PROBLEMS if stats.get(k)}
        if problems:
            log.warning("simulate clicks: %s", ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in problems.items()))

        truth = {
            "model": self.model,
            "examination": exam,
            "examination_source": exam_info,
            "continuation": self._continuation_truth(exam, R),
            "attractiveness_map": {str(k): v for k, v in amap.items()},
            "satisfaction_map": {str(k): v for k, v in smap.items()} if self.model in USES_SATISFACTION else None,
            "noise": float(self.noise),
            "quality_strength": float(self.quality_strength),
            "seed": seed,
            "serp_size": R,
            "zipf_exponent": float(self.zipf_exponent),
            "queries": {
                q: {"frequency_rank": int(k), "expected_share": float(s), "sessions": int(f)}
                for q, k, s, f in zip(queries, freq_rank, share, freq)
            },
            "queries_without_results": empty,
            "grades": [[q, d, int(g), bool(j)] for q, d, g, j in zip(pair_q, pair_d, grades, judged)],
            "attractiveness": [[q, d, float(v)] for q, d, v in zip(pair_q, pair_d, attr_pairs)],
            "satisfaction": (
                [[q, d, float(v)] for q, d, v in zip(pair_q, pair_d, sat_pairs)] if self.model in USES_SATISFACTION else None
            ),
            "quality": {d: float(v) for d, v in zip(doc_ids, quality)},
            "stats": stats,
        }
        return click_log, truth

    def _continuation_truth(self, exam, R: int) -> dict:
        if self.model == "dcm":
            return {"lambda": [float(self.continuation)] * R}
        if self.model == "dbn":
            return {"gamma": float(self.continuation)}
        if self.model == "sdbn":
            return {"gamma": 1.0}
        if self.model == "ubm":
            return {"gamma": ubm_gamma(exam).round(6).tolist(), "derived": "gamma[r,0]=exam[r], gamma[r,r'+1]=min(1,exam[r]/exam[r'])"}
        return {}


PROBLEMS = (
    "queries_not_judged", "duplicate_query_ids", "queries_without_results", "queries_zero_sessions",
    "short_serp_queries", "short_serp_sessions", "unjudged_pairs", "unjudged_impressions",
)


def frequency_summary(freq: np.ndarray, freq_rank: np.ndarray) -> dict:
    """Realised sessions per query: max/median/min, and the share of sessions of the high, medium
    and low frequency groups (queries sorted by frequency rank into 10 equal buckets: 0-2 high,
    3-6 medium, 7-9 low, the Baidu-ULTR starter kit's grouping)."""
    freq = np.asarray(freq)
    order = np.argsort(freq_rank)
    Q, total = len(freq), max(int(freq.sum()), 1)
    bucket = (np.arange(Q) * 10) // max(Q, 1)
    by_rank = freq[order]
    groups = {"high": (0, 3), "medium": (3, 7), "low": (7, 10)}
    return {
        "queries": Q,
        "max": int(freq.max()) if Q else 0,
        "median": float(np.median(freq)) if Q else 0.0,
        "min": int(freq.min()) if Q else 0,
        "share": {g: round(float(by_rank[(bucket >= lo) & (bucket < hi)].sum()) / total, 6) for g, (lo, hi) in groups.items()},
        "queries_in": {g: int(((bucket >= lo) & (bucket < hi)).sum()) for g, (lo, hi) in groups.items()},
    }


# ---- the stage -----------------------------------------------------------------------------

@dataclass
class SimulatedClicks:
    """The simulate_clicks artifact: the log and its truth (see :class:`ClickSimulator`)."""

    log: ClickLog
    truth: dict
    stats: dict = field(default_factory=dict)
    source: str = "simulated"

    def attractiveness(self) -> dict[tuple[str, str], float]:
        return {(q, d): v for q, d, v in self.truth["attractiveness"]}

    def frequencies(self) -> dict[str, int]:
        """Query -> realised sessions, zero-session queries included."""
        return {q: v["sessions"] for q, v in self.truth["queries"].items()}


def read_simulated_log(path: str | Path, ranks: int) -> ClickLog:
    """Read the stage's log.jsonl (uptrain's JSONL format) back into a :class:`ClickLog`."""
    from uptrain.clicks.readers import read_log

    return read_log(path, format="jsonl", ranks=ranks)


class SimulateClicksStage(Stage[SimulatedClicks]):
    """Simulated clicks over the ``data`` artifact's collection: log.jsonl (no texts: the
    collection has them), truth.json, stats.json."""

    name = "simulate_clicks"
    inputs = ("data",)
    version = 1

    def __init__(self, simulator: ClickSimulator, query_ids: Sequence[str] | None = None, progress: bool = True):
        self.simulator = simulator
        self.query_ids = None if query_ids is None else [str(q) for q in query_ids]
        self.progress = progress

    def validate(self) -> None:
        self.simulator.validate()

    def spec(self) -> dict:
        return {**self.simulator.spec(), "query_ids": self.query_ids}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        click_log, truth = self.simulator.simulate(collection, self.query_ids, progress=self.progress)
        t0 = time.time()
        click_log.write_jsonl(out / "log.jsonl")
        stats = {**truth["stats"], "model": truth["model"], "examination": truth["examination"],
                 "examination_source": truth["examination_source"], "seconds_write": round(time.time() - t0, 3)}
        write_atomic(out / "truth.json", json.dumps(truth))
        write_atomic(out / "stats.json", json.dumps(stats, indent=2))

    def load(self, path: Path) -> SimulatedClicks:
        truth = json.loads((path / "truth.json").read_text())
        stats = json.loads((path / "stats.json").read_text())
        return SimulatedClicks(read_simulated_log(path / "log.jsonl", truth["serp_size"]), truth, stats)

    def report(self, artifact: Artifact) -> dict[str, str]:
        """Sessions, query frequencies, the examination used, CTR per rank and the counted problems."""
        stats = json.loads((artifact.path / "stats.json").read_text())
        return {"Simulated clicks": report_markdown(stats)}


def report_markdown(stats: dict) -> str:
    fq = stats["frequency"]
    lines = [
        f"Model {stats['model']}: {stats['sessions']:,} sessions over {stats['queries_simulated']:,} queries "
        f"({stats['queries_with_sessions']:,} with sessions, {stats.get('queries_zero_sessions', 0):,} drew none), "
        f"{stats['clicks']:,} clicks, {stats['sessions_with_clicks']:,} sessions with a click; "
        f"{stats['sessions_per_second']:,.0f} sessions/s.",
        "",
        f"Query frequency (Zipf): max {fq['max']:,}, median {fq['median']:g}, min {fq['min']:,} sessions per query; "
        f"share of sessions of the high / medium / low groups (frequency-rank deciles 1-3 / 4-7 / 8-10): "
        f"{fq['share']['high']:.1%} / {fq['share']['medium']:.1%} / {fq['share']['low']:.1%}.",
        "",
    ]
    exam = stats.get("examination")
    ranks = len(stats["ctr_at"])
    lines.append("| rank | " + " | ".join(str(r + 1) for r in range(ranks)) + " |")
    lines.append("|---|" + "---|" * ranks)
    if exam is not None:
        lines.append("| examination | " + " | ".join(f"{e:.3f}" for e in exam) + " |")
    source = stats.get("examination_source") or {}
    lines.append("| CTR | " + " | ".join(f"{c:.3f}" for c in stats["ctr_at"]) + " |")
    if exam is None:
        lines += ["", f"{stats['model']} reads no examination curve (cascade: rank 1 is always examined)."]
    elif source.get("source") in ("yandex", "log"):
        what = "the Yandex WSCD sample" if source["source"] == "yandex" else "a click log"
        lines += ["", f"Examination: PBM fitted on {what} ({source.get('sessions', 0):,} sessions, "
                      f"sha256 {str(source.get('sha256', ''))[:12]}), its first {source.get('ranks_used')} ranks."]
    else:
        lines += ["", "Examination: the configured list."]
    problems = {k: stats[k] for k in PROBLEMS if stats.get(k)}
    lines += ["", "Counted: " + (", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in problems.items()) if problems else "no problems")
              + f"; {stats.get('swaps', 0):,} exploration swaps."]
    return "\n".join(lines)


# ---- benchmark -----------------------------------------------------------------------------

def synthetic_collection(n_queries: int = 1000, docs_per_query: int = 50, seed: int = 0, grades: Sequence[int] = (0, 1, 2, 3)):
    """A collection of ``n_queries`` queries, each with its own ``docs_per_query`` documents (all
    judged, grades drawn uniformly from ``grades``), texts such that BM25 retrieves a query's own
    documents (a query term repeated a varying number of times)."""
    from uptrain.data.collection import Collection

    rng = np.random.default_rng(seed)
    docs, queries, qrels = {}, {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        queries[qid] = f"topic{q}"
        qrels[qid] = {}
        tf = rng.integers(1, 6, size=docs_per_query)
        g = rng.choice(np.asarray(grades), size=docs_per_query)
        for j in range(docs_per_query):
            did = f"d{q}_{j}"
            docs[did] = " ".join([f"topic{q}"] * int(tf[j]) + [f"filler{j}"] * 3)
            qrels[qid][did] = int(g[j])
    return Collection(name="synthetic", docs=docs, queries=queries, qrels=qrels)


def simulate_bench(sessions: int = 1_000_000, seed: int = 0, model: str = "pbm") -> dict:
    """Sessions per second of :meth:`ClickSimulator.simulate` (BM25 SERPs, 10 ranks, swaps on)
    over a synthetic collection of 1,000 queries x 50 judged documents."""
    collection = synthetic_collection(1000, 50, seed)
    exam = [1.0 / (r + 1) ** 0.8 for r in range(10)]
    sim = ClickSimulator(model=model, sessions=sessions, examination=exam, swap_probability=0.1,
                         noise=0.5, quality_strength=0.5, seed=seed)
    t0 = time.time()
    click_log, truth = sim.simulate(collection, progress=False)
    seconds = time.time() - t0
    st = truth["stats"]
    return {
        "sessions": sessions,
        "queries": st["queries_simulated"],
        "model": model,
        "seconds": round(seconds, 3),
        "seconds_rank": st["seconds_rank"],
        "seconds_sample": st["seconds_sample"],
        "sessions_per_second": round(sessions / max(seconds, 1e-9), 1),
        "sessions_per_second_without_ranker": round(sessions / max(seconds - st["seconds_rank"], 1e-9), 1),
        "clicks": st["clicks"],
    }
