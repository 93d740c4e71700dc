"""`edgetl finetune`: data -> backbone + new head -> trained run folder, for images and text.

The run is built in ``.<out>.partial`` beside ``out`` (checkpoints live there, so ``--resume``
continues an interrupted run) and renamed to ``out`` only when every file is written. Under ``torchrun``
every rank trains (see :mod:`edgetl.train.distributed`) and rank 0 alone writes the folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from edgetl.config import FinetuneConfig, dump_yaml
from edgetl.errors import ConfigError, RunFolderError
from edgetl.fsutil import check_out_dir, write_json, write_text
from edgetl.runfolder import save_run_files
from edgetl.train import distributed, feature_cache
from edgetl.train.freezing import apply_freezing, count_trainable, freeze_norm_stats, trainable_blocks
from edgetl.train.loop import predict_logits, to_device, train_one_epoch
from edgetl.train.metrics import classification_metrics
from edgetl.train.optim import build_optimizer, layerwise_param_groups
from edgetl.train.tasks import TASKS, Built, Task, class_weights

log = logging.getLogger("edgetl")
CHECKPOINT = "checkpoint.pt"


@dataclass
class FitState:
    """What training carries from epoch to epoch (and into a checkpoint)."""

    epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def partial_dir(out: Path) -> Path:
    """The staging folder of a run: hidden, beside ``out``."""
    return out.parent / f".{out.name}.partial"


def finetune(cfg: FinetuneConfig, out: str | Path, *, overwrite: bool = False, resume: bool = False) -> dict:
    """Train a classifier as ``cfg`` says and write a run folder at ``out``.

    Returns:
        The metrics written to ``metrics.json`` (on every rank under ``torchrun``).
    """
    with distributed.session():
        return _finetune(cfg, out, overwrite, resume)


def _finetune(cfg: FinetuneConfig, out: str | Path, overwrite: bool, resume: bool) -> dict:
    cfg.validate()
    task = TASKS.get(cfg.data.task)
    task.check_backbone(cfg.model.backbone)  # an unknown name fails before any work, listing the known ones
    out = check_out_dir(out, overwrite)
    _seed_everything(cfg.train.seed, cfg.train.threads)
    start = time.perf_counter()
    data = _load_data(task, cfg)
    built = _build(task, cfg, data.classes)
    work = _prepare_work_dir(out, resume, cfg)  # only once the inputs are known to be good
    state = _train(task, built, data, cfg, work)
    built.model.load_state_dict(state.best_state)
    metrics = _final_metrics(task, built, data, cfg, state)
    if cfg.train.baseline:
        metrics["baseline"] = _baselines(task, cfg, data)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    if distributed.current().main:
        _write_run(task, work, built, cfg, metrics)
        _publish(work, out)
        log.info("run folder written: %s (test accuracy %.4f)", out, metrics["test"]["accuracy"])
    distributed.barrier()  # every rank returns once the folder is in place
    return metrics


def _prepare_work_dir(out: Path, resume: bool, cfg: FinetuneConfig) -> Path:
    work = partial_dir(out)
    if not distributed.current().main:
        return work  # rank 0 alone reads and writes the staging folder
    if resume:
        if not (work / CHECKPOINT).is_file():
            raise RunFolderError(f"nothing to resume: no checkpoint in {work}", "run without --resume")
        saved = yaml.safe_load((work / "config.yaml").read_text("utf-8"))
        if saved != cfg.to_dict():
            changed = sorted(k for k in cfg.to_dict() if saved.get(k) != cfg.to_dict()[k])
            raise ConfigError(f"--resume needs the options of the interrupted run (changed: {', '.join(changed)})",
                              "repeat the original command with --resume, or start again without it")
        return work
    if work.exists():
        log.info("removing an earlier unfinished run at %s (use --resume to continue it)", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_text(work / "config.yaml", dump_yaml(cfg.to_dict()))
    return work


def _seed_everything(seed: int, threads: int | None) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    if threads:
        torch.set_num_threads(threads)


def _load_data(task: Task, cfg: FinetuneConfig) -> Any:
    data = task.load_data(cfg)
    s = data.summary()
    log.info("data %s: %d classes, train %d, val %d, test %d, skipped %d",
             s["source"], len(data.classes), s["train"], s["val"], s["test"], s["skipped"])
    return data


def _build(task: Task, cfg: FinetuneConfig, classes: list[str], pretrained: bool | None = None) -> Built:
    built = task.build(cfg, classes, pretrained)
    built.model.to(distributed.current().device)
    log.info("backbone %s: %s", cfg.model.backbone, built.weights.detail)
    freezes = cfg.train.mode == "feature-extract" or (cfg.train.mode == "fine-tune" and cfg.train.unfreeze is not None)
    if not built.weights.pretrained and freezes:
        log.warning("%s has random weights, so its frozen part computes random features: expect poor accuracy; "
                    "train every block instead (--mode fine-tune without --unfreeze)", cfg.model.backbone)
    return built


def _criterion(cfg: FinetuneConfig, train_labels: np.ndarray, num_classes: int) -> nn.Module:
    weight = class_weights(train_labels, num_classes) if cfg.train.class_weights else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.train.label_smoothing)


@dataclass
class Plan:
    """What an epoch trains on: the whole model on raw batches, or its tail on cached prefix outputs."""

    module: nn.Module
    train: DataLoader
    val: DataLoader


CACHE_MEMORY_LIMIT = 4 << 30


def _plan(task: Task, built: Built, data: Any, cfg: FinetuneConfig) -> Plan:
    """Cache the frozen prefix when its output never changes (no augmentation, fixed freezing)."""
    tcfg, depth = cfg.train, len(built.model.backbone.units)
    n = trainable_blocks(tcfg.mode, tcfg.unfreeze, depth - 1, 0, tcfg.progressive_every)
    fixed = tcfg.mode == "feature-extract" or (tcfg.mode == "fine-tune" and n < depth)
    augmented = cfg.data.augment if task.name == "image" else cfg.data.text_augment > 0
    if tcfg.mode == "feature-extract" and augmented:
        log.info("feature-extract trains the head on cached features: augmentation is not applied")
    # text batches are padded per batch, so only the pooled output (feature extraction) can be cached
    cacheable = tcfg.mode == "feature-extract" or (task.name == "image" and not cfg.data.augment)
    if fixed and cacheable:
        plan = _cached_plan(task, built, data, cfg, depth - n)
        if plan is not None:
            return plan
    train = task.loader(data.train, built, cfg, train=True, batch_size=tcfg.batch_size)
    return Plan(built.model, train, task.loader(data.val, built, cfg, train=False, batch_size=128))


def _cached_plan(task: Task, built: Built, data: Any, cfg: FinetuneConfig, cut: int) -> Plan | None:
    prefix = feature_cache.Prefix(built.model, cut)
    loaders = {split: task.loader(getattr(data, split), built, cfg, train=False, batch_size=128)
               for split in ("train", "val")}
    first = to_device(next(iter(loaders["val"]))[0])
    need = feature_cache.output_bytes(prefix, first, len(data.train) + len(data.val))
    if need > CACHE_MEMORY_LIMIT:
        log.info("frozen-prefix cache would need %.1f GB: training end to end instead", need / 1e9)
        return None
    t0 = time.perf_counter()
    for split, shuffle, bs in (("train", True, cfg.train.batch_size), ("val", False, 512)):
        key = feature_cache.cache_key(prefix, built.spec, data.fingerprint, split)
        x, y, _ = feature_cache.cached_outputs(prefix, distributed.eval_loader(loaders[split]), key, split)
        loaders[split] = feature_cache.tensor_loader(x, y, bs, shuffle, cfg.train.seed)
    log.info("frozen prefix (units 0-%d of %d) cached in %.1f s (%.0f MB); training the rest on it",
             cut - 1, len(built.model.backbone.units), time.perf_counter() - t0, need / 1e6)
    return Plan(feature_cache.Tail(built.model, cut), loaders["train"], loaders["val"])


def _train(task: Task, built: Built, data: Any, cfg: FinetuneConfig, work: Path) -> FitState:
    """The epoch loop, shared by end-to-end training and training on a cached frozen prefix.

    Each epoch draws the permutation of ``seed + epoch`` (a resumed run continues the same order); under
    ``torchrun`` each rank trains its share of every global batch through DistributedDataParallel and
    validates its shard of the validation split, gathered whole on every rank.
    """
    tcfg, model = cfg.train, built.model
    plan = _plan(task, built, data, cfg)
    train, val = distributed.train_loader(plan.train, tcfg.seed), distributed.eval_loader(plan.val)
    groups = layerwise_param_groups(model, tcfg.lr, tcfg.layer_decay, tcfg.weight_decay)
    optimizer, scheduler = build_optimizer(groups, tcfg, len(train))
    state = _load_checkpoint(work, model, optimizer, scheduler)
    criterion = _criterion(cfg, data.train.labels, len(data.classes)).to(distributed.current().device)
    depth = len(model.backbone.units) - 1
    distributed.seed_ranks(tcfg.seed)
    for epoch in range(state.epoch, tcfg.epochs):
        n = trainable_blocks(tcfg.mode, tcfg.unfreeze, depth, epoch, tcfg.progressive_every)
        frozen = apply_freezing(model, n)
        plan.module.train()
        freeze_norm_stats(frozen)
        distributed.set_epoch(train, epoch)
        stats = train_one_epoch(distributed.wrap(plan.module), train, optimizer, scheduler, criterion,
                                total=len(train), description=f"epoch {epoch + 1}/{tcfg.epochs}")
        distributed.average_buffers(model)
        logits, labels = predict_logits(plan.module, val, total=len(val), description="validate")
        stop = distributed.broadcast(_end_epoch(state, model, epoch, stats, logits, labels, data.classes, cfg,
                                                trainable=n))
        _save_checkpoint(work, model, optimizer, scheduler, state)
        if stop:
            break
    return state


def _end_epoch(state: FitState, model: nn.Module, epoch: int, stats, logits: np.ndarray, labels: np.ndarray,
               classes: list[str], cfg: FinetuneConfig, trainable: int) -> bool:
    """Record the epoch, keep the best weights; True when early stopping triggers."""
    val = classification_metrics(labels, logits.argmax(1), classes)
    row = {"epoch": epoch + 1, "train_loss": round(stats.loss, 5), "train_accuracy": round(stats.accuracy, 5),
           "val_accuracy": round(val["accuracy"], 5), "val_macro_f1": round(val["macro_f1"], 5),
           "trainable_blocks": trainable, "trainable_params": count_trainable(model)}
    state.history.append(row)
    state.epoch = epoch + 1
    if val["accuracy"] > state.best_score:
        state.best_score, state.best_epoch = val["accuracy"], epoch + 1
        state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    log.info("epoch %d: train loss %.4f acc %.4f | val acc %.4f macro-F1 %.4f%s", epoch + 1, stats.loss,
             stats.accuracy, val["accuracy"], val["macro_f1"], " (best)" if state.best_epoch == epoch + 1 else "")
    if epoch + 1 - state.best_epoch >= cfg.train.patience:
        log.info("early stop: no val improvement for %d epochs (best epoch %d)", cfg.train.patience, state.best_epoch)
        return True
    return False


def _save_checkpoint(work: Path, model, optimizer, scheduler, state: FitState) -> None:
    if not distributed.current().main:
        return
    blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": state.epoch, "best_score": state.best_score, "best_epoch": state.best_epoch,
            "best_state": state.best_state, "history": state.history, "rng": torch.get_rng_state()}
    tmp = work / f".{CHECKPOINT}.tmp"
    torch.save(blob, tmp)
    tmp.replace(work / CHECKPOINT)


def _load_checkpoint(work: Path, model, optimizer, scheduler) -> FitState:
    """Resume from rank 0's checkpoint (sent to every rank under ``torchrun``), or start afresh."""
    path = work / CHECKPOINT
    blob = distributed.main_only(
        lambda: torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None)
    if blob is None:
        return FitState()
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng"])
    log.info("resuming from %s after epoch %d", path, blob["epoch"])
    return FitState(epoch=blob["epoch"], best_score=blob["best_score"], best_epoch=blob["best_epoch"],
                    best_state=blob["best_state"], history=blob["history"])


