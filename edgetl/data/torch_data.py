"""PyTorch glue: transforms built from a :class:`~edgetl.spec.ModelSpec` and a ``Dataset`` over a sample set.

The only module of :mod:`edgetl.data` that imports torch. Evaluation uses the single preprocessing
implementation in :mod:`edgetl.runtime.preprocess`, so training sees exactly what the exported model
will see; augmentation only changes the PIL image before the same normalisation.
The transforms are small classes rather than closures so ``DataLoader`` workers can pickle them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from edgetl.data.samples import SampleSet
from edgetl.runtime.preprocess import normalize, preprocess, to_rgb
from edgetl.spec import ModelSpec

Transform = Callable[[Image.Image], torch.Tensor]
_INTERPOLATION = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
}


class EvalTransform:
    """Deterministic transform: ``preprocess.preprocess`` (resize, normalise) as a tensor.

    Args:
        spec: The model's input contract.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(preprocess(img, self.spec))


class TrainTransform:
    """Random resized crop, horizontal flip and small rotation, then the spec's normalisation.

    Args:
        spec: The model's input contract.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.augment = T.Compose(
            [
                T.RandomResizedCrop(
                    spec.input_size,
                    scale=(0.6, 1.0),
                    interpolation=_INTERPOLATION.get(spec.interpolation, InterpolationMode.BILINEAR),
                ),
                T.RandomHorizontalFlip(),
                T.RandomRotation(10),
            ]
        )

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(normalize(self.augment(to_rgb(img)), self.spec))


def eval_transform(spec: ModelSpec) -> Transform:
    """The evaluation transform: identical to :func:`edgetl.runtime.preprocess.preprocess`, as a tensor.

    Args:
        spec: The model's input contract (size, resize mode, mean/std, layout, colour order).

    Returns:
        A picklable callable from an RGB PIL image to a float32 tensor without batch axis.
    """
    return EvalTransform(spec)


def train_transform(spec: ModelSpec, augment: bool = True) -> Transform:
    """The training transform.

    Args:
        spec: The model's input contract.
        augment: ``RandomResizedCrop(input_size, scale=(0.6, 1.0))``, ``RandomHorizontalFlip`` and
            ``RandomRotation(10)`` on the PIL image, then the spec's normalisation; ``False`` gives
            :func:`eval_transform`.

    Returns:
        A picklable callable from an RGB PIL image to a float32 tensor without batch axis.
    """
    return TrainTransform(spec) if augment else EvalTransform(spec)


class TorchImageDataset(Dataset):
    """A ``torch.utils.data.Dataset`` of ``(tensor, label)`` pairs over a :class:`SampleSet`.

    Args:
        samples: The images and labels.
        transform: PIL image to tensor, e.g. :func:`train_transform` or :func:`eval_transform`.
    """

    def __init__(self, samples: SampleSet, transform: Transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.samples.image(i)), int(self.samples.labels[i])
