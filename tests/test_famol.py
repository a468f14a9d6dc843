"""FAMOL's learned per-bucket weights (uncertainty weighting, Kendall, Gal & Cipolla, CVPR 2018) and its
per-objective losses: the loss against hand-computed values, the direction a gradient step moves the
weights, the examples' tags and plan, the refusals before training, a real fit with resumption, and
+exp=famol_learned through the CLI."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass

import pytest
import torch
from conftest import DOCS, TINY, needs_data, run_cli

from uptrain.labels import LabelConfigError, build_examples, parse_spec
from uptrain.labels.frequency import FamolExample, FamolPlan, FamolRowId, FamolSource, SigmoidWeighting
from uptrain.losses import InfoNCE
from uptrain.model.batch import ScoredBatch
from uptrain.train.module import FamolObjective


# ---- fixtures: a click log, a fitted click model and LLM grades over ten queries ----------------------

@dataclass
class _Entry:
    query_id: str
    query: str
    positives: tuple
    candidates: tuple


@dataclass
class _Sim:  # a simulated click artifact's value
    freq: dict

    def frequencies(self):
        return dict(self.freq)


class _Est:  # a fitted click model's estimates (what click:<model> reads)
    def __init__(self, table):
        self.table = table
        self.impressions = {(q, d): 5 for q, ds in table.items() for d in ds}
        self.params = {}

    def by_query(self):
        return self.table


FREQ = [1000, 50, 10, 3, 0, 0, 1, 2, 5, 7]  # rank buckets of one query each: q0,q1,q2 high; q8,q9,q3,q6 medium


def _values(freq=FREQ):
    # click:dbn's top document of q<i> is d<i>a; the LLM grades d<i>b 3 (a positive) and d<i>a 1
    clicks = {f"q{i}": {f"d{i}a": 0.6, f"d{i}b": 0.2} for i in range(len(freq))}
    grades = {f"q{i}": {f"d{i}b": 3, f"d{i}a": 1} for i in range(len(freq))}
    return {"clicks": _Sim({f"q{i}": f for i, f in enumerate(freq)}), "click_model": _Est(clicks), "grades": grades}


def _pool(n=10):
    return [_Entry(f"q{i}", f"query {i}", (), (f"d{i}a", f"d{i}b", f"d{i}c")) for i in range(n)]


def _famol(**kw):
    return [{"source": "famol", "click": {"source": "click", "model": "dbn"}, "llm": {"source": "grade"}, **kw}]


def _log_softmax_nll(row, pos):
    """-log softmax(row)[pos], by hand."""
    return -row[pos] + math.log(sum(math.exp(x) for x in row))


def _bce(row, positives):
    """mean over the row's pairs of -[y log sigma(s) + (1 - y) log(1 - sigma(s))], by hand."""
    out = []
    for j, s in enumerate(row):
        p = 1 / (1 + math.exp(-s))
        out.append(-math.log(p) if j in positives else -math.log(1 - p))
    return sum(out) / len(out)


SCORES = [[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.5, 0.2, 1.0], [1.2, -0.3, 0.0]]


def _batch(weights, positives=(0, 0, 0, 0), scores=SCORES):
    s = torch.tensor(scores[: len(weights)], dtype=torch.float32)
    pos = torch.zeros_like(s, dtype=torch.bool)
    for i, j in enumerate(positives[: len(weights)]):
        pos[i, j] = True
    return ScoredBatch(s, {"positive": pos}, weights=torch.tensor(weights, dtype=torch.float32))


# ---- the learned weighting's loss and gradient ---------------------------------------------------------

def test_learned_loss_is_the_uncertainty_weighted_sum_computed_by_hand():
    """Catches: a term weighted by w instead of exp(-s), a missing + s regulariser, s initialised so that
    w_b differs from init, rows of one bucket or objective counted in another's term."""
    plan = FamolPlan(losses={"click": None, "llm": None}, buckets=("high", "low"), init={"high": 0.8, "low": 0.3})
    obj = FamolObjective(plan)
    assert obj.click_weights() == pytest.approx({"high": 0.8, "low": 0.3})
    # s_click = -ln w, s_llm = -ln(1 - w): exp(-s) is w and 1 - w at the start
    assert obj.log_variances()["high"] == pytest.approx([-math.log(0.8), -math.log(0.2)], rel=1e-6)
    rows = [FamolRowId("q1", "click", "high"), FamolRowId("q1", "llm", "high"),
            FamolRowId("q2", "click", "low"), FamolRowId("q3", "llm", "low")]
    loss, parts = obj(_batch([1.0, 1.0, 1.0, 1.0], positives=(0, 1, 2, 0)), rows, InfoNCE())
    terms = {("click", "high"): (0.8, _log_softmax_nll(SCORES[0], 0)), ("llm", "high"): (0.2, _log_softmax_nll(SCORES[1], 1)),
             ("click", "low"): (0.3, _log_softmax_nll(SCORES[2], 2)), ("llm", "low"): (0.7, _log_softmax_nll(SCORES[3], 0))}
    expect = sum(w * L - math.log(w) for w, L in terms.values())  # exp(-s) L + s with s = -ln(w)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert parts == pytest.approx({f"{o}:{b}": L for (o, b), (_, L) in terms.items()}, rel=1e-5)


