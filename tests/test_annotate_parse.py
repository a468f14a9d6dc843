"""Parsing of annotator answers and rendering of the versioned prompt templates."""

from __future__ import annotations

import random
import shutil
import string

import pytest

from uptrain.annotate import ParseStats, PromptRenderer, parse_answer, parse_selection
from uptrain.annotate.prompts import default_template_root, window

# --- parse_selection -------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[3] > [1]", [3, 1]),
        ("[3] > [1] > [2]", [3, 1, 2]),
        ("[3], [1]", [3, 1]),
        ("[3][1][2]", [3, 1, 2]),
        ("[ 4 ]", [4]),
        ("[Passage 5], [passage 2]", [5, 2]),
        ("3, 5", [3, 5]),
        ("3 5", [3, 5]),
        ("3", [3]),
        ("Passage 2 and passage 4", [2, 4]),
        ("Passage 2 and passage 4.", [2, 4]),
        ("Passages: 1,2", [1, 2]),
        ("Relevant passages: 7; 2; 9.", [7, 2, 9]),
        ("- 2\n- 4\n* 6", [2, 4, 6]),
        ("1. Passage 3\n2. Passage 5", [3, 5]),
        ("1) 6\n2) 8", [6, 8]),
        ("- [2] talks about the dose\n- [4] gives the year", [2, 4]),
        ("1. [3] is best\n2. [1]", [3, 1]),
    ],
)
def test_accepted_forms(text, expected):
    assert parse_selection(text, 16) == expected


def test_brackets_win_over_plain_numbers():
    # plain numbers in the explanation must not leak in once bracketed ids are present
    assert parse_selection("[2] mentions 3 trials and [5] the 2019 study", 16) == [2, 5]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3.5 and 2", [2]),
        ("a dose of 5mg, see passage 4", [4]),
        ("the 2nd and 3rd are useless; passage 6", [6]),
        ("published in 2023, passage 1", [1]),
        ("50% of cases; passage 2", [2]),
        ("at 10:30 passage 7", [7]),
        ("version v2 and x3 and passage 8", [8]),
    ],
)
def test_non_ids_ignored(text, expected):
    assert parse_selection(text, 16) == expected


def test_duplicates_removed_keeping_first_order():
    assert parse_selection("[3] > [1] > [3] > [2] > [1]", 16) == [3, 1, 2]
    assert parse_selection("5, 2, 5, 2, 7", 16) == [5, 2, 7]


def test_out_of_range_dropped():
    assert parse_selection("[0], [3], [17], [4]", 16) == [3, 4]
    assert parse_selection("1, 5, 9", 4) == [1]
    assert parse_selection("[99999999999999999999999]", 16) == []
    assert parse_selection("[1]", 0) == []
    assert parse_selection("[1]", -3) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>Passage 1 and 2 look related, maybe [5].</think>[3], [4]", [3, 4]),
        ("<think>[1]</think>\n<think>[2]</think>\nAnswer: [6]", [6]),
        ("<THINK>1 2 3</THINK> 7", [7]),
        ("<think>passage 2 is relevant because", []),
        ("<think>I think [1] and [2]", []),
        ("<think>[1]</think>", []),
        ("[2] <think>but maybe [3]", [2]),
    ],
)
def test_think_blocks(text, expected):
    assert parse_selection(text, 16) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n\t", "None", "none.", "None of the 16 passages is relevant.", "No passage is relevant.",
     "no relevant passages", "Nothing", "N/A", "Answer: None", "I cannot tell."],
)
def test_empty_answers(text):
    assert parse_selection(text, 16) == []


@pytest.mark.parametrize("value", [None, 3, 3.5, b"[1]", ["[1]"], {"a": 1}, object()])
def test_non_string_is_empty(value):
    assert parse_selection(value, 16) == []
    assert parse_answer(value) == ""


def _random_strings(n: int, seed: int = 0):
    rng = random.Random(seed)
    alphabet = string.printable + "[]<>/\u00e9\u4e2d\u0663\u00b2\u2460\U0001f600\ufffd\x00"
    for i in range(n):
        kind = i % 4
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))).decode("utf-8", errors="replace")
        elif kind == 1:
            yield "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        elif kind == 2:
            yield "".join(rng.choice("[]<>/think 0123456789.,-") for _ in range(rng.randint(0, 300)))
        else:
            yield "".join(rng.choice(string.punctuation) for _ in range(rng.randint(0, 100)))


def test_garbage_never_raises():
    stats = ParseStats()
    for text in _random_strings(2000):
        nums = parse_selection(text, 16)
        assert all(isinstance(n, int) and 1 <= n <= 16 for n in nums)
        assert len(nums) == len(set(nums))
        assert isinstance(parse_answer(text), str)
        stats.record(text, nums)
    assert stats.total == 2000


def test_huge_strings_never_raise():
    huge = [
        "9" * 200_000,
        "[" + "1" * 50_000 + "]",
        "[" + " " * 100_000,
        "<think>" * 10_000 + "[1]",
        "</think>" * 10_000 + "[2]",
        "1." * 100_000,
        "a" * 500_000 + " 3",
        "[3] > " * 50_000,
        "!?.,;" * 100_000,
    ]
    results = [parse_selection(t, 16) for t in huge]
    assert results[0] == [] and results[1] == [] and results[2] == []
    assert results[3] == []  # an unclosed <think> hides the [1]
    assert results[4] == [2]
    assert results[6] == [3]
    assert results[7] == [3]
    assert results[8] == []


