"""Batches for distillation: the student's input, and the teacher's own input or its cached outputs.

A batch is ``({"student": x, "teacher": x_t} | {"student": x, "teacher_logits": z[, "teacher_hidden": h]},
labels)``. The teacher gets its own preprocessing (input size, normalisation, layout, tokenizer) unless it is
the student's, in which case it shares the student's tensor. With augmentation the random crop/flip/rotation
is drawn once per image and both models see that same augmented image.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from edgetl.data.text_augment import WordAugment
from edgetl.spec import ModelSpec
from edgetl.train.teachers import Teacher

log = logging.getLogger("edgetl")
_PREPROCESSING = ("input_size", "mean", "std", "layout", "color_order", "resize", "crop_pct", "interpolation")


def same_image_preprocessing(a: ModelSpec, b: ModelSpec) -> bool:
    """Whether two specs turn an image into the same tensor."""
    return all(getattr(a, k) == getattr(b, k) for k in _PREPROCESSING)


class TeacherCache:
    """Teacher outputs for every training sample, by sample index (computed once, reused each epoch)."""

    def __init__(self, logits: torch.Tensor, hidden: list[torch.Tensor] | None = None) -> None:
        self.logits, self.hidden = logits, hidden


class KDImageDataset(Dataset):
    """``({"student", "teacher" | "teacher_logits"}, label)`` per image.

    Args:
        samples: The images and labels.
        spec: The student's input contract.
        teacher: The teacher (its inputs are made here when there is no cache).
        augment: Draw the training augmentation (shared by both models).
        cache: Cached teacher logits by index; None runs the teacher online.
        student: False for a teacher-only dataset (computing a cache, evaluating the teacher).
    """

    def __init__(self, samples: Any, spec: ModelSpec, teacher: Teacher | None, *, augment: bool = False,
                 cache: TeacherCache | None = None, student: bool = True) -> None:
        from edgetl.data.torch_data import TrainTransform

        self.samples, self.spec, self.teacher, self.cache, self.student = samples, spec, teacher, cache, student
        self.augment = TrainTransform(spec).augment if augment else None
        self.shared = teacher is not None and same_image_preprocessing(spec, teacher.spec)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from edgetl.runtime.preprocess import normalize, preprocess, to_rgb

        img = to_rgb(self.samples.image(i))
        label = int(self.samples.labels[i])
        if not self.student:
            return self.teacher.image_input(img), label
        if self.augment is not None:
            img = self.augment(img)
            x = torch.from_numpy(normalize(img, self.spec))
        else:
            x = torch.from_numpy(preprocess(img, self.spec))
        item = {"student": x}
        if self.cache is not None:
            item["teacher_logits"] = self.cache.logits[i]
        elif self.teacher is not None:
            item["teacher"] = x if self.shared else self.teacher.image_input(img)
        return item, label


class IndexedTexts(Dataset):
    """``(index, text, label)`` triples of a text sample set."""

    def __init__(self, samples: Any) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, str, int]:
        return i, self.samples.texts[i], int(self.samples.labels[i])


class KDTextCollate:
    """Tokenises the student's batch (dynamic padding) and adds the teacher's input or cached outputs.

    Args:
        tokenizer: The student's tokenizer; None for a teacher-only loader.
        max_length: The student's max length.
        teacher: The teacher.
        shared: The teacher tokenizes exactly like the student (it reuses the student's tensors).
        cache: Cached teacher outputs by index; None runs the teacher online.
        augment: Word deletion and swaps applied to the batch's texts first (both models see the result);
            needs the teacher online.
    """

    def __init__(self, tokenizer: Any, max_length: int, teacher: Teacher | None, *, shared: bool = False,
                 cache: TeacherCache | None = None, augment: WordAugment | None = None) -> None:
        self.tokenizer, self.max_length, self.teacher = tokenizer, max_length, teacher
        self.shared, self.cache, self.augment = shared, cache, augment

    def __call__(self, items: list[tuple[int, str, int]]) -> tuple[Any, torch.Tensor]:
        from edgetl.runtime.text import tokenize

        index, texts, labels = zip(*items, strict=True)
        labels_t = torch.tensor(labels, dtype=torch.int64)
        texts = list(texts)
        if self.tokenizer is None:
            return self.teacher.text_inputs(texts), labels_t
        if self.augment is not None:
            texts = self.augment(texts)
        arrays, _ = tokenize(self.tokenizer, texts, self.max_length)
        student = {k: torch.from_numpy(v) for k, v in arrays.items()}
        item: dict[str, Any] = {"student": student}
        if self.cache is not None:
            item["teacher_logits"] = self.cache.logits[list(index)]
            if self.cache.hidden is not None:
                item["teacher_hidden"] = _pad_to([self.cache.hidden[i] for i in index],
                                                 student["input_ids"].shape[1])
        elif self.teacher is not None:
            item["teacher"] = student if self.shared else self.teacher.text_inputs(texts)
        return item, labels_t


def _pad_to(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    padded = pad_sequence(rows, batch_first=True)
    if padded.shape[1] < length:
        padded = torch.nn.functional.pad(padded, (0, 0, 0, length - padded.shape[1]))
    return padded


def kd_loader(samples: Any, spec: ModelSpec, teacher: Teacher | None, *, batch_size: int, shuffle: bool,
              seed: int, augment: bool = False, cache: TeacherCache | None = None, student: bool = True,
              tokenizer: Any = None, shared: bool = False, workers: int = 0,
              text_augment: WordAugment | None = None) -> DataLoader:
    """A loader of distillation batches (``student=False``: the teacher's inputs only, in order); ``augment``
    draws the image augmentation, ``text_augment`` changes the words of training texts."""
    generator = torch.Generator().manual_seed(seed)
    if spec.is_text:
        collate = KDTextCollate(tokenizer if student else None, spec.max_length, teacher, shared=shared,
                                cache=cache, augment=text_augment)
        return DataLoader(IndexedTexts(samples), batch_size=batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=collate)
    dataset = KDImageDataset(samples, spec, teacher, augment=augment, cache=cache, student=student)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                      persistent_workers=workers > 0)


@torch.inference_mode()
def teacher_outputs(teacher: Teacher, loader: DataLoader, *, hidden: bool = False) -> TeacherCache:
    """The teacher's logits (and, for ``hidden``, each sample's unpadded last hidden states) over a loader
    built with ``student=False`` and no shuffling."""
    from edgetl.progress import Ticker

    logits, states = [], [] if hidden else None
    with Ticker("teacher logits", len(loader)) as ticker:
        for inputs, _ in loader:
            z, h = teacher.outputs(inputs, -1 if hidden else None)
            logits.append(z.float())
            if hidden:
                lengths = inputs["attention_mask"].sum(1).tolist()
                states.extend(h[i, :n].clone() for i, n in enumerate(lengths))
            ticker.advance()
    return TeacherCache(torch.cat(logits), states)
