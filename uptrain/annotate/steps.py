"""The annotation pipeline of Zhang et al. (arXiv 2504.05220, Sec. 3), run for a batch of queries.

relsel   listwise relevance selection over windows of at most m passages, merged per query
answer   a pseudo answer from the relevance-selected passages
utilsel  utility selection among the relevance-selected passages, given the pseudo answer
utilrank utility ranking of the relevance-selected passages; the top k% (at least one) are kept

Each step sends the prompts of every query of the batch to the backend in one call,
so batched generation pays off. Prompts over the model's context are fitted by shortening
their passages, never the instruction or the question (:mod:`uptrain.annotate.budget`);
each query's record counts what was cut. A query with no relevance-selected passage gets no
answer, no utility-selected and no ranked passage (it is then skipped in training
and counted).

Prompting schemes (``annotator.scheme``, a mapping; empty or absent: the paper's, exactly as
above, with the records and cache keys of earlier runs). :func:`check_scheme` reads it; a key or
value it does not know, or one that does not apply to the chosen options, is a ConfigError
naming ``annotator.scheme``.

``relsel: listwise`` (default)
    The paper's listwise selection (``relsel.txt``), windows of ``annotator.window`` passages.
``relsel: pointwise_logit``, ``threshold: 0.5``
    One prompt per passage (``relsel_pointwise.txt``: is the passage relevant? yes or no) and one
    forward pass, no decoding (:meth:`~uptrain.annotate.backends.base.Backend.next_token_logprobs`).
    The passage's relevance is P(yes) / (P(yes) + P(no)) over the next token, where P(yes) sums the
    probabilities of ``yes`` and ``Yes`` and P(no) those of ``no`` and ``No`` (each with and without a
    leading space, as the backend maps candidates to tokens); passages strictly above ``threshold``
    are selected, most probable first (ties in pool order). Each query's record keeps every
    passage's probability under ``scores["relsel"]``; a passage whose yes and no tokens both have
    probability zero gets none and counts as unparseable.
``utilrank: windows`` (default), ``utilrank_window: m``
    The paper's ranking: independent windows of ``utilrank_window`` passages (default
    ``annotator.window``), each ranked by one generated answer (the one parser,
    :func:`~uptrain.annotate.parse.parse_selection`), the rankings concatenated.
``utilrank: sliding``, ``sliding_window: 20``, ``sliding_stride: 10``
    Sliding-window listwise ranking (RankGPT, Sun et al., EMNLP 2023) for pools longer than one
    prompt: windows ``[max(0, e - w), e)`` for ``e = N, N - s, N - 2s, ...`` down to the window that
    starts at 0, i.e. from the back of the list to the front, ranked one after the other; each
    window's ranking reorders that window in place, so the best passages bubble to the top.
    Passages the model leaves out of a window's ranking keep their relative order after the ranked
    ones of that window; an unparseable window is left as it is and counted. A list of N passages
    takes ``1 + ceil(max(0, N - w) / s)`` prompts (none for an empty list).
``utilrank: first``, ``first_merge: windows | sliding``
    FIRST (Reddy et al., "FIRST: Faster Improved Listwise Reranking with Single Token Decoding",
    EMNLP 2024): the listwise ``utilrank.txt`` prompt, its answer started with ``[`` (the form the
    prompt asks for, ``[2] > [1]``), and one forward pass: the log-probabilities of the next token
    over the window's labels ``1``..``n`` rank the window (ties in window order). Windows are
    merged as ``windows`` does (``first_merge: windows``, the default, with ``utilrank_window``) or
    slid (``first_merge: sliding``, with ``sliding_window`` and ``sliding_stride``). The record keeps
    each passage's label probability normalised over its window's labels (the last window that
    scored it) under ``scores["utilrank"]``. Labels must be single, distinct tokens: with a
    tokenizer that splits digits (SmolLM2 does) labels 10.. share the token of 1, so windows of at
    most 9 passages are needed there (checked when the pipeline is built, a ConfigError).

The top k% of a ranking (``utilrank_top``) is taken over the passages the model placed in some
parsed ranking (an unparseable ranking yields no positive rather than a guessed one). Per step,
the pipeline counts prompts, forward passes (single-token steps) or generated tokens, prompt
tokens and seconds (:attr:`AnnotationPipeline.step_costs`, and ``batch_costs`` of the last batch).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping, Sequence

from uptrain.annotate.backends.base import Backend, GenerationParams, Messages, next_tokens_unsupported
from uptrain.annotate.budget import PromptFitter, TruncationStats
from uptrain.annotate.parse import ParseStats, parse_answer, parse_selection
from uptrain.annotate.prompts import PromptRenderer, window
from uptrain.errors import ConfigError

STEPS = ("relsel", "answer", "utilsel", "utilrank")
SELECTION_STEPS = ("relsel", "utilsel", "utilrank")  # the steps whose output is a set of positives
_NEEDS = {"answer": "relsel", "utilsel": "answer", "utilrank": "relsel"}


SCHEME_SETTING = "annotator.scheme"
RELSEL_SCHEMES = ("listwise", "pointwise_logit")
UTILRANK_SCHEMES = ("windows", "sliding", "first")
FIRST_MERGES = ("windows", "sliding")
POINTWISE_TEMPLATE = "relsel_pointwise"
#: next-token candidates of the pointwise relevance prompt, and the class each one counts for
YES_NO = {"yes": True, "Yes": True, "no": False, "No": False}
#: how a FIRST answer starts: the listwise prompt asks for "[2] > [1] > ...", so the label follows "["
FIRST_PREFIX = "["


@dataclass(frozen=True)
class Scheme:
    """How each step prompts (``annotator.scheme``, checked by :func:`check_scheme`; see the module docstring)."""

    relsel: str = "listwise"
    threshold: float = 0.5
    utilrank: str = "windows"
    first_merge: str = "windows"
    utilrank_window: int | None = None  # None: annotator.window
    sliding_window: int = 20
    sliding_stride: int = 10

    @property
    def slides(self) -> bool:
        """Whether UtilRank slides its windows (``sliding``, or ``first`` with ``first_merge: sliding``)."""
        return self.utilrank == "sliding" or (self.utilrank == "first" and self.first_merge == "sliding")

    def scores_next_tokens(self, steps: Sequence[str]) -> bool:
        """Whether one of ``steps`` reads next-token probabilities instead of generating."""
        return (self.relsel == "pointwise_logit" and "relsel" in steps) or \
            (self.utilrank == "first" and "utilrank" in steps)

    def rank_window(self, default: int) -> int:
        """Passages per UtilRank prompt."""
        if self.slides:
            return self.sliding_window
        return self.utilrank_window or default

    def describe(self, step: str, window_size: int) -> str:
        """The scheme of ``step`` in words, for reports (``listwise, windows of 16``)."""
        if step == "relsel":
            if self.relsel == "pointwise_logit":
                return f"pointwise_logit, P(yes) > {self.threshold:g}"
            return f"listwise, windows of {window_size}"
        if step == "utilsel":
            return f"listwise, windows of {window_size}"
        if step == "answer":
            return "generated"
        how = "first, " if self.utilrank == "first" else ""
        if self.slides:
            return f"{how}sliding, window {self.sliding_window}, stride {self.sliding_stride}"
        return f"{how}windows of {self.rank_window(window_size)}"


_SCHEME_APPLIES = {  # key -> (when it applies, in words)
    "threshold": (lambda s: s.relsel == "pointwise_logit", "relsel: pointwise_logit"),
    "first_merge": (lambda s: s.utilrank == "first", "utilrank: first"),
    "utilrank_window": (lambda s: s.utilrank in ("windows", "first") and not s.slides,
                        "utilrank: windows, or first with first_merge: windows"),
    "sliding_window": (lambda s: s.slides, "utilrank: sliding, or first with first_merge: sliding"),
    "sliding_stride": (lambda s: s.slides, "utilrank: sliding, or first with first_merge: sliding"),
}


def _positive_int(value, name: str, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{setting}.{name} must be an integer of at least 1, got {value!r}")
    return value


def check_scheme(scheme: Mapping | None, setting: str = SCHEME_SETTING) -> Scheme:
    """The prompting scheme of ``scheme`` (None or empty: the paper's); a ConfigError naming
    ``setting`` for an unknown key or value, a bad number, or a key that does not apply."""
    if scheme is None:
        return Scheme()
    if not isinstance(scheme, Mapping):
        raise ConfigError(f"{setting} must be a mapping of step -> scheme (e.g. {{utilrank: sliding}}), got {scheme!r}")
    known = [f.name for f in fields(Scheme)]
    unknown = sorted(str(k) for k in scheme if k not in known)
    if unknown:
        raise ConfigError(f"{setting}: unknown settings {unknown}; known: {', '.join(known)}")
    choices = {"relsel": RELSEL_SCHEMES, "utilrank": UTILRANK_SCHEMES, "first_merge": FIRST_MERGES}
    for key, allowed in choices.items():
        if key in scheme and scheme[key] not in allowed:
            raise ConfigError(f"{setting}.{key}: unknown value {scheme[key]!r}; known: {', '.join(allowed)}")
    values = dict(scheme)
    if "threshold" in values:
        t = values["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
            raise ConfigError(f"{setting}.threshold is a probability in [0, 1], got {t!r}")
        values["threshold"] = float(t)
    for key in ("utilrank_window", "sliding_window", "sliding_stride"):
        if key in values:
            _positive_int(values[key], key, setting)
    result = Scheme(**values)
    for key, (applies, when) in _SCHEME_APPLIES.items():
        if key in scheme and not applies(result):
            raise ConfigError(f"{setting}.{key} applies only with {when}; the scheme is {dict(scheme)}")
    if result.slides and result.sliding_stride > result.sliding_window:
        raise ConfigError(f"{setting}.sliding_stride ({result.sliding_stride}) must not exceed sliding_window "
                          f"({result.sliding_window}): passages between windows would never be ranked")
    return result


def sliding_windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` windows of a sliding ranking of ``n`` items, from the back to the front:
    ends ``n, n - stride, ...``, starts ``max(0, end - size)``, down to the one that starts at 0
    (RankGPT, Sun et al. 2023); ``1 + ceil(max(0, n - size) / stride)`` of them, none for ``n = 0``."""
    if n <= 0:
        return []
    out, end = [], n
    while True:
        start = max(0, end - size)
        out.append((start, end))
        if start == 0:
            return out
        end -= stride


def check_steps(steps: Sequence[str], setting: str = "annotate.steps") -> list[str]:
    """The steps as a list; a ConfigError naming ``setting`` for an unknown step or one whose input is missing."""
    steps = list(steps)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ConfigError(f"{setting}: unknown annotation steps {unknown}; known: {', '.join(STEPS)}")
    for step in steps:
        if step in _NEEDS and _NEEDS[step] not in steps:
            raise ConfigError(f"{setting}: annotation step '{step}' needs '{_NEEDS[step]}' before it")
    return steps


@dataclass
class QueryAnnotation:
    query_id: str
    query: str
    candidates: list[str]
    relsel: list[str] | None = None
    answer: str | None = None
    utilsel: list[str] | None = None
    utilrank: list[str] | None = None  # full utility ranking of the relevance-selected passages
    utilrank_top: list[str] | None = None  # its top k%
    outputs: dict[str, list[str]] = field(default_factory=dict)  # raw model text per step
    unparseable: dict[str, int] = field(default_factory=dict)  # answers with no usable passage number
    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncation: dict = field(default_factory=dict)  # what fitting its prompts to the budget cut (TruncationStats.cuts)
    # step -> passage -> probability, for the single-token schemes (pointwise relsel, FIRST utilrank);
    # left out of the record when empty, so the records of the paper's scheme are those of earlier runs
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if not d["scores"]:
            del d["scores"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QueryAnnotation":
        return cls(**d)

    def positives(self, step: str) -> list[str]:
        """The passages a label source built on ``step`` treats as positives."""
        value = {"relsel": self.relsel, "utilsel": self.utilsel, "utilrank": self.utilrank_top}.get(step)
        if step not in SELECTION_STEPS:
            raise ValueError(f"no positives for step '{step}' (one of relsel, utilsel, utilrank)")
        return list(value or [])


def top_k_percent(ranking: Sequence[str], k: float) -> list[str]:
    """The first ceil(k% of the ranking), at least one (the paper keeps k=10%)."""
    if not ranking:
        return []
    return list(ranking[: max(1, math.ceil(len(ranking) * k / 100.0))])


#: ranks windows: [(query index, window of doc ids)] -> per window, its 0-based positions in ranked
#: order (possibly partial), or None when the window could not be ranked
Ranker = Callable[[list[tuple[int, list[str]]]], list]


def add_costs(total: dict, cost: Mapping) -> dict:
    """``cost`` (one step's counts: ``scheme``, ``prompts``, ``forward_passes`` (None for a generating
    step), ``generated_tokens``, ``prompt_tokens``, ``seconds``, and FIRST's ``windows`` and
    ``label_mass``) added into ``total``, which is returned."""
    for key, value in cost.items():
        if key == "scheme" or value is None:
            total.setdefault(key, value)
        else:
            total[key] = (total.get(key) or 0) + value
    return total


@dataclass
class AnnotationPipeline:
    backend: Backend
    renderer: PromptRenderer
    params: GenerationParams
    steps: Sequence[str] = STEPS
    window_size: int = 16
    max_passage_words: int | None = 100
    utilrank_k: float = 10.0
    parse_stats: dict[str, ParseStats] = field(default_factory=dict)
    scheme: dict = field(default_factory=dict)  # annotator.scheme: how each step prompts (empty: the paper's)

    def __post_init__(self):
        self.steps = check_steps(self.steps)
        self.schemes = check_scheme(self.scheme)
        for s in STEPS:
            self.parse_stats.setdefault(s, ParseStats())
        self.fitter = PromptFitter(self.renderer, self.backend, self.max_passage_words)
        #: per step: prompts, forward passes (single-token steps), generated tokens, prompt tokens, seconds
        self.step_costs: dict[str, dict] = {}
        self.batch_costs: dict[str, dict] = {}  # the same, for the last run() only
        self._check_scheme_runs()

    # --- the scheme against this backend and these prompts -----------------------
    def uses(self, step: str) -> str:
        """The scheme ``step`` runs with, in words."""
        return self.schemes.describe(step, self.window_size)

    def _check_scheme_runs(self) -> None:
        sc = self.schemes
        if sc.scores_next_tokens(self.steps) and not type(self.backend).scores_next_tokens():
            raise next_tokens_unsupported(self.backend.name)
        if sc.relsel == "pointwise_logit" and "relsel" in self.steps and POINTWISE_TEMPLATE not in self.renderer.stages:
            raise ConfigError(f"{SCHEME_SETTING}.relsel=pointwise_logit needs the prompt template "
                              f"{POINTWISE_TEMPLATE}.txt, which prompt version '{self.renderer.version}' "
                              f"({self.renderer.directory}) does not have")
        if sc.utilrank == "first" and "utilrank" in self.steps:
            size = sc.rank_window(self.window_size)
            labels = [str(i) for i in range(1, size + 1)]
            tokens = self.backend.candidate_tokens(labels)
            if tokens is not None:
                owner: dict[int, str] = {}
                for label, ids in zip(labels, tokens):
                    for t in ids:
                        if t in owner:
                            raise ConfigError(
                                f"{SCHEME_SETTING}.utilrank=first ranks a window by the first token of each passage "
                                f"label, and with this model's tokenizer the labels {owner[t]!r} and {label!r} share "
                                f"their first token, so windows of {size} passages cannot be told apart; use windows "
                                f"of at most {int(label) - 1} passages ({SCHEME_SETTING}.utilrank_window, or "
                                "sliding_window with first_merge: sliding)")
                        owner[t] = label

    # --- accounting ---------------------------------------------------------------
    @property
    def truncation(self) -> TruncationStats:
        """What fitting every prompt so far to the token budget cut."""
        return self.fitter.stats

    def _prompt(self, ann: "QueryAnnotation", step: str, passages: list[str], answer: str | None,
                template: str | None = None, reserve: int | None = None) -> Messages:
        reserve = self.params.max_new_tokens if reserve is None else reserve
        messages, cut = self.fitter.render(template or step, ann.query, passages, answer=answer, reserve=reserve)
        if cut.prompts_truncated:
            ann.truncation = TruncationStats().merge(ann.truncation).merge(cut).cuts()
        return messages

    def _cost(self, step: str) -> dict:
        return self.batch_costs.setdefault(step, {"scheme": self.uses(step), "prompts": 0, "forward_passes": None,
                                                  "generated_tokens": 0, "prompt_tokens": 0, "seconds": 0.0})

    def _count(self, ann: QueryAnnotation, out, step: str) -> None:
        ann.prompts += 1
        ann.prompt_tokens += out.prompt_tokens
        ann.output_tokens += out.output_tokens
        cost = self._cost(step)
        cost["prompts"] += 1
        cost["generated_tokens"] += out.output_tokens
        cost["prompt_tokens"] += out.prompt_tokens

    def _count_scored(self, ann: QueryAnnotation, messages: Messages, step: str) -> None:
        """A prompt scored by one forward pass (nothing generated)."""
        n = self.backend.prompt_length(messages)
        ann.prompts += 1
        ann.prompt_tokens += n
        cost = self._cost(step)
        cost["prompts"] += 1
        cost["forward_passes"] = (cost["forward_passes"] or 0) + 1
        cost["prompt_tokens"] += n

    # --- listwise selection (the paper's) -----------------------------------------
    def _select(self, step: str, items: list[QueryAnnotation], docs: dict[str, str],
                pick: str, answer: bool, size: int | None = None) -> list[list[str]]:
        """Listwise selection over windows; returns the selected doc ids per query, in answer order."""
        jobs: list[tuple[int, list[str]]] = []
        prompts = []
        for qi, ann in enumerate(items):
            pool = getattr(ann, pick)
            for win in window(list(pool or []), size or self.window_size):
                jobs.append((qi, win))
                prompts.append(self._prompt(ann, step, [docs.get(d, "") for d in win], ann.answer if answer else None))
        selected: list[list[str]] = [[] for _ in items]
        outputs = self.backend.generate(prompts, self.params) if prompts else []
        for (qi, win), out in zip(jobs, outputs):
            nums = parse_selection(out.text, len(win))
            once = ParseStats()
            once.record(out.text, nums)
            self.parse_stats[step].record(out.text, nums)
            items[qi].unparseable[step] = items[qi].unparseable.get(step, 0) + once.unparseable
            items[qi].outputs.setdefault(step, []).append(out.text)
            self._count(items[qi], out, step)
            for n in nums:
                if win[n - 1] not in selected[qi]:
                    selected[qi].append(win[n - 1])
        return selected

    # --- pointwise relevance from next-token probabilities --------------------------
    def _pointwise_relsel(self, items: list[QueryAnnotation], docs: dict[str, str]) -> None:
        jobs, prompts = [], []
        for qi, ann in enumerate(items):
            for d in ann.candidates:
                jobs.append((qi, d))
                prompts.append(self._prompt(ann, "relsel", [docs.get(d, "")], None, template=POINTWISE_TEMPLATE,
                                            reserve=1))
        scores = self.backend.next_token_logprobs(prompts, list(YES_NO)) if prompts else []
        probs: list[dict[str, float]] = [{} for _ in items]
        for (qi, d), messages, lp in zip(jobs, prompts, scores):
            self._count_scored(items[qi], messages, "relsel")
            yes = _logsumexp([lp[c] for c, is_yes in YES_NO.items() if is_yes])
            no = _logsumexp([lp[c] for c, is_yes in YES_NO.items() if not is_yes])
            if yes == -math.inf and no == -math.inf:
                items[qi].unparseable["relsel"] = items[qi].unparseable.get("relsel", 0) + 1
                continue
            probs[qi][d] = round(_sigmoid(yes - no), 6)
        for qi, ann in enumerate(items):
            order = {d: i for i, d in enumerate(ann.candidates)}
            chosen = [d for d, p in probs[qi].items() if p > self.schemes.threshold]
            ann.relsel = sorted(chosen, key=lambda d: (-probs[qi][d], order[d]))
            ann.scores["relsel"] = probs[qi]
            ann.unparseable.setdefault("relsel", 0)

    # --- rankers: one ranking per window ----------------------------------------------
    def _generated_ranker(self, items: list[QueryAnnotation], docs: dict[str, str], answer: bool) -> Ranker:
        """Windows ranked by a generated answer, read by the one parser (the paper's UtilRank prompt)."""

        def rank(jobs: list[tuple[int, list[str]]]) -> list:
            prompts = [self._prompt(items[qi], "utilrank", [docs.get(d, "") for d in win],
                                    items[qi].answer if answer else None) for qi, win in jobs]
            outputs = self.backend.generate(prompts, self.params) if prompts else []
            rankings = []
            for (qi, win), out in zip(jobs, outputs):
                nums = parse_selection(out.text, len(win))
                once = ParseStats()
                once.record(out.text, nums)
                self.parse_stats["utilrank"].record(out.text, nums)
                items[qi].unparseable["utilrank"] = items[qi].unparseable.get("utilrank", 0) + once.unparseable
                items[qi].outputs.setdefault("utilrank", []).append(out.text)
                self._count(items[qi], out, "utilrank")
                rankings.append([n - 1 for n in nums] if nums else None)
            return rankings

        return rank

    def _first_ranker(self, items: list[QueryAnnotation], docs: dict[str, str], answer: bool) -> Ranker:
        """FIRST: a window ranked by the next-token log-probabilities of its labels after ``[``."""

        def rank(jobs: list[tuple[int, list[str]]]) -> list:
            if not jobs:
                return []
            reserve = 1 + self.backend.count_tokens(FIRST_PREFIX)
            prompts = [self._prompt(items[qi], "utilrank", [docs.get(d, "") for d in win],
                                    items[qi].answer if answer else None, reserve=reserve) for qi, win in jobs]
            labels = [str(i) for i in range(1, max(len(win) for _, win in jobs) + 1)]
            scores = self.backend.next_token_logprobs(prompts, labels, prefix=FIRST_PREFIX)
            cost = self._cost("utilrank")
            rankings = []
            for (qi, win), messages, lp in zip(jobs, prompts, scores):
                self._count_scored(items[qi], messages, "utilrank")
                values = [lp[str(i + 1)] for i in range(len(win))]
                mass = sum(math.exp(v) for v in values)
                cost["label_mass"] = cost.get("label_mass", 0.0) + mass
                cost["windows"] = cost.get("windows", 0) + 1
                if mass <= 0.0:  # every label has probability zero: nothing to rank by
                    items[qi].unparseable["utilrank"] = items[qi].unparseable.get("utilrank", 0) + 1
                    rankings.append(None)
                    continue
                items[qi].unparseable.setdefault("utilrank", 0)
                scored = items[qi].scores.setdefault("utilrank", {})
                for d, v in zip(win, values):
                    scored[d] = round(math.exp(v) / mass, 6)
                rankings.append(sorted(range(len(win)), key=lambda i: (-values[i], i)))
            return rankings

        return rank

    # --- merging windows into one ranking --------------------------------------------
    @staticmethod
    def _apply(win: list[str], ranking) -> tuple[list[str], list[str]]:
        """The window reordered by ``ranking`` (ranked first, the rest after in their order) and the ranked ids."""
        if not ranking:
            return list(win), []
        ranked = [win[i] for i in dict.fromkeys(ranking)]
        return ranked + [d for d in win if d not in ranked], ranked

    def _independent(self, pools: list[list[str]], size: int, rank: Ranker) -> tuple[list[list[str]], list[set]]:
        """Independent windows of ``size``, each one's ranked passages concatenated (the paper's UtilRank)."""
        jobs = [(qi, win) for qi, pool in enumerate(pools) for win in window(pool, size)]
        orders: list[list[str]] = [[] for _ in pools]
        for (qi, win), ranking in zip(jobs, rank(jobs)):
            _, ranked = self._apply(win, ranking)
            orders[qi] += [d for d in ranked if d not in orders[qi]]
        return orders, [set(o) for o in orders]

    def _sliding(self, pools: list[list[str]], size: int, stride: int, rank: Ranker) -> tuple[list[list[str]], list[set]]:
        """Sliding windows from the back of each list to the front (:func:`sliding_windows`), each
        ranking reordering its window in place; the windows of every query at the same step go to
        the ranker together (the steps depend on each other, queries do not)."""
        orders = [list(p) for p in pools]
        ranked: list[set] = [set() for _ in pools]
        plans = [sliding_windows(len(p), size, stride) for p in pools]
        for step in range(max((len(p) for p in plans), default=0)):
            jobs, where = [], []
            for qi, plan in enumerate(plans):
                if step < len(plan):
                    start, end = plan[step]
                    jobs.append((qi, orders[qi][start:end]))
                    where.append((start, end))
            for (qi, win), (start, end), ranking in zip(jobs, where, rank(jobs)):
                orders[qi][start:end], placed = self._apply(win, ranking)
                ranked[qi].update(placed)
        return orders, ranked

    def _utilrank(self, items: list[QueryAnnotation], docs: dict[str, str]) -> None:
        sc = self.schemes
        answer = "answer" in self.steps
        if sc.utilrank == "windows":
            ranked = self._select("utilrank", items, docs, "relsel", answer=answer, size=sc.rank_window(self.window_size))
            for ann, order in zip(items, ranked):
                # passages the model left out of its ranking go after the ranked ones, in pool order
                rest = [d for d in (ann.relsel or []) if d not in order]
                ann.utilrank = order + rest
                # an unparseable ranking yields no positive rather than a guessed one
                ann.utilrank_top = top_k_percent(order, self.utilrank_k)
            return
        ranker = self._first_ranker(items, docs, answer) if sc.utilrank == "first" else \
            self._generated_ranker(items, docs, answer)  # sliding
        pools = [list(ann.relsel or []) for ann in items]
        if sc.slides:
            orders, placed = self._sliding(pools, sc.sliding_window, sc.sliding_stride, ranker)
        else:
            orders, placed = self._independent(pools, sc.rank_window(self.window_size), ranker)
        for ann, pool, order, done in zip(items, pools, orders, placed):
            ann.utilrank = order + [d for d in pool if d not in order]
            ann.utilrank_top = top_k_percent([d for d in ann.utilrank if d in done], self.utilrank_k)

    # --- the steps ---------------------------------------------------------------------
    def run_step(self, step: str, items: list[QueryAnnotation], docs: dict[str, str]) -> None:
        """Run one step over the batch (its inputs, e.g. ``relsel`` for ``utilrank``, already on the
        items), its prompts, forward passes, tokens and seconds added to the step's costs."""
        start = time.perf_counter()
        self._cost(step)
        if step == "relsel":
            if self.schemes.relsel == "pointwise_logit":
                self._pointwise_relsel(items, docs)
            else:
                for ann, sel in zip(items, self._select("relsel", items, docs, "candidates", answer=False)):
                    ann.relsel = sel
        elif step == "answer":
            todo = [a for a in items if a.relsel]
            prompts = [self._prompt(a, "answer", [docs.get(d, "") for d in a.relsel], None) for a in todo]
            outs = self.backend.generate(prompts, self.params) if prompts else []
            for a, out in zip(todo, outs):
                a.answer = parse_answer(out.text)
                self._count(a, out, "answer")
                a.outputs.setdefault("answer", []).append(out.text)
            for a in items:
                if not a.relsel:
                    a.answer = ""
        elif step == "utilsel":
            for ann, sel in zip(items, self._select("utilsel", items, docs, "relsel", answer=True)):
                ann.utilsel = sel
        elif step == "utilrank":
            self._utilrank(items, docs)
        else:
            raise ValueError(f"unknown annotation step '{step}'; known: {', '.join(STEPS)}")
        seconds = time.perf_counter() - start
        self._cost(step)["seconds"] += seconds
        add_costs(self.step_costs.setdefault(step, {}), self.batch_costs[step])

    def run(self, items: list[QueryAnnotation], docs: dict[str, str]) -> list[QueryAnnotation]:
        self.batch_costs = {}
        for step in STEPS:
            if step in self.steps:
                self.run_step(step, items, docs)
        return items


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
