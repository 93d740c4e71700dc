"""`edgetl distill`: a teacher's soft targets (and hidden states or features) train a small student.

A training task beside fine-tuning that shares its loop, data, run folder and reports: the student's
run folder has the fine-tune layout (``weights.safetensors``, ``model.json``, ``spec.json``,
``config.yaml`` with the student's fine-tune config, ``metrics.json``, plots), so ``edgetl export``
reads it unchanged; ``distill.yaml`` holds the whole distillation config, ``teacher/`` the teacher's
run when a registered backbone was fine-tuned into one first, and ``distillation.png`` the teacher /
student without KD / student with KD comparison.

Under ``torchrun`` every rank trains (see :mod:`edgetl.train.distributed`): the teacher-logit cache is
computed shard by shard (each rank runs the teacher on its strided share of the training split) and
gathered whole on every rank, since each epoch's permutation sends any sample to any rank. Rank 0 alone
evaluates the teacher, builds the comparison (exports, latency) and writes the folder.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgetl.config import DistillConfig, FinetuneConfig, dump_yaml
from edgetl.errors import ConfigError
from edgetl.fsutil import check_out_dir, write_json, write_text
from edgetl.models.student import STUDENT_FROM_TEACHER, distilbert_from_teacher, write_student_folder
from edgetl.models.weights import WeightsInfo
from edgetl.train import distributed
from edgetl.train import finetune as ft
from edgetl.train.distill_data import TeacherCache, kd_loader, teacher_outputs
from edgetl.train.distill_losses import FeatureProjection, KDWeights, feature_loss, hidden_cosine_loss, kd_loss
from edgetl.train.freezing import apply_freezing, freeze_norm_stats, trainable_blocks
from edgetl.train.loop import predict_logits, to_channels_last, to_device, train_one_epoch
from edgetl.train.metrics import classification_metrics
from edgetl.train.optim import build_optimizer, layerwise_param_groups
from edgetl.train.tasks import TASKS, Built, Task, text_augment
from edgetl.train.teachers import Teacher, TorchTeacher, classify_teacher, load_teacher

log = logging.getLogger("edgetl")
#: Largest in-memory teacher cache (logits and, for text, unpadded last hidden states).
CACHE_MEMORY_LIMIT = 2 << 30


def distill(cfg: DistillConfig, out: str | Path, *, overwrite: bool = False) -> dict:
    """Distil ``cfg.distill.teacher`` into the student ``cfg.model.backbone`` and write a run folder at ``out``.

    Returns:
        The metrics written to ``metrics.json`` (with a ``distill`` entry: the teacher, the loss, the cache,
        and the teacher / no-KD student / KD student comparison; on every rank under ``torchrun``).
    """
    with distributed.session():
        return _distill(cfg, out, overwrite)


def _distill(cfg: DistillConfig, out: str | Path, overwrite: bool) -> dict:
    cfg.validate()
    task = TASKS.get(cfg.data.task)
    ref = classify_teacher(cfg.distill.teacher, task.name)  # before any work: a bad name fails at once
    _check_student(task, cfg)
    out = check_out_dir(out, overwrite)
    student_cfg = cfg.student()
    ft._seed_everything(cfg.train.seed, cfg.train.threads)
    start = time.perf_counter()
    data = ft._load_data(task, student_cfg)
    work = ft.partial_dir(out)
    main = distributed.current().main
    if main:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    scratch = Path(tempfile.mkdtemp(prefix="edgetl-distill-"))
    try:
        teacher = _teacher(ref, cfg, data, work)
        if task.name == "text" and cfg.data.max_length is None and isinstance(teacher, TorchTeacher):
            student_cfg.data.max_length = teacher.spec.max_length  # the teacher's tokens, for the hidden loss
        metrics = _run(task, cfg, student_cfg, data, teacher, work, scratch)
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        if main:
            write_json(work / "metrics.json", metrics)
    except BaseException:
        if main:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if main:
        ft._publish(work, out)
        log.info("run folder written: %s (test accuracy %.4f)", out, metrics["test"]["accuracy"])
    distributed.barrier()
    return metrics


def _check_student(task: Task, cfg: DistillConfig) -> None:
    name = cfg.model.backbone
    if task.name == "image" and name == STUDENT_FROM_TEACHER:
        raise ConfigError(f"{STUDENT_FROM_TEACHER} is a text student", "use --task text, or an image backbone")
    if name != STUDENT_FROM_TEACHER:
        task.check_backbone(name)


def _teacher(ref: Any, cfg: DistillConfig, data: Any, work: Path) -> Teacher:
    """Open the teacher; a registered backbone is first fine-tuned on the student's data into ``work/teacher``."""
    path = Path(ref.ref)
    if ref.kind == "backbone":
        tcfg = FinetuneConfig.from_dict(cfg.student().to_dict() | {"model": {"backbone": ref.ref}})
        tcfg.train.epochs = cfg.distill.teacher_epochs or cfg.train.epochs
        log.info("teacher %s: fine-tuning it on the student's data first (%d epochs)", ref.ref, tcfg.train.epochs)
        path = work / "teacher"
        ft.finetune(tcfg, path, overwrite=True)
    elif ref.kind == "run" and distributed.current().main:
        _warn_other_split(path, cfg)
    return load_teacher("bundle" if ref.kind == "bundle" else "run", path, data.classes, cfg.data.task)


