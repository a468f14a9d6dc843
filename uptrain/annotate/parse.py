"""Parsing of annotator output: passage selections, rankings and pseudo answers.

Small instruction models answer in many shapes (``[3] > [1]``, ``3, 5``, ``Passage 2 and
passage 4``, bullet lists, reasoning in ``<think>`` blocks). The parser turns any of them
into 1-based passage numbers and never raises, so one odd answer cannot stop a run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

__all__ = ["parse_selection", "parse_answer", "parse_short_answer", "ParseStats", "strip_reasoning", "is_none_answer", "parse_grade",
           "GradeParseStats"]

# a passage id longer than this is never a window position (and int() of huge digit runs is slow or refused)
_MAX_DIGITS = 6

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_BRACKETED = re.compile(r"\[\s*(?:(?:passage|doc|document)\s*#?\s*)?([0-9]+)\s*\]", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]+")
# "1. Passage 3" / "2) 5": a list enumerator in front of the actual passage number
_ENUMERATOR = re.compile(r"^(\s*(?:[-*\u2022]\s*)?)[0-9]+[.)]\s+(?=[^\n]*[0-9])", re.MULTILINE)
_ANSWER_LABEL = re.compile(r"^\s*(?:\*\*|__)?\s*(?:final\s+)?answer\s*(?:\*\*|__)?\s*[:\-]\s*(?:\*\*|__)?\s*",
                           re.IGNORECASE)
_NONE_ANSWER = re.compile(
    r"^[\W_]*(?:(?:final\s+)?answer\s*[:\-]?[\W_]*)?"
    r"(?:none|no|nothing|null|neither|n/?a|not\s+relevant|irrelevant|there\s+(?:is|are)\s+no)\b",
    re.IGNORECASE,
)


def _as_text(text: object) -> str:
    return text if isinstance(text, str) else ""


def strip_reasoning(text: object) -> str:
    """The visible answer: what follows the last ``</think>``; an unclosed ``<think>`` hides the rest."""
    text = _as_text(text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text


def is_none_answer(text: object) -> bool:
    """Whether the visible answer says that no passage qualifies ("None", "No passage is relevant")."""
    return bool(_NONE_ANSWER.match(strip_reasoning(text)))


def _plain_number_ok(text: str, start: int, end: int) -> bool:
    """A standalone integer: not glued to letters ("5mg"), not part of a decimal, percentage or time."""
    # a space stands in past either end, so the checks below never test against ""
    before = text[start - 1] if start > 0 else " "
    before2 = text[start - 2] if start > 1 else " "
    after = text[end] if end < len(text) else " "
    after2 = text[end + 1] if end + 1 < len(text) else " "
    if before.isalnum() or before == "_" or after.isalnum() or after == "_":
        return False
    if before in ".:" and before2.isdigit():
        return False
    if after in ".:" and after2.isdigit():
        return False
    if after == "%" or before in "$\u20ac\u00a3":
        return False
    return True


def _collect(numbers, limit: int) -> list[int]:
    seen: list[int] = []
    for digits in numbers:
        if len(digits) > _MAX_DIGITS:
            continue
        n = int(digits)
        if 1 <= n <= limit and n not in seen:
            seen.append(n)
    return seen


def parse_selection(text: object, num_passages: int) -> list[int]:
    """The 1-based passage numbers in ``text``, in the order given, without duplicates.

    Bracketed numbers (``[3]``) win when any is present; otherwise standalone integers are
    read, skipping decimals, numbers glued to letters and list enumerators. Only numbers
    in ``1..num_passages`` are kept. Never raises.
    """
    try:
        limit = int(num_passages)
    except (TypeError, ValueError, OverflowError):
        return []
    if limit < 1:
        return []
    visible = strip_reasoning(text)
    if not visible.strip():
        return []
    bracketed = [m.group(1) for m in _BRACKETED.finditer(visible)]
    if bracketed:
        return _collect(bracketed, limit)
    if is_none_answer(visible):
        return []
    # drop list enumerators so "1. Passage 3" reads as 3, not 1 and 3
    body = _ENUMERATOR.sub(lambda m: m.group(1) + " ", visible)
    plain = (m.group(0) for m in _DIGITS.finditer(body) if _plain_number_ok(body, m.start(), m.end()))
    return _collect(plain, limit)


def parse_answer(text: object) -> str:
    """The pseudo answer: reasoning removed, whitespace trimmed, a leading "Answer:" label dropped."""
    visible = strip_reasoning(text).strip()
    return _ANSWER_LABEL.sub("", visible, count=1).strip()


# what a small model writes in front of a short answer: a passage label ("[2]", "Passage 2:"), a list
# enumerator ("1.", "2)"), a bullet; removed from the start of a RAG answer only
_LEADING_LABEL = re.compile(
    r"^\s*(?:[-*\u2022]\s*|\[\s*(?:(?:passage|doc|document)\s*)?[0-9]{1,3}\s*\]\s*[:.)-]?\s*|"
    r"(?:passage|doc|document)\s*#?\s*[0-9]{1,3}\s*[:.)-]\s*|"
    r"(?:the\s+)?(?:short\s+|final\s+)?answer(?:\s+to\s+(?:this|the)\s+question)?\s+is\s*[:\-]?\s*|(?<![0-9])[0-9][.)]\s+(?=[^\W\d]))",
    re.IGNORECASE,
)


def parse_short_answer(text: object, first_line: bool = True) -> tuple[str, dict[str, bool]]:
    """A RAG answer: :func:`parse_answer`, then (``first_line``) its first non-empty line, then any
    leading passage labels, enumerators, bullets and "The answer is:" removed ("[1] Thomas Davis" ->
    "Thomas Davis", "1. The Panthers" -> "The Panthers"; "1999" and "3 million" are kept). Returns the answer and
    which changes were made (``cut_to_first_line``, ``label_removed``), for the stage to count."""
    answer = parse_answer(text)
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    cut = bool(first_line and len(lines) > 1)
    if first_line:
        answer = lines[0] if lines else ""
    stripped = answer
    while True:
        shorter = _LEADING_LABEL.sub("", stripped, count=1).strip()
        if shorter == stripped or not shorter:
            break
        stripped = shorter
    return stripped, {"cut_to_first_line": cut, "label_removed": stripped != answer}


@dataclass
class ParseStats:
    """Counts of parsed annotator answers.

    ``empty``: answers that selected no passage (for any reason); ``unparseable``: of those,
    non-empty text with no usable passage number that is not an explicit "none" answer.
    """

    total: int = 0
    unparseable: int = 0
    empty: int = 0

    def record(self, text: object, result: list[int]) -> None:
        self.total += 1
        if result:
            return
        self.empty += 1
        raw = _as_text(text)
        if raw.strip() and not is_none_answer(raw):
            self.unparseable += 1

    def merge(self, other: "ParseStats") -> "ParseStats":
        self.total += other.total
        self.unparseable += other.unparseable
        self.empty += other.empty
        return self

    @property
    def unparseable_rate(self) -> float:
        return self.unparseable / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- pointwise grades (UMBRELA-style 0-3 judgments) ---------------------------------------

# a score label and its number: "Grade: 3", "##final score: 1", "Final score: 2", "**Score:** 2",
# "Relevance score = 1", "score is 2", "O: 2" (the output form of UMBRELA's prompt)
_GRADE_LABEL = re.compile(
    r"(?:\b(?:final\s+)?(?:relevance\s+)?(?:score|grade|rating|relevance|judg(?:e)?ment)|\bO)\b"
    r"[\s*_#]*(?:[:=\-]|\bis\b)?[\s*_#]*([0-9]+)(?![0-9]*[.,][0-9])",
    re.IGNORECASE,
)
_GRADE_BOLD = re.compile(r"(?:\*\*|__)\s*([0-9]+)\s*(?:\*\*|__)")


def _grade_value(digits: str, max_grade: int) -> int | None:
    if len(digits) > _MAX_DIGITS:
        return None
    n = int(digits)
    return n if 0 <= n <= max_grade else None


def parse_grade(text: object, max_grade: int = 3) -> int | None:
    """The grade (0..``max_grade``) of a pointwise relevance answer, or None; never raises.

    Reasoning is removed first (:func:`strip_reasoning`). Then, in order:

    1. a score label and its number (``Grade: 3``, ``##final score: 1``, ``Final score: 2``,
       ``O: 2``, the output form of UMBRELA's prompt, Upadhyay et al. 2024): the **last**
       label wins over every other number in the text;
    2. a bold number (``**2**``), the last one;
    3. a standalone integer (not a decimal, not glued to letters): the answer's first word when
       it is one (``2``, ``2. The passage ...``), else the last one of the text.

    The number found must be in ``0..max_grade``; out of range, or no number at all, is None
    (the document then gets no grade: an unparseable answer is never a guessed grade).
    """
    try:
        limit = int(max_grade)
    except (TypeError, ValueError, OverflowError):
        return None
    visible = strip_reasoning(text)
    if limit < 0 or not visible.strip():
        return None
    labels = list(_GRADE_LABEL.finditer(visible))
    if labels:
        return _grade_value(labels[-1].group(1), limit)
    bold = list(_GRADE_BOLD.finditer(visible))
    if bold:
        return _grade_value(bold[-1].group(1), limit)
    plain = [m for m in _DIGITS.finditer(visible) if _plain_number_ok(visible, m.start(), m.end())]
    if not plain:
        return None
    first = plain[0]
    if not re.search(r"[A-Za-z0-9]", visible[: first.start()]):
        return _grade_value(first.group(0), limit)
    return _grade_value(plain[-1].group(0), limit)


class GradeParseStats(ParseStats):
    """Counts of parsed pointwise answers: ``total`` answers, ``unparseable`` of them (no grade in
    ``0..max_grade`` could be read: the document gets no grade); ``empty`` counts the same answers
    (a pointwise answer without a grade is both)."""

    def record(self, grade: int | None) -> None:  # type: ignore[override]
        self.total += 1
        if grade is None:
            self.unparseable += 1
            self.empty += 1
