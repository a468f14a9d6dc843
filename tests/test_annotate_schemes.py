"""The prompting schemes of ``annotator.scheme`` (uptrain/annotate/steps.py): RankGPT's sliding
windows against a hand-worked example, pointwise relevance from P(yes), FIRST's label logits, the
per-step costs of the annotate stage, and the paper's scheme unchanged when the scheme is empty.

The fast tests run a scripted backend whose passages are ``docN ...``: it ranks lower N first,
selects even N, and reads "next-token" probabilities off N, so every expected value below is
worked out by hand. The SmolLM2 tests check ``next_token_logprobs`` against a plain forward pass.
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
from pathlib import Path

import pytest

from uptrain.annotate.backends.base import Backend, BackendStats, Generation, GenerationParams
from uptrain.annotate.prompts import PromptRenderer
from uptrain.annotate.stage import AnnotateStage
from uptrain.annotate.steps import AnnotationPipeline, QueryAnnotation, check_scheme, sliding_windows
from uptrain.cache import canonical_json
from uptrain.data.collection import Collection
from uptrain.errors import ConfigError, UserError
from uptrain.pool.pool import PoolEntry

HERE = __name__
PASSAGE = re.compile(r"^\[(\d+)\] doc(\d+)\b", re.M)


def _docs_in(prompt) -> list[tuple[int, int]]:
    """(label, doc number) of every passage shown in a prompt, in the prompt's order."""
    return [(int(i), int(n)) for i, n in PASSAGE.findall(prompt[-1]["content"])]


class Scripted(Backend):
    """Whitespace tokens. Ranks lower doc numbers first (leaving out those in ``omit``, answering
    gibberish for a window holding one of ``garble``); selects even doc numbers, a window holding
    doc7 gets an unparseable answer; answers list the doc numbers. Next-token scores:
    P(label i) = exp(-N_i) for FIRST, and a relevance of N/10 after the yes/no prompt."""

    name = "scripted"
    omit: set = set()
    garble: set = set()
    built = 0
    calls: list = []
    fail_on_call: int | None = None

    def __init__(self, model: str = "scripted", max_context: int = 4096, batch_size: int = 8):
        type(self).built += 1
        self._max_context = max_context
        self.stats = BackendStats()
        self.seen: list = []

    def spec(self):
        return {"backend": self.name}

    def count_tokens(self, text):
        return len(text.split())

    def _call(self, kind, n):
        calls = type(self).calls
        calls.append((kind, n))
        if type(self).fail_on_call is not None and len(calls) >= type(self).fail_on_call:
            raise KeyboardInterrupt("killed")

    def generate(self, prompts, params):
        self._call("generate", len(prompts))
        out = []
        for p in prompts:
            self.seen.append(p)
            text, found = p[-1]["content"], _docs_in(p)
            if text.startswith("Rank"):
                if any(n in self.garble for _, n in found):
                    ans = "I cannot rank these."
                else:
                    ans = " > ".join(f"[{i}]" for i, n in sorted(found, key=lambda x: x[1]) if n not in self.omit)
            elif text.startswith("Select"):
                ans = "hmm, unsure" if any(n == 7 for _, n in found) else (
                    ", ".join(f"[{i}]" for i, n in found if n % 2 == 0) or "None")
            else:
                ans = "Answer: docs " + " ".join(str(n) for _, n in found)
            out.append(Generation(text=ans, prompt_tokens=self.prompt_length(p), output_tokens=len(ans.split())))
        return out

    def next_token_logprobs(self, prompts, candidates, prefix=""):
        self._call("score", len(prompts))
        out = []
        for p in prompts:
            self.seen.append((p, tuple(candidates), prefix))
            found = _docs_in(p)
            if p[-1]["content"].startswith("Judge whether"):
                n = found[0][1]
                if n == 11:  # a passage on which both answers have probability zero
                    out.append({c: -math.inf for c in candidates})
                    continue
                r = n / 10
                log = lambda x: math.log(x) if x > 0 else -math.inf  # noqa: E731
                # P(yes) + P(Yes) = 0.4 r, P(no) + P(No) = 0.4 (1 - r): relevance r
                out.append({"yes": log(0.2 * r), "Yes": log(0.2 * r), "no": log(0.4 * (1 - r)), "No": -math.inf})
            else:
                numbers = dict(found)
                out.append({c: -float(numbers[int(c)]) if int(c) in numbers else -50.0 for c in candidates})
        return out

    def loglikelihood(self, contexts, continuations):
        raise NotImplementedError


class Generating(Scripted):
    """The scripted model without next-token scores (a backend that only generates)."""

    name = "generating"
    next_token_logprobs = Backend.next_token_logprobs


class DigitTokens(Scripted):
    """Tokens are characters, so the labels 1 and 10 share their first token."""

    def candidate_tokens(self, candidates):
        return [(ord(c[0]),) for c in candidates]


@pytest.fixture(autouse=True)
def _reset():
    Scripted.omit, Scripted.garble, Scripted.calls, Scripted.built, Scripted.fail_on_call = set(), set(), [], 0, None


