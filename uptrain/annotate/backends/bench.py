"""Annotation throughput: the batched TransformersBackend against one ``model.generate()`` call per prompt.

    python -m uptrain.annotate.backends.bench --prompts 16 --batch-size 8

Both sides run the same model, the same chat-templated RelSel-like prompts (a query and
8 numbered passages of about 40 words) and greedy decoding; the plain side is what a
straightforward loop over prompts would do. Passages come from SciFact when
``$UPTRAIN_DATA/irds/beir/scifact/source.zip`` exists, else from synthetic text.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zipfile
from pathlib import Path

PASSAGES_PER_PROMPT = 8
WORDS_PER_PASSAGE = 40


def _scifact() -> tuple[list[str], list[str]] | None:
    root = os.environ.get("UPTRAIN_DATA", "").strip()
    source = Path(root) / "irds" / "beir" / "scifact" / "source.zip" if root else None
    if source is None or not source.is_file():
        return None
    docs, queries = [], []
    with zipfile.ZipFile(source) as z:
        names = z.namelist()
        with z.open(next(n for n in names if n.endswith("corpus.jsonl"))) as fh:
            for line in fh:
                d = json.loads(line)
                docs.append((d.get("title", "") + ". " + d.get("text", "")).strip())
                if len(docs) >= 2000:
                    break
        query_file = next((n for n in names if n.endswith("queries.jsonl")), None)
        if query_file:
            with z.open(query_file) as fh:
                queries = [json.loads(line)["text"] for line in fh][:500]
    return docs, queries or [d.split(".")[0] for d in docs[:500]]


def _synthetic(n_docs: int) -> tuple[list[str], list[str]]:
    import random

    rng = random.Random(0)
    vocab = ("cell protein gene expression patients risk cancer treatment mice receptor signaling "
             "increase reduced levels clinical trial cohort mutation tumor immune response dose "
             "therapy binding pathway activity function study results associated higher lower").split()
    docs = [" ".join(rng.choice(vocab) for _ in range(60)).capitalize() + "." for _ in range(n_docs)]
    queries = [" ".join(rng.choice(vocab) for _ in range(8)).capitalize() + "?" for _ in range(n_docs)]
    return docs, queries


def relsel_prompts(n_prompts: int) -> tuple[list[list[dict]], str]:
    """RelSel-style prompts: pick the relevant passages for a query, answered as a list of numbers."""
    loaded = _scifact()
    docs, queries = loaded if loaded else _synthetic(n_prompts * PASSAGES_PER_PROMPT)
    prompts = []
    for i in range(n_prompts):
        start = (i * PASSAGES_PER_PROMPT) % max(1, len(docs) - PASSAGES_PER_PROMPT)
        block = "\n".join(
            f"[{k + 1}] " + " ".join(docs[start + k].split()[:WORDS_PER_PASSAGE])
            for k in range(PASSAGES_PER_PROMPT)
        )
        user = (
            f"Query: {queries[i % len(queries)]}\n\nPassages:\n{block}\n\n"
            "Which passages are relevant to the query? Answer with the passage numbers only, "
            "separated by commas, e.g. [2], [5]."
        )
        prompts.append([{"role": "user", "content": user}])
    return prompts, "scifact" if loaded else "synthetic"


def _plain(backend, prompts, max_new_tokens: int) -> tuple[float, int]:
    """One prompt at a time through ``model.generate()``: no padding, no batching."""
    import torch

    tok, model = backend.tokenizer, backend.model
    out_tokens = 0
    start = time.perf_counter()
    for messages in prompts:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(backend.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        out_tokens += out.shape[1] - enc["input_ids"].shape[1]
    return time.perf_counter() - start, out_tokens


def bench_annotation(n_prompts: int = 16, batch_size: int = 8, max_new_tokens: int = 32,
                     model: str = "smollm2-135m-instruct", backend=None) -> dict:
    from uptrain.annotate.backends import GenerationParams, TransformersBackend

    if backend is None:
        backend = TransformersBackend(model=model, batch_size=batch_size)
    backend.batch_size = batch_size
    prompts, source = relsel_prompts(n_prompts)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    backend.generate(prompts[:2], params)  # warm-up: first calls pay for allocations
    _plain(backend, prompts[:1], max_new_tokens)

    start = time.perf_counter()
    gens = backend.generate(prompts, params)
    t_batched = time.perf_counter() - start
    batched_tokens = sum(g.output_tokens for g in gens)
    t_plain, plain_tokens = _plain(backend, prompts, max_new_tokens)

    def rates(seconds: float, tokens: int) -> dict:
        return {
            "seconds": round(seconds, 3),
            "prompts_per_s": round(n_prompts / seconds, 3),
            "passages_judged_per_s": round(n_prompts * PASSAGES_PER_PROMPT / seconds, 3),
            "output_tokens_per_s": round(tokens / seconds, 2),
            "output_tokens": int(tokens),
        }

    return {
        "model": backend.model_name,
        "device": backend.device,
        "dtype": backend.spec()["dtype"],
        "threads": __import__("torch").get_num_threads(),
        "text_source": source,
        "prompts": n_prompts,
        "passages_per_prompt": PASSAGES_PER_PROMPT,
        "mean_prompt_tokens": round(sum(g.prompt_tokens for g in gens) / len(gens), 1),
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "batched": rates(t_batched, batched_tokens),
        "plain_generate": rates(t_plain, plain_tokens),
        "ratio_prompts_per_s": round(t_plain / t_batched, 3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from uptrain.annotate.backends import TransformersBackend

    backend = TransformersBackend(model=args.model, batch_size=args.batch_size[0])
    results = [bench_annotation(args.prompts, bs, args.max_new_tokens, backend=backend) for bs in args.batch_size]
    text = json.dumps(results if len(results) > 1 else results[0], indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
