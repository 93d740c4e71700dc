"""Tests for edgetl.data: image folders made with Pillow, the real Fashion-MNIST files, real transforms."""

from __future__ import annotations

import logging
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgetl.data import (
    EMBEDDED_DATASETS,
    IMAGE_EXTENSIONS,
    ArraySamples,
    FileSamples,
    ImageData,
    load_image_data,
)
from edgetl.data.fashion_mnist import CLASSES, ENV_VAR, read_idx
from edgetl.data.splits import cap_per_class, stratified_split
from edgetl.data.torch_data import TorchImageDataset, eval_transform, train_transform
from edgetl.errors import ConfigError, DataError
from edgetl.runtime.preprocess import preprocess
from edgetl.spec import ModelSpec

# (mode, extension, Pillow format): mixed modes and mixed-case extensions.
FORMATS = [
    ("RGB", ".JPG", "JPEG"),
    ("L", ".Png", "PNG"),
    ("RGBA", ".webp", "WEBP"),
    ("RGB", ".bmp", "BMP"),
    ("RGBA", ".png", "PNG"),
    ("L", ".jpeg", "JPEG"),
]
COLORS = {"cat": (220, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 220)}
FMNIST_AVAILABLE = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


def save_image(path: Path, mode: str, fmt: str, color: tuple[int, int, int], size: int = 24) -> None:
    """A coloured square with a darker stripe, so crops and flips change it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), color)
    img.paste((0, 0, 0), (0, 0, size // 4, size))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)
    elif mode == "L":
        img = img.convert("L")
    img.save(path, fmt)


def make_class(folder: Path, name: str, n: int) -> None:
    """``n`` images of one class, every fifth one in a nested sub-folder."""
    base = COLORS.get(name, (120, 120, 120))
    for i in range(n):
        mode, ext, fmt = FORMATS[i % len(FORMATS)]
        sub = folder / name / "nested" if i % 5 == 4 else folder / name
        save_image(sub / f"img{i}{ext}", mode, fmt, tuple(min(255, c + 2 * i) for c in base))


def make_dataset(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        make_class(root, name, n)
    return root


def add_corrupt(folder: Path) -> list[Path]:
    """A random-bytes .jpg and a truncated PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    junk = folder / "x.jpg"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    good = folder / "full.png"
    save_image(good, "RGB", "PNG", (10, 20, 30), size=64)
    truncated = folder / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    good.unlink()
    return [junk, truncated]


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "flat", {"cat": 10, "dog": 10, "owl": 10})
    (root / "cat" / "notes.txt").write_text("not an image")
    save_image(root / "cat" / ".hidden.png", "RGB", "PNG", (1, 2, 3))
    save_image(root / "dog" / ".cache" / "thumb.png", "RGB", "PNG", (1, 2, 3))
    save_image(root / ".trash" / "a.png", "RGB", "PNG", (1, 2, 3))
    return root


def top_folders(samples: FileSamples, root: Path) -> set[str]:
    return {p.relative_to(root.resolve()).parts[0] for p in samples.paths}


def split_paths(data: ImageData) -> tuple[list[str], ...]:
    return tuple(sorted(str(p) for p in s.paths) for s in (data.train, data.val, data.test))


# ---------------------------------------------------------------- flat folders


def test_flat_folder_is_split_stratified_and_complete(flat: Path) -> None:
    data = load_image_data(flat)
    assert data.classes == ["cat", "dog", "owl"]
    assert data.source == str(flat.resolve())
    assert data.skipped == []
    train, val, test = split_paths(data)
    assert len(train) + len(val) + len(test) == 30
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    summary = data.summary()
    assert (summary["train"], summary["val"], summary["test"]) == (24, 3, 3)
    for split in ("val", "test"):
        assert summary["per_class"][split] == {"cat": 1, "dog": 1, "owl": 1}
    for samples in (data.train, data.val, data.test):
        for path, label in zip(samples.paths, samples.labels, strict=True):
            assert path.relative_to(flat).parts[0] == data.classes[label]
    assert not any(".hidden" in p or ".cache" in p or ".trash" in p for p in train + val + test)
    assert any("nested" in p for p in train + val + test)