def test_learned_loss_averages_a_terms_rows_with_their_own_weights():
    """Two click rows of one bucket form one term: their weighted mean (the examples' own weights), once
    weighted by exp(-s) (catches a term per row, or the regulariser counted per row)."""
    plan = FamolPlan(losses={"click": None, "llm": None}, buckets=("high",), init={"high": 0.6})
    rows = [FamolRowId("q1", "click", "high"), FamolRowId("q2", "click", "high")]
    loss, _ = FamolObjective(plan)(_batch([3.0, 1.0]), rows, InfoNCE())
    mean = (3 * _log_softmax_nll(SCORES[0], 0) + _log_softmax_nll(SCORES[1], 0)) / 4
    assert loss.item() == pytest.approx(0.6 * mean - math.log(0.6), rel=1e-5)


def test_a_gradient_step_lowers_the_weight_of_the_objective_with_the_larger_loss():
    """d/ds [exp(-s) L + s] = 1 - exp(-s) L: in 'high' the click loss is the larger (its positive scored
    lowest), so w_high falls; in 'low' the LLM loss is the larger, so w_low rises. Catches a sign error
    in s or in w_b = sigmoid(s_llm - s_click)."""
    plan = FamolPlan(losses={"click": None, "llm": None}, buckets=("high", "low"), init={"high": 0.5, "low": 0.5})
    obj = FamolObjective(plan)
    rows = [FamolRowId("a", "click", "high"), FamolRowId("a", "llm", "high"),
            FamolRowId("b", "click", "low"), FamolRowId("b", "llm", "low")]
    # row 0 (click, high): positive at its lowest score; row 1 (llm, high): at its highest; and the reverse
    batch = _batch([1.0] * 4, positives=(2, 1, 2, 1))
    loss, parts = obj(batch, rows, InfoNCE())
    assert parts["click:high"] > parts["llm:high"] and parts["click:low"] < parts["llm:low"]
    loss.backward()
    grad = obj.log_variance.grad
    for k, b in enumerate(("high", "low")):  # the formula's gradient, exp(-s) = 1/2 at the start
        assert grad[k].tolist() == pytest.approx([1 - 0.5 * parts[f"click:{b}"], 1 - 0.5 * parts[f"llm:{b}"]], rel=1e-5)
    torch.optim.SGD([obj.log_variance], lr=0.1).step()
    w = obj.click_weights()
    assert w["high"] < 0.5 < w["low"]


def test_a_bucket_absent_from_a_batch_gets_no_term_but_a_zero_gradient():
    """Kendall's sum runs over the tasks present: an absent bucket adds neither L nor s (catches a
    regulariser that pulls every s down each step), yet its s is in the graph (DDP needs a gradient)."""
    plan = FamolPlan(losses={"click": None, "llm": None}, buckets=("high", "low"), init={"high": 0.5, "low": 0.4})
    obj = FamolObjective(plan)
    loss, _ = obj(_batch([1.0]), [FamolRowId("a", "llm", "high")], InfoNCE())
    assert loss.item() == pytest.approx(0.5 * _log_softmax_nll(SCORES[0], 0) - math.log(0.5), rel=1e-5)
    loss.backward()
    assert obj.log_variance.grad[1].tolist() == [0.0, 0.0] and obj.log_variance.grad[0, 0].item() == 0.0
    with pytest.raises(ValueError, match="bucket 'medium'"):
        obj(_batch([1.0]), [FamolRowId("a", "llm", "medium")], InfoNCE())


# ---- per-objective losses ---------------------------------------------------------------------------------

