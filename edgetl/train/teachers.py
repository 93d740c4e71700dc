"""Teachers for distillation: a run folder, an exported bundle, or a registered backbone.

Each teacher keeps its own preprocessing (its spec: input size, mean/std, layout, tokenizer, max length)
and answers in the student's label order. A torch teacher (run folder; a registered backbone is
fine-tuned into one first) can also give intermediate outputs for hidden-state and feature losses; a
bundle teacher (ONNX, OpenVINO or TFLite through :class:`edgetl.runtime.Bundle`) gives logits only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from edgetl.errors import ConfigError
from edgetl.registry import Registry
from edgetl.spec import ModelSpec

log = logging.getLogger("edgetl")
_HINT = "pass a run folder (edgetl finetune), a bundle folder (edgetl export) or a registered backbone"


@dataclass
class TeacherRef:
    """What ``--teacher`` names: ``kind`` is ``run``, ``bundle`` or ``backbone``."""

    kind: str
    ref: str


#: How a ``--teacher`` value is recognised, in order: (kind, predicate on the value and task).
TEACHER_KINDS: Registry[Callable[[str, str], bool]] = Registry("teacher kind")
TEACHER_KINDS.add("bundle", lambda ref, task: (Path(ref) / "edgetl.json").is_file())
TEACHER_KINDS.add("run", lambda ref, task: (Path(ref) / "weights.safetensors").is_file()
                  and (Path(ref) / "spec.json").is_file())


def _is_backbone(ref: str, task: str) -> bool:
    if task == "text":
        from edgetl.models.text import TEXT_BACKBONES

        return ref in TEXT_BACKBONES
    from edgetl.models import BACKBONES

    return ref in BACKBONES


TEACHER_KINDS.add("backbone", _is_backbone)


def classify_teacher(ref: str, task: str) -> TeacherRef:
    """Which kind of teacher ``ref`` is.

    Raises:
        ConfigError: It is none of them (the message lists the registered backbones of ``task``).
    """
    for kind in TEACHER_KINDS:
        if TEACHER_KINDS.get(kind)(ref, task):
            return TeacherRef(kind, ref)
    if Path(ref).is_dir():
        raise ConfigError(f"teacher {ref} is a folder but neither a run folder nor a bundle", _HINT)
    from edgetl.models import BACKBONES
    from edgetl.models.text import TEXT_BACKBONES

    names = TEXT_BACKBONES.names() if task == "text" else BACKBONES.names()
    raise ConfigError(f"teacher {ref!r} not found", f"{_HINT} ({task}: {', '.join(names)})")


def label_order(teacher_labels: tuple[str, ...], classes: list[str]) -> np.ndarray:
    """For each student class, the teacher output holding it.

    Raises:
        ConfigError: The label sets differ; the message names the labels only one side has.
    """
    only_teacher = sorted(set(teacher_labels) - set(classes))
    only_data = sorted(set(classes) - set(teacher_labels))
    if only_teacher or only_data:
        parts = [f"only the teacher has: {', '.join(only_teacher)}" if only_teacher else "",
                 f"only the student's data has: {', '.join(only_data)}" if only_data else ""]
        raise ConfigError(f"teacher and student label sets differ ({'; '.join(p for p in parts if p)})",
                          "distill on data with the teacher's labels, or fine-tune a teacher on this data")
    index = {label: i for i, label in enumerate(teacher_labels)}
    return np.asarray([index[c] for c in classes], dtype=np.int64)


class Teacher:
    """A frozen model that answers in the student's label order, with its own preprocessing.

    Attributes:
        spec: The teacher's input contract.
        kind: ``run`` or ``bundle``.
        path: The run or bundle folder.
        order: Teacher output index of each student class.
    """

    kind = ""
    #: Whether :meth:`outputs` can give intermediate outputs (hidden states, feature maps).
    has_internals = False

    def __init__(self, spec: ModelSpec, path: Path, classes: list[str]) -> None:
        self.spec, self.path = spec, path
        self.order = torch.from_numpy(label_order(spec.labels, classes))
        self.tokenizer = None
        if spec.is_text:
            from edgetl.runtime.text import load_tokenizer

            self.tokenizer = load_tokenizer(path / spec.tokenizer)

    def image_input(self, img: Image.Image) -> torch.Tensor:
        """One image as this teacher's input tensor (its own resize, normalisation and layout)."""
        from edgetl.runtime.preprocess import preprocess

        return torch.from_numpy(preprocess(img, self.spec))

    def text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts tokenized with this teacher's tokenizer and max length."""
        from edgetl.runtime.text import tokenize

        arrays, _ = tokenize(self.tokenizer, texts, self.spec.max_length)
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

    def outputs(self, inputs: Any, unit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (student label order) and, for ``unit``, that unit's output (torch teachers only)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Kind, path and backbone, for metrics.json."""
        return {"kind": self.kind, "path": str(self.path), "backbone": self.spec.backbone}


class TorchTeacher(Teacher):
    """A run folder's classifier, in eval mode, never trained."""

    kind = "run"
    has_internals = True

    def __init__(self, run_dir: Path, classes: list[str]) -> None:
        from edgetl.runfolder import load_run

        run = load_run(run_dir)
        super().__init__(run.spec, run.path, classes)
        self.run = run
        self.model = run.model().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if not self.spec.is_text:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def outputs(self, inputs: Any, unit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        from edgetl.train.loop import to_channels_last

        self.model.eval()
        backbone, head = self.model.backbone, self.model.head
        if self.spec.is_text:
            hidden = backbone.forward_units(inputs)
            logits = head(backbone.pool(hidden, inputs["attention_mask"]))
            return logits[:, self.order], hidden if unit is not None else None
        x = to_channels_last(inputs)
        if unit is None:
            return self.model(x)[:, self.order], None
        cut = unit % len(backbone.units) + 1
        feat = backbone.forward_units(x, 0, cut)
        logits = head(backbone.pool(backbone.forward_units(feat, cut)))
        return logits[:, self.order], feat

    def params(self) -> int:
        """Parameter count."""
        return sum(p.numel() for p in self.model.parameters())


class BundleTeacher(Teacher):
    """An exported bundle run by its own engine (ONNX Runtime, OpenVINO, TFLite): logits only."""

    kind = "bundle"

    def __init__(self, bundle_dir: Path, classes: list[str]) -> None:
        from edgetl.runtime import Bundle

        self.bundle = Bundle.load(bundle_dir)
        super().__init__(self.bundle.spec, Path(bundle_dir), classes)

    def outputs(self, inputs: Any, unit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        feed = {k: v.numpy() for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.numpy()
        logits = torch.from_numpy(np.asarray(self.bundle.logits(feed), dtype=np.float32))
        return logits[:, self.order], None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "format": self.bundle.manifest["format"],
                "precision": self.bundle.manifest.get("precision")}


def load_teacher(kind: str, path: Path, classes: list[str], task: str) -> Teacher:
    """Open a run or bundle teacher and check its task and labels against the student's.

    Raises:
        ConfigError: The teacher classifies the other kind of input, or its labels differ.
    """
    from edgetl.runtime.bundle import read_manifest

    spec = read_manifest(path).spec if kind == "bundle" else ModelSpec.load(Path(path) / "spec.json")
    if spec.is_text != (task == "text"):
        what = "text" if spec.is_text else "images"
        raise ConfigError(f"teacher {path} classifies {what}, the student task is {task}",
                          "pass --task to match the teacher, or another teacher")
    label_order(spec.labels, classes)  # a label mismatch fails before the model loads
    teacher = BundleTeacher(path, classes) if kind == "bundle" else TorchTeacher(path, classes)
    log.info("teacher: %s %s (%s)%s", kind, path, teacher.spec.backbone,
             "" if bool((teacher.order == torch.arange(len(classes))).all()) else ", outputs reordered to the "
             "student's labels")
    return teacher
