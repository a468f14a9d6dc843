"""Annotation throughput and agreement: one ``model.generate()`` call per prompt at fp32 (the
baseline) against the backends as the annotation pipeline runs them.

    python -m uptrain.annotate.backends.bench --prompts 16 --batch-size 8

Every row runs the same model (SmolLM2-135M-Instruct), the same prompts and greedy decoding.
The prompts are the pipeline's own RelSel prompts (:class:`uptrain.annotate.prompts.PromptRenderer`,
the default prompt version: system message, instruction, question, 8 numbered passages of about
40 words). Passages come from SciFact when ``$UPTRAIN_DATA/irds/beir/scifact/source.zip``
exists, else from synthetic text. Each row's answers are parsed with the pipeline's parser
(:func:`uptrain.annotate.parse.parse_selection`) and compared with the baseline's.
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
DEFAULT_PROMPT_VERSION = "v1"  # conf/annotator/transformers.yaml


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


def relsel_prompts(n_prompts: int, prompt_version: str = DEFAULT_PROMPT_VERSION) -> tuple[list[list[dict]], str]:
    """The pipeline's RelSel prompts over windows of 8 passages (first 40 words each)."""
    from uptrain.annotate.prompts import PromptRenderer

    loaded = _scifact()
    docs, queries = loaded if loaded else _synthetic(n_prompts * PASSAGES_PER_PROMPT)
    renderer = PromptRenderer(version=prompt_version)
    prompts = []
    for i in range(n_prompts):
        start = (i * PASSAGES_PER_PROMPT) % max(1, len(docs) - PASSAGES_PER_PROMPT)
        passages = [docs[start + k] for k in range(PASSAGES_PER_PROMPT)]
        prompts.append(renderer.render("relsel", queries[i % len(queries)], passages, max_words=WORDS_PER_PASSAGE))
    return prompts, "scifact" if loaded else "synthetic"