def test_per_objective_losses_give_w_bce_plus_one_minus_w_infonce_by_hand():
    """One click row of weight w and one LLM row of weight 1 - w (a query labelled by both): exactly
    w * BCE(click row) + (1 - w) * InfoNCE(LLM row), with the two registered losses (catches either loss
    applied to the other's rows, or the phase's loss used instead)."""
    plan = FamolPlan(losses={"click": {"name": "pointwise_bce"}, "llm": {"name": "infonce"}})
    obj = FamolObjective(plan)
    w = 0.7
    rows = [FamolRowId("q1", "click", "high"), FamolRowId("q1", "llm", "high")]
    loss, parts = obj(_batch([w, 1 - w], positives=(0, 1)), rows, phase_loss=None)
    expect = w * _bce(SCORES[0], {0}) + (1 - w) * _log_softmax_nll(SCORES[1], 1)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert parts == pytest.approx({"click": _bce(SCORES[0], {0}), "llm": _log_softmax_nll(SCORES[1], 1)}, rel=1e-5)


def test_objectives_are_summed_by_their_share_of_the_batch_weight():
    """Three rows (click w1, click w2, LLM w3): L = (w1 l1 + w2 l2 + w3 l3) / (w1 + w2 + w3), the shared
    loss's weighted mean whenever both objectives use one row-level loss (catches a plain mean of the two
    objectives, which would weigh a lone LLM row as much as all click rows)."""
    ws = [0.9, 0.5, 0.2]
    rows = [FamolRowId("q1", "click", "high"), FamolRowId("q2", "click", "low"), FamolRowId("q3", "llm", "low")]
    both = FamolObjective(FamolPlan(losses={"click": {"name": "pointwise_bce"}, "llm": {"name": "infonce"}}))
    loss, _ = both(_batch(ws, positives=(0, 0, 2)), rows, phase_loss=None)
    ls = [_bce(SCORES[0], {0}), _bce(SCORES[1], {0}), _log_softmax_nll(SCORES[2], 2)]
    assert loss.item() == pytest.approx(sum(w * x for w, x in zip(ws, ls)) / sum(ws), rel=1e-5)
    # the phase's loss for both objectives: the plain path's weighted mean over the batch
    shared = FamolObjective(FamolPlan(losses={"click": None, "llm": None}))
    batch = _batch(ws, positives=(0, 0, 2))
    got, _ = shared(batch, rows, InfoNCE())
    plain = InfoNCE()(batch.scores, batch.targets["positive"], weights=batch.weights)
    assert got.item() == pytest.approx(plain.item(), rel=1e-6)


# ---- the source: tagged examples, the plan, the initial weights, unchanged keys --------------------------

def test_without_the_new_options_examples_and_cache_key_are_as_before():
    """Catches a cache key that changed for runs that use neither option (every cached FAMOL run would
    rebuild), or tagged examples where the phase's loss expects plain ones."""
    source = parse_spec(_famol(weighting={"kind": "sigmoid", "midpoint": 10, "slope": 2.0},
                               click_loss=None, llm_loss=None))[0]
    assert set(source.spec()) == {"source", "weight", "click", "llm", "weighting", "bucketing"}
    examples, stats = build_examples(_famol(weighting={"kind": "sigmoid", "midpoint": 10, "slope": 2.0}), _pool(), _values())
    assert not any(isinstance(e, FamolExample) for e in examples)
    assert "examples_per_objective_bucket" not in stats.per_source


def test_learned_examples_carry_objective_bucket_and_plan_with_the_sigmoid_bucket_means():
    """The learned weighting's start from a sigmoid: w_b^0 = the sigmoid's mean over the log's queries of
    bucket b. The examples keep their own weight (w is applied in training), and each says its objective
    and bucket."""
    init = {"kind": "sigmoid", "midpoint": 10, "slope": 2.0}
    spec = _famol(weighting={"kind": "learned", "init": init, "lr": 0.1, "record_every": 3})
    examples, stats = build_examples(spec, _pool(), _values())
    sig = SigmoidWeighting(10, 2.0)
    # rank buckets of FREQ (sorted by -f, ties by key): q0 q1 q2 | q9 q8 q3 q7 | q6 q4 q5
    buckets = {"high": [1000, 50, 10], "medium": [7, 5, 3, 2], "low": [1, 0, 0]}
    expect = {b: sum(sig(f, b) for f in fs) / len(fs) for b, fs in buckets.items()}
    plan = examples[0].plan
    assert plan.learned and plan.buckets == ("high", "medium", "low") and plan.lr == 0.1 and plan.record_every == 3
    assert dict(plan.init) == pytest.approx(expect)
    assert stats.per_source["learned_init"] == pytest.approx(expect, abs=1e-6)
    assert all(isinstance(e, FamolExample) and e.plan is plan and e.weight == 1.0 for e in examples)
    by = {(e.query_id, e.objective): e.bucket for e in examples}
    assert by[("q0", "click")] == by[("q0", "llm")] == "high" and by[("q4", "llm")] == "low"
    assert {e.positives for e in examples if e.objective == "click" and e.query_id == "q3"} == {("d3a",)}
    assert stats.per_source["examples_per_objective_bucket"] == {
        "click:high": 3, "click:medium": 4, "click:low": 3, "llm:high": 3, "llm:medium": 4, "llm:low": 3}