def test_split_is_seeded(flat: Path) -> None:
    a, b = load_image_data(flat, seed=3), load_image_data(flat, seed=3)
    c = load_image_data(flat, seed=4)
    assert split_paths(a) == split_paths(b)
    assert split_paths(a) != split_paths(c)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_images_are_rgb_whatever_the_file_mode(flat: Path) -> None:
    data = load_image_data(flat, val_fraction=0.0, test_fraction=0.0)
    assert len(data.train) == 30 and len(data.val) == len(data.test) == 0
    modes = {Image.open(p).mode for p in data.train.paths}
    assert {"L", "RGBA", "RGB"} <= modes
    suffixes = {p.suffix for p in data.train.paths}
    assert {".JPG", ".Png", ".webp", ".bmp", ".png", ".jpeg"} <= suffixes
    for i in range(len(data.train)):
        img = data.train.image(i)
        assert img.mode == "RGB" and img.size == (24, 24)


def test_limit_per_class_flat(flat: Path) -> None:
    data = load_image_data(flat, limit_per_class=5)
    summary = data.summary()
    assert (summary["train"], summary["val"], summary["test"]) == (9, 3, 3)
    assert load_image_data(flat, limit_per_class=5).fingerprint == data.fingerprint
    assert load_image_data(flat, limit_per_class=6).fingerprint != data.fingerprint


def test_fingerprint_follows_files(flat: Path) -> None:
    before = load_image_data(flat).fingerprint
    target = flat / "owl" / "img0.JPG"
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    assert load_image_data(flat).fingerprint != before


# ---------------------------------------------------------------- split folders