def docs(n: int = 12) -> dict[str, str]:
    return {f"d{i}": f"doc{i} " + "word " * i for i in range(n)}


def pipeline(scheme=None, backend=None, steps=("relsel", "answer", "utilsel", "utilrank"), **kw) -> AnnotationPipeline:
    args = dict(window_size=4, max_passage_words=6, utilrank_k=10.0)
    args.update(kw)
    extra = {} if scheme is None else {"scheme": scheme}
    return AnnotationPipeline(backend or Scripted(), PromptRenderer(), GenerationParams(max_new_tokens=8),
                              steps=list(steps), **args, **extra)


def ranked(pool: list[str], scheme: dict, **kw) -> tuple[QueryAnnotation, AnnotationPipeline]:
    """UtilRank alone over ``pool`` (set as the relevance selection)."""
    p = pipeline(scheme, steps=["relsel", "utilrank"], **kw)
    ann = QueryAnnotation("q", "which doc?", list(pool), relsel=list(pool))
    p.run_step("utilrank", [ann], docs())
    return ann, p


# --- the sliding window (RankGPT) ------------------------------------------------------


@pytest.mark.parametrize("n, size, stride", [(0, 4, 2), (1, 4, 2), (4, 4, 2), (5, 4, 2), (9, 4, 2), (10, 4, 2),
                                             (100, 20, 10), (25, 20, 10), (7, 3, 3), (30, 8, 1)])
def test_sliding_windows_cover_the_list_back_to_front_in_the_formula_count(n, size, stride):
    wins = sliding_windows(n, size, stride)
    assert len(wins) == (0 if n == 0 else 1 + math.ceil(max(0, n - size) / stride))
    if n:
        assert wins[0][1] == n and wins[-1][0] == 0  # from the back of the list to its front
        assert all(e - s == min(size, e) for s, e in wins)
        assert all(b[1] == a[1] - stride for a, b in zip(wins, wins[1:]))
        assert set().union(*(range(s, e) for s, e in wins)) == set(range(n))
    assert sliding_windows(9, 4, 2) == [(5, 9), (3, 7), (1, 5), (0, 3)]


POOL = ["d4", "d7", "d1", "d6", "d0", "d3", "d8", "d2", "d5"]
SLIDE = {"utilrank": "sliding", "sliding_window": 4, "sliding_stride": 2}


def test_sliding_utilrank_matches_the_hand_worked_example():
    # window 4, stride 2 over 9 passages: windows [5,9), [3,7), [1,5), [0,3); the model ranks lower N first
    #   [5,9) d3 d8 d2 d5 -> d2 d3 d5 d8:  d4 d7 d1 d6 d0 d2 d3 d5 d8
    #   [3,7) d6 d0 d2 d3 -> d0 d2 d3 d6:  d4 d7 d1 d0 d2 d3 d6 d5 d8
    #   [1,5) d7 d1 d0 d2 -> d0 d1 d2 d7:  d4 d0 d1 d2 d7 d3 d6 d5 d8
    #   [0,3) d4 d0 d1    -> d0 d1 d4:     d0 d1 d4 d2 d7 d3 d6 d5 d8
    ann, p = ranked(POOL, SLIDE, utilrank_k=30.0)
    assert ann.utilrank == ["d0", "d1", "d4", "d2", "d7", "d3", "d6", "d5", "d8"]
    assert ann.utilrank_top == ["d0", "d1", "d4"]  # ceil(30% of 9)
    assert ann.prompts == 4 == 1 + math.ceil((9 - 4) / 2)
    # each window is cut from the list as the previous windows left it
    shown = [[f"d{n}" for _, n in _docs_in(prompt)] for prompt in p.backend.seen]
    assert shown == [["d3", "d8", "d2", "d5"], ["d6", "d0", "d2", "d3"], ["d7", "d1", "d0", "d2"], ["d4", "d0", "d1"]]
    assert p.batch_costs["utilrank"]["prompts"] == 4 and p.batch_costs["utilrank"]["forward_passes"] is None
    assert p.batch_costs["utilrank"]["scheme"] == "sliding, window 4, stride 2"
    assert ann.unparseable["utilrank"] == 0 and len(ann.outputs["utilrank"]) == 4


def test_sliding_keeps_left_out_passages_after_the_ranked_ones_of_their_window():
    # the model never ranks d0 or d5:
    #   [5,9) d3 d8 d2 d5 -> d2 d3 d8 | d5:  d4 d7 d1 d6 d0 d2 d3 d8 d5
    #   [3,7) d6 d0 d2 d3 -> d2 d3 d6 | d0:  d4 d7 d1 d2 d3 d6 d0 d8 d5
    #   [1,5) d7 d1 d2 d3 -> d1 d2 d3 d7:    d4 d1 d2 d3 d7 d6 d0 d8 d5
    #   [0,3) d4 d1 d2    -> d1 d2 d4:       d1 d2 d4 d3 d7 d6 d0 d8 d5
    Scripted.omit = {0, 5}
    ann, _ = ranked(POOL, SLIDE, utilrank_k=50.0)
    assert ann.utilrank == ["d1", "d2", "d4", "d3", "d7", "d6", "d0", "d8", "d5"]
    # the top k% is of the 7 passages some window ranked: ceil(3.5) = 4, never the unranked d0/d5
    assert ann.utilrank_top == ["d1", "d2", "d4", "d3"]


