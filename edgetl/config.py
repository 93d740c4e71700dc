"""Typed configs for every stage. YAML is only their serialisation; CLI flags build the same objects."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edgetl.errors import ConfigError

FINETUNE_MODES = ("feature-extract", "fine-tune", "progressive")
TASKS = ("image", "text")
DEFAULT_DATA = {"image": "fashion-mnist", "text": "rotten-tomatoes"}
DEFAULT_BACKBONE = {"image": "efficientnet_lite0", "text": "minilm_l6"}
C = TypeVar("C")


@dataclass
class DataConfig:
    """Where the examples come from and how they are split."""

    task: str = field(default="image", metadata={"help": "image | text"})
    data: str | None = field(default=None, metadata={"help": "folder, file or embedded dataset name "
                                                              "(default: fashion-mnist / rotten-tomatoes)"})
    text_column: str = field(default="text", metadata={"help": "text: column holding the text"})
    label_column: str = field(default="label", metadata={"help": "text: column holding the label"})
    split_column: str | None = field(default=None, metadata={"help": "text: column naming each row's split"})
    max_length: int | None = field(default=None, metadata={"help": "text: max tokens; default: backbone's"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of train carved out for validation"})
    test_fraction: float = field(default=0.1, metadata={"help": "share held out for test without split folders"})
    limit_per_class: int | None = field(default=None, metadata={"help": "cap images per class (quick runs)"})
    strict: bool = field(default=False, metadata={"help": "fail on a corrupt image instead of skipping it"})
    image_size: int | None = field(default=None, metadata={"help": "square input size; default: backbone's"})
    augment: bool = field(default=True, metadata={"help": "random resized crop, flip, small rotation"})
    text_augment: float = field(default=0.0, metadata={"help": "text: strength of random word deletion and "
                                                                "swaps on training texts, 0..0.5 (0: off)"})

    def validate(self) -> None:
        """Raise ConfigError on impossible values; fill the task's default dataset."""
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}", f"choose one of: {', '.join(TASKS)}")
        self.data = self.data or DEFAULT_DATA[self.task]
        if self.max_length is not None and not 2 <= self.max_length <= 8192:
            raise ConfigError("max_length must be between 2 and 8192")
        if not 0 < self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise ConfigError("val_fraction and test_fraction must be in (0, 0.5)")
        if self.limit_per_class is not None and self.limit_per_class < 3:
            raise ConfigError("limit_per_class must be >= 3 (one image each for train, val, test)")
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            raise ConfigError("image_size must be between 16 and 1024")
        if not 0 <= self.text_augment <= 0.5:
            raise ConfigError(f"text_augment must be in [0, 0.5], got {self.text_augment}",
                              "0.1 drops and swaps about one word in ten; 0 turns it off")


@dataclass
class ModelConfig:
    """Backbone, weights and classification head."""

    backbone: str | None = field(default=None, metadata={"help": "registered backbone name (text: or a local "
                                                                  "Hugging Face folder); default: "
                                                                  "efficientnet_lite0 / minilm_l6"})
    weights: str | None = field(default=None, metadata={"help": "explicit weights file"})
    pretrained: bool = field(default=True, metadata={"help": "use pretrained weights when found"})
    dropout: float = field(default=0.2, metadata={"help": "head dropout"})
    hidden: int | None = field(default=None, metadata={"help": "optional hidden layer width in the head"})

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if not 0 <= self.dropout < 1:
            raise ConfigError("dropout must be in [0, 1)")
        if self.hidden is not None and self.hidden < 1:
            raise ConfigError("hidden must be a positive width")


