"""Click-log readers: each format read from a fixture written to its published layout, counted
problems, format detection, error messages, judgments; and the real files' counts (skipped
when the shared data is absent)."""

from __future__ import annotations

import collections
import json
import logging
import math

import numpy as np
import pytest

from conftest import DATA
from uptrain.clicks.log import ClickLogBuilder, ClickLogError, Session
from uptrain.clicks.readers import (
    READERS, detect_format, judgments_for_log, read_judgments, read_log, read_session_xml, read_wscd2011,
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def sessions(log):
    return [(s.session_id, s.query, list(s.docs), list(s.clicks), s.times) for s in log.sessions()]


# ---- pyclick_yandex ------------------------------------------------------------------------
PYCLICK = (
    "q1_0\ta,b,c : b , b , z; q1_0\ta,b,c :; q1_0\tc,a,b : a ;\n"
    "q2_1\td,e : e;  no tab here : x;\n"
)


def test_pyclick_yandex_keeps_repeated_clicks_and_counts_unshown_ones(tmp_path):
    log = read_log(write(tmp_path, "sample", PYCLICK), ranks=3)
    assert [(q, d, c) for _, q, d, c, _ in sessions(log)] == [
        ("q1_0", ["a", "b", "c"], [1, 1]),  # b twice: two clicks at rank 1, z (not shown) dropped
        ("q1_0", ["a", "b", "c"], []),
        ("q1_0", ["c", "a", "b"], [1]),  # the rank of a in *this* SERP
        ("q2_1", ["d", "e"], [1]),
    ]
    assert log.click_counts[0].tolist() == [0, 2, 0]
    assert log.clicked[0].tolist() == [False, True, False]
    assert log.stats.clicks_not_shown == 1
    assert log.stats.short_serps == 1
    assert log.stats.malformed_lines == 1  # the record without a tab
    assert log.session_ids is None and log.click_times is None
    assert log.frequencies() == {"q1_0": 3, "q2_1": 1}


# ---- wscd2011 ------------------------------------------------------------------------------
WSCD = "\n".join([
    "0\t0\tQ\t10\t1\tu1\tu2\tu3",
    "0\t5\tC\tu2",
    "0\t9\tC\tu2",  # a repeated click
    "0\t12\tQ\t11\t1\tu3\tu4\tu5",
    "0\t15\tC\tu3",  # shown by both SERPs: belongs to the most recent
    "0\t20\tC\tu1",  # shown by the first SERP only
    "0\t22\tC\tu9",  # shown by no SERP of session 0
    "1\t0\tQ\t10\t1\tu1\tu2\tu3",
    "1\t3\tC\tu3",
    "this line is not an action",
    "2\t0\tC\tu1",  # a click before any SERP of its session
    "2\t1\tQ\t12\t2\tu7\tu8\tu9",
    "",
])


def test_wscd2011_serps_clicks_times_and_counted_problems(tmp_path):
    log = read_log(write(tmp_path, "train", WSCD), ranks=3)
    assert sessions(log) == [
        ("0:0", "10_1", ["u1", "u2", "u3"], [1, 1, 0], [5.0, 9.0, 20.0]),
        ("0:1", "11_1", ["u3", "u4", "u5"], [0], [15.0]),
        ("1:0", "10_1", ["u1", "u2", "u3"], [2], [3.0]),
        ("2:0", "12_2", ["u7", "u8", "u9"], [], []),
    ]
    assert log.click_counts[0].tolist() == [1, 2, 0]
    assert log.stats.clicks_not_shown == 2
    assert log.stats.malformed_lines == 1
    assert log.reader_notes["sessions_not_contiguous"] == 0


def test_wscd2011_session_coming_back_is_counted_and_numbered_on(tmp_path):
    text = "5\t0\tQ\t1\t0\ta\tb\n6\t0\tQ\t2\t0\tc\td\n5\t9\tQ\t1\t0\tb\ta\n5\t10\tC\ta\n"
    log = read_wscd2011(write(tmp_path, "log", text), ranks=2)
    assert [s.session_id for s in log.sessions()] == ["5:0", "6:0", "5:1"]
    assert log.session(2).clicks == [1]
    assert log.reader_notes["sessions_not_contiguous"] == 1
    assert log.stats.duplicate_sessions == 0


def test_wscd2011_agrees_with_pyclick_form_of_the_same_sessions(tmp_path):
    wscd = read_log(write(tmp_path, "a", "0\t0\tQ\t98\t1\tx\ty\n0\t1\tC\ty\n0\t2\tC\tx\n"), ranks=2)
    pyclick = read_log(write(tmp_path, "b", "98_1\tx,y : y , x;\n"), ranks=2)
    assert wscd.queries == pyclick.queries == ["98_1"]
    assert wscd.click_ranks.tolist() == pyclick.click_ranks.tolist() == [1, 0]


# ---- session_xml ---------------------------------------------------------------------------
def result(rank, doc, title="", snippet="", id_tag="clueweb09id"):
    return (f'<result rank="{rank}"><url>http://x/{doc}</url><{id_tag}>{doc}</{id_tag}>'
            f"<title>{title}</title><snippet>{snippet}</snippet></result>")


TREC_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<sessiontrack2012>
 <session num="1" starttime="10:00:00.000000">
  <topic num="7"><subject num="1">s</subject><desc>d</desc><narr>n</narr></topic>
  <interaction num="1" starttime="10:00:00.500000">
   <query>Tax   CODE 403</query>
   <results>{result(1, "d1", "T1", "S1")}{result(2, "d2", "M &amp;amp; S", "S2")}{result(3, "d3", "T3", "S3")}</results>
   <clicked>
    <click num="1" starttime="10:00:01.500000" endtime="10:00:02.000000"><rank>2</rank></click>
    <click num="2" starttime="10:00:03.250000" endtime="10:00:04.000000"><rank>2</rank></click>
    <click num="3" starttime="10:00:05.000000" endtime="10:00:06.000000"><rank>7</rank></click>
    <click num="4" starttime="01:02:03.5" endtime="01:02:04"><rank>1</rank></click>
   </clicked>
  </interaction>
  <interaction num="2" starttime="10:01:00.000000">
   <query>tax code 403</query><results></results><clicked/>
  </interaction>
  <currentquery starttime="10:02:00.000000"><query>tax code</query></currentquery>
 </session>
 <session num="2" starttime="11:00:00.000000">
  <topic num="8"><desc>d</desc></topic>
  <interaction num="1" starttime="11:00:00.000000">
   <query>other query</query>
   <results>{result(1, "d2", "M &amp;amp; S", "another snippet")}{result(2, "d4", "T4", "S4")}</results>
   <clicked></clicked>
  </interaction>
  <currentquery starttime="11:02:00.000000"><query>last</query></currentquery>
 </session>
</sessiontrack2012>
"""


def test_session_xml_trec_layout(tmp_path):
    log = read_log(write(tmp_path, "sessiontrack.xml", TREC_XML), ranks=3)
    assert [(i, q, d, c) for i, q, d, c, _ in sessions(log)] == [
        ("1:1", "tax code 403", ["d1", "d2", "d3"], [1, 1, 0]),  # 1-based ranks converted; repeat kept
        ("2:1", "other query", ["d2", "d4"], []),
    ]
    assert log.session(0).times == [36001.5, 36003.25, 3723.5]  # HH:MM:SS.ffffff in seconds
    assert log.click_counts[0].tolist() == [1, 2, 0]
    assert log.stats.clicks_not_shown == 1  # rank 7 of a 3-result SERP
    assert log.stats.empty_serps == 1  # interaction 2 showed nothing
    assert log.stats.short_serps == 1
    assert log.query_text == {"tax code 403": "Tax   CODE 403", "other query": "other query"}
    assert log.query_topic == {"tax code 403": "7", "other query": "8"}
    assert log.doc_text["d1"] == "T1 S1"
    assert log.doc_text["d2"] == "M & S S2"  # entity left escaped in the file decoded; first text kept
    assert log.reader_notes["currentquery_skipped"] == 2
    assert log.reader_notes["doc_text_variants"] == 1  # d2's second snippet
    assert log.reader_notes["session_elements"] == 2 and log.reader_notes["interactions"] == 3


def test_session_xml_key_by_topic_and_topic_conflicts(tmp_path):
    xml = TREC_XML.replace("<query>other query</query>", "<query>tax code 403</query>")
    log = read_session_xml(write(tmp_path, "s.xml", xml), ranks=3)
    assert log.query_topic == {"tax code 403": "7"}  # the first topic is kept
    assert log.reader_notes["query_topic_conflicts"] == 1
    log = read_session_xml(write(tmp_path, "s.xml", xml), ranks=3, key_by_topic=True)
    assert log.query_topic == {"7/tax code 403": "7", "8/tax code 403": "8"}
    assert log.reader_notes["query_topic_conflicts"] == 0


def test_session_xml_tiangong_layout(tmp_path):
    xml = f"""<root>
<session num="s9" starttime="0">
 <interaction num="1" starttime="0">
  <query_id>4021</query_id><query>天宫 数据</query>
  <results>{result(2, "D-b", "tb", "", "docid")}{result(1, "D-a", "ta", "sa", "docid")}</results>
  <clicked><click num="2" starttime="7.5"><rank>2</rank></click><click num="1" starttime="3"><rank>1</rank></click>
   <click num="3" starttime="9"><docid>D-a</docid></click></clicked>
 </interaction>
</session></root>"""
    log = read_log(write(tmp_path, "tiangong.xml", xml), ranks=2)
    s = log.session(0)
    assert (s.session_id, s.query, list(s.docs)) == ("s9:1", "4021", ["D-a", "D-b"])  # rank order, not file order
    assert s.clicks == [0, 1, 0] and s.times == [3.0, 7.5, 9.0]  # click order by num; a click naming its docid
    assert log.query_text == {"4021": "天宫 数据"}
    assert log.doc_text == {"D-a": "ta sa", "D-b": "tb"}
    assert log.query_topic == {}


def test_session_xml_duplicate_sessions_and_bad_results_counted(tmp_path):
    one = f'<session num="1"><interaction num="1"><query>q</query><results>{result(1, "d")}</results></interaction></session>'
    bad = '<session num="2"><interaction num="1"><query>r</query><results><result rank="1"><title>no id</title></result>' \
          f'{result(2, "e")}</results></interaction></session>'
    log = read_log(write(tmp_path, "dup.xml", f"<x>{one}{one}{bad}</x>"), ranks=1)
    assert [s.session_id for s in log.sessions()] == ["1:1", "2:1"]
    assert log.stats.duplicate_sessions == 1
    assert log.stats.malformed_lines == 1
    assert log.session(1).docs == ["e"]


def test_session_xml_errors(tmp_path):
    with pytest.raises(ClickLogError, match=r"not well-formed XML at line 2"):
        read_log(write(tmp_path, "broken.xml", "<a>\n<session></a>\n"))
    with pytest.raises(ClickLogError, match=r"no <session> elements"):
        read_log(write(tmp_path, "other.xml", "<html><body/></html>\n"))


# ---- jsonl ---------------------------------------------------------------------------------
def test_jsonl_round_trip(tmp_path):
    b = ClickLogBuilder(ranks=4)
    b.add(Session("q1", ["a", "b", "c", "d"], [2, 0, 2], [1.5, float("nan"), 7.0], session_id="x"))
    b.add(Session("q2", ["c", "e"], [], [], session_id="y"))
    b.add(Session("q1", ["b", "a", "c", "d"], [0], [3.0], session_id="z"))
    b.query_text.update({"q1": "first query", "q2": "zweite Anfrage ü"})
    b.doc_text.update({"a": "doc a", "e": "doc e"})
    b.query_topic.update({"q1": "t1"})
    before = b.build()
    path = tmp_path / "log.jsonl"
    before.write_jsonl(path)
    after = read_log(path, ranks=4)
    assert after.queries == before.queries and after.doc_ids == before.doc_ids
    np.testing.assert_array_equal(after.query, before.query)
    np.testing.assert_array_equal(after.docs, before.docs)
    np.testing.assert_array_equal(after.click_ranks, before.click_ranks)
    np.testing.assert_array_equal(after.click_offsets, before.click_offsets)
    np.testing.assert_array_equal(after.click_times, before.click_times)  # NaN -> null -> NaN
    assert math.isnan(after.click_times[1])
    assert after.session_ids == ["x", "y", "z"]
    assert after.query_text == before.query_text
    assert after.doc_text == before.doc_text
    assert after.query_topic == {"q1": "t1"}
    assert '"topic": "t1"' in path.read_text().splitlines()[0]
    assert after.stats.short_serps == 1 and after.stats.problems() == {"short_serps": 1}


def test_jsonl_malformed_lines_counted_with_line_numbers(tmp_path, caplog):
    good = json.dumps({"session_id": "a", "query": "q", "docs": ["d1", "d2"], "clicks": [2, 2]})
    dup = good
    lines = [good, "not json {", json.dumps({"query": "q"}), dup, json.dumps({"query": "r", "docs": ["d1"], "clicks": [1]})]
    with caplog.at_level(logging.WARNING, logger="uptrain"):
        log = read_log(write(tmp_path, "x.jsonl", "\n".join(lines) + "\n"), ranks=2)
    assert log.stats.malformed_lines == 2
    assert log.stats.duplicate_sessions == 1
    assert log.click_counts.tolist() == [[0, 2], [1, 0]]
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "line 2: not JSON" in text and "line 3: no 'query' and 'docs'" in text
    assert "1 duplicate sessions" in text


def test_jsonl_mostly_malformed_is_another_format(tmp_path):
    path = write(tmp_path, "y.jsonl", '{"query": "q", "docs": ["a"]}\n{"a": 1}\n{"b": 2}\n')
    with pytest.raises(ClickLogError, match=r"2 of 3 records are not jsonl.*probably another format"):
        read_log(path)


# ---- detection and errors ------------------------------------------------------------------
def test_detect_format_on_each_format(tmp_path):
    assert detect_format(write(tmp_path, "p", PYCLICK)) == "pyclick_yandex"
    assert detect_format(write(tmp_path, "w", WSCD)) == "wscd2011"
    assert detect_format(write(tmp_path, "s", TREC_XML)) == "session_xml"
    assert detect_format(write(tmp_path, "j", '\n\n{"query": "q", "docs": ["a"]}\n')) == "jsonl"
    assert set(READERS) == {"pyclick_yandex", "wscd2011", "session_xml", "jsonl"}


def test_gzip_and_progress_bar_read_the_same_log(tmp_path, monkeypatch):
    import gzip

    from uptrain.clicks import readers

    plain = read_log(write(tmp_path, "train", WSCD), ranks=3)
    path = tmp_path / "train.gz"
    path.write_bytes(gzip.compress(WSCD.encode()))
    assert detect_format(path) == "wscd2011"
    monkeypatch.setattr(readers, "PROGRESS_BYTES", 0)  # every file gets the bar
    for p in (path, tmp_path / "train"):
        log = read_log(p, ranks=3)
        assert sessions(log) == sessions(plain) and log.stats == plain.stats
    xml = read_log(write(tmp_path, "s.xml", TREC_XML), ranks=3)
    assert xml.n_clicks == 3


def test_error_messages(tmp_path):
    missing = tmp_path / "nowhere" / "log.txt"
    with pytest.raises(ClickLogError, match=r"click log .*nowhere/log\.txt does not exist"):
        read_log(missing)
    with pytest.raises(ClickLogError, match=r"is empty"):
        read_log(write(tmp_path, "empty", ""))
    with pytest.raises(ClickLogError, match=r"is empty \(only whitespace\)"):
        read_log(write(tmp_path, "blank", "\n \n"))
    unknown = write(tmp_path, "csv", "a,b,c\n1,2,3\n")
    with pytest.raises(ClickLogError, match=r"cannot tell the format.*format=NAME.*jsonl, pyclick_yandex, session_xml, wscd2011"):
        read_log(unknown)
    with pytest.raises(ClickLogError, match=r"unknown click-log format 'yandex'.*jsonl, pyclick_yandex, session_xml, wscd2011"):
        read_log(write(tmp_path, "p", PYCLICK), format="yandex")
    with pytest.raises(ClickLogError, match=r"does not take the options \['doc_id_elements'\]"):
        read_log(write(tmp_path, "p", PYCLICK), doc_id_elements=("docid",))
    with pytest.raises(ClickLogError, match=r"records are not wscd2011"):
        read_log(write(tmp_path, "p", PYCLICK), format="wscd2011")


# ---- judgments -----------------------------------------------------------------------------
QRELS = "7 0 d1 2\n7 0 d2 -2\n7 0 d9 1\n8 0 d2 0\n8 0 d4 4\n9 0 d1 3\n"


def test_read_judgments_keeps_negative_grades(tmp_path):
    j = read_judgments(write(tmp_path, "qrels", QRELS + "bad line\n"))
    assert j == {"7": {"d1": 2, "d2": -2, "d9": 1}, "8": {"d2": 0, "d4": 4}, "9": {"d1": 3}}
    with pytest.raises(ClickLogError, match="does not exist"):
        read_judgments(tmp_path / "none")


def test_judgments_for_log(tmp_path):
    log = read_log(write(tmp_path, "s.xml", TREC_XML), ranks=3)
    grades, unjudged = judgments_for_log(log, read_judgments(write(tmp_path, "qrels", QRELS)))
    # topic 7 shows d1 d2 d3 (d3 unjudged); topic 8 shows d2 d4; d1 of topic 9 is never shown
    assert grades == {("tax code 403", "d1"): 2, ("tax code 403", "d2"): -2, ("other query", "d2"): 0,
                      ("other query", "d4"): 4}
    assert unjudged == 1
    no_topics = read_log(write(tmp_path, "p", PYCLICK), ranks=3)
    with pytest.raises(ClickLogError, match="no query topics"):
        judgments_for_log(no_topics, {})


# ---- the real files ------------------------------------------------------------------------
def real(*parts):
    path = DATA.joinpath("raw", *parts) if DATA is not None else None
    if path is None or not path.is_file():
        pytest.skip(f"real data file {'/'.join(parts)} is not present")
    return path


def test_real_pyclick_yandex_sample():
    log = read_log(real("yandex_wscd_clicks_pyclick", "trainSample"))
    assert log.reader_notes == {"serps_with_repeated_docs": 0}
    assert len(log) == 35_064 and len(log.frequencies()) == 20
    # 50,321 clicked ids in the file: 417 of them are not in their SERP (counted, dropped)
    assert log.n_clicks + log.stats.clicks_not_shown == 50_321
    assert log.stats.clicks_not_shown == 417
    assert log.stats.problems() == {"clicks_not_shown": 417}
    assert int((log.click_counts > 1).sum()) > 0  # repeats kept


def test_real_session_track_2012():
    path = real("trec_session_2012", "sessiontrack2012.xml")
    log = read_log(path, ranks=None)
    notes = log.reader_notes
    assert notes["session_elements"] == 98 and notes["interactions"] == 199
    assert notes["currentquery_skipped"] == 98
    assert len(log) == 199 - 8 and log.stats.empty_serps == 8  # eight interactions showed no result
    assert int(log.shown.sum()) == 2_157 and log.n_clicks == 272
    assert len({s.split(":")[0] for s in log.session_ids}) == 96  # two sessions' only SERP was empty
    assert len(set(log.query_topic.values())) == 48
    cut = read_log(path)  # ranks=10: 19 longer SERPs cut, 9 clicks below rank 10 dropped
    assert cut.stats.long_serps == 19 and cut.n_clicks + cut.stats.clicks_not_shown == 272

    judgments = read_judgments(real("trec_session_2012", "relevacne2012.txt"))
    assert len(judgments) == 48 and sum(map(len, judgments.values())) == 17_861
    grades = collections.Counter(g for docs in judgments.values() for g in docs.values())
    assert grades == {-2: 975, 0: 12_384, 1: 2_679, 2: 458, 3: 5, 4: 1_360}

    by_topic = read_log(path, ranks=None, key_by_topic=True)
    graded, _ = judgments_for_log(by_topic, judgments)
    assert len({(by_topic.query_topic[q], d) for q, d in graded}) == 1_553
    assert all(by_topic.doc_text[d] for _, d in graded)
    # keyed by query text alone, two texts typed under two topics each keep their first topic
    assert notes["query_topic_conflicts"] == 2
    graded, _ = judgments_for_log(log, judgments)
    assert len({(log.query_topic[q], d) for q, d in graded}) == 1_549