def test_an_unparseable_window_is_left_as_it_is_and_counted():
    # windows holding d8 get no ranking: [5,9) and [3,7) stay; then
    #   [1,5) d7 d1 d6 d0 -> d0 d1 d6 d7:  d4 d0 d1 d6 d7 d3 d8 d2 d5
    #   [0,3) d4 d0 d1    -> d0 d1 d4:     d0 d1 d4 d6 d7 d3 d8 d2 d5
    Scripted.garble = {8}
    ann, p = ranked(POOL, SLIDE, utilrank_k=100.0)
    assert ann.utilrank == ["d0", "d1", "d4", "d6", "d7", "d3", "d8", "d2", "d5"]
    assert ann.unparseable["utilrank"] == 2 and p.parse_stats["utilrank"].unparseable == 2
    assert ann.utilrank_top == ["d0", "d1", "d4", "d6", "d7"]  # only passages some ranking placed
    Scripted.garble = set(range(12))
    ann, _ = ranked(POOL, SLIDE)
    assert ann.utilrank == POOL and ann.utilrank_top == [] and ann.unparseable["utilrank"] == 4


def test_sliding_batches_queries_in_lockstep_with_the_same_result_as_alone():
    many = pipeline(SLIDE, steps=["relsel", "utilrank"])
    a = QueryAnnotation("a", "q?", list(POOL), relsel=list(POOL))
    b = QueryAnnotation("b", "q?", ["d9", "d3", "d6"], relsel=["d9", "d3", "d6"])
    many.run_step("utilrank", [a, b], docs())
    assert Scripted.calls == [("generate", 2), ("generate", 1), ("generate", 1), ("generate", 1)]
    alone_a, _ = ranked(POOL, SLIDE)
    alone_b, _ = ranked(["d9", "d3", "d6"], SLIDE)
    assert a.utilrank == alone_a.utilrank and b.utilrank == alone_b.utilrank == ["d3", "d6", "d9"]
    assert (a.prompts, b.prompts) == (4, 1)


def test_windows_scheme_with_its_own_window_concatenates_independent_rankings():
    ann, p = ranked(POOL, {"utilrank": "windows", "utilrank_window": 3})
    # [d4 d7 d1] -> d1 d4 d7, [d6 d0 d3] -> d0 d3 d6, [d8 d2 d5] -> d2 d5 d8
    assert ann.utilrank == ["d1", "d4", "d7", "d0", "d3", "d6", "d2", "d5", "d8"] and ann.prompts == 3
    assert p.uses("utilrank") == "windows of 3"


# --- FIRST: the first label's logits ------------------------------------------------------


def test_first_ranks_each_window_by_its_label_logits_in_one_forward_pass():
    ann, p = ranked(POOL, {"utilrank": "first", "utilrank_window": 4}, utilrank_k=30.0)
    # windows [d4 d7 d1 d6] [d0 d3 d8 d2] [d5]; P(label i) = exp(-N_i): lower N first in each
    assert ann.utilrank == ["d1", "d4", "d6", "d7", "d0", "d2", "d3", "d8", "d5"]
    assert ann.utilrank_top == ["d1", "d4", "d6"]
    assert Scripted.calls == [("score", 3)] and not ann.outputs  # nothing generated
    prompts = [s for s in p.backend.seen]
    assert [s[1] for s in prompts] == [("1", "2", "3", "4")] * 3 and all(s[2] == "[" for s in prompts)
    assert all(s[0][-1]["content"].startswith("Rank the") for s in prompts)  # the listwise UtilRank prompt
    # the label probability normalised over its window: exp(-1) / (exp(-4) + exp(-7) + exp(-1) + exp(-6))
    z = sum(math.exp(-n) for n in (4, 7, 1, 6))
    assert ann.scores["utilrank"]["d1"] == pytest.approx(math.exp(-1) / z, abs=1e-6)
    assert ann.scores["utilrank"]["d5"] == pytest.approx(1.0)
    cost = p.batch_costs["utilrank"]
    assert (cost["prompts"], cost["forward_passes"], cost["generated_tokens"], cost["windows"]) == (3, 3, 0, 3)
    assert cost["label_mass"] == pytest.approx(z + sum(math.exp(-n) for n in (0, 3, 8, 2)) + math.exp(-5))


def test_first_with_sliding_windows_matches_the_generated_sliding_ranking():
    # the scores and the generated rankings prefer the same passages, so both slide to the same order
    first, _ = ranked(POOL, {"utilrank": "first", "first_merge": "sliding", "sliding_window": 4, "sliding_stride": 2})
    assert first.utilrank == ["d0", "d1", "d4", "d2", "d7", "d3", "d6", "d5", "d8"]
    assert Scripted.calls == [("score", 1)] * 4