def test_only_punctuation():
    for text in ["...", "[]", "[ ]", "><", "-- * --", "[[]]", "()", "\u3002\uff0c"]:
        assert parse_selection(text, 16) == []


# --- parse_answer ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  Paris is the capital.  ", "Paris is the capital."),
        ("Answer: Paris.", "Paris."),
        ("answer:Paris.", "Paris."),
        ("**Answer:** Paris.", "Paris."),
        ("<think>hmm, France</think>\nAnswer: Paris.", "Paris."),
        ("<think>still thinking", ""),
        ("", ""),
        ("The answer: it depends.", "The answer: it depends."),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


# --- ParseStats ------------------------------------------------------------


def test_parse_stats_counts():
    stats = ParseStats()
    for text in ["[1], [2]", "None", "", "I have no idea what you mean", "[17]", "<think>[1]", "No passage is relevant."]:
        stats.record(text, parse_selection(text, 16))
    assert stats.total == 7
    assert stats.empty == 6
    # the rambling answer, the out-of-range id and the cut-off reasoning; "None", "" and "No passage ..." are fine
    assert stats.unparseable == 3
    merged = ParseStats().merge(stats).merge(stats)
    assert merged.to_dict() == {"total": 14, "unparseable": 6, "empty": 12}


def test_parse_stats_non_string():
    stats = ParseStats()
    stats.record(None, [])
    assert (stats.total, stats.empty, stats.unparseable) == (1, 1, 0)


# --- PromptRenderer --------------------------------------------------------


@pytest.fixture
def renderer():
    return PromptRenderer()


def test_default_templates_present(renderer):
    # the paper's steps, the grade prompt, the RAG generator's and the pointwise yes/no RelSel prompt
    assert set(renderer.stages) == {"relsel", "answer", "utilsel", "utilrank", "grade", "rag_answer", "relsel_pointwise"}
    assert renderer.directory.name == "v1"


def test_render_numbering_and_system(renderer):
    msgs = renderer.render("relsel", "what causes rain?", ["Clouds hold water.", "Cats\nsleep a lot.", "Rain falls."])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"]
    user = msgs[1]["content"]
    assert "what causes rain?" in user
    assert "[1] Clouds hold water.\n[2] Cats sleep a lot.\n[3] Rain falls." in user
    assert "[4]" not in user
    assert "None" in user


def test_render_truncates_to_max_words(renderer):
    long = " ".join(f"w{i}" for i in range(50))
    user = renderer.render("relsel", "q", [long, "short one"], max_words=5)[1]["content"]
    assert "[1] w0 w1 w2 w3 w4\n" in user
    assert "w5" not in user
    assert "[2] short one" in user
    full = renderer.render("relsel", "q", [long])[1]["content"]
    assert "w49" in full


def test_render_answer_stages(renderer):
    user = renderer.render("utilsel", "q?", ["p one", "p two"], answer="the pseudo answer")[1]["content"]
    assert "the pseudo answer" in user and "[2] p two" in user
    rank = renderer.render("utilrank", "q?", ["a", "b", "c"])[1]["content"]
    assert ">" in rank and "{" not in rank
    ans = renderer.render("answer", "q?", ["a"])[1]["content"]
    assert "[1] a" in ans


def test_passage_braces_are_kept_verbatim(renderer):
    user = renderer.render("relsel", "what is {x}?", ["set {a, b} and {query}"])[1]["content"]
    assert "[1] set {a, b} and {query}" in user and "what is {x}?" in user


def test_unknown_stage(renderer):
    with pytest.raises(KeyError) as err:
        renderer.render("summarize", "q", ["p"])
    assert "relsel" in str(err.value) and "utilrank" in str(err.value)
    with pytest.raises(KeyError):
        renderer.render("system", "q", ["p"])


def test_fingerprint_changes_with_template(tmp_path):
    src = default_template_root() / "v1"
    shutil.copytree(src, tmp_path / "v1")
    base = PromptRenderer()
    copy = PromptRenderer(tmp_path, "v1")
    assert copy.fingerprint() == base.fingerprint()
    relsel = tmp_path / "v1" / "relsel.txt"
    relsel.write_text(relsel.read_text() + "\nBe brief.\n")
    edited = PromptRenderer(tmp_path, "v1")
    assert edited.fingerprint() != base.fingerprint()
    assert "Be brief." in edited.render("relsel", "q", ["p"])[1]["content"]
    # the version is part of the key as well
    shutil.copytree(src, tmp_path / "v2")
    assert PromptRenderer(tmp_path, "v2").fingerprint() != base.fingerprint()


def test_no_system_template(tmp_path):
    shutil.copytree(default_template_root() / "v1", tmp_path / "v1")
    (tmp_path / "v1" / "system.txt").unlink()
    msgs = PromptRenderer(tmp_path / "v1").render("relsel", "q", ["p"])
    assert [m["role"] for m in msgs] == ["user"]


def test_missing_version(tmp_path):
    with pytest.raises(FileNotFoundError):
        PromptRenderer(tmp_path, "v9")


def test_window_sizes():
    items = list(range(35))
    wins = window(items, 16)
    assert [len(w) for w in wins] == [16, 16, 3]
    assert [x for w in wins for x in w] == items
    assert window([], 16) == []
    assert [len(w) for w in window(items)] == [16, 16, 3]
    assert [len(w) for w in window(items[:16], 16)] == [16]
    with pytest.raises(ValueError):
        window(items, 0)
