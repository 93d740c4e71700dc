"""Text augmentation for training: random word deletion and swaps (EDA's "random deletion" and "random swap").

Wei and Zou (2019, "EDA") found these two simple operations useful on small sentence-classification sets, and
TinyBERT-style distillation relies on augmented inputs: the teacher labels texts no annotator saw, which is
where its soft targets carry more than the hard label. The operations need no vocabulary, model or
download, and work on any language that separates words by spaces.

With strength ``p``, each word of a training text is dropped with probability ``p`` (one is always kept),
then ``round(p * words)`` random pairs of words swap places. A text of one word is returned as it is.
Validation, test and calibration texts are never augmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WordAugment:
    """Random word deletion and swaps of strength ``p``, drawn from the generator of ``seed``.

    The same seed gives the same sequence of augmented texts, so two trainings that read the same batches
    in the same order (a distilled student and its no-KD twin) see the same augmented texts.
    """

    p: float
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, texts: list[str]) -> list[str]:
        """The augmented texts, one per input."""
        return [self.one(text) for text in texts]

    def one(self, text: str) -> str:
        """One text with words dropped and swapped."""
        words = text.split()
        if len(words) < 2 or self.p <= 0:
            return text
        keep = self.rng.random(len(words)) >= self.p
        if not keep.any():
            keep[self.rng.integers(len(words))] = True
        words = [w for w, k in zip(words, keep, strict=True) if k]
        for _ in range(round(self.p * len(words)) if len(words) > 1 else 0):
            i, j = self.rng.choice(len(words), size=2, replace=False)
            words[i], words[j] = words[j], words[i]
        return " ".join(words)