def test_first_refuses_labels_that_share_a_first_token():
    with pytest.raises(ConfigError, match=r"annotator.scheme.utilrank=first.*'1' and '10'.*at most 9 passages"):
        pipeline({"utilrank": "first", "utilrank_window": 12}, backend=DigitTokens())
    pipeline({"utilrank": "first", "utilrank_window": 9}, backend=DigitTokens())  # 1..9 are distinct


# --- pointwise relevance from P(yes) --------------------------------------------------------


def test_pointwise_relsel_selects_passages_above_the_threshold():
    pool = ["d3", "d8", "d5", "d9", "d0", "d11", "d6"]
    items = [QueryAnnotation("q", "which doc?", list(pool))]
    p = pipeline({"relsel": "pointwise_logit", "threshold": 0.5}, steps=["relsel"])
    p.run(items, docs())
    ann = items[0]
    # relevance of dN is N/10; strictly above 0.5, most probable first; d11's yes and no both have P = 0
    assert ann.relsel == ["d9", "d8", "d6"]
    assert ann.scores["relsel"] == {"d3": 0.3, "d8": 0.8, "d5": 0.5, "d9": 0.9, "d0": 0.0, "d6": 0.6}
    assert ann.unparseable["relsel"] == 1 and ann.prompts == 7
    seen = p.backend.seen
    assert all(s[0][-1]["content"].startswith("Judge whether") and len(_docs_in(s[0])) == 1 for s in seen)
    assert [s[1] for s in seen] == [("yes", "Yes", "no", "No")] * 7 and Scripted.calls == [("score", 7)]
    assert p.batch_costs["relsel"]["forward_passes"] == 7 and p.batch_costs["relsel"]["generated_tokens"] == 0
    for threshold, expected in [(0.0, ["d9", "d8", "d6", "d5", "d3"]), (0.85, ["d9"]), (0.9, []), (1.0, [])]:
        items = [QueryAnnotation("q", "which doc?", list(pool))]
        pipeline({"relsel": "pointwise_logit", "threshold": threshold}, steps=["relsel"]).run(items, docs())
        assert items[0].relsel == expected, threshold


def test_pointwise_relsel_feeds_the_later_steps():
    items = [QueryAnnotation("q", "which doc?", ["d3", "d8", "d9", "d6", "d2"])]
    p = pipeline({"relsel": "pointwise_logit"})
    p.run(items, docs())
    ann = items[0]
    assert ann.relsel == ["d9", "d8", "d6"] and ann.answer == "docs 9 8 6"
    assert ann.utilsel == ["d8", "d6"] and ann.utilrank == ["d6", "d8", "d9"]
    assert set(p.batch_costs) == {"relsel", "answer", "utilsel", "utilrank"}
    assert p.step_costs["relsel"]["prompts"] == 5 and p.step_costs["answer"]["forward_passes"] is None


def test_a_backend_without_next_token_scores_is_a_clear_user_error():
    with pytest.raises(UserError, match=r"'generating' annotator backend cannot score next tokens.*transformers"):
        pipeline({"relsel": "pointwise_logit"}, backend=Generating())
    with pytest.raises(UserError, match="cannot score next tokens"):
        pipeline({"utilrank": "first", "utilrank_window": 4}, backend=Generating())
    pipeline({"utilrank": "sliding"}, backend=Generating())  # generated schemes need no scores
    with pytest.raises(UserError, match="cannot score next tokens"):
        Generating().next_token_logprobs([[{"role": "user", "content": "x"}]], ["yes"])


# --- the scheme setting ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme, match", [
    ({"utilrank": "bogus"}, r"annotator.scheme.utilrank: unknown value 'bogus'; known: windows, sliding, first"),
    ({"relsel": "pointwise"}, r"annotator.scheme.relsel: unknown value 'pointwise'"),
    ({"first_merge": "zip", "utilrank": "first"}, r"annotator.scheme.first_merge: unknown value"),
    ({"utilsel": "pointwise_logit"}, r"annotator.scheme: unknown settings \['utilsel'\]"),
    ({"relsel": "pointwise_logit", "threshold": 1.5}, r"annotator.scheme.threshold is a probability"),
    ({"relsel": "pointwise_logit", "threshold": True}, r"annotator.scheme.threshold is a probability"),
    ({"threshold": 0.3}, r"annotator.scheme.threshold applies only with relsel: pointwise_logit"),
    ({"sliding_window": 8}, r"annotator.scheme.sliding_window applies only with utilrank: sliding"),
    ({"utilrank": "sliding", "utilrank_window": 8}, r"annotator.scheme.utilrank_window applies only"),
    ({"utilrank": "sliding", "sliding_window": 0}, r"annotator.scheme.sliding_window must be an integer of at least 1"),
    ({"utilrank": "sliding", "sliding_window": 4, "sliding_stride": 5}, r"sliding_stride \(5\) must not exceed"),
    ({"first_merge": "sliding"}, r"annotator.scheme.first_merge applies only with utilrank: first"),
    (["sliding"], r"annotator.scheme must be a mapping"),
])
def test_bad_schemes_are_config_errors_naming_the_setting(scheme, match):
    with pytest.raises(ConfigError, match=match):
        check_scheme(scheme)
    if isinstance(scheme, dict):
        with pytest.raises(ConfigError, match=match):  # the stage refuses it when made, before any model
            AnnotateStage(annotator(scheme=scheme))
        assert Scripted.built == 0