def test_split_folders_are_used_as_given(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_dataset(root / "train", {"cat": 6, "dog": 6})
    make_dataset(root / "Validation", {"cat": 2, "dog": 3})
    make_dataset(root / "test", {"cat": 1, "dog": 2})
    data = load_image_data(root)
    summary = data.summary()
    assert (summary["train"], summary["val"], summary["test"]) == (12, 5, 3)
    assert top_folders(data.val, root) == {"Validation"}


def test_missing_val_and_test_are_carved_from_train(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_dataset(root / "train", {"cat": 10, "dog": 10})
    make_dataset(root / "valid", {"cat": 2, "dog": 2})
    data = load_image_data(root, test_fraction=0.2)
    summary = data.summary()
    assert summary["per_class"]["test"] == {"cat": 2, "dog": 2}
    assert summary["per_class"]["val"] == {"cat": 2, "dog": 2}
    assert top_folders(data.test, root) == {"train"}
    assert top_folders(data.val, root) == {"valid"}
    make_dataset(tmp_path / "ds2" / "train", {"cat": 10, "dog": 10})
    make_dataset(tmp_path / "ds2" / "test", {"cat": 1, "dog": 1})
    data = load_image_data(tmp_path / "ds2", val_fraction=0.3)
    assert data.summary()["per_class"]["val"] == {"cat": 3, "dog": 3}
    assert top_folders(data.val, tmp_path / "ds2") == {"train"}
    assert top_folders(data.test, tmp_path / "ds2") == {"test"}


def test_limit_per_class_with_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_dataset(root / "train", {"cat": 12, "dog": 12})
    make_dataset(root / "val", {"cat": 5, "dog": 5})
    data = load_image_data(root, limit_per_class=6)
    per_class = data.summary()["per_class"]
    assert per_class["train"] == {"cat": 6, "dog": 6}
    assert per_class["val"] == {"cat": 2, "dog": 2}
    assert per_class["test"] == {"cat": 1, "dog": 1}


def test_split_folders_need_the_same_classes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_dataset(root / "train", {"cat": 4, "dog": 4})
    make_dataset(root / "val", {"cat": 2, "owl": 2})
    with pytest.raises(DataError, match=r"missing in val: dog; only in val: owl"):
        load_image_data(root)


def test_split_folders_need_train(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds" / "val", {"cat": 2, "dog": 2})
    with pytest.raises(DataError, match="no train folder"):
        load_image_data(tmp_path / "ds")


# ---------------------------------------------------------------- corrupt files


def test_corrupt_files_are_skipped_and_counted(flat: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = add_corrupt(flat / "cat")
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        data = load_image_data(flat)
    assert sorted(data.skipped) == sorted(str(p) for p in bad)
    assert data.summary()["skipped"] == 2
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert "skipped 2 corrupt" in caplog.text


def test_strict_fails_on_the_first_corrupt_file(flat: Path) -> None:
    add_corrupt(flat / "cat")
    with pytest.raises(DataError, match=r"truncated\.png") as err:
        load_image_data(flat, strict=True)
    assert err.value.hint


def test_class_with_only_corrupt_files(flat: Path) -> None:
    add_corrupt(flat / "bat")
    with pytest.raises(DataError, match=r"bat has no readable images \(2 corrupt"):
        load_image_data(flat)


# ---------------------------------------------------------------- bad input


def _flat_with(tmp_path: Path, counts: dict[str, int]) -> Path:
    root = tmp_path / "bad"
    root.mkdir(exist_ok=True)
    return make_dataset(root, counts)


@pytest.mark.parametrize(
    ("counts", "pattern"),
    [
        ({}, "no class folders"),
        ({"cat": 5}, "need at least 2 classes"),
        ({"cat": 5, "dog": 0}, "dog has no images"),
        ({"cat": 0, "dog": 0}, "no images found"),
        ({"cat": 5, "dog": 2}, "class 'dog' has 2 image.*at least 3"),
    ],
)
def test_bad_folders_raise_data_error(tmp_path: Path, counts: dict[str, int], pattern: str) -> None:
    root = _flat_with(tmp_path, counts)
    for name, n in counts.items():
        if n == 0:
            (root / name).mkdir()
            (root / name / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=pattern) as err:
        load_image_data(root)
    assert err.value.hint


def test_missing_path_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        load_image_data(tmp_path / "nope")
    assert "fashion-mnist" in (err.value.hint or "")
    file = tmp_path / "a.png"
    save_image(file, "RGB", "PNG", (1, 2, 3))
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_image_data(file)


def test_bad_options_raise_config_error(flat: Path) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        load_image_data(flat, val_fraction=1.5)
    with pytest.raises(ConfigError, match="below 1"):
        load_image_data(flat, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="limit_per_class"):
        load_image_data(flat, limit_per_class=2)


# ---------------------------------------------------------------- splitting helpers


def test_stratified_split_gives_every_class_val_and_test() -> None:
    labels = np.repeat(np.arange(4), [3, 7, 50, 4])
    train, val, test = stratified_split(labels, (0.1, 0.1), seed=0)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(labels)))
    for part in (val, test):
        assert set(labels[part].tolist()) == {0, 1, 2, 3}
    assert np.bincount(labels[val]).tolist() == [1, 1, 5, 1]
    capped = cap_per_class(labels, 4, seed=0)
    assert np.bincount(labels[capped]).tolist() == [3, 4, 4, 4]


def test_samples_subset_and_validation() -> None:
    images = np.zeros((4, 5, 6), np.uint8)
    samples = ArraySamples(images, [0, 1, 0, 1])
    sub = samples.subset(np.array([3, 1]))
    assert len(sub) == 2 and sub.labels.dtype == np.int64 and sub.labels.tolist() == [1, 1]
    assert sub.image(0).mode == "RGB" and sub.image(0).size == (6, 5)
    with pytest.raises(DataError):
        ArraySamples(images.astype(np.float32), [0, 1, 0, 1])
    with pytest.raises(DataError, match="labels"):
        FileSamples([Path("a.png")], [0, 1])


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def fmnist() -> ImageData:
    if not FMNIST_AVAILABLE:
        pytest.skip("sudo apt-get install dataset-fashion-mnist")
    return load_image_data("fashion-mnist")


def test_fashion_mnist_is_registered() -> None:
    assert "fashion-mnist" in EMBEDDED_DATASETS
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def test_fashion_mnist_loads_official_splits(fmnist: ImageData) -> None:
    assert fmnist.classes == CLASSES and len(CLASSES) == 10
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (54000, 6000, 10000)
    assert fmnist.source == "fashion-mnist"
    per_class = fmnist.summary()["per_class"]
    assert set(per_class["val"].values()) == {600} and set(per_class["test"].values()) == {1000}
    assert isinstance(fmnist.train, ArraySamples) and fmnist.train.images.shape[1:] == (28, 28)
    img = fmnist.test.image(0)
    assert img.mode == "RGB" and img.size == (28, 28)


def test_fashion_mnist_limit(fmnist: ImageData) -> None:
    data = load_image_data("fashion-mnist", limit_per_class=20, seed=1)
    assert (len(data.train), len(data.val), len(data.test)) == (200, 50, 50)
    assert set(data.summary()["per_class"]["train"].values()) == {20}
    assert data.fingerprint != fmnist.fingerprint


def write_idx(path: Path, arr: np.ndarray, magic: bytes | None = None) -> None:
    header = magic or bytes([0, 0, 0x08, arr.ndim])
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_folder_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    data = load_image_data("fashion-mnist", val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)


def test_fashion_mnist_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataError) as err:
        load_image_data("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in (err.value.hint or "")
    bad = tmp_path / "bad-idx"
    write_idx(bad, np.zeros((2, 3, 3)), magic=bytes([0, 0, 0x08, 2]))
    with pytest.raises(DataError, match="dimensions"):
        read_idx(bad, 3)
    bad.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DataError, match="magic number"):
        read_idx(bad)


# ---------------------------------------------------------------- torch transforms


@pytest.fixture
def spec() -> ModelSpec:
    return ModelSpec(labels=("a", "b"), input_size=(32, 40), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture
def picture() -> Image.Image:
    y, x = np.mgrid[0:48, 0:64]
    return Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8))