def _warn_other_split(path: Path, cfg: DistillConfig) -> None:
    from edgetl.runfolder import load_run

    d, t = cfg.data, load_run(path).config.data
    keys = ("data", "val_fraction", "test_fraction", "limit_per_class")
    if any(getattr(d, k) != getattr(t, k) for k in keys) or load_run(path).config.train.seed != cfg.train.seed:
        log.warning("the teacher %s was trained with other data options or seed: it may have seen the student's "
                    "test images, so its test accuracy here can read high", path)


def _run(task: Task, cfg: DistillConfig, student_cfg: FinetuneConfig, data: Any, teacher: Teacher, work: Path,
         scratch: Path) -> dict:
    from edgetl.train.distill_report import comparison, evaluate_teacher, write_comparison

    ft._seed_everything(cfg.train.seed, cfg.train.threads)  # the no-KD student starts from the same init
    built, extra = _build_student(task, cfg, student_cfg, data.classes, teacher, scratch)
    kd = KDRun(task, cfg, student_cfg, built, teacher, data)
    state = kd.fit()
    built.model.load_state_dict(state.best_state)
    metrics = ft._final_metrics(task, built, data, student_cfg, state)
    metrics["distill"] = {**kd.describe(), **extra, "config": dataclasses.asdict(cfg.distill)}
    kd.to_cpu()  # the teacher's evaluation, the exports and latencies run on the CPU, as in one process
    models = {"student_kd": metrics["test"]}
    if cfg.distill.compare:
        models["student_no_kd"] = _no_kd(task, cfg, student_cfg, data, teacher, scratch)
    models = {"teacher": distributed.main_only(lambda: evaluate_teacher(teacher, data, student_cfg)), **models}

    def report() -> dict:
        ft._write_run(task, work, built, student_cfg, metrics)
        write_text(work / "distill.yaml", dump_yaml(cfg.to_dict()))
        rows = comparison(models, work, teacher, built, data, cfg, scratch)
        write_comparison(rows, work / "distillation.png")
        return rows

    metrics["distill"]["comparison"] = distributed.main_only(report)
    return metrics


def _build_student(task: Task, cfg: DistillConfig, student_cfg: FinetuneConfig, classes: list[str],
                   teacher: Teacher, scratch: Path) -> tuple[Built, dict]:
    """A registered backbone with its usual weights, or ``distilbert_from_teacher`` from the teacher's layers."""
    if cfg.model.backbone != STUDENT_FROM_TEACHER:
        return ft._build(task, student_cfg, classes), {}
    if not isinstance(teacher, TorchTeacher):
        raise ConfigError(f"{STUDENT_FROM_TEACHER} copies the teacher's layers, which a bundle does not hold",
                          "pass the teacher's run folder (or a registered text backbone) as --teacher")
    tb, pretrained = teacher.model.backbone, cfg.distill.student_init == "pretrained"
    folder = scratch / "student-init"
    if not folder.is_dir():
        source = _pretrained_encoder(teacher) if pretrained else tb.model
        encoder, chosen = distilbert_from_teacher(source, cfg.distill.layers)
        write_student_folder(encoder, teacher.path / teacher.spec.tokenizer, tb.pooling, folder)
        (folder / "layers.txt").write_text(",".join(map(str, chosen)), encoding="utf-8")
    chosen = [int(i) for i in (folder / "layers.txt").read_text(encoding="utf-8").split(",")]
    local = FinetuneConfig.from_dict(student_cfg.to_dict())
    local.model.backbone = str(folder)
    built = task.build(local, classes)
    built.model.to(distributed.current().device)
    built.spec = built.spec.with_(backbone=STUDENT_FROM_TEACHER)
    whose = f"the pretrained {teacher.spec.backbone} the teacher was fine-tuned from" if pretrained else \
        f"teacher {teacher.path}"
    built.weights = WeightsInfo("teacher", True, str(teacher.path),
                                f"{len(chosen)} layers {chosen} and the embeddings of {whose}")
    head_fits = bool((teacher.order == torch.arange(len(classes))).all()) and \
        cfg.model.hidden == teacher.run.arch.get("hidden")
    if head_fits and not pretrained:
        built.model.head.load_state_dict(teacher.model.head.state_dict())  # the teacher's head fits: start from it
    log.info("student %s: %d DistilBERT layers from layers %s of %s, embeddings copied (token type 0 folded in)",
             STUDENT_FROM_TEACHER, len(chosen), chosen, whose)
    return built, {"student_layers_from_teacher": chosen}