# The records of the pipeline before annotator.scheme existed (its code at the commit that added it,
# on the scripted backend with windows of 4, 6 words per passage and an 80-token context, so one prompt
# is fitted to the budget): an empty scheme must reproduce them byte for byte.
GOLDEN = (
    '[{"query_id": "q1", "query": "first question?", "candidates": ["d3", "d8", "d1", "d6", "d7", "d2", "d10", "d4", '
    '"d11"], "relsel": ["d8", "d6"], "answer": "docs 8 6", "utilsel": ["d8", "d6"], "utilrank": ["d6", "d8"], '
    '"utilrank_top": ["d6"], "outputs": {"relsel": ["[2], [4]", "hmm, unsure", "None"], "answer": ["Answer: docs 8 6"], '
    '"utilsel": ["[1], [2]"], "utilrank": ["[2] > [1]"]}, "unparseable": {"relsel": 1, "utilsel": 0, "utilrank": 0}, '
    '"prompts": 6, "prompt_tokens": 375, "output_tokens": 14, "truncation": {"prompts_truncated": 1, '
    '"passages_shortened": 2, "words_cut": 4, "tokens_cut": 4}}, {"query_id": "q2", "query": "second question?", '
    '"candidates": ["d9", "d5", "d0", "d4"], "relsel": ["d0", "d4"], "answer": "docs 0 4", "utilsel": ["d0", "d4"], '
    '"utilrank": ["d4", "d0"], "utilrank_top": ["d4"], "outputs": {"relsel": ["[3], [4]"], "answer": '
    '["Answer: docs 0 4"], "utilsel": ["[1], [2]"], "utilrank": ["[2]"]}, "unparseable": {"relsel": 0, "utilsel": 0, '
    '"utilrank": 0}, "prompts": 4, "prompt_tokens": 242, "output_tokens": 9, "truncation": {}}, {"query_id": "q3", '
    '"query": "third?", "candidates": ["d7", "d1"], "relsel": [], "answer": "", "utilsel": [], "utilrank": [], '
    '"utilrank_top": [], "outputs": {"relsel": ["hmm, unsure"]}, "unparseable": {"relsel": 1}, "prompts": 1, '
    '"prompt_tokens": 53, "output_tokens": 2, "truncation": {}}]'
)


@pytest.mark.parametrize("scheme", [None, {}])
def test_an_empty_scheme_writes_the_records_of_the_paper_pipeline_byte_for_byte(scheme):
    Scripted.omit = {0, 5, 10}
    items = [QueryAnnotation("q1", "first question?", ["d3", "d8", "d1", "d6", "d7", "d2", "d10", "d4", "d11"]),
             QueryAnnotation("q2", "second question?", ["d9", "d5", "d0", "d4"]),
             QueryAnnotation("q3", "third?", ["d7", "d1"])]
    p = pipeline(scheme, backend=Scripted(max_context=80), window_size=4, max_passage_words=6)
    p.run(items, docs())
    assert json.dumps([a.to_dict() for a in items], ensure_ascii=False) == GOLDEN
    assert QueryAnnotation.from_dict(json.loads(GOLDEN)[0]).to_dict() == json.loads(GOLDEN)[0]


# --- the annotate stage: per-step costs, probabilities, cache keys -------------------------------


def annotator(**extra) -> dict:
    return {"backend": {"_target_": f"{HERE}.Scripted"}, "generation": {"max_new_tokens": 8}, "prompt_version": "v1",
            "window": 4, "max_passage_words": 6, **extra}


QUERIES = {"q0": "bone health?", "q1": "vitamin d?", "q2": "calcium?"}
POOLS = {"q0": ["d9", "d2", "d7", "d4", "d6", "d1"], "q1": ["d3", "d8", "d5"], "q2": ["d6", "d9", "d0", "d2", "d8"]}
HUMAN = {"q0": ["d9"], "q1": ["d3"], "q2": ["d6", "d8"]}


def _inputs():
    collection = Collection("toy", docs(), dict(QUERIES), {q: {d: 1 for d in ds} for q, ds in HUMAN.items()})
    pool = [PoolEntry(q, QUERIES[q], list(HUMAN[q]), [d for d in POOLS[q] if d not in HUMAN[q]], list(POOLS[q]))
            for q in QUERIES]
    return {"data": types.SimpleNamespace(value=collection), "pool": types.SimpleNamespace(value=pool)}


