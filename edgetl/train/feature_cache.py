"""Frozen-prefix caching: what a frozen part of the backbone computes is computed once and reused.

Feature extraction trains only the head, and ``fine-tune --unfreeze N`` without augmentation trains
only the last N units: the frozen prefix gives the same output every epoch. Its outputs (pooled
features for feature extraction, the feature map at the cut otherwise) are computed once, stored on
disk keyed by weights + preprocessing + data, and each epoch trains the tail on them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from edgetl.fsutil import sha256_json, write_bytes
from edgetl.spec import ModelSpec
from edgetl.train import distributed
from edgetl.train.loop import predict_logits

log = logging.getLogger("edgetl")
DISK_LIMIT_BYTES = 1 << 30


class Prefix(nn.Module):
    """The frozen units ``[0, cut)`` of a classifier's backbone; pooled when the whole backbone is frozen."""

    def __init__(self, model: nn.Module, cut: int) -> None:
        super().__init__()
        self.backbone, self.cut = model.backbone, cut

    def forward(self, x: Any) -> torch.Tensor:
        if self.cut == len(self.backbone.units):
            return self.backbone(x)  # pooled features (image or text backbone)
        return self.backbone.forward_units(x, 0, self.cut)


class Tail(nn.Module):
    """The rest of the classifier: units ``[cut, end)``, pooling and head, fed the prefix's outputs."""

    def __init__(self, model: nn.Module, cut: int) -> None:
        super().__init__()
        self.model, self.cut = model, cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.model.backbone
        if self.cut < len(backbone.units):
            x = backbone.pool(backbone.forward_units(x, self.cut))
        return self.model.head(x)


def cache_dir() -> Path:
    """``$EDGETL_CACHE_DIR/features``, else ``~/.cache/edgetl/features``."""
    root = os.environ.get("EDGETL_CACHE_DIR") or Path.home() / ".cache" / "edgetl"
    return Path(root) / "features"


def state_hash(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names and bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(prefix: Prefix, spec: ModelSpec, data_fingerprint: str, split: str) -> str:
    """Key that changes whenever the prefix's weights, the cut, preprocessing or data change."""
    prep = {k: v for k, v in spec.to_dict().items() if k != "labels"}
    return sha256_json([state_hash(prefix), prefix.cut, prep, data_fingerprint, split])[:32]


@torch.inference_mode()
def output_bytes(prefix: Prefix, batch: Any, n_samples: int) -> int:
    """Bytes the prefix's float32 outputs for ``n_samples`` inputs would take (measured on ``batch``)."""
    prefix.eval()
    return int(prefix(batch)[0].numel()) * 4 * n_samples


def cached_outputs(prefix: Prefix, loader: DataLoader, key: str, split: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Prefix outputs and labels from the disk cache when present, else computed (and stored if small).

    Under ``torchrun`` the cache answers only when it does on every rank (each node has its own disk);
    otherwise each rank computes its shard of ``loader`` (a :func:`distributed.eval_loader`), the shards
    are gathered so every rank holds the whole split, and local rank 0 of each node stores it.

    Returns:
        ``(outputs, labels, hit)`` where ``hit`` says whether the cache answered.
    """
    path = cache_dir() / f"{key}.npy"
    labels_path = path.with_suffix(".labels.npy")
    found = None
    if path.is_file() and labels_path.is_file():
        try:
            found = np.load(path, allow_pickle=False), np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("feature cache %s unreadable; recomputing", path)
    if distributed.all_true(found is not None):
        log.info("%s split: frozen-prefix outputs from cache %s", split, path)
        return found[0], found[1], True
    out, labels = predict_logits(prefix, loader, total=len(loader), description=f"frozen prefix ({split})")
    if out.nbytes <= DISK_LIMIT_BYTES and distributed.current().local_rank == 0:
        for target, array in ((labels_path, labels), (path, out)):
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            write_bytes(target, buf.getvalue())
    return out, labels, False


def tensor_loader(inputs: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A loader over cached prefix outputs."""
    ds = torch.utils.data.TensorDataset(torch.from_numpy(inputs), torch.from_numpy(labels.astype(np.int64)))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))