def _evaluate(task: Task, built: Built, samples: Any, classes: list[str], cfg: FinetuneConfig,
              description: str) -> dict:
    loader = distributed.eval_loader(task.loader(samples, built, cfg, train=False, batch_size=128))
    logits, labels = predict_logits(built.model, loader, total=len(loader), description=description)
    return classification_metrics(labels, logits.argmax(1), classes)


def _final_metrics(task: Task, built: Built, data: Any, cfg: FinetuneConfig, state: FitState) -> dict:
    """Test-split metrics of the best checkpoint, with everything needed to read them."""
    test = _evaluate(task, built, data.test, data.classes, cfg, "test")
    log.info("test accuracy %.4f, macro-F1 %.4f (best epoch %d)", test["accuracy"], test["macro_f1"],
             state.best_epoch)
    spec = built.spec
    return {
        "task": task.name,
        "backbone": cfg.model.backbone,
        "weights": built.weights.to_dict(),
        "pretrained": built.weights.pretrained,
        "mode": cfg.train.mode,
        "params": sum(p.numel() for p in built.model.parameters()),
        "input_size": [spec.max_length] if spec.is_text else list(spec.input_size),
        "data": data.summary(),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "val_accuracy": state.best_score,
        "test": test,
        "history": state.history,
    }