def build(stage, out: Path, work: Path):
    out.mkdir(parents=True, exist_ok=True)
    stage.build(out, work, _inputs())
    return json.loads((out / "stats.json").read_text())


SCHEME = {"relsel": "pointwise_logit", "threshold": 0.5, "utilrank": "first", "utilrank_window": 4}


def test_stage_reports_each_steps_scheme_cost_and_probabilities(tmp_path):
    stage = AnnotateStage(annotator(scheme=SCHEME), batch_queries=2)
    stage.validate()
    stats = build(stage, tmp_path / "out", tmp_path / "work")
    steps = stats["steps"]
    assert list(steps) == ["relsel", "answer", "utilsel", "utilrank"]
    assert steps["relsel"]["scheme"] == "pointwise_logit, P(yes) > 0.5"
    assert steps["relsel"]["prompts"] == steps["relsel"]["forward_passes"] == 14  # one per pool passage
    assert steps["relsel"]["generated_tokens"] == 0
    # relsel: q0 d9 d7 d6, q1 d8, q2 d9 d8 d6; answers for all 3; utilsel windows (4) 1+1+1; FIRST windows 1+1+1
    assert steps["answer"]["prompts"] == 3 and steps["answer"]["forward_passes"] is None
    assert steps["utilsel"]["prompts"] == 3 and steps["utilsel"]["generated_tokens"] > 0
    assert steps["utilrank"] == {**steps["utilrank"], "scheme": "first, windows of 4", "prompts": 3, "forward_passes": 3,
                                 "generated_tokens": 0, "windows": 3}
    assert stats["prompts"] == sum(s["prompts"] for s in steps.values()) == 23
    assert stats["steps_cost_missing"] == 0 and all(s["seconds"] >= 0 for s in steps.values())
    # P(relevant) = N/10; human positives d9 (q0), d3 (q1), d6 and d8 (q2) against the 10 other pool passages
    sep = stats["scores"]["relsel"]
    assert (sep["positives"], sep["others"]) == (4, 10)
    assert sep["mean_positive"] == pytest.approx((0.9 + 0.3 + 0.6 + 0.8) / 4)
    assert sep["mean_other"] == pytest.approx((0.2 + 0.7 + 0.4 + 0.1 + 0.8 + 0.5 + 0.9 + 0.0 + 0.2 + 0.6) / 10)
    assert set(stats["scores"]) == {"relsel", "utilrank"}
    labels = [json.loads(x) for x in (tmp_path / "out" / "labels.jsonl").read_text().splitlines()]
    assert labels[0]["scores"]["relsel"]["d9"] == 0.9 and labels[0]["relsel"] == ["d9", "d7", "d6"]
    section = stage.report(types.SimpleNamespace(path=tmp_path / "out"))["Annotation quality against human labels (Table 1 layout)"]
    assert "| relsel | pointwise_logit, P(yes) > 0.5 | " in section
    assert "| answer | generated | \u2014 | \u2014 | \u2014 | 3 | \u2014 |" in section
    assert "| utilrank | first, windows of 4 |" in section and "| 3 | 3 | 0 |" in section
    assert "- relsel: mean P(relevant) 0.650 over 4 human-positive passages vs 0.440 over 10 other passages." in section
    assert "| Annotation | Precision | Recall |" in section  # the Table 1 rows stay


def test_step_costs_survive_a_kill_and_resume(tmp_path):
    clean = build(AnnotateStage(annotator(scheme=SCHEME), batch_queries=1), tmp_path / "clean", tmp_path / "wclean")
    Scripted.calls = []
    Scripted.fail_on_call = 7  # 4 backend calls per query (one per step): dies in q1's third step
    with pytest.raises(KeyboardInterrupt):
        build(AnnotateStage(annotator(scheme=SCHEME), batch_queries=1), tmp_path / "out", tmp_path / "work")
    assert len((tmp_path / "work" / "step_costs.jsonl").read_text().splitlines()) == 1
    Scripted.fail_on_call = None
    resumed = build(AnnotateStage(annotator(scheme=SCHEME), batch_queries=1), tmp_path / "out2", tmp_path / "work")
    strip = lambda s: {k: {f: v for f, v in c.items() if f != "seconds"} for k, c in s["steps"].items()}  # noqa: E731
    assert strip(resumed) == strip(clean) and resumed["steps"]["relsel"]["prompts"] == 14


def test_an_empty_scheme_keeps_the_cache_key_and_a_scheme_changes_it():
    base = AnnotateStage(annotator()).spec()
    assert canonical_json(AnnotateStage(annotator(scheme={})).spec()) == canonical_json(base)
    assert set(base) == {"backend", "prompts", "max_passage_words", "generation", "window", "steps", "utilrank_k",
                         "max_queries"}
    sliding = AnnotateStage(annotator(scheme={"utilrank": "sliding"})).spec()
    assert sliding["scheme"] == {"utilrank": "sliding"} and canonical_json(sliding) != canonical_json(base)


