"""Prompts over the model's context: passages are shortened, the instruction and the question never."""

from __future__ import annotations

import pytest

from uptrain.annotate.budget import PromptBudgetError, PromptFitter, TruncationStats, water_level
from uptrain.annotate.prompts import PromptRenderer
from uptrain.errors import ConfigError


class WordBackend:
    """A model whose tokens are whitespace words: enough to budget prompts exactly."""

    def __init__(self, max_context: int):
        self.max_context = max_context

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_length(self, messages) -> int:
        return sum(len(m["content"].split()) + 2 for m in messages)  # +2: the chat template's role tokens


QUESTION = "which vitamin deficiency is linked to bone fractures in elderly women"


@pytest.fixture(scope="module")
def renderer() -> PromptRenderer:
    return PromptRenderer(version="v1")


def _passages() -> list[str]:
    return [
        "vitamin d " * 150,  # 300 words
        "short passage about calcium",
        "bone density " * 60,  # 120 words
    ]


def test_over_budget_prompt_keeps_question_and_instruction_verbatim(renderer):
    backend = WordBackend(max_context=260)
    fitter = PromptFitter(renderer, backend, max_words=None)
    full = renderer.render("relsel", QUESTION, _passages())
    assert backend.prompt_length(full) > 260 - 16  # over the budget as rendered
    messages, cut = fitter.render("relsel", QUESTION, _passages(), reserve=16)
    assert backend.prompt_length(messages) <= 260 - 16
    user = messages[-1]["content"]
    template = renderer.templates["relsel"]
    # every line of the template outside the passages, the question filled in, is there verbatim
    for line in template.replace("{query}", QUESTION).splitlines():
        if "{passages}" not in line:
            assert line in user
    assert messages[0] == full[0]  # the system message is untouched
    assert user.startswith("Select the passages that are relevant to the question.")
    assert f"Question: {QUESTION}" in user
    assert user.rstrip().endswith("If none is relevant, answer None.")
    lines = [line for line in user.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in lines] == ["[1]", "[2]", "[3]"]  # numbers stay those of the window
    assert lines[1] == "[2] short passage about calcium"  # the short passage is not cut
    kept = [len(line.split()) - 1 for line in lines]
    assert kept[0] < 300 and kept[2] < 120 and abs(kept[0] - kept[2]) <= 1  # the longest cut first, to one level
    assert cut.prompts_truncated == 1 and cut.passages_shortened == 2
    assert cut.words_cut == 420 - kept[0] - kept[2]
    assert cut.tokens_cut == backend.prompt_length(full) - backend.prompt_length(messages)
    assert fitter.stats.prompts == 1 and fitter.stats.words_cut == cut.words_cut


def test_longest_passages_are_cut_to_a_common_level(renderer):
    fitter = PromptFitter(renderer, WordBackend(max_context=300))
    messages, _ = fitter.render("relsel", QUESTION, _passages())
    words = [len(line.split()) - 1 for line in messages[-1]["content"].splitlines() if line.startswith("[")]
    assert words[1] == 4 and abs(words[0] - words[2]) <= 1  # both long ones cut down to about the same length


def test_prompt_within_budget_is_unchanged(renderer):
    fitter = PromptFitter(renderer, WordBackend(max_context=10_000), max_words=100)
    messages, cut = fitter.render("utilsel", QUESTION, _passages(), answer="vitamin d", reserve=64)
    assert messages == renderer.render("utilsel", QUESTION, _passages(), answer="vitamin d", max_words=100)
    assert cut == TruncationStats(prompts=1)


def test_question_alone_over_budget_is_a_config_error(renderer):
    fitter = PromptFitter(renderer, WordBackend(max_context=40))
    with pytest.raises(PromptBudgetError, match="max_context") as err:
        fitter.render("relsel", QUESTION, _passages(), reserve=16)
    assert isinstance(err.value, ConfigError)


def test_water_level():
    assert water_level([300, 4, 120], 200) == 110  # 190 + 10 = 200 cut
    assert water_level([10, 10], 100) == 0
    assert water_level([5, 3], 0) == 5


def test_truncation_stats_sum_over_records():
    records = [{"truncation": {"prompts_truncated": 1, "passages_shortened": 2, "words_cut": 30, "tokens_cut": 40}},
               {"truncation": {}}, {}]
    total = TruncationStats.of_records(records, prompts=7)
    assert total.to_dict() == {"prompts": 7, "prompts_truncated": 1, "passages_shortened": 2, "words_cut": 30, "tokens_cut": 40}
    assert "1 of 7 prompts" in total.summary()
