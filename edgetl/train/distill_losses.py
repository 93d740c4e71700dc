"""Distillation losses: soft targets with temperature, hard labels, hidden-state cosine, feature matching.

The total is ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)`` (Hinton et al.,
2015: the T^2 keeps the soft term's gradients on the hard term's scale as T changes), plus, for text,
``hidden_weight * mean(1 - cos(h_s, h_t))`` over the real (unpadded) tokens of the last hidden states
(DistilBERT's cosine loss), and, for CNNs, ``feature_weight * MSE(P(f_s), f_t)`` with ``P`` a learned 1x1
convolution from the student's channels to the teacher's (FitNets' hint, the student map resized to the
teacher's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(p_t || p_s)`` with ``p = softmax(logits / T)``, averaged over the batch."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2


def hidden_cosine_loss(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``mean(1 - cos(h_s, h_t))`` over the tokens the mask keeps; ``(N, L, H)`` states, ``(N, L)`` mask."""
    keep = attention_mask.bool()
    return (1.0 - F.cosine_similarity(student[keep], teacher.detach()[keep], dim=-1)).mean()


class FeatureProjection(nn.Module):
    """A learned 1x1 convolution from the student's feature channels to the teacher's."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)

    def forward(self, student: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Project ``(N, Cs, H, W)`` to ``(N, Ct, *size)``."""
        x = self.proj(student)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def feature_loss(projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the projected student map and the teacher's."""
    return F.mse_loss(projected, teacher.detach())


@dataclass
class KDWeights:
    """How the terms are weighted (see the module docstring)."""

    temperature: float = 4.0
    alpha: float = 0.5
    hidden: float = 0.0
    feature: float = 0.0


def kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    weights: KDWeights,
    hard: nn.Module,
    extra: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted total and each term's value.

    Args:
        student_logits: ``(N, C)``.
        labels: ``(N,)`` class indices.
        teacher_logits: ``(N, C)``, in the student's label order.
        weights: Temperature and term weights.
        hard: The hard-label criterion (the fine-tune one: label smoothing, class weights).
        extra: Already computed ``hidden`` and ``feature`` terms, weighted here.
    """
    soft = soft_target_loss(student_logits, teacher_logits, weights.temperature)
    ce = hard(student_logits, labels)
    total = weights.alpha * soft + (1.0 - weights.alpha) * ce
    parts = {"soft": float(soft.detach()), "hard": float(ce.detach())}
    for name, value in (extra or {}).items():
        total = total + getattr(weights, name) * value
        parts[name] = float(value.detach())
    return total, parts
