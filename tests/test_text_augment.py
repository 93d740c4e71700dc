"""Word deletion and swaps for training texts (``--text-augment``)."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import DataLoader

from edgetl.config import FinetuneConfig
from edgetl.data.text_augment import WordAugment
from edgetl.errors import ConfigError
from edgetl.train.distill_data import KDTextCollate
from edgetl.train.tasks import TextCollate, text_augment

TEXT = "a warm , funny and beautifully acted film about growing up in a small seaside town in the sixties"


def test_words_are_only_dropped_and_swapped_seeded() -> None:
    words, n = Counter(TEXT.split()), len(TEXT.split())
    out = WordAugment(0.2, seed=3)([TEXT] * 200)
    assert out == WordAugment(0.2, seed=3)([TEXT] * 200)  # the seed fixes the sequence
    assert out != WordAugment(0.2, seed=4)([TEXT] * 200)
    assert all(not Counter(t.split()) - words for t in out)  # words are only dropped or moved
    dropped = sum(n - len(t.split()) for t in out) / (200 * n)
    assert 0.12 < dropped < 0.28  # about p of the words go
    assert sum(t != TEXT for t in out) > 190


def test_short_texts_and_zero_strength_are_left_alone() -> None:
    augment = WordAugment(0.5, seed=0)
    assert augment(["word", ""]) == ["word", ""]
    assert all(len(t.split()) >= 1 for t in augment(["two words"] * 100))
    assert WordAugment(0.0)([TEXT]) == [TEXT]


def test_strength_is_checked_and_off_by_default() -> None:
    cfg = FinetuneConfig()
    assert cfg.data.text_augment == 0 and text_augment(cfg) is None
    cfg.data.text_augment = 0.6
    with pytest.raises(ConfigError, match="text_augment"):
        cfg.data.validate()


def test_fine_tune_and_distill_batches_see_the_same_augmented_texts(text_run) -> None:
    """The no-KD twin (fine-tune collate) and the KD student (distill collate) get identical token batches."""
    from edgetl.runfolder import load_run
    from edgetl.runtime.text import load_tokenizer

    run = load_run(text_run[0])
    tokenizer, n = load_tokenizer(run.path / run.spec.tokenizer), run.spec.max_length
    items = [(i, f"{TEXT} number {i}", i % 2) for i in range(12)]
    plain = DataLoader([(t, y) for _, t, y in items], batch_size=4,
                       collate_fn=TextCollate(tokenizer, n, WordAugment(0.3, seed=1)))
    kd = DataLoader(items, batch_size=4, collate_fn=KDTextCollate(tokenizer, n, None, augment=WordAugment(0.3, 1)))
    batches = list(zip(plain, kd, strict=True))
    assert len(batches) == 3
    for (x, y), (item, labels) in batches:
        assert x["input_ids"].equal(item["student"]["input_ids"]) and y.equal(labels)
    unaugmented = TextCollate(tokenizer, n)([(t, y) for _, t, y in items[:4]])[0]["input_ids"]
    assert not unaugmented.equal(batches[0][0][0]["input_ids"])