def test_the_paper_scheme_report_names_its_schemes_and_costs(tmp_path):
    stats = build(AnnotateStage(annotator(), batch_queries=3), tmp_path / "out", tmp_path / "work")
    assert {s: c["scheme"] for s, c in stats["steps"].items()} == {
        "relsel": "listwise, windows of 4", "answer": "generated", "utilsel": "listwise, windows of 4",
        "utilrank": "windows of 4"}
    assert stats["scores"] == {} and stats["steps"]["relsel"]["prompts"] == 2 + 1 + 2
    labels = [json.loads(x) for x in (tmp_path / "out" / "labels.jsonl").read_text().splitlines()]
    assert not any("scores" in r for r in labels)


def test_stage_validate_refuses_a_single_token_scheme_on_a_generating_backend():
    cfg = annotator(scheme={"relsel": "pointwise_logit"})
    cfg["backend"]["_target_"] = f"{HERE}.Generating"
    with pytest.raises(UserError, match="cannot score next tokens"):
        AnnotateStage(cfg).validate()
    assert Scripted.built == 0  # refused from the class, before any model is built


# --- vLLM: top-N log-probabilities, tokens outside them scored exactly -----------------------------


class _Tok:
    """Characters are tokens (ord), with ' x' one token (1000 + ord(x))."""

    def __call__(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text):
                ids.append(1000 + ord(text[i + 1]))
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}

    def decode(self, ids):
        return "".join(" " + chr(t - 1000) if t >= 1000 else chr(t) for t in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(m["content"] for m in messages) + ">"


def _fake_vllm(calls: list, logprobs: dict[int, float]) -> types.ModuleType:
    module = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=4096))

        def get_tokenizer(self):
            return _Tok()

        def generate(self, requests, sampling_params=None, use_tqdm=True):
            calls.append((sampling_params.kw, [r["prompt_token_ids"] for r in requests]))
            lp = lambda t: types.SimpleNamespace(logprob=logprobs[t])  # noqa: E731
            if "prompt_logprobs" in sampling_params.kw:  # the exact second request: the last prompt token
                return [types.SimpleNamespace(prompt_logprobs=[None] * (len(r["prompt_token_ids"]) - 1) +
                                              [{r["prompt_token_ids"][-1]: lp(r["prompt_token_ids"][-1])}])
                        for r in requests]
            top = sorted(logprobs, key=lambda t: -logprobs[t])[: sampling_params.kw["logprobs"]]
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(logprobs=[{t: lp(t) for t in top}])])
                    for _ in requests]

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module


def test_vllm_next_token_logprobs_reads_the_top_n_and_rescores_the_rest(monkeypatch):
    from uptrain.annotate.backends import VLLMBackend

    y, sy, n, sn = ord("y"), 1000 + ord("y"), ord("n"), 1000 + ord("n")
    logprobs = {y: -1.0, sy: -2.0, n: -3.0, 5: -0.5, 6: -0.7, sn: -9.0}
    calls: list = []
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(calls, logprobs))
    monkeypatch.setattr(VLLMBackend, "TOP_LOGPROBS", 4)  # top 4: 5, 6, y, ' y'; n and ' n' fall outside
    backend = VLLMBackend("org/model")
    out = backend.next_token_logprobs([[{"role": "user", "content": "ab"}]], ["yes", "no"], prefix="[")
    lse = lambda a, b: max(a, b) + math.log1p(math.exp(-abs(a - b)))  # noqa: E731
    assert out == [{"yes": pytest.approx(lse(-1.0, -2.0)), "no": pytest.approx(lse(-3.0, -9.0))}]
    first, second = calls
    assert first[0] == {"max_tokens": 1, "temperature": 0.0, "logprobs": 4}
    assert first[1] == [[ord("a"), ord("b"), ord(">"), ord("[")]]  # template, generation prompt, then the prefix
    assert second[0]["prompt_logprobs"] == 1 and sorted(r[-1] for r in second[1]) == sorted([n, sn])
    assert backend.stats.extra["next_token"] == {"prompts": 1, "outside_top_n": 2, "rescoring_requests": 2}


# --- SmolLM2 through transformers: next_token_logprobs against a plain forward pass ----------------