def test_group_dataset_tags_rows_and_a_collated_batch_keeps_the_tags():
    """The tag travels from the example through GroupDataset and the collator (query_ids) and through
    pickling (DataLoader workers); the dataset exposes the plan for the training module."""
    from uptrain.sampling import PosOne
    from uptrain.train.dataset import GroupDataset

    plan = FamolPlan(losses={"click": {"name": "pointwise_bce"}, "llm": None})
    ex = [FamolExample("q1", "aspirin", ("d1",), ("d3",), objective="click", bucket="high", plan=plan),
          FamolExample("q1", "aspirin", ("d2",), ("d3",), objective="llm", bucket="high", plan=plan)]
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=2, seed=0)
    assert ds.famol is plan
    items = [ds[0], ds[1]]
    assert [(i.query_id, i.query_id.objective, i.query_id.bucket) for i in items] == [("q1", "click", "high"),
                                                                                    ("q1", "llm", "high")]
    again = pickle.loads(pickle.dumps(items[1].query_id))
    assert (again, again.objective, again.bucket, type(again)) == ("q1", "llm", "high", FamolRowId)
    assert json.dumps([again]) == '["q1"]' and hash(again) == hash("q1")


def test_module_trains_tagged_rows_through_the_famol_objective_and_refuses_a_missing_plan():
    """RankerModule.compute_loss on a real bi-encoder batch: the FAMOL objective's value, not the phase's
    loss (catches the tags ignored); tagged rows without a plan, or a plan without tags, fail clearly."""
    from uptrain.errors import ConfigError
    from uptrain.model import BiEncoder
    from uptrain.sampling import PosOne
    from uptrain.train.dataset import GroupDataset, LabelledQuery
    from uptrain.train.module import RankerModule

    model = BiEncoder(query_max_length=16, passage_max_length=32)
    plan = FamolPlan(losses={"click": {"name": "pointwise_bce"}, "llm": None}, buckets=("high",), init={"high": 0.25})
    ex = [FamolExample("q1", "aspirin heart", ("d1",), ("d3",), objective="click", bucket="high", plan=plan),
          FamolExample("q2", "vitamin d bones", ("d5",), ("d6",), objective="llm", bucket="high", plan=plan)]
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=2, seed=0)
    batch = model.collator()([ds[0], ds[1]])
    module = RankerModule(model, InfoNCE(), famol=ds.famol)
    with torch.no_grad():
        loss, out = module.compute_loss(batch)
        click = module.famol.own_losses["click"](out.scores[:1], out.targets["positive"][:1]).item()
        llm = InfoNCE()(out.scores[1:], out.targets["positive"][1:]).item()
    assert loss.item() == pytest.approx(0.25 * click - math.log(0.25) + 0.75 * llm - math.log(0.75), rel=1e-4)
    with pytest.raises(ConfigError, match="no FAMOL plan"):
        RankerModule(model, InfoNCE()).compute_loss(batch)
    plain = model.collator()([GroupDataset([LabelledQuery("q1", "a", ("d1",), ("d3",))], DOCS, PosOne(), group_size=2)[0]])
    with pytest.raises(ConfigError, match="carry no objective"):
        module.compute_loss(plain)