def _plain(backend, prompts, max_new_tokens: int) -> tuple[float, list]:
    """The baseline: one prompt at a time through ``model.generate()`` at fp32, no padding, no batching,
    no cache reuse across prompts."""
    import torch

    from uptrain.annotate.backends.base import Generation

    tok, model = backend.tokenizer, backend.model
    eos = set(backend.eos_ids)
    gens = []
    start = time.perf_counter()
    for messages in prompts:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(backend.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        n = next((k + 1 for k, t in enumerate(new) if t in eos), len(new))
        gens.append(Generation(tok.decode(new[:n], skip_special_tokens=True), enc["input_ids"].shape[1], n))
    return time.perf_counter() - start, gens


def _default_config() -> dict:
    """The shipped transformers annotator's backend settings (conf/annotator/transformers.yaml)."""
    from omegaconf import OmegaConf

    from uptrain.annotate.prompts import default_template_root

    path = default_template_root().parent / "transformers.yaml"
    return dict(OmegaConf.to_container(OmegaConf.load(path))["backend"]) if path.is_file() else {}


def _timed(backend, prompts, params) -> tuple[float, list]:
    start = time.perf_counter()
    gens = backend.generate(prompts, params)
    return time.perf_counter() - start, gens


def bench_annotation(n_prompts: int = 16, batch_size: int = 8, max_new_tokens: int = 32,
                     model: str = "smollm2-135m-instruct", backend=None, llamacpp: bool | None = None) -> dict:
    """Throughput and agreement of the annotator paths on the same ``n_prompts`` RelSel prompts.

    Returns a dict:

    * ``model``, ``device``, ``threads``, ``cpu_bf16_flags``, ``auto_resolves_to`` (what
      ``dtype: auto`` picks here), ``text_source`` (scifact | synthetic), ``prompt_version``,
      ``prompts``, ``passages_per_prompt``, ``mean_prompt_tokens``, ``batch_size``, ``max_new_tokens``;
    * ``rows``: one dict per path, in this order (a path that cannot run here is absent and named
      in ``skipped``):

      - ``baseline_fp32_generate``: one ``model.generate()`` per prompt, fp32;
      - ``transformers_fp32``: the batched TransformersBackend, fp32, no prefix cache;
      - ``transformers_bf16``: the same in bf16 (fp32 weights, bf16 autocast), no prefix cache;
      - ``transformers_bf16_prefix``: bf16 with the shared-prefix cache;
      - ``transformers_fp32_prefix``: fp32 with the shared-prefix cache;
      - ``llamacpp``: the LlamaCppBackend on the packaged GGUF (when llama-cpp-python is installed),

      each with ``seconds``, ``prompts_per_s``, ``passages_judged_per_s``, ``output_tokens``,
      ``output_tokens_per_s``, ``ratio_to_baseline`` (prompts/s over the baseline's),
      ``selections_differ`` (prompts whose parsed selection differs from the baseline's),
      ``selections_differ_share``, ``unparseable`` (answers with no usable passage number) and
      ``texts_differ`` (raw answers not identical to the baseline's); the prefix rows also carry
      ``prefix_cache`` (batches with a reused prefix, tokens reused);
    * ``skipped``: ``{row: reason}``;
    * ``default``: the row the shipped annotator config (conf/annotator/transformers.yaml) runs
      here, with ``default_dtype``, and for the callers of the
      earlier layout ``batched`` / ``plain_generate`` (that row's and the baseline's rates) and
      ``ratio_prompts_per_s`` (their ratio).

    Timings on a shared machine are noisy; each path runs once after a warm-up on two prompts.
    """
    from uptrain import precision
    from uptrain.annotate.backends import GenerationParams, TransformersBackend
    from uptrain.annotate.backends.llamacpp_backend import llamacpp_installed
    from uptrain.annotate.parse import ParseStats, parse_selection

    precision.set_threads()
    if backend is None:
        backend = TransformersBackend(model=model, batch_size=batch_size, dtype="fp32")
    backend.batch_size = batch_size
    prompts, source = relsel_prompts(n_prompts)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    _plain(backend, prompts[:1], max_new_tokens)  # warm-up: first calls pay for allocations

    rows: dict[str, dict] = {}
    outputs: dict[str, list] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    seconds["baseline_fp32_generate"], outputs["baseline_fp32_generate"] = _plain(backend, prompts, max_new_tokens)

    variants = [("transformers_fp32", "fp32", False), ("transformers_bf16", "bf16", False),
                ("transformers_bf16_prefix", "bf16", True), ("transformers_fp32_prefix", "fp32", True)]
    saved = (backend.dtype, backend.prefix_cache)
    prefix_info = {}
    try:
        for name, dtype, prefix in variants:
            backend.dtype, backend.prefix_cache = dtype, prefix
            backend._prefixes.clear()
            backend.generate(prompts[:2], params)  # warm-up (and the prefix computed once, as in a run)
            before = dict(backend.stats.extra["prefix_cache"])
            seconds[name], outputs[name] = _timed(backend, prompts, params)
            after = backend.stats.extra["prefix_cache"]
            if prefix:
                prefix_info[name] = {k: after[k] - before[k] for k in ("batches", "batches_with_prefix",
                                                                        "prefixes_computed", "prompt_tokens_reused")}
    finally:
        backend.dtype, backend.prefix_cache = saved
        backend._prefixes.clear()

    use_llamacpp = llamacpp_installed() if llamacpp is None else llamacpp
    if use_llamacpp:
        from uptrain.annotate.backends.llamacpp_backend import LlamaCppBackend

        try:
            llm = LlamaCppBackend(model=model)
            llm.generate(prompts[:2], params)
            before = dict(llm.stats.extra["prefix_cache"])
            seconds["llamacpp"], outputs["llamacpp"] = _timed(llm, prompts, params)
            prefix_info["llamacpp"] = {k: v - before[k] for k, v in llm.stats.extra["prefix_cache"].items()}
        except Exception as exc:  # noqa: BLE001 - the other rows still count; the failure is reported
            skipped["llamacpp"] = f"failed: {exc.__class__.__name__}: {exc}"
    else:
        skipped["llamacpp"] = "llama-cpp-python is not installed (pip install .[llamacpp])"

    base_sel = [parse_selection(g.text, PASSAGES_PER_PROMPT) for g in outputs["baseline_fp32_generate"]]
    base_texts = [g.text for g in outputs["baseline_fp32_generate"]]
    t_base = seconds["baseline_fp32_generate"]
    for name, gens in outputs.items():
        t = seconds[name]
        tokens = sum(g.output_tokens for g in gens)
        stats = ParseStats()
        selections = []
        for g in gens:
            sel = parse_selection(g.text, PASSAGES_PER_PROMPT)
            stats.record(g.text, sel)
            selections.append(sel)
        differ = sum(a != b for a, b in zip(selections, base_sel))
        rows[name] = {
            "seconds": round(t, 3),
            "prompts_per_s": round(n_prompts / t, 3),
            "passages_judged_per_s": round(n_prompts * PASSAGES_PER_PROMPT / t, 3),
            "output_tokens": int(tokens),
            "output_tokens_per_s": round(tokens / t, 2),
            "ratio_to_baseline": round(t_base / t, 3),
            "selections_differ": int(differ),
            "selections_differ_share": round(differ / n_prompts, 4),
            "texts_differ": int(sum(g.text != b for g, b in zip(gens, base_texts))),
            "unparseable": stats.unparseable,
            **({"prefix_cache": prefix_info[name]} if name in prefix_info else {}),
        }

    resolved = precision.resolve_dtype("auto", backend.device)
    shipped = _default_config()
    dtype = precision.resolve_dtype(shipped.get("dtype", "fp32"), backend.device)
    default = f"transformers_{dtype}{'_prefix' if shipped.get('prefix_cache', True) else ''}"
    gens = outputs["baseline_fp32_generate"]
    return {
        "model": backend.model_name,
        "device": backend.device,
        "threads": __import__("torch").get_num_threads(),
        "cpu_bf16_flags": precision.describe()["cpu_bf16_flags"],
        "auto_resolves_to": resolved,
        "text_source": source,
        "prompt_version": DEFAULT_PROMPT_VERSION,
        "prompts": n_prompts,
        "passages_per_prompt": PASSAGES_PER_PROMPT,
        "mean_prompt_tokens": round(sum(g.prompt_tokens for g in gens) / len(gens), 1),
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "rows": rows,
        "skipped": skipped,
        "default": default,
        "default_dtype": dtype,
        "dtype": dtype,  # the earlier layout's name for it
        "batched": rows[default],
        "plain_generate": rows["baseline_fp32_generate"],
        "ratio_prompts_per_s": rows[default]["ratio_to_baseline"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--no-llamacpp", action="store_true", help="leave the llama.cpp row out")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from uptrain.annotate.backends import TransformersBackend

    backend = TransformersBackend(model=args.model, batch_size=args.batch_size[0], dtype="fp32")
    results = [bench_annotation(args.prompts, bs, args.max_new_tokens, model=args.model, backend=backend,
                                llamacpp=False if args.no_llamacpp else None) for bs in args.batch_size]
    text = json.dumps(results if len(results) > 1 else results[0], indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
