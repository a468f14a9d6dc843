"""TREC SGML documents: only real tags are removed, so a literal '<' in text keeps what follows it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uptrain.data import DatasetUnavailableError, TrecSource
from uptrain.data.local import strip_tags
from uptrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]

MATH = "for every 1 <= m <= n the bound holds, and 10^8 < 2^27 fits in a word; a<b and c>d too"
DOCS = (
    "<DOC>\n<DOCNO> m1 </DOCNO>\n<TITLE>Bounds</TITLE>\n<TEXT>\n" + MATH + "\n</TEXT>\n</DOC>\n"
    '<DOC>\n<DOCNO>m2</DOCNO>\n<HEADLINE>x < y</HEADLINE>\n<TEXT>\n<F P=105>tail</F> of <b>bold</b> text\n</TEXT>\n</DOC>\n'
    "<DOC>\n<DOCNO>m3</DOCNO>\nloose text with <= and => arrows\n</DOC>\n"
)


def _write(tmp_path: Path, docs: str) -> TrecSource:
    (tmp_path / "docs.trec").write_text(docs)
    (tmp_path / "topics.tsv").write_text("q1\tbounds on m\n")
    (tmp_path / "qrels").write_text("q1 0 m1 1\n")
    return TrecSource(tmp_path / "docs.trec", tmp_path / "topics.tsv", tmp_path / "qrels", name="math")


def test_literal_less_than_signs_survive_and_unknown_tags_are_counted(tmp_path, caplog):
    src = _write(tmp_path, DOCS)
    with caplog.at_level("WARNING", logger="uptrain.data"):
        c = src.load()
    assert c.docs["m1"] == "Bounds " + MATH  # the old parser kept "for every 1" and lost the rest
    assert c.docs["m2"].split() == "x < y tail of bold text".split()
    assert c.docs["m3"] == "loose text with <= and => arrows"
    # <F P=105> is TREC structure (FBIS); <b> is not: m2 is the one document counted
    assert c.stats["markup_removed"] == 1
    warnings = [r.getMessage() for r in caplog.records if "markup" in r.getMessage()]
    assert len(warnings) == 1 and "math: 1 documents" in warnings[0] and "m2 <b>" in warnings[0]


def test_strip_tags_removes_only_real_tags():
    text, unknown = strip_tags('<P>a < b</P> <x-tag attr="1 > 0">c</x-tag> 3<4 <br/>')
    assert text.split() == ["a", "<", "b", "c", "3<4"]
    assert unknown == ['<x-tag attr="1 > 0">', "</x-tag>"]


def test_sgml_parser_version_is_in_the_key(tmp_path):
    sgml = _write(tmp_path, DOCS)
    assert sgml.spec()["sgml_parser"] >= 2  # artifacts parsed by the old regex are not reused
    (tmp_path / "docs.tsv").write_text("m1\ttext\n")
    tsv = TrecSource(tmp_path / "docs.tsv", tmp_path / "topics.tsv", tmp_path / "qrels", name="math")
    assert "sgml_parser" not in tsv.spec()


NPL = Path(os.environ.get("UPTRAIN_DATA") or REPO.parent / "shared" / "data") / "raw" / "vaswani_npl"


@pytest.mark.skipif(not (NPL / "doc-text.trec").is_file(), reason="the shared NPL collection is not present")
def test_real_npl_collection_loads_unchanged():
    c = TrecSource(NPL / "doc-text.trec", NPL / "query-text.trec", NPL / "qrels", name="npl").load()
    assert len(c.docs) == 11429 and c.stats["markup_removed"] == 0
    assert c.docs["1"].startswith("compact memories have flexible capacities")


def test_missing_own_collection_names_the_overrides(tmp_path):
    src = TrecSource(tmp_path / "d.trec", tmp_path / "t.tsv", tmp_path / "q", name="mine")
    with pytest.raises(DatasetUnavailableError) as err:
        src.validate()  # before anything slow: DataStage.validate() calls it
    msg = str(err.value)
    assert isinstance(err.value, UserError) and str(tmp_path / "d.trec") in msg
    assert "'+eval.collections.mine={_target_: uptrain.data.TrecSource, name: mine, docs:" in msg
    assert "--config-dir DIR" in msg and "hydra.searchpath=[file://DIR]" in msg
    assert "+eval_data@eval.collections.mine=mine" in msg and "site-packages" not in msg