def test_eval_transform_equals_preprocess(spec: ModelSpec, picture: Image.Image) -> None:
    out = eval_transform(spec)(picture)
    assert out.dtype == torch.float32 and tuple(out.shape) == (3, 32, 40)
    assert np.array_equal(out.numpy(), preprocess(picture, spec))
    assert torch.equal(out, eval_transform(spec)(picture))
    assert torch.equal(train_transform(spec, augment=False)(picture), out)


def test_train_transform_augments(spec: ModelSpec, picture: Image.Image) -> None:
    torch.manual_seed(0)
    transform = train_transform(spec)
    reference = eval_transform(spec)(picture)
    outs = [transform(picture) for _ in range(4)]
    assert all(o.dtype == torch.float32 and tuple(o.shape) == (3, 32, 40) for o in outs)
    assert not any(torch.equal(o, reference) for o in outs)
    assert not torch.equal(outs[0], outs[1])
    restored = pickle.loads(pickle.dumps(transform))
    assert tuple(restored(picture).shape) == (3, 32, 40)


def test_torch_dataset_over_file_samples(flat: Path, spec: ModelSpec) -> None:
    data = load_image_data(flat)
    dataset = TorchImageDataset(data.train, train_transform(spec))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    x, y = next(iter(loader))
    assert len(dataset) == 24
    assert x.shape == (8, 3, 32, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    item, label = dataset[0]
    assert item.shape == (3, 32, 40)
    assert isinstance(label, int) and label == int(data.train.labels[0])