def _smollm():
    pytest.importorskip("transformers")
    from uptrain.annotate.backends import TransformersBackend
    from uptrain.annotate.backends.models import DEFAULT_LLM, packaged_gguf_path
    from uptrain.model.backbone import ModelUnavailableError

    try:
        packaged_gguf_path(DEFAULT_LLM)
    except ModelUnavailableError as exc:
        pytest.skip(f"SmolLM2 is not installed here: {exc}")
    return TransformersBackend(device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def smollm():
    return _smollm()


PROMPTS = [
    [{"role": "user", "content": "Is the sky blue on a clear day? Answer yes or no."}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Is fire cold? Answer yes or no. Think about it: fire burns, it is hot, very hot."}],
    [{"role": "user", "content": "Rank: [1] a cat [2] the sun is a star [3] dogs"}],
    [{"role": "user", "content": "Say yes."}],
]
CANDIDATES = ["yes", "Yes", "no", "No", "1", "2", "3"]


@pytest.mark.slow
def test_smollm_next_token_logprobs_equal_a_plain_forward_pass_and_batching(smollm):
    import torch

    tok, model = smollm.tokenizer, smollm.model
    expected = []
    for messages in PROMPTS:  # one prompt at a time, no padding, the template rendered here
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(**ids).logits[:, -1].float(), dim=-1)[0]
        row = {}
        for cand in CANDIDATES:  # the first token without and with a leading space, whitespace-only dropped
            tokens = {tok(t, add_special_tokens=False)["input_ids"][0] for t in (cand, " " + cand)}
            tokens = [t for t in tokens if tok.decode([t]).strip()]
            row[cand] = float(torch.logsumexp(logprobs[tokens], dim=0))
        expected.append(row)
    assert smollm.candidate_tokens(["1", "yes"])[0] == (tok("1", add_special_tokens=False)["input_ids"][0],)
    batched = smollm.next_token_logprobs(PROMPTS, CANDIDATES)  # batches of 3: left padding to the longest
    alone = [smollm.next_token_logprobs([p], CANDIDATES)[0] for p in PROMPTS]
    for got, one, want in zip(batched, alone, expected):
        for cand in CANDIDATES:
            assert got[cand] == pytest.approx(want[cand], abs=2e-4), cand
            assert one[cand] == pytest.approx(want[cand], abs=2e-4), cand
    # a prefix is tokenized alone after the generation prompt: the same as scoring the token after it
    with_prefix = smollm.next_token_logprobs(PROMPTS[2:3], ["1", "2"], prefix="[")[0]
    assert with_prefix["1"] == pytest.approx(smollm.loglikelihood(
        [PROMPTS[2]], ["[1"])[0] - smollm.loglikelihood([PROMPTS[2]], ["["])[0], abs=2e-4)


def test_smollm_single_token_schemes_run_end_to_end(smollm):
    texts = {"d1": "Aspirin lowers the risk of heart attacks in adults.", "d2": "The Eiffel tower is in Paris.",
             "d3": "Low-dose aspirin and cardiovascular events: a trial."}
    p = AnnotationPipeline(smollm, PromptRenderer(), GenerationParams(max_new_tokens=4), steps=["relsel", "utilrank"],
                           window_size=4, scheme={"relsel": "pointwise_logit", "threshold": 0.0, "utilrank": "first"})
    items = [QueryAnnotation("q", "Does aspirin prevent heart attacks?", ["d1", "d2", "d3"])]
    p.run(items, texts)
    ann = items[0]
    assert set(ann.scores["relsel"]) == {"d1", "d2", "d3"} and all(0 < v < 1 for v in ann.scores["relsel"].values())
    assert sorted(ann.relsel) == ["d1", "d2", "d3"] and sorted(ann.utilrank) == sorted(ann.relsel)
    assert sum(ann.scores["utilrank"].values()) == pytest.approx(1.0, abs=1e-5)
    assert p.step_costs["utilrank"]["forward_passes"] == 1 and p.step_costs["relsel"]["forward_passes"] == 3
    with pytest.raises(ConfigError, match="'1' and '10' share"):  # SmolLM2 splits digits
        AnnotationPipeline(smollm, PromptRenderer(), GenerationParams(), steps=["relsel", "utilrank"], window_size=16,
                           scheme={"utilrank": "first"})


@pytest.mark.slow
def test_llamacpp_next_token_logprobs_equal_its_own_single_token_likelihood():
    pytest.importorskip("llama_cpp")
    from uptrain.annotate.backends import LlamaCppBackend
    from uptrain.annotate.backends.models import DEFAULT_LLM, packaged_gguf_path
    from uptrain.model.backbone import ModelUnavailableError

    try:
        packaged_gguf_path(DEFAULT_LLM)
    except ModelUnavailableError as exc:
        pytest.skip(f"SmolLM2 is not installed here: {exc}")
    backend = LlamaCppBackend(n_threads=2)
    prompts = PROMPTS[:2]
    scores = backend.next_token_logprobs(prompts, ["1", "2"])
    # "1" and "2" have one variant each (" 1" starts with a space token): their log-likelihood as a
    # continuation. llama.cpp's numerics follow how a prompt is split into evaluation batches (the
    # likelihood reuses the prompt just evaluated), so they agree to a few hundredths of a nat; a
    # wrong position or token would be off by whole nats.
    for prompt, row in zip(prompts, scores):
        assert row["1"] == pytest.approx(backend.loglikelihood([prompt], ["1"])[0], abs=0.05)
        assert row["2"] == pytest.approx(backend.loglikelihood([prompt], ["2"])[0], abs=0.05)
        assert abs(row["1"] - row["2"]) > 0.5  # the two labels are told apart
    assert backend.stats.extra["next_token"]["prompts"] == 2