class KDRun:
    """One distillation fit: plan (teacher cache or online), loss terms, the shared epoch loop."""

    def __init__(self, task: Task, cfg: DistillConfig, student_cfg: FinetuneConfig, built: Built,
                 teacher: Teacher, data: Any) -> None:
        self.task, self.cfg, self.scfg, self.built = task, cfg, student_cfg, built
        self.teacher, self.data = teacher, data
        k, text = cfg.distill, task.name == "text"
        self.shared = text and _same_tokenizer(teacher, built, student_cfg)
        width_ok = text and isinstance(teacher, TorchTeacher) and (
            teacher.model.backbone.num_features == built.model.backbone.num_features)
        self.hidden = text and k.hidden_weight > 0 and teacher.has_internals and self.shared and width_ok
        if text and k.hidden_weight > 0 and not self.hidden:
            log.info("hidden-state cosine loss off: it needs a torch teacher with the student's tokenizer and width")
        self.feature = not text and k.feature_weight > 0 and teacher.has_internals
        if not text and k.feature_weight > 0 and not self.feature:
            log.info("feature matching off: a bundle teacher gives logits only")
        self.weights = KDWeights(k.temperature, k.alpha, k.hidden_weight if self.hidden else 0.0,
                                 k.feature_weight if self.feature else 0.0)
        self.hard = ft._criterion(student_cfg, data.train.labels, len(data.classes))
        self.augment = student_cfg.data.text_augment > 0 if text else student_cfg.data.augment
        self.cache_reason = self._cache_reason()
        self.projection: FeatureProjection | None = None
        self.parts: dict[str, float] = {}
        self.epoch_seconds: list[float] = []
        self.cache_seconds: float | None = None
        self.kind = "text" if text else "feature" if self.feature else "logits"
        # the student's training forward; fit() rebuilds it with the projection and wraps it in DDP each epoch
        self.forward: nn.Module = _Student(built.model, None, self.kind, k.student_unit)
        self.torch_teacher = isinstance(teacher, TorchTeacher)
        if self.torch_teacher:
            teacher.model.to(distributed.current().device)

    def to_cpu(self) -> None:
        """Student, projection and torch teacher back on the CPU (for the reports after training)."""
        self.built.model.cpu()
        if self.projection is not None:
            self.projection.cpu()
        if self.torch_teacher:
            self.teacher.model.cpu()

    def _cache_reason(self) -> str | None:
        """Why the teacher runs online, or None when its outputs are cached."""
        if not self.cfg.distill.cache_teacher:
            return "cache_teacher is off"
        if self.augment:
            return "the inputs are augmented"
        if self.feature:
            return "feature matching needs the teacher's feature maps"
        return None

    def train_loader(self, cache: TeacherCache | None) -> Any:
        """The student's training batches, with the cached teacher outputs or the teacher's own inputs
        (this rank's share of each global batch, in the permutation of ``seed + epoch``)."""
        t = self.scfg.train
        # kd_loader reads `augment` for images and `text_augment` (None when off) for text
        loader = kd_loader(self.data.train, self.built.spec, self.teacher, batch_size=t.batch_size, shuffle=True,
                           seed=t.seed, augment=self.augment, cache=cache,
                           tokenizer=self.built.extras.get("tokenizer"), shared=self.shared, workers=t.workers,
                           text_augment=text_augment(self.scfg))
        return distributed.train_loader(loader, t.seed)

    def build_cache(self) -> TeacherCache | None:
        """Teacher outputs over the training split, once (None when it must run online)."""
        if self.cache_reason is not None:
            log.info("teacher runs online every batch: %s", self.cache_reason)
            return None
        t0 = time.perf_counter()
        loader = kd_loader(self.data.train, self.built.spec, self.teacher, batch_size=128, shuffle=False,
                           seed=0, student=False)
        shard = distributed.eval_loader(loader)
        cache = teacher_outputs(_OnDevice(self.teacher), shard, hidden=self.hidden)
        if distributed.is_shard(shard):  # every rank's shard, whole on every rank
            cache.logits = torch.from_numpy(distributed.gather_rows(cache.logits.numpy()))
            cache.hidden = None if cache.hidden is None else distributed.gather_items(cache.hidden)
        used = cache.logits.numel() * 4 + sum(h.numel() * 4 for h in cache.hidden or [])
        if used > CACHE_MEMORY_LIMIT:
            self.cache_reason = f"the cache would hold {used / 1e9:.1f} GB"
            log.info("teacher runs online every batch: %s", self.cache_reason)
            return None
        self.cache_seconds = round(time.perf_counter() - t0, 2)
        log.info("teacher outputs cached for %d training samples in %.1f s (%.0f MB); each epoch reuses them",
                 len(cache.logits), self.cache_seconds, used / 1e6)
        return cache

    def step(self, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss_fn`` of the shared epoch loop: the student forward, the teacher's targets, the weighted loss."""
        x = to_device(inputs["student"])
        extra: dict[str, torch.Tensor] = {}
        if self.task.name == "text":
            logits, hidden = self.forward(x)
            t_logits, t_hidden = self._targets(inputs, -1 if self.hidden else None)
            if self.hidden:
                extra["hidden"] = hidden_cosine_loss(hidden, t_hidden, x["attention_mask"])
        elif self.feature:
            t_logits, t_feat = self._targets(inputs, self.cfg.distill.teacher_unit)
            logits, projected = self.forward(to_channels_last(x), tuple(t_feat.shape[-2:]))
            extra["feature"] = feature_loss(projected, t_feat)
        else:
            logits = self.forward(to_channels_last(x))
            t_logits, _ = self._targets(inputs, None)
        loss, parts = kd_loss(logits, labels, t_logits, self.weights, self.hard, extra)
        for name, value in parts.items():
            self.parts[name] = self.parts.get(name, 0.0) + value * len(labels)
        return loss, logits

    def _targets(self, inputs: dict[str, Any], unit: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if "teacher_logits" in inputs:
            return to_device(inputs["teacher_logits"]), to_device(inputs.get("teacher_hidden"))
        t_in = to_device(inputs["teacher"]) if self.torch_teacher else inputs["teacher"]  # a bundle reads numpy
        logits, inner = self.teacher.outputs(t_in, unit)
        return to_device(logits), to_device(inner)

    def _make_projection(self, loader: Any) -> None:
        inputs, _ = next(iter(loader))
        with torch.no_grad():
            feat, _ = _split_forward(self.built.model.eval(), to_channels_last(to_device(inputs["student"])),
                                     self.cfg.distill.student_unit)
            _, t_feat = self._targets(inputs, self.cfg.distill.teacher_unit)
        self.projection = FeatureProjection(feat.shape[1], t_feat.shape[1]).to(
            distributed.current().device, memory_format=torch.channels_last)
        log.info("feature matching: student unit %d (%d channels) -> teacher unit %d (%d channels), 1x1 projection",
                 self.cfg.distill.student_unit, feat.shape[1], self.cfg.distill.teacher_unit, t_feat.shape[1])

    def fit(self) -> ft.FitState:
        """The epoch loop of fine-tuning, with the distillation loss; the best epoch by validation accuracy."""
        t, model = self.scfg.train, self.built.model
        train = self.train_loader(self.build_cache())
        val = distributed.eval_loader(self.task.loader(self.data.val, self.built, self.scfg, train=False,
                                                       batch_size=128))
        groups = layerwise_param_groups(model, t.lr, t.layer_decay, t.weight_decay)
        if self.feature:
            self._make_projection(train)
            groups.append({"params": list(self.projection.parameters()), "lr": t.lr, "weight_decay": t.weight_decay})
        optimizer, scheduler = build_optimizer(groups, t, len(train))
        state, depth = ft.FitState(), len(model.backbone.units) - 1
        student = _Student(model, self.projection, self.kind, self.cfg.distill.student_unit)
        distributed.seed_ranks(t.seed)
        for epoch in range(t.epochs):
            n = trainable_blocks(t.mode, t.unfreeze, depth, epoch, t.progressive_every)
            frozen = apply_freezing(model, n)
            student.train()
            freeze_norm_stats(frozen)
            distributed.set_epoch(train, epoch)
            self.forward = distributed.wrap(student)
            self.parts, t0 = {}, time.perf_counter()
            stats = train_one_epoch(student, train, optimizer, scheduler, None, total=len(train), loss_fn=self.step,
                                    description=f"distill {epoch + 1}/{t.epochs}", bn_model=model)
            self.epoch_seconds.append(round(time.perf_counter() - t0, 2))
            self.parts = distributed.sum_dict(self.parts)
            distributed.average_buffers(student)  # the student's and the projection's norms
            logits, labels = predict_logits(model, val, total=len(val), description="validate")
            stop = distributed.broadcast(ft._end_epoch(state, model, epoch, stats, logits, labels, self.data.classes,
                                                       self.scfg, trainable=n))
            seen = max(1, len(train.sampler) * distributed.current().world)
            state.history[-1].update({f"loss_{k}": round(v / seen, 5) for k, v in self.parts.items()},
                                     seconds=self.epoch_seconds[-1])
            if stop:
                break
        return state

    def describe(self) -> dict[str, Any]:
        """What the fit did, for metrics.json."""
        return {"teacher": self.teacher.describe(), "teacher_outputs": "cached" if self.cache_reason is None else
                "online", "online_reason": self.cache_reason, "terms": {k: v for k, v in vars(self.weights).items()},
                "shared_tokenizer": self.shared if self.task.name == "text" else None,
                "cache_seconds": self.cache_seconds, "epoch_seconds": self.epoch_seconds}


class _Student(nn.Module):
    """The student's training forward as one module, so that DistributedDataParallel sees every parameter
    the loss uses (the feature projection's too): logits; text: ``(logits, last hidden states)``;
    feature matching: ``(logits, projected feature map at the teacher's size)``."""

    def __init__(self, model: nn.Module, projection: nn.Module | None, kind: str, unit: int) -> None:
        super().__init__()
        self.model, self.projection, self.kind, self.unit = model, projection, kind, unit

    def forward(self, x: Any, size: tuple[int, int] | None = None) -> Any:
        model = self.model
        if self.kind == "text":
            hidden = model.backbone.forward_units(x)
            return model.head(model.backbone.pool(hidden, x["attention_mask"])), hidden
        if self.kind == "feature":
            feat, logits = _split_forward(model, x, self.unit)
            return logits, self.projection(feat, size)
        return model(x)


class _OnDevice:
    """A teacher whose inputs go to the training device and whose outputs come back to the CPU (cache)."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    def outputs(self, inputs: Any, unit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        torch_teacher = isinstance(self.teacher, TorchTeacher)
        logits, inner = self.teacher.outputs(to_device(inputs) if torch_teacher else inputs, unit)
        return logits.cpu(), None if inner is None else inner.cpu()


def _split_forward(model: nn.Module, x: torch.Tensor, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output of backbone unit, logits)`` in one pass of an image classifier."""
    backbone = model.backbone
    cut = unit % len(backbone.units) + 1
    feat = backbone.forward_units(x, 0, cut)
    return feat, model.head(backbone.pool(backbone.forward_units(feat, cut)))


def _pretrained_encoder(teacher: TorchTeacher) -> nn.Module:
    """The encoder the teacher's run started from, with its pretrained weights (not the fine-tuned ones)."""
    from edgetl.models.text import load_encoder, resolve_text_model

    folder, _, _ = resolve_text_model(teacher.run.config.model.backbone)
    return load_encoder(folder, pretrained=True)


def _same_tokenizer(teacher: Teacher, built: Built, cfg: FinetuneConfig) -> bool:
    from edgetl.fsutil import sha256_file

    theirs = teacher.path / teacher.spec.tokenizer / "tokenizer.json"
    ours = built.extras["folder"] / "tokenizer.json"
    return sha256_file(theirs) == sha256_file(ours) and teacher.spec.max_length == built.spec.max_length


def _no_kd(task: Task, cfg: DistillConfig, student_cfg: FinetuneConfig, data: Any, teacher: Teacher,
           scratch: Path) -> dict:
    """The same student (same init, data, epochs, optimiser, hard-label loss) trained without the teacher."""
    log.info("--compare: training %s without the teacher, same budget", cfg.model.backbone)
    ft._seed_everything(cfg.train.seed, cfg.train.threads)
    built, _ = _build_student(task, cfg, student_cfg, data.classes, teacher, scratch)
    folder = scratch / "no-kd"
    folder.mkdir()
    state = ft._train(task, built, data, student_cfg, folder)
    built.model.load_state_dict(state.best_state)
    result = ft._evaluate(task, built, data.test, data.classes, student_cfg, "test (no KD)")
    result.update(best_epoch=state.best_epoch, epochs_run=state.epoch, history=state.history)
    return result


def evaluate_logits(logits: torch.Tensor, labels: Any, classes: list[str]) -> dict:
    """Classification metrics of a logits tensor."""
    return classification_metrics(labels, logits.argmax(1).numpy(), classes)
