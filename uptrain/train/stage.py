"""Model stages: the encoder as shipped (``BaseModelStage``) and one training phase (``TrainStage``).

A training phase is warm-started from its ``init`` model artifact, so phases
chain (phase 2 of a curriculum starts from phase 1) and each phase has its own
cache key and checkpoints. A killed phase resumes from ``last.ckpt`` in its
work directory; the trained encoder is published only when training finished.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from uptrain.graph import Artifact, Stage
from uptrain.model.biencoder import BiEncoder
from uptrain.labels.sources import LabelConfigError, build_examples, is_soft, parse_spec, required_inputs
from uptrain.train.dataset import GroupDataset
from uptrain.train.module import BiEncoderModule, GroupCollator

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


class BaseModelStage(Stage[BiEncoder]):
    """The encoder as shipped: settings only, weights stay where the backbone lives."""

    name = "model"

    def __init__(self, model_cfg: DictConfig | dict):
        self.model_cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)

    def spec(self) -> dict:
        return {k: v for k, v in self.model_cfg.items() if k != "_target_"}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        model = instantiate(self.model_cfg)  # loads once, so a missing model fails here, clearly
        model.save(out, with_weights=False)

    def load(self, path: Path) -> BiEncoder:
        return BiEncoder.from_artifact(path)


class TrainStage(Stage[BiEncoder]):
    name = "train"
    version = 2  # 2: soft labels (REPLUG) and the KL loss's finite gradient for far-apart utilities

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
        soft_loss = getattr(instantiate(self.loss_cfg), "name", "") == "kl"
        if soft_loss != is_soft(labels):
            raise LabelConfigError(
                f"training phase '{phase}': labels '{labels}' "
                + ("are REPLUG utilities and need loss=kl" if is_soft(labels) else "are positive sets; loss=kl needs labels=replug")
            )

    def spec(self) -> dict:
        return {
            "labels": self.labels,
            "human_ratio": self.human_ratio,
            "loss": self.loss_cfg,
            "sampling": self.sampling_cfg,
            "trainer": {k: v for k, v in self.trainer_cfg.items() if k not in _TRAINER_KEYS_OUTSIDE_KEY},
            "hparams": {k: v for k, v in self.hparams.items() if k not in ("checkpoint_every_n_steps", "num_workers")},
            "seed": self.seed,
        }

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        hp = self.hparams
        L.seed_everything(self.seed, workers=True, verbose=False)
        collection = inputs["data"].value
        model: BiEncoder = inputs["init"].value
        eval_length = model.passage_max_length
        if hp.get("passage_max_length"):  # shorter passages while training only (cost is quadratic)
            model.passage_max_length = int(hp["passage_max_length"])
        values = {name: inputs[name].value for name in required_inputs(self.labels)}
        examples, label_stats = build_examples(
            self.labels, inputs["pool"].value, values, human_ratio=self.human_ratio, seed=self.seed
        )
        log.info("[train %s] labels %s: %s", self.phase, self.labels, label_stats.as_dict())
        dataset = GroupDataset(
            examples, collection.docs, instantiate(self.sampling_cfg),
            group_size=hp["group_size"], seed=self.seed,
        )
        if dataset.skipped_no_positive:
            log.warning("[train %s] %d queries without a positive label skipped", self.phase, dataset.skipped_no_positive)
        devices = self.trainer_cfg.get("devices", 1)
        multi = isinstance(devices, int) and devices > 1 or isinstance(devices, (list, tuple)) and len(devices) > 1
        loader = DataLoader(
            dataset,
            batch_size=hp["batch_size"],
            shuffle=True,
            collate_fn=GroupCollator(model),
            num_workers=hp.get("num_workers", 0),
            drop_last=multi,  # equal batch shapes on every rank for the cross-device gather
        )  # shuffled from the seed_everything state (a torch.Generator cannot cross ddp_spawn)
        module = BiEncoderModule(
            model, instantiate(self.loss_cfg), lr=hp["lr"], weight_decay=hp.get("weight_decay", 0.01),
            warmup_ratio=hp.get("warmup_ratio", 0.1), in_batch_negatives=hp.get("in_batch_negatives", True),
            cross_device=hp.get("cross_device", True),
        )
        ckpt_dir = work / "checkpoints"
        checkpoint = ModelCheckpoint(
            dirpath=ckpt_dir, save_last=True, save_top_k=1,
            every_n_train_steps=hp.get("checkpoint_every_n_steps") or None,
        )
        logger = self.logger_factory(self.phase) if self.logger_factory else False
        trainer: L.Trainer = instantiate(
            self.trainer_cfg, callbacks=[checkpoint, ProgressFile(work / "progress.json")], logger=logger, default_root_dir=str(work),
            enable_checkpointing=True,
        )
        last = ckpt_dir / "last.ckpt"
        resume = str(last) if last.is_file() else None
        if resume:
            log.info("[train %s] resuming from %s", self.phase, resume)
        t0 = time.time()
        trainer.fit(module, train_dataloaders=loader, ckpt_path=resume)
        if trainer.interrupted or trainer.state.status.value != "finished":
            raise TrainingInterrupted(
                f"training phase '{self.phase}' stopped at step {trainer.global_step}; "
                f"re-run the same command to resume from {last}"
            )
        model.passage_max_length = eval_length
        model.save(out, with_weights=True)
        progress = json.loads((work / "progress.json").read_text())
        stats = {
            "phase": self.phase,
            "queries": len(dataset),
            "labels": self.labels,
            "human_ratio": self.human_ratio,
            "label_stats": label_stats.as_dict(),
            "skipped_no_positive": dataset.skipped_no_positive,
            **progress,
            "seconds": round(time.time() - t0, 1),
            "resumed_from": resume,
        }
        (out / "train_stats.json").write_text(json.dumps(stats, indent=2))

    def load(self, path: Path) -> BiEncoder:
        return BiEncoder.from_artifact(path)