@dataclass
class TrainConfig:
    """Optimisation and freezing policy."""

    mode: str = field(default="fine-tune", metadata={"help": "feature-extract | fine-tune | progressive"})
    unfreeze: int | None = field(default=None, metadata={"help": "fine-tune only the last N blocks (omit: all)"})
    epochs: int = field(default=10, metadata={"help": "maximum epochs"})
    batch_size: int = field(default=64, metadata={"help": "batch size"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of the head"})
    layer_decay: float = field(default=0.75, metadata={"help": "LR multiplier per block going down"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_epochs: float = field(default=0.5, metadata={"help": "linear warm-up length"})
    label_smoothing: float = field(default=0.1, metadata={"help": "cross-entropy label smoothing"})
    patience: int = field(default=3, metadata={"help": "early stop after N epochs without improvement"})
    progressive_every: int = field(default=1, metadata={"help": "progressive: epochs between unfreezes"})
    seed: int = field(default=0, metadata={"help": "seed for splits, init and shuffling"})
    workers: int = field(default=0, metadata={"help": "data loader worker processes"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads; default all cores"})
    baseline: bool = field(default=False, metadata={"help": "also fit a linear model (pixels / TF-IDF) and, for "
                                                              "images, the backbone from random init"})
    class_weights: bool = field(default=False, metadata={"help": "weight the loss by inverse class frequency"})

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if self.mode not in FINETUNE_MODES:
            raise ConfigError(f"unknown mode {self.mode!r}", f"choose one of: {', '.join(FINETUNE_MODES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError("layer_decay must be in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if self.unfreeze is not None and self.unfreeze < 0:
            raise ConfigError("unfreeze must be >= 0")


@dataclass
class FinetuneConfig:
    """Everything `edgetl finetune` needs; saved as the run folder's config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> FinetuneConfig:
        """Validate every section (filling task defaults); return self."""
        self.data.validate()
        self.model.backbone = self.model.backbone or DEFAULT_BACKBONE[self.data.task]
        self.model.validate()
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Build from a dict; unknown keys are refused by name."""
        data = data or {}
        _check_keys(data, {"data", "model", "train"}, "finetune")
        return cls(
            data=from_dict(DataConfig, data.get("data", {}), "finetune.data"),
            model=from_dict(ModelConfig, data.get("model", {}), "finetune.model"),
            train=from_dict(TrainConfig, data.get("train", {}), "finetune.train"),
        ).validate()


def _check_keys(data: dict[str, Any], known: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {where}: {', '.join(unknown)}", f"known keys: {', '.join(sorted(known))}"
        )


def from_dict(cls: type[C], data: dict[str, Any], where: str) -> C:
    """Build a flat dataclass from a dict, naming any unknown key."""
    _check_keys(data or {}, {f.name for f in fields(cls)}, where)
    return cls(**(data or {}))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping")
    return data


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text of a config dict."""
    return yaml.safe_dump(data, sort_keys=False)


#: Where distilbert_from_teacher copies its layers from.
STUDENT_INITS = ("teacher", "pretrained")


@dataclass
class KDConfig:
    """Knowledge distillation: the teacher and the loss (the ``distill:`` section)."""

    teacher: str | None = field(default=None, metadata={"help": "run folder, exported bundle (ONNX/OpenVINO/TFLite) "
                                                                 "or registered backbone (fine-tuned first)"})
    temperature: float = field(default=4.0, metadata={"help": "softmax temperature T of the soft targets"})
    alpha: float = field(default=0.5, metadata={"help": "weight of the soft-target KL (scaled by T^2); "
                                                         "1 - alpha goes to the hard-label cross entropy"})
    hidden_weight: float = field(default=1.0, metadata={"help": "text: weight of DistilBERT's cosine loss on the "
                                                                 "last hidden states (needs a torch teacher with "
                                                                 "the student's tokenizer)"})
    feature_weight: float = field(default=0.0, metadata={"help": "images: weight of feature matching (MSE through a "
                                                                  "learned 1x1 projection); 0 turns it off"})
    student_unit: int = field(default=-1, metadata={"help": "images: student backbone unit whose output is matched"})
    teacher_unit: int = field(default=-1, metadata={"help": "images: teacher backbone unit it is matched to"})
    layers: int | None = field(default=None, metadata={"help": "distilbert_from_teacher: student layers "
                                                                "(default: half the teacher's)"})
    student_init: str = field(default="teacher", metadata={"help": "distilbert_from_teacher: copy the layers of "
                                                                    "the fine-tuned teacher (teacher) or of its "
                                                                    "backbone's pretrained weights (pretrained)"})
    cache_teacher: bool = field(default=True, metadata={"help": "compute teacher logits once when inputs are "
                                                                 "not augmented"})
    compare: bool = field(default=False, metadata={"help": "also train the student without KD, same budget"})
    teacher_epochs: int | None = field(default=None, metadata={"help": "registered-backbone teacher: fine-tune "
                                                                        "epochs (default: train.epochs)"})
    latency: bool = field(default=True, metadata={"help": "time teacher and students as ONNX on this CPU"})

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if not self.teacher:
            raise ConfigError("distillation needs a teacher", "pass --teacher RUN_FOLDER, BUNDLE or BACKBONE")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}", "use e.g. 4 (2 for text)")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}",
                              "alpha weights the soft targets and 1 - alpha the hard labels; use e.g. 0.5")
        if self.hidden_weight < 0 or self.feature_weight < 0:
            raise ConfigError("hidden_weight and feature_weight must be >= 0", "0 turns a term off")
        if self.layers is not None and self.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {self.layers}")
        if self.student_init not in STUDENT_INITS:
            raise ConfigError(f"unknown student_init {self.student_init!r}",
                              f"choose one of: {', '.join(STUDENT_INITS)}")
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
            raise ConfigError("teacher_epochs must be >= 1")


DEFAULT_STUDENT = {"image": "mobilenet_v3_small", "text": "distilbert_from_teacher"}


@dataclass
class DistillConfig:
    """Everything `edgetl distill` needs: the student's data/model/train sections plus ``distill``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: KDConfig = field(default_factory=KDConfig)

    def validate(self) -> DistillConfig:
        """Validate every section (filling task defaults); return self."""
        self.data.validate()
        self.model.backbone = self.model.backbone or DEFAULT_STUDENT[self.data.task]
        self.model.validate()
        self.train.validate()
        self.distill.validate()
        return self

    def student(self) -> FinetuneConfig:
        """The student's own config (what its run folder's config.yaml holds)."""
        return FinetuneConfig(data=dataclasses.replace(self.data), model=dataclasses.replace(self.model),
                              train=dataclasses.replace(self.train))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        """Build from a dict; unknown keys are refused by name."""
        data = data or {}
        _check_keys(data, {"data", "model", "train", "distill"}, "distill config")
        return cls(
            data=from_dict(DataConfig, data.get("data", {}), "distill.data"),
            model=from_dict(ModelConfig, data.get("model", {}), "distill.model"),
            train=from_dict(TrainConfig, data.get("train", {}), "distill.train"),
            distill=from_dict(KDConfig, data.get("distill", {}), "distill.distill"),
        ).validate()