def _baselines(task: Task, cfg: FinetuneConfig, data: Any) -> dict:
    """What transfer bought: a linear model on the raw input and, where the task says it is worth the
    time (images), the same backbone trained from random init."""
    if not task.scratch_baseline:
        log.info("baseline: linear model on the raw input")
        return {"linear": distributed.main_only(lambda: task.linear_baseline(data, cfg))}
    scratch_cfg = FinetuneConfig.from_dict(cfg.to_dict())
    scratch_cfg.model.weights, scratch_cfg.train.baseline = None, False
    # random weights are only worth something when every layer trains
    scratch_cfg.train.mode, scratch_cfg.train.unfreeze = "fine-tune", None
    log.info("baseline 1/2: %s from random init, same data and budget", cfg.model.backbone)
    _seed_everything(cfg.train.seed, cfg.train.threads)
    built = _build(task, scratch_cfg, data.classes, pretrained=False)
    scratch_dir = Path(tempfile.mkdtemp(prefix="edgetl-baseline-"))  # each rank's own (only rank 0 writes)
    try:
        state = _train(task, built, data, scratch_cfg, scratch_dir)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    built.model.load_state_dict(state.best_state)
    scratch = _evaluate(task, built, data.test, data.classes, cfg, "test (random init)")
    scratch.update(name=f"{cfg.model.backbone}, random init", mode=scratch_cfg.train.mode, epochs_run=state.epoch)
    log.info("baseline 2/2: linear model on the raw input")
    return {"random_init": scratch, "linear": distributed.main_only(lambda: task.linear_baseline(data, cfg))}


def _write_run(task: Task, work: Path, built: Built, cfg: FinetuneConfig, metrics: dict) -> None:
    """Weights, spec, architecture, config, task files, metrics and plots into the staging folder."""
    from edgetl.report.plots import plot_confusion, plot_history

    spec = built.spec
    arch = {"backbone": cfg.model.backbone, "num_classes": spec.num_classes, "dropout": cfg.model.dropout,
            "hidden": cfg.model.hidden, **task.save_extras(built, work)}
    save_run_files(work, built.model.state_dict(), spec, arch, cfg)
    plot_confusion(metrics["test"]["confusion_matrix"], spec.labels, work / "confusion_matrix.png",
                   title=f"{cfg.model.backbone}: test accuracy {metrics['test']['accuracy']:.2%}")
    plot_history(metrics["history"], work / "training_curves.png")
    write_json(work / "metrics.json", metrics)


def _publish(work: Path, out: Path) -> None:
    """Drop the checkpoint and move the finished run into place."""
    (work / CHECKPOINT).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    work.replace(out)