# ---- bad configs fail before training ---------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"click_loss": {"name": "nosuch"}}, r"unknown click_loss 'nosuch'; known losses: .*infonce"),
    ({"llm_loss": {"name": "infonce", "temperature": 2}}, r"llm_loss .*temperature"),
    ({"click_loss": {"name": "ips_pointwise"}}, "logged SERPs"),
    ({"llm_loss": "kl"}, "REPLUG utilities"),
    ({"weighting": {"kind": "learned", "init": {"high": 1.0, "medium": 0.5, "low": 0.2}}}, r"init.high must be in \(0, 1\)"),
    ({"weighting": {"kind": "learned", "init": {"high": 0.8, "medium": 0.0, "low": 0.2}}}, r"init.medium must be in \(0, 1\)"),
    ({"weighting": {"kind": "learned", "init": {"high": 0.8, "medium": 0.5, "low": 0.2, "torso": 0.4}}},
     r"the bucketing has no bucket \['torso'\]"),
    ({"weighting": {"kind": "learned", "init": {"high": 0.8, "low": 0.2}}}, r"missing \['medium'\]"),
    ({"weighting": {"kind": "learned", "init": {"kind": "step", "weights": {"high": 0.5}}}}, "kind sigmoid"),
    ({"weighting": {"kind": "learned", "init": {"high": 0.8, "medium": 0.5, "low": 0.2}, "lr": 0}}, "lr must be > 0"),
    ({"weighting": {"kind": "learned", "init": {"high": 0.8, "medium": 0.5, "low": 0.2}, "record_every": 0}},
     "record_every"),
])
def test_bad_famol_configs_are_config_errors(kw, match):
    with pytest.raises(LabelConfigError, match=match):
        parse_spec(_famol(**kw))


def test_init_buckets_follow_the_configured_bucketing():
    """With edges buckets, init names those buckets (catches a check against high/medium/low alone)."""
    bucketing = {"scheme": "edges", "edges": [100, 10], "labels": ["head", "torso", "tail"]}
    ok = parse_spec(_famol(bucketing=bucketing,
                           weighting={"kind": "learned", "init": {"head": 0.7, "torso": 0.4, "tail": 0.2}}))[0]
    assert isinstance(ok, FamolSource) and ok.bucket_names == ["head", "torso", "tail"]
    with pytest.raises(LabelConfigError, match=r"no bucket \['high', 'low', 'medium'\]"):
        parse_spec(_famol(bucketing=bucketing, weighting={"kind": "learned", "init": {"high": .7, "medium": .4, "low": .2,
                                                                                         "head": .7, "torso": .4, "tail": .2}}))


def test_a_graded_objective_loss_without_grades_is_refused_when_the_examples_are_built():
    with pytest.raises(LabelConfigError, match="click_loss 'pointwise_ce' trains on graded labels"):
        build_examples(_famol(click_loss={"name": "pointwise_ce"}), _pool(), _values())


