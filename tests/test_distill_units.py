"""Distillation pieces without training: the loss math by hand, bad options, labels, the student-from-teacher init."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from edgetl.cli import main
from edgetl.config import DistillConfig
from edgetl.errors import ConfigError
from edgetl.models.student import distilbert_from_teacher, select_layers
from edgetl.train.distill_losses import KDWeights, hidden_cosine_loss, kd_loss, soft_target_loss
from edgetl.train.teachers import label_order


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_soft_target_loss_matches_a_hand_computation() -> None:
    student, teacher, t = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]], 2.0
    expected = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        p = _softmax([v / t for v in t_row])
        q = _softmax([v / t for v in s_row])
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = expected / 2 * t * t  # batch mean, times T^2
    got = soft_target_loss(torch.tensor(student), torch.tensor(teacher), t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert soft_target_loss(torch.tensor(teacher), torch.tensor(teacher), t).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_weights_soft_hard_and_hidden_terms() -> None:
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[2.0, 0.0, 1.0]])
    y = torch.tensor([1])
    ce = -math.log(_softmax([1.0, 2.0, 0.5])[1])
    soft = soft_target_loss(s, t, 4.0).item()
    total, parts = kd_loss(s, y, t, KDWeights(4.0, 0.25, hidden=2.0), torch.nn.CrossEntropyLoss(),
                           {"hidden": torch.tensor(0.1)})
    assert parts["hard"] == pytest.approx(ce, rel=1e-6)
    assert total.item() == pytest.approx(0.25 * soft + 0.75 * ce + 2.0 * 0.1, rel=1e-6)
    only_hard, _ = kd_loss(s, y, t, KDWeights(4.0, 0.0), torch.nn.CrossEntropyLoss())
    assert only_hard.item() == pytest.approx(ce, rel=1e-6)


def test_hidden_cosine_loss_ignores_padding() -> None:
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: cos 1 -> 0; token 1: cos 0 -> 1; token 2 is padding
    assert hidden_cosine_loss(student, teacher, mask).item() == pytest.approx(0.5)


@pytest.mark.parametrize(("section", "value", "words"), [
    ({"temperature": 0}, "--temperature", "temperature must be > 0"),
    ({"temperature": -1}, "--temperature", "temperature must be > 0"),
    ({"alpha": 1.5}, "--alpha", "alpha must be in [0, 1]"),
    ({"alpha": -0.1}, "--alpha", "alpha must be in [0, 1]"),
])
def test_bad_temperature_and_alpha_are_refused(section: dict, value: str, words: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        DistillConfig.from_dict({"distill": {"teacher": "efficientnet_lite0", **section}})
    result = CliRunner().invoke(main, ["distill", "--teacher", "efficientnet_lite0", value,
                                       str(next(iter(section.values()))), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_unknown_teacher_lists_what_a_teacher_can_be(tmp_path) -> None:
    result = CliRunner().invoke(main, ["distill", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "not found" in result.output and "bundle" in result.output and "efficientnet_lite2" in result.output


def test_label_sets_that_differ_are_named_and_orders_are_mapped() -> None:
    with pytest.raises(ConfigError) as err:
        label_order(("cat", "dog", "fox"), ["cat", "dog", "owl"])
    assert "only the teacher has: fox" in err.value.message and "only the student's data has: owl" in err.value.message
    assert label_order(("dog", "fox", "cat"), ["cat", "dog", "fox"]).tolist() == [2, 0, 1]


def test_layer_selection_is_distilberts_recipe() -> None:
    assert select_layers(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's own choice from bert-base
    assert select_layers(6, 3) == [0, 2, 5]
    assert select_layers(6, 6) == list(range(6))
    with pytest.raises(ConfigError, match="between 1 and the teacher's 6"):
        select_layers(6, 7)


def test_student_from_minilm_reproduces_the_teacher_layers_exactly() -> None:
    """Same input hidden states -> student layer j gives the output of the teacher layer it copies; the
    embeddings output is identical (BERT's token_type_embeddings[0] folded into the word embeddings)."""
    from edgetl.models.text import TextBackbone, build_text_classifier

    teacher, _, _ = build_text_classifier("minilm_l6", 2)
    tb = teacher.backbone.eval()
    encoder, chosen = distilbert_from_teacher(tb.model, 3)
    assert chosen == [0, 2, 5] and type(encoder).__name__ == "DistilBertModel"
    student = TextBackbone(encoder.eval(), "mean")
    ids = [[101, 1037, 17070, 3185, 999, 102, 0, 0], [101, 2025, 2005, 2033, 102, 0, 0, 0]]
    batch = {"input_ids": torch.tensor(ids),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]])}
    with torch.no_grad():
        states = tb.hidden_states(batch)
        assert torch.equal(student.embed(batch), states[0])
        for j, i in enumerate(chosen):
            out = student.forward_units(batch, j + 1, j + 2, states[i])
            torch.testing.assert_close(out, states[i + 1], rtol=0, atol=1e-6)
        # without folding the token type row in, the embeddings would differ
        assert not torch.allclose(tb.model.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


@pytest.mark.slow
def test_text_artifact_is_timed_on_a_full_max_length_sequence(exported) -> None:
    """The distillation report times a text bundle at its spec's max_length, not on a short test sentence."""
    from edgetl.train.distill_report import _artifact

    bundle = exported("text", "onnx")
    row = _artifact(bundle, data=None)  # text needs no test item: the input is synthetic
    assert row["format"] == "onnx" and row["seq_len"] == 48 and row["latency_ms"] > 0
    assert row["file_bytes"] == (bundle / "model.onnx").stat().st_size
