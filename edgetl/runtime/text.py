"""Tokenization for text models with the ``tokenizers`` library alone (no torch, no transformers).

Training, verification, benchmarks and the torch-free runtime all tokenize through here, so an app that
loads a bundle's ``tokenizer.json`` feeds the model exactly what it saw in training: truncation to the
spec's ``max_length`` and padding to the longest text of the batch with the tokenizer's pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetl.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
#: The inputs of an exported text model, in order; token types are always zero for single texts.
TEXT_INPUTS = ("input_ids", "attention_mask")
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The fast tokenizer in ``path`` (a ``tokenizer.json`` or its folder), padding to the longest text.

    Truncation is left off here and set per call by :func:`tokenize`.

    Raises:
        WeightsError: ``tokenizer.json`` is missing or unreadable, or has no padding token.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() or path.suffix != ".json" else path
    if not file.is_file():
        raise WeightsError(f"tokenizer not found: {file}", "a text model folder or bundle needs its tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises plain Exception
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "restore the tokenizer.json it came with"
        raise WeightsError(f"cannot read tokenizer {file}: {detail}", hint) from None
    pad_token = (tokenizer.padding or {}).get("pad_token") or "[PAD]"
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise WeightsError(f"tokenizer {file} has no padding token {pad_token!r}", "add padding to tokenizer.json")
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def tokenize(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, *, token_type_ids: bool = False
) -> tuple[dict[str, np.ndarray], int]:
    """Tokenize with truncation to ``max_length`` and padding to the longest text in the batch.

    Args:
        tokenizer: From :func:`load_tokenizer` (its padding is used; truncation is set here).
        texts: The texts.
        max_length: Longest sequence, special tokens included.
        token_type_ids: Also return ``token_type_ids`` (zeros for single texts, which BERT assumes anyway).

    Returns:
        int64 ``(N, L <= max_length)`` arrays by input name, and how many texts were truncated.

    Raises:
        ConfigError: ``max_length`` is below 2 or the tokenizer does not pad.
    """
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2, got {max_length}", "use e.g. 128")
    if tokenizer.padding is None:
        raise ConfigError("the tokenizer does not pad", "load it with edgetl.runtime.text.load_tokenizer")
    if (tokenizer.truncation or {}).get("max_length") != max_length:
        tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(list(texts))
    rows = len(encodings)
    arrays = {
        key: np.array([getattr(e, attr) for e in encodings], dtype=np.int64).reshape(rows, -1 if rows else 0)
        for key, attr in _FIELDS.items()
        if token_type_ids or key != "token_type_ids"
    }
    return arrays, sum(1 for e in encodings if e.overflowing)


def synthetic_tokens(tokenizer: Tokenizer, batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Model inputs of exactly ``(batch, length)`` tokens, no padding: for timing at a fixed sequence length.

    Ids are drawn from the tokenizer's vocabulary (skipping the first 1,000, which hold special and
    unused tokens in BERT vocabularies).
    """
    if batch < 1 or length < 2:
        raise ConfigError(f"need batch >= 1 and length >= 2, got {batch} and {length}")
    vocab = tokenizer.get_vocab_size()
    low = min(1000, vocab // 2)
    ids = np.random.default_rng(seed).integers(low, vocab, (batch, length), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
