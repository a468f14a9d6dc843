"""The ``rag`` evaluation path: the experiment's ranking judged by the answers an LLM writes from it.

Zhang et al. (arXiv 2504.05220) evaluate every retriever twice: by retrieval measures and by
RAG answer quality (their Table 3: MS MARCO QA, top-1, BLEU-3/4 and ROUGE-L; Table 5: NQ and
HotpotQA, top-5, answer recall, EM and F1). For every QA collection (``rag.collections``, or
every collection of ``eval.groups`` that carries gold answers), this path takes the
experiment's final ranking (first stage, reranked when configured), and for each ``k`` of
``rag.k`` has the generator (``rag.generator``: an annotator backend config) answer each
question from the top-k passages (:class:`uptrain.rag.generate.GenerateStage`, cached and
resumable). It then scores the answers against the gold answers (:mod:`uptrain.rag.measures`:
EM and F1 with SQuAD's normalisation, ROUGE-L, corpus BLEU-3/4) and the ranking by answer
recall@k (a gold answer string in the top-k passages) for each k of ``rag.recall_k``.

Results: group ``rag``, one row per collection and k (``<collection>@<k>``), with per-question
values, so the baseline's +/- and the second baseline's dagger markers (paired t-tests) apply
as to retrieval measures. ``metrics.json`` gets ``rag.<collection>`` with ``EM``, ``F1``,
``ROUGE-L``, ``BLEU-3``, ``BLEU-4`` at ``rag.primary_k`` (default 5, the paper's Table 5 depth),
``answer_recall@<k>`` for each recall k, the same per k under ``at_k``, the references
(``rag.references``: ``gold``, the judged passages, an upper bound; ``none``, closed book) under
``references``, and the generator's cost.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from uptrain.errors import ConfigError
from uptrain.evaluate.metrics import EvalResult
from uptrain.evaluate.paths import EvalContext, EvalPath, PathResult
from uptrain.rag.generate import CONTEXTS, GenerateStage, question_sample, top_passages

log = logging.getLogger("uptrain")

ANSWER_MEASURES = ("EM", "F1", "ROUGE-L", "BLEU-3", "BLEU-4")
REFERENCES = tuple(c for c in CONTEXTS if c != "run")


def _ints(value: Any, where: str) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where} must be a list of integers of at least 1, got {OmegaConf.to_container(value) if OmegaConf.is_config(value) else value!r}")
        out.append(int(v))
    if not out:
        raise ConfigError(f"{where} is empty: give at least one depth, e.g. [1, 5]")
    return list(dict.fromkeys(out))


class RagPath(EvalPath):
    """Answers generated from this run's top-k passages, scored against gold answers (see the module docstring)."""

    name = "rag"

    # --- configuration ----------------------------------------------------------
    @staticmethod
    def settings(cfg: DictConfig) -> dict:
        rag = cfg.get("rag")
        if rag is None:
            raise ConfigError("the rag path needs a `rag:` block (see conf/config.yaml)")
        ks = _ints(rag.get("k", [1, 5]), "rag.k")
        primary = rag.get("primary_k", ks[-1])
        if primary not in ks:
            raise ConfigError(f"rag.primary_k ({primary!r}) must be one of rag.k ({ks})")
        recall = sorted(set(_ints(rag.get("recall_k", [1, 5, 10, 20]), "rag.recall_k")) | set(ks))
        refs = list(rag.get("references") or [])
        bad = [r for r in refs if r not in REFERENCES]
        if bad:
            raise ConfigError(f"rag.references may name {', '.join(REFERENCES)} (gold: the judged passages, an upper "
                              f"bound; none: closed book), got {bad}")
        if max(recall) > int(cfg.eval.depth):
            raise ConfigError(f"rag.recall_k reaches {max(recall)}, beyond eval.depth ({cfg.eval.depth}), the depth runs are cut at")
        generator = rag.get("generator")
        if generator is None:
            raise ConfigError("rag.generator is empty: give an annotator-style config (backend, generation, prompt_version)")
        return {
            "k": ks, "primary_k": int(primary), "recall_k": recall, "references": refs,
            "max_questions": rag.get("max_questions"), "seed": int(rag.get("seed", 0)),
            "first_line": bool(rag.get("first_line", True)), "batch_queries": int(rag.get("batch_queries", 8)),
            "memo": bool(rag.get("share_answers", True)),
            "generator": OmegaConf.to_container(generator, resolve=True),
            "collections": list(rag.collections) if rag.get("collections") else None,
        }

    @staticmethod
    def _collections(cfg: DictConfig, settings: dict) -> list[str]:
        known = cfg.eval.collections
        if settings["collections"] is not None:
            names = settings["collections"]
            for n in names:
                if n not in known:
                    raise ConfigError(f"rag.collections names '{n}', which is not in eval.collections (known: "
                                      f"{', '.join(sorted(known))})")
            explicit = True
        else:
            names = list(dict.fromkeys(n for ns in (cfg.eval.groups or {}).values() for n in (ns or [])))
            explicit = False
        with_answers = []
        for n in names:
            if n not in known:
                continue  # the retrieval path names it
            try:
                source = instantiate(known[n])
            except Exception:  # noqa: BLE001 - the retrieval path reports a broken collection config
                continue
            if getattr(source, "provides_answers", lambda: False)():
                with_answers.append(n)
            elif explicit:
                raise ConfigError(
                    f"rag.collections names '{n}', which carries no gold answers: the RAG path needs a QA collection "
                    "(uptrain.data.SquadSource for the SQuAD JSON layout, a BEIR folder with an answers.jsonl of "
                    '{"query_id": ..., "answers": [...]} rows beside corpus.jsonl, or TrecSource with answers: PATH)'
                )
        if not with_answers:
            raise ConfigError(
                f"the rag path found no QA collection among {names or 'eval.groups (empty)'}: add one with gold answers "
                "(e.g. eval.groups.qa=[squad_test], or '+eval.collections.NAME={_target_: uptrain.data.BeirFolderSource, "
                "path: DIR, name: NAME}' with DIR/answers.jsonl beside corpus.jsonl, and eval.groups.qa=[NAME]), "
                "or name them with rag.collections"
            )
        return with_answers

    def _stage(self, settings: dict, k: int, context: str, memo_dir=None) -> GenerateStage:
        return GenerateStage(settings["generator"], k=k, context=context, max_questions=settings["max_questions"],
                             seed=settings["seed"], batch_queries=settings["batch_queries"],
                             first_line=settings["first_line"], memo_dir=memo_dir)

    def validate(self, cfg: DictConfig) -> None:
        settings = self.settings(cfg)
        self._collections(cfg, settings)
        self._stage(settings, settings["primary_k"], "run").validate()  # the generator's model and extras

    # --- running ----------------------------------------------------------------
    def _scores(self, generated, golds, recall, measures, counts: dict | None = None) -> EvalResult:
        from uptrain.rag.measures import score_answers

        predictions = {q: r["answer"] for q, r in generated.value["answers"].items()}
        scores = score_answers(predictions, golds)
        if counts is not None:
            counts.update(scores.counts)
        per_query = {m: dict(scores.per_query[m]) for m in ANSWER_MEASURES}
        aggregate = {m: float(scores.aggregate[m]) for m in ANSWER_MEASURES}
        if recall is not None:
            for m in recall.measures:
                per_query[m] = dict(recall.per_query[m])
                aggregate[m] = float(recall.aggregate[m])
        return EvalResult(measures=[m for m in measures if m in per_query], aggregate=aggregate,
                          per_query=per_query, num_queries=int(scores.counts.get("questions", len(golds))))

    def run(self, ctx: EvalContext) -> PathResult:
        from uptrain.rag.measures import answer_recall

        settings = self.settings(ctx.cfg)
        out = PathResult()
        recall_names = [f"answer_recall@{k}" for k in settings["recall_k"]]
        measures = list(ANSWER_MEASURES) + recall_names
        out.measures = measures
        out.results["rag"] = {}
        out.metrics["rag"] = {}
        keep = ctx.run_dir / "rag"
        keep.mkdir(parents=True, exist_ok=True)
        rows = []
        shared = None  # one generator model for every stage of this path (loaded by the first that builds)
        memo = ctx.runner.cache.root / "rag_memo" if settings["memo"] else None  # answers shared by prompt

        def run_stage(stage, deps, label):
            nonlocal shared
            stage._backend = shared
            artifact = ctx.runner.run(stage, deps, label=label)
            shared = stage._backend or shared
            return artifact

        for name in self._collections(ctx.cfg, settings):
            data, run = ctx.data(name), ctx.ranked(name)
            collection = data.value
            questions = question_sample(collection, settings["max_questions"], settings["seed"])
            if not questions:
                raise ConfigError(f"collection '{name}' has no question with a gold answer (its answers file is empty "
                                  "or names no question of its qrels)")
            golds = {q: collection.answers[q] for q in questions}
            depth = max(settings["recall_k"])
            rankings = {q: top_passages(run.value, q, depth) for q in questions}
            recall = answer_recall(rankings, collection.docs, golds, settings["recall_k"])
            entry: dict[str, Any] = {"questions": len(questions), "k": settings["primary_k"], "at_k": {},
                                     "references": {}, "recall_counts": dict(recall.counts)}
            for m in recall_names:
                entry[m] = float(recall.aggregate[m])
            for k in settings["k"]:
                generated = run_stage(self._stage(settings, k, "run", memo), {"data": data, "run": run}, f"rag_{name}_top{k}")
                shutil.copyfile(generated.path / "answers.jsonl", keep / f"{name}_top{k}.jsonl")
                counts: dict = {}
                result = self._scores(generated, golds, recall, measures, counts)
                out.results["rag"][f"{name}@{k}"] = result
                out.queries[f"{name}@{k}"] = {q: collection.queries[q] for q in questions}
                cost = generated.value["stats"]
                entry["at_k"][str(k)] = {**{m: result.aggregate[m] for m in ANSWER_MEASURES},
                                         f"answer_recall@{k}": result.aggregate[f"answer_recall@{k}"],
                                         "seconds_per_question": cost["seconds_per_question"],
                                         "empty_answers": cost["empty_answers"],
                                         "label_removed": cost.get("label_removed", 0),
                                         "answers_reused": cost.get("answers_reused", 0),
                                         "cut_to_first_line": cost.get("cut_to_first_line", 0),
                                         "counts": counts,
                                         "prompts_truncated": cost["truncation"].get("prompts_truncated", 0)}
                if k == settings["primary_k"]:
                    entry.update({m: result.aggregate[m] for m in ANSWER_MEASURES})
                rows.append((f"{name}, this run, top-{k}", result.aggregate, cost, k))
            for ref in settings["references"]:
                k = settings["primary_k"]
                generated = run_stage(self._stage(settings, k, ref, memo), {"data": data}, f"rag_{name}_{ref}")
                shutil.copyfile(generated.path / "answers.jsonl", keep / f"{name}_{ref}.jsonl")
                result = self._scores(generated, golds, None, measures)
                cost = generated.value["stats"]
                entry["references"][ref] = {**{m: result.aggregate[m] for m in ANSWER_MEASURES},
                                            "k": k if ref == "gold" else 0,
                                            "seconds_per_question": cost["seconds_per_question"]}
                label = f"gold passages (up to {k})" if ref == "gold" else "no passage (closed book)"
                rows.append((f"{name}, {label}", result.aggregate, cost, None))
            out.metrics["rag"][name] = entry
        out.metrics["rag_generator"] = self._stage(settings, settings["primary_k"], "run").annotator_spec()
        out.sections["RAG answers"] = self._section(settings, rows)
        return out

    @staticmethod
    def _section(settings: dict, rows: list) -> str:
        backend = settings["generator"].get("backend", {})
        model = backend.get("model", backend.get("_target_", "?"))
        header = ("| answers from | EM | F1 | ROUGE-L | BLEU-4 | answer recall@k | s per generated question | "
                  "answers reused | empty answers |")
        lines = [header, "|" + " --- |" * 9]
        for label, agg, cost, k in rows:
            recall = f"{agg[f'answer_recall@{k}']:.4f}" if k is not None else "n/a"
            per = cost.get("seconds_per_generated_question", cost["seconds_per_question"])
            lines.append(f"| {label} | {agg['EM']:.4f} | {agg['F1']:.4f} | {agg['ROUGE-L']:.4f} | {agg['BLEU-4']:.4f} | "
                         f"{recall} | {per:.2f} | {cost.get('answers_reused', 0)} of {cost['questions']} | "
                         f"{cost['empty_answers']} |")
        return (
            f"Generator: `{model}` (greedy, prompt `rag_answer`, answers cut to their first line: "
            f"{settings['first_line']}). EM and F1 use SQuAD's answer normalisation (max over the gold answers); "
            "BLEU is corpus-level; answer recall@k: a gold answer occurs in the top-k passages. A small generator "
            "bounds every row: compare runs by answer recall and by their distance to the gold-passage row.\n\n"
            + "\n".join(lines)
        )
