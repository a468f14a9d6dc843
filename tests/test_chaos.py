"""The fault-injection harness (uptrain/chaos.py): its parts against hand-made inputs, and a short real
run of it (SIGKILLs inside stages of a training run, each re-run to the end and compared)."""

from __future__ import annotations

import json
import math

import pytest

from conftest import needs_data
from uptrain.chaos import chaos, compare, kill_point

LOG = """\
[2026-01-01 10:00:00,000][uptrain][INFO] - experiment human -> /run (cache /c)
[2026-01-01 10:00:01,000][uptrain][INFO] - [stage data_train] building data/aaaa
[2026-01-01 10:00:02,000][uptrain][INFO] - [stage data_train] cache built data/aaaa (1.0s)
[2026-01-01 10:00:02,100][uptrain][INFO] - [stage pool] cache hit pool/bbbb (0.0s)
[2026-01-01 10:00:03,000][uptrain][INFO] - [stage train_human] building train/cccc
"""


def test_kill_point_is_the_stage_being_built_when_the_log_ends():
    assert kill_point(LOG) == "train"
    assert kill_point(LOG + "[x][uptrain][INFO] - [stage train_human] cache built train/cccc (9.0s)\n") == \
        "outside a stage"
    assert kill_point("[x][uptrain][INFO] - experiment human -> /run\n") == "startup"
    # a stage built inside another's build (an input built on demand): the inner one is open
    nested = LOG + "[x] - [stage index_x] building index/dddd\n"
    assert kill_point(nested) == "index"
    assert kill_point(nested + "[x] - [stage index_x] cache built index/dddd (1.0s)\n") == "train"


def test_compare_skips_timings_and_sees_every_other_difference():
    ref = {"groups": {"a": {"nDCG@10": 0.5, "R@100": 0.75}}, "stages": [{"cache": "built"}],
           "sections": {"Index": "encoded in 9.6 s"}, "per_query": {"q": [0.1, 0.2]}}
    same = {**ref, "stages": [{"cache": "hit"}], "sections": {"Index": "encoded in 8.1 s"}}
    assert compare(ref, same, 0.0) == ([], 0.0)
    off = json.loads(json.dumps(ref))
    off["groups"]["a"]["nDCG@10"] = 0.5 + 1e-9
    diffs, worst = compare(ref, off, 0.0)
    assert diffs == [".groups.a.nDCG@10: 0.5 in the reference, 0.500000001 here"] and math.isclose(worst, 1e-9, rel_tol=1e-6)
    assert compare(ref, off, 1e-6)[0] == []  # within a stated tolerance
    short = {**ref, "per_query": {"q": [0.1]}}
    assert compare(ref, short, 0.0)[0] == [".per_query.q: 2 items in the reference, 1 here"]
    extra = {**ref, "new": 1}
    assert compare(ref, extra, 0.0)[0] == [".new: only in the chaos run"]


@needs_data
@pytest.mark.slow
def test_kills_inside_stages_then_resumed_runs_equal_the_uninterrupted_one(tmp_path, cli_env, monkeypatch):
    for key in ("UPTRAIN_CACHE_DIR", "IR_DATASETS_HOME", "HF_HUB_OFFLINE", "WANDB_MODE"):
        monkeypatch.setenv(key, cli_env[key])
    result = chaos(["human"], kills=3, out=tmp_path / "chaos", seed=3, per_round=3,
                   overrides=["eval.groups.out_of_domain=[]", "train.checkpoint_every_n_steps=1"],
                   progress=lambda msg: None)
    assert result["kills"] == 3 and sum(result["kill_points"].values()) == 3
    # every kill is attributed to a stage, start-up or the code between stages
    assert all(a["kill_point"] for a in result["attempts"] if a["killed"])
    assert result["rounds"] and result["ok"], result["rounds"]
    for rnd in result["rounds"]:
        assert rnd["equal"] and rnd["problems"] == [] and rnd["max_abs_diff"] == 0
    report = (tmp_path / "chaos" / "chaos.md").read_text()
    assert "| Kill point (stage being built) | Kills |" in report and "| human | 1 |" in report
    assert json.loads((tmp_path / "chaos" / "chaos.json").read_text())["kills"] == 3


def test_artifact_json_is_compared_as_data_without_timings_and_cache_paths(tmp_path):
    from uptrain.chaos import same_data

    a_root, b_root = tmp_path / "ref-cache", tmp_path / "round-cache"
    a, b = a_root / "labels.jsonl", b_root / "labels.jsonl"
    a_root.mkdir(), b_root.mkdir()
    a.write_text(json.dumps({"query_id": "1", "relsel": ["d1"], "seconds": 63.5}) + "\n"
                 + json.dumps({"query_id": "2", "backbone": f"{a_root}/train/x/encoder"}) + "\n")
    b.write_text(json.dumps({"query_id": "1", "relsel": ["d1"], "seconds": 175.0}) + "\n"
                 + json.dumps({"query_id": "2", "backbone": f"{b_root}/train/x/encoder"}) + "\n")
    assert same_data(a, a_root, b, b_root, 0.0)
    # a label that changed, a record repeated (a shard written twice) or lost: not the same
    b.write_text(b.read_text().replace('["d1"]', '["d2"]'))
    assert not same_data(a, a_root, b, b_root, 0.0)
    b.write_text(a.read_text().replace(str(a_root), str(b_root)) * 2)
    assert not same_data(a, a_root, b, b_root, 0.0)
    b.write_text(a.read_text().splitlines()[0] + "\n")
    assert not same_data(a, a_root, b, b_root, 0.0)


def test_timing_keys_are_volatile_and_data_keys_are_not():
    from uptrain.chaos import volatile

    assert all(volatile(k) for k in ("seconds", "build_seconds", "seconds_per_question", "seconds_rank",
                                      "sessions_per_second", "stages"))
    assert not any(volatile(k) for k in ("positives_per_query", "nDCG@10", "queries", "answer_recall@1"))