def test_a_bad_config_stops_the_cli_before_any_stage_runs(cli_env, tmp_path):
    proc = run_cli(["+exp=famol_learned", *TINY, "labels.weightings.learned.init={high: 1.5, medium: 0.3, low: 0.1}",
                    f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "init.high must be in (0, 1)" in proc.stderr + proc.stdout
    assert "building" not in proc.stderr + proc.stdout  # nothing was built: no data, pool or training


# ---- a real fit: the record, checkpointed and resumed ----------------------------------------------------

def test_fit_records_the_weights_and_a_resumed_fit_continues_the_trajectory(tmp_path):
    """fit_model (the training stage's fit) with learned weights: progress.json holds the record (what the
    stage copies into train_stats.json); a second fit with more steps resumes from last.ckpt with the
    learned s and the trajectory so far (catches s restarted from init, or the trajectory lost)."""
    from uptrain.model import BiEncoder
    from uptrain.sampling import PosOne
    from uptrain.train.dataset import GroupDataset
    from uptrain.train.stage import fit_model

    plan = FamolPlan(losses={"click": None, "llm": None}, buckets=("high", "low"), init={"high": 0.7, "low": 0.2},
                     lr=0.2, record_every=1)
    ex = [FamolExample(f"q{i}", text, (pos,), (neg,), objective=o, bucket=b, plan=plan)
          for i, (text, pos, neg, o, b) in enumerate([
              ("aspirin heart", "d1", "d3", "click", "high"), ("aspirin heart", "d2", "d3", "llm", "high"),
              ("vitamin d bones", "d5", "d7", "click", "low"), ("vitamin d bones", "d6", "d7", "llm", "low")])]
    hp = {"batch_size": 4, "lr": 1e-4, "warmup_ratio": 0.0, "group_size": 2}
    trainer = {"_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "max_epochs": -1,
               "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}
    model = BiEncoder(query_max_length=16, passage_max_length=32)
    ds = GroupDataset(ex, DOCS, PosOne(), group_size=2, seed=0)
    fit_model(model, InfoNCE(), ds, hp, {**trainer, "max_steps": 2}, tmp_path, "famol")
    first = json.loads((tmp_path / "progress.json").read_text())["famol"]
    assert [p["step"] for p in first["trajectory"]] == [0, 1, 2]
    assert first["trajectory"][0]["w"] == pytest.approx({"high": 0.7, "low": 0.2}, abs=1e-6)
    assert first["final"] == first["trajectory"][-1]["w"] and first["final"] != first["trajectory"][0]["w"]
    for b, (s_c, s_l) in first["final_log_variance"].items():
        assert first["final"][b] == pytest.approx(1 / (1 + math.exp(s_c - s_l)), abs=1e-5)
    assert set(first["trajectory"][1]["mean_loss"]) == {"click:high", "llm:high", "click:low", "llm:low"}
    # resumed at its last step: nothing left to train, the restored s are the weights (not init again)
    fit_model(model, InfoNCE(), ds, hp, {**trainer, "max_steps": 2}, tmp_path, "famol")
    same = json.loads((tmp_path / "progress.json").read_text())["famol"]
    assert same["final"] == first["final"] and same["trajectory"] == first["trajectory"]
    fit_model(model, InfoNCE(), ds, hp, {**trainer, "max_steps": 4}, tmp_path, "famol")
    second = json.loads((tmp_path / "progress.json").read_text())["famol"]
    assert [p["step"] for p in second["trajectory"]] == [0, 1, 2, 3, 4]
    assert second["trajectory"][:3] == first["trajectory"][:3]
    assert second["final"] != first["final"]


# ---- the experiment through the CLI ----------------------------------------------------------------------

@needs_data
@pytest.mark.slow
def test_famol_learned_experiment_writes_the_weights_and_per_bucket_measures(cli_env, tmp_path):
    run_cli(["+exp=famol_learned", *TINY, "labels.weightings.learned.record_every=2",
             f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    segs = m["results"]["clicks_test"]["segments"]
    assert {"high", "medium", "low"} <= set(segs)
    assert all(0 <= segs[b]["nDCG@10"] <= 1 for b in ("high", "medium", "low"))
    stats = json.loads((tmp_path / "run" / "artifacts" / "train_famol" / "train_stats.json").read_text())
    rec = stats["famol"]
    assert rec["weighting"] == "learned" and rec["buckets"][:3] == ["high", "medium", "low"]
    assert all(0 < rec["final"][b] < 1 for b in ("high", "medium", "low"))
    traj = rec["trajectory"]
    assert traj[0]["step"] == 0 and traj[0]["w"] == pytest.approx(stats["label_stats"]["per_source"]["learned_init"],
                                                                   abs=1e-6)
    steps = [p["step"] for p in traj]
    assert steps == sorted(set(steps)) and steps[-1] == stats["steps"] and traj[-1].get("epoch_end")
    assert all(s % 2 == 0 for s in steps[:-1])
    assert rec["final"] == traj[-1]["w"]


@needs_data
@pytest.mark.slow
def test_famol_losses_experiment_trains_each_objective_with_its_loss(cli_env, tmp_path):
    run_cli(["+exp=famol_losses", *TINY, f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"high", "medium", "low"} <= set(m["results"]["clicks_test"]["segments"])
    rec = json.loads((tmp_path / "run" / "artifacts" / "train_famol" / "train_stats.json").read_text())["famol"]
    assert rec["losses"] == {"click": {"name": "pointwise_bce"}, "llm": {"name": "infonce"}}
    assert set(rec["trajectory"][-1]["mean_loss"]) == {"click", "llm"}


def test_a_sigmoid_start_at_0_or_1_is_clipped_and_counted(caplog):
    """s = -ln w must be finite: a bucket whose sigmoid mean rounds to 1 starts at 1 - 1e-4, counted and
    warned (catches an infinite s, or a silent clip)."""
    spec = _famol(weighting={"kind": "learned", "init": {"kind": "sigmoid", "midpoint": 0, "slope": 60}})
    with caplog.at_level("WARNING", logger="uptrain"):
        examples, stats = build_examples(spec, _pool(), _values())
    assert stats.per_source["init_clipped"] == ["high", "medium"]
    assert examples[0].plan.init["high"] == 1 - 1e-4 and "clipped" in caplog.text
    assert 0 < examples[0].plan.init["low"] < 1 - 1e-4  # q4, q5 at 0 sessions: sigmoid(0) = 1/2 pulls it down
