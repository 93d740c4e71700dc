"""The run folder that `edgetl finetune` writes and every later stage reads.

Layout: ``weights.safetensors`` (model state dict), ``model.json`` (how to rebuild the architecture),
``spec.json`` (:class:`~edgetl.spec.ModelSpec`), ``config.yaml`` (the resolved config),
``metrics.json`` and PNG plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgetl.config import FinetuneConfig
from edgetl.errors import RunFolderError
from edgetl.fsutil import read_json, sha256_file, write_json, write_text
from edgetl.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from edgetl.data import ImageData
    from edgetl.models import ImageClassifier

REQUIRED = ("weights.safetensors", "model.json", "spec.json", "config.yaml")


@dataclass
class Run:
    """A finished run folder, loaded lazily."""

    path: Path
    spec: ModelSpec
    arch: dict[str, Any]
    config: FinetuneConfig

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """metrics.json, or an empty dict."""
        f = self.path / "metrics.json"
        return read_json(f) if f.is_file() else {}

    @property
    def task(self) -> str:
        """``image`` or ``text``."""
        return self.config.data.task

    def model(self) -> ImageClassifier:
        """The trained classifier in eval mode (weights loaded safely from safetensors)."""
        from safetensors.torch import load_file

        a = self.arch
        if self.task == "text":
            from edgetl.models.text import build_text_classifier

            # the encoder's config and tokenizer were copied into the run: no download to rebuild it
            model, _, _ = build_text_classifier(str(self.path / a["encoder"]), a["num_classes"], pretrained=False,
                                                dropout=a.get("dropout", 0.0), hidden=a.get("hidden"))
        else:
            from edgetl.models import build_classifier

            model, _ = build_classifier(a["backbone"], a["num_classes"], pretrained=False,
                                        dropout=a.get("dropout", 0.0), hidden=a.get("hidden"))
        state = load_file(self.path / "weights.safetensors")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise RunFolderError(f"weights in {self.path} do not match model.json: {exc}") from None
        return model.eval()

    def data(self) -> ImageData:
        """Re-load the dataset the run was trained on, with the same split options."""
        from edgetl.train.tasks import TASKS

        return TASKS.get(self.task).load_data(self.config)

    def fingerprint(self) -> str:
        """Hash of the weights and spec: identifies what an export was made from."""
        return sha256_file(self.path / "weights.safetensors")[:16] + sha256_file(self.path / "spec.json")[:16]


def load_run(path: str | Path) -> Run:
    """Open a run folder, checking that every required file is there."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"run folder not found: {path}", "train one with `edgetl finetune --out DIR`")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{path} is not a complete run folder (missing {', '.join(missing)})",
            "point at a folder written by `edgetl finetune`",
        )
    try:
        config = FinetuneConfig.from_dict(yaml.safe_load((path / "config.yaml").read_text("utf-8")))
    except yaml.YAMLError as exc:
        raise RunFolderError(f"{path / 'config.yaml'} is not valid YAML: {exc}") from None
    return Run(path=path, spec=ModelSpec.load(path / "spec.json"), arch=read_json(path / "model.json"), config=config)


def save_run_files(
    folder: Path,
    state_dict: dict[str, torch.Tensor],
    spec: ModelSpec,
    arch: dict[str, Any],
    config: FinetuneConfig,
) -> None:
    """Write weights, spec, architecture and config into ``folder`` (each file atomically)."""
    from safetensors.torch import save_file

    from edgetl.config import dump_yaml

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".weights.safetensors.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp))
    tmp.replace(folder / "weights.safetensors")
    spec.save(folder / "spec.json")
    write_json(folder / "model.json", arch)
    write_text(folder / "config.yaml", dump_yaml(config.to_dict()))
