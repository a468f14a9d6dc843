"""Versioned prompt templates for the annotator, rendered into chat messages.

Templates live in ``conf/annotator/prompts/<version>/<stage>.txt`` (``system.txt`` is the
optional system message) and use ``str.format`` fields:

  {query}           the question
  {passages}        the numbered passages, ``[1] text`` one per line
  {num}             how many passages are shown
  {answer}          the pseudo answer ("" when none is given)
  {answer_section}  "Answer: <pseudo answer>" followed by a blank line, or "" when none is given

Literal braces in a template are written doubled (``{{`` / ``}}``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

__all__ = ["PromptRenderer", "window", "default_template_root"]

SYSTEM = "system"


def default_template_root() -> Path:
    """``annotator/prompts`` of the installed config package, else of the repository's conf/."""
    from uptrain.data.sources import config_roots  # the one lookup of the shipped config folders

    roots = [r / "annotator" / "prompts" for r in config_roots()]
    for root in roots:
        if root.is_dir():
            return root
    return roots[-1]


def _resolve(template_dir: str | Path | None, version: str) -> Path:
    """The folder holding the ``.txt`` templates of ``version``.

    ``template_dir`` may be a conf root, a prompts root with version folders, or the version folder itself.
    """
    if template_dir is None:
        return default_template_root() / version
    base = Path(template_dir)
    for candidate in (base / "annotator" / "prompts" / version, base / version):
        if candidate.is_dir():
            return candidate
    return base


class _Fields(dict):
    def __missing__(self, key):
        raise KeyError(f"prompt template uses unknown field '{{{key}}}'; "
                       "known: query, passages, num, answer, answer_section")


class PromptRenderer:
    """Loads one version of the annotator templates and renders chat messages from them."""

    def __init__(self, template_dir: str | Path | None = None, version: str = "v1"):
        self.version = str(version)
        self.directory = _resolve(template_dir, self.version)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no prompt templates for version '{self.version}' at {self.directory}")
        # read once so a run renders every prompt from the same text its cache key was built on
        self.templates: dict[str, str] = {
            p.stem: p.read_text(encoding="utf-8") for p in sorted(self.directory.glob("*.txt"))
        }
        if not self.stages:
            raise FileNotFoundError(f"no stage templates (*.txt besides system.txt) in {self.directory}")

    @property
    def stages(self) -> list[str]:
        return sorted(k for k in self.templates if k != SYSTEM)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"version={self.version}\n".encode())
        for name in sorted(self.templates):
            text = self.templates[name].encode("utf-8")
            h.update(f"{name}:{len(text)}\n".encode())
            h.update(text)
        return h.hexdigest()

    @staticmethod
    def format_passages(passages: Sequence[str], max_words: int | None = None) -> str:
        lines = []
        for i, text in enumerate(passages, start=1):
            # one passage per line keeps its number next to all of its text
            words = str(text if text is not None else "").split()
            if max_words is not None and max_words >= 0:
                words = words[:max_words]
            lines.append(f"[{i}] {' '.join(words)}".rstrip())
        return "\n".join(lines)

    def render(self, stage: str, query: str, passages: Sequence[str] = (), answer: str | None = None,
               max_words: int | None = None) -> list[dict]:
        if stage not in self.stages:
            raise KeyError(f"unknown prompt stage '{stage}' in version '{self.version}'; "
                           f"known: {', '.join(self.stages)}")
        answer_text = (answer or "").strip()
        fields = _Fields(
            query=" ".join(str(query or "").split()),
            passages=self.format_passages(list(passages), max_words),
            num=len(passages),
            answer=answer_text,
            answer_section=f"Answer: {answer_text}\n\n" if answer_text else "",
        )
        messages = []
        if SYSTEM in self.templates:
            messages.append({"role": "system", "content": self.templates[SYSTEM].format_map(fields).strip()})
        messages.append({"role": "user", "content": self.templates[stage].format_map(fields).strip()})
        return messages


def window(items: Sequence, m: int = 16) -> list[list]:
    """Consecutive windows of at most ``m`` items covering ``items`` in order."""
    m = int(m)
    if m < 1:
        raise ValueError(f"window size must be at least 1, got {m}")
    items = list(items)
    return [items[i: i + m] for i in range(0, len(items), m)]
