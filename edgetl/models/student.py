"""Students built from a teacher's layers: ``distilbert_from_teacher`` (DistilBERT's own recipe).

A DistilBERT-architecture encoder with the teacher's width, heads and feed-forward size, initialised
from evenly spaced teacher layers, first and last included (for 12 -> 6 layers that is DistilBERT's
``[0, 2, 4, 7, 9, 11]``, i.e. every other layer), embeddings copied. BERT adds
``token_type_embeddings[0]`` to every token of a single text and DistilBERT has no token types, so that
row is folded into the word embeddings: the student's embeddings output equals the teacher's exactly,
and each student layer computes what its teacher layer does given the same input.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgetl.errors import ConfigError

log = logging.getLogger("edgetl")
STUDENT_FROM_TEACHER = "distilbert_from_teacher"
#: BERT layer sub-module -> DistilBERT TransformerBlock sub-module (same tensors, other names).
_BERT_TO_DISTILBERT = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def select_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layer indices, first and last included (12 -> 6: ``[0, 2, 4, 7, 9, 11]``)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"--layers must be between 1 and the teacher's {teacher_layers} layers, "
                          f"got {student_layers}", f"use e.g. --layers {max(1, teacher_layers // 2)}")
    if student_layers == 1:
        return [teacher_layers - 1]
    return [round(float(x)) for x in np.linspace(0, teacher_layers - 1, student_layers)]


def _distilbert_config(teacher: nn.Module, layers: int) -> Any:
    from transformers import DistilBertConfig

    c = teacher.config
    if c.model_type == "distilbert":
        return DistilBertConfig(**{**c.to_dict(), "n_layers": layers})
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"the teacher uses {c.position_embedding_type} position embeddings",
                          "distilbert_from_teacher needs a BERT teacher with absolute position embeddings")
    if abs(getattr(c, "layer_norm_eps", 1e-12) - 1e-12) > 1e-15:
        log.warning("teacher layer_norm_eps %g differs from DistilBERT's 1e-12: the copied layers match it "
                    "only approximately", c.layer_norm_eps)
    return DistilBertConfig(
        vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings, sinusoidal_pos_embds=False,
        n_layers=layers, n_heads=c.num_attention_heads, dim=c.hidden_size, hidden_dim=c.intermediate_size,
        dropout=c.hidden_dropout_prob, attention_dropout=c.attention_probs_dropout_prob, activation=c.hidden_act,
        initializer_range=c.initializer_range, pad_token_id=c.pad_token_id or 0)


def _copy_bert_layer(source: nn.Module, target: nn.Module) -> None:
    state = source.state_dict()
    mapped = {}
    for src, dst in _BERT_TO_DISTILBERT.items():
        for leaf in ("weight", "bias"):
            mapped[f"{dst}.{leaf}"] = state[f"{src}.{leaf}"]
    target.load_state_dict(mapped, strict=True)


@torch.no_grad()
def _copy_embeddings(teacher: nn.Module, student: nn.Module) -> None:
    t, s = teacher.embeddings, student.embeddings
    words = t.word_embeddings.weight.clone()
    if hasattr(t, "token_type_embeddings"):  # BERT: single texts always add token type 0
        words += t.token_type_embeddings.weight[0]
    s.word_embeddings.weight.copy_(words)
    s.position_embeddings.weight.copy_(t.position_embeddings.weight)
    s.LayerNorm.load_state_dict(t.LayerNorm.state_dict())


def distilbert_from_teacher(teacher: nn.Module, layers: int | None = None) -> tuple[nn.Module, list[int]]:
    """A ``DistilBertModel`` initialised from a BERT (or DistilBERT) encoder's layers.

    Args:
        teacher: A transformers ``BertModel`` or ``DistilBertModel``.
        layers: Student depth; default half the teacher's (at least 1).

    Returns:
        The student encoder (eager attention, float32) and the teacher layer each student layer copies.

    Raises:
        ConfigError: ``layers`` is out of range or the teacher is not a BERT/DistilBERT encoder.
    """
    from transformers import DistilBertModel

    model_type = getattr(teacher.config, "model_type", None)
    if model_type not in ("bert", "distilbert"):
        raise ConfigError(f"distilbert_from_teacher needs a BERT or DistilBERT teacher, got {model_type!r}",
                          "use a text teacher such as minilm_l6 or bert_base_uncased")
    teacher_layers = _encoder_layers(teacher)
    chosen = select_layers(len(teacher_layers), layers or max(1, len(teacher_layers) // 2))
    config = _distilbert_config(teacher, len(chosen))
    config._attn_implementation = "eager"
    student = DistilBertModel(config).float()
    _copy_embeddings(teacher, student)
    for j, i in enumerate(chosen):
        if model_type == "bert":
            _copy_bert_layer(teacher_layers[i], student.transformer.layer[j])
        else:
            student.transformer.layer[j].load_state_dict(teacher_layers[i].state_dict())
    return student, chosen


def _encoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    return model.encoder.layer if model.config.model_type == "bert" else model.transformer.layer


def write_student_folder(student: nn.Module, tokenizer_dir: Path, pooling: str, folder: Path) -> Path:
    """Save the student as a Hugging Face folder (weights, config, the teacher's tokenizer, its pooling).

    The folder is what ``build_text_classifier`` loads and what the run's ``tokenizer/`` keeps, so
    ``edgetl export`` rebuilds the student without the teacher.
    """
    folder.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(folder, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, folder / name)
    pooling_cfg = {"word_embedding_dimension": int(student.config.dim),
                   "pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean"}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2), encoding="utf-8")
    return folder
