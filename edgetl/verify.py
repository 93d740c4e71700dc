"""Parity: the same inputs through a reference and an artifact; logit differences, top-1 agreement, accuracy.

Framework-neutral: both sides are callables from model inputs (a float32 image batch in the spec's
layout, or a text model's token arrays by name) to logits, so a torch model, an ONNX Runtime session or
any later engine can be compared. Inputs are made with :mod:`edgetl.runtime.preprocess` and
:mod:`edgetl.runtime.text`, the one implementation of the model's input contract.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetl.errors import ConfigError, DataError, ParityError
from edgetl.progress import Ticker
from edgetl.runtime.engines import Inputs
from edgetl.runtime.preprocess import normalize, resize
from edgetl.runtime.text import tokenize
from edgetl.spec import ModelSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from edgetl.data import SampleSet

log = logging.getLogger("edgetl")

Predictor = Callable[[Inputs], np.ndarray]
DEFAULT_MAX_ABS_DIFF = 1e-4
DEFAULT_MIN_AGREEMENT = 0.999


@dataclass(frozen=True)
class ParityLimits:
    """What an artifact must meet against its reference to be accepted.

    Attributes:
        max_abs_diff: Largest absolute logit difference (``inf``: not checked, as for INT8).
        min_agreement: Smallest top-1 agreement (share of samples, 0..1).
        max_accuracy_drop: Largest accuracy loss against the reference, in points (``None``: not checked).
        max_rel_diff: Largest logit difference relative to the reference's largest absolute logit
            (``None``: not checked). Used for FP16, whose rounding error grows with the logits' scale.
    """

    max_abs_diff: float = DEFAULT_MAX_ABS_DIFF
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_accuracy_drop: float | None = None
    max_rel_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``inf`` written as ``None``)."""
        d = asdict(self)
        d["max_abs_diff"] = None if d["max_abs_diff"] == float("inf") else d["max_abs_diff"]
        return d


#: Default limits per artifact precision: exact formats must match closely; quantized ones must keep
#: their decisions and accuracy (logits move by design).
PRECISION_LIMITS = {
    "fp32": ParityLimits(),
    "fp16": ParityLimits(max_abs_diff=1e-2, min_agreement=0.995),
    "int8": ParityLimits(max_abs_diff=float("inf"), min_agreement=0.95, max_accuracy_drop=1.0),
}


def limits_for(precision: str, **overrides: float | None) -> ParityLimits:
    """The default limits of ``precision`` with the non-None ``overrides`` applied."""
    base = PRECISION_LIMITS.get(precision, ParityLimits())
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class VerifyReport:
    """How closely an artifact follows its reference on a set of labelled samples.

    Attributes:
        n: Number of samples compared.
        max_abs_diff: Largest absolute logit difference over all samples and classes.
        max_rel_diff: ``max_abs_diff`` divided by the reference's largest absolute logit (its scale).
        mean_abs_diff: Mean absolute logit difference.
        top1_agreement: Share of samples where both give the same top-1 class.
        reference_accuracy: Top-1 accuracy of the reference against the labels.
        artifact_accuracy: Top-1 accuracy of the artifact against the labels.
        per_class_artifact_accuracy: Artifact accuracy per class name (classes with no sample are left out).
    """

    n: int
    max_abs_diff: float
    max_rel_diff: float
    mean_abs_diff: float
    top1_agreement: float
    reference_accuracy: float
    artifact_accuracy: float
    per_class_artifact_accuracy: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def compare(
    reference_logits: np.ndarray,
    artifact_logits: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str] | None = None,
) -> VerifyReport:
    """Compare two ``(N, C)`` logit arrays computed from the same ``N`` labelled inputs.

    Args:
        reference_logits: Logits of the reference (e.g. the PyTorch model).
        artifact_logits: Logits of the artifact (e.g. the ONNX model in ONNX Runtime).
        labels: True class index per sample, shape ``(N,)``.
        classes: Class names; when given, per-class artifact accuracy is filled in.

    Returns:
        The report. A NaN anywhere in the artifact gives ``max_abs_diff = nan``, which fails every limit.

    Raises:
        ParityError: The shapes differ or there are no samples.
    """
    ref, art = np.asarray(reference_logits, np.float64), np.asarray(artifact_logits, np.float64)
    labels = np.asarray(labels, np.int64).reshape(-1)
    _check_shapes(ref, art, labels)
    diff = np.abs(ref - art)
    ref_top, art_top = ref.argmax(axis=1), art.argmax(axis=1)
    return VerifyReport(
        n=int(labels.shape[0]),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(diff.max() / max(np.abs(ref).max(), 1e-12)),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float(np.mean(ref_top == art_top)),
        reference_accuracy=float(np.mean(ref_top == labels)),
        artifact_accuracy=float(np.mean(art_top == labels)),
        per_class_artifact_accuracy=_per_class(art_top, labels, classes) if classes else None,
    )


def _check_shapes(ref: np.ndarray, art: np.ndarray, labels: np.ndarray) -> None:
    if ref.ndim != 2 or ref.shape != art.shape or ref.shape[0] != labels.shape[0]:
        raise ParityError(
            f"cannot compare logits of shape {ref.shape} with {art.shape} for {labels.shape[0]} labels",
            "both sides must return (N, num_classes) logits for the same N inputs",
        )
    if labels.shape[0] == 0:
        raise ParityError("no samples to compare", "verify on a split that holds at least one image")


def _per_class(pred: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    out = {}
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            out[str(name)] = float(np.mean(pred[mask] == index))
    return out


def verify_samples(
    reference: Predictor,
    artifact: Predictor,
    samples: SampleSet,
    spec: ModelSpec,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
    tokenizer: Tokenizer | None = None,
) -> VerifyReport:
    """Preprocess (or tokenize) ``samples`` per the spec, run both predictors batch by batch, and compare.

    Args:
        reference: Model inputs -> logits (the trusted side).
        artifact: The same for the artifact under test.
        samples: Labelled images (``len``, ``labels``, ``image(i)``), e.g. ``ImageData.test``, or labelled
            texts (``texts``, ``labels``) for a text spec.
        spec: The model's input contract (size, mean/std, layout or max_length; labels).
        batch_size: Samples per call.
        limit: Compare at most this many samples (the first ones); ``None`` for all.
        progress: Show a progress bar.
        tokenizer: Text specs: the tokenizer (from :func:`edgetl.runtime.text.load_tokenizer`).

    Returns:
        The comparison over every sample used.

    Raises:
        DataError: There are no samples, or ``limit``/``batch_size`` is below 1.
        ConfigError: A text spec without a tokenizer.
        ParityError: The predictors return logits of different shapes.
    """
    n = _sample_count(samples, limit, batch_size)
    refs, arts, labels = [], [], []
    with Ticker("verify", total=(n + batch_size - 1) // batch_size, enabled=progress) as ticker:
        for batch, batch_labels in labelled_batches(samples, spec, limit=n, batch_size=batch_size,
                                                    tokenizer=tokenizer):
            refs.append(np.asarray(reference(batch)))
            arts.append(np.asarray(artifact(batch)))
            labels.append(batch_labels)
            ticker.advance()
    return compare(np.concatenate(refs), np.concatenate(arts), np.concatenate(labels), classes=spec.labels)


def labelled_batches(
    samples: SampleSet, spec: ModelSpec, *, limit: int | None = None, batch_size: int = 64,
    tokenizer: Tokenizer | None = None,
) -> Iterator[tuple[Inputs, np.ndarray]]:
    """The first ``limit`` samples (``None``: all), preprocessed or tokenized per the spec, as (inputs, labels)
    batches of ``batch_size``: what every comparison here feeds both sides.

    Raises:
        DataError: There are no samples, or ``limit``/``batch_size`` is below 1.
        ConfigError: A text spec without a tokenizer.
    """
    n = _sample_count(samples, limit, batch_size)
    if spec.is_text and tokenizer is None:
        raise ConfigError("verifying a text model needs its tokenizer")
    for start in range(0, n, batch_size):
        indices = range(start, min(start + batch_size, n))
        inputs = _text_batch(samples, spec, indices, tokenizer) if spec.is_text else _batch(samples, spec, indices)
        yield inputs, np.asarray(samples.labels[start:indices.stop])


def _sample_count(samples: SampleSet, limit: int | None, batch_size: int) -> int:
    if batch_size < 1 or (limit is not None and limit < 1):
        raise DataError(f"batch_size and limit must be >= 1, got {batch_size} and {limit}")
    n = len(samples) if limit is None else min(limit, len(samples))
    if n == 0:
        raise DataError("no samples to verify on", "use a dataset whose test split holds at least one image")
    return n


def _batch(samples: SampleSet, spec: ModelSpec, indices: range) -> np.ndarray:
    return np.stack([normalize(resize(samples.image(i), spec), spec) for i in indices])


def _text_batch(samples: Any, spec: ModelSpec, indices: range, tokenizer: Tokenizer) -> dict[str, np.ndarray]:
    return tokenize(tokenizer, [samples.texts[i] for i in indices], spec.max_length)[0]


def check_parity(
    report: VerifyReport,
    max_abs_diff: float = DEFAULT_MAX_ABS_DIFF,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_accuracy_drop: float | None = None,
    hint: str | None = None,
    max_rel_diff: float | None = None,
) -> None:
    """Raise :class:`ParityError` unless the report is within every limit.

    Args:
        report: The comparison to judge.
        max_abs_diff: Largest allowed absolute logit difference (``inf`` to skip; NaN logits still fail).
        min_agreement: Smallest allowed top-1 agreement (share of samples, 0..1).
        max_accuracy_drop: Largest allowed accuracy loss against the reference, in points (``None``: skip).
        hint: What the user can do, for the error (default: look for unsupported ops or preprocessing).
        max_rel_diff: Largest allowed difference relative to the reference's logit scale (``None``: skip).

    Raises:
        ParityError: Naming the measured figures and the limits.
    """
    drop = 100 * (report.reference_accuracy - report.artifact_accuracy)
    diff_ok = report.max_abs_diff <= max_abs_diff  # False for NaN, even against inf
    agree_ok = report.top1_agreement >= min_agreement
    drop_ok = max_accuracy_drop is None or drop <= max_accuracy_drop + 1e-9
    rel_ok = max_rel_diff is None or report.max_rel_diff <= max_rel_diff
    if diff_ok and agree_ok and drop_ok and rel_ok:
        log.debug("parity ok: max |diff| %.3g, agreement %.4f", report.max_abs_diff, report.top1_agreement)
        return
    checked_diff = max_abs_diff != float("inf")
    diff_text = f" max |logit diff| {report.max_abs_diff:.3g} (limit {max_abs_diff:g})," if checked_diff else ""
    if max_rel_diff is not None:
        diff_text += f" relative logit diff {report.max_rel_diff:.3g} (limit {max_rel_diff:g}),"
    drop_text = "" if max_accuracy_drop is None else f", accuracy drop {drop:.2f} points (limit {max_accuracy_drop:g})"
    raise ParityError(
        f"artifact differs from the reference on {report.n} samples:{diff_text} top-1 agreement "
        f"{report.top1_agreement:.2%} (limit {min_agreement:.2%}){drop_text}",
        hint or "the export is refused; check for unsupported ops or a preprocessing mismatch, or report a bug",
    )


def torch_reference(model: Any, spec: ModelSpec) -> Predictor:
    """Wrap an eval-mode torch model as a predictor of the spec's inputs (imports torch).

    Args:
        model: A ``torch.nn.Module`` taking ``(N, 3, H, W)`` images, or a text classifier taking a dict
            of token tensors.
        spec: Its input contract; an ``NHWC`` spec is transposed to ``NCHW`` before the model.
    """
    import torch

    module = spec_layout_module(model, spec).eval()

    def predict(inputs: Inputs) -> np.ndarray:
        with torch.inference_mode():
            if isinstance(inputs, dict):
                tensors = {k: torch.from_numpy(np.ascontiguousarray(v, np.int64)) for k, v in inputs.items()}
                return module(tensors).float().numpy()
            return module(torch.from_numpy(np.ascontiguousarray(inputs, np.float32))).float().numpy()

    return predict


def spec_layout_module(model: Any, spec: ModelSpec) -> Any:
    """``model`` itself for an ``NCHW`` spec or a text model; for ``NHWC`` a module that permutes its input first."""
    if spec.layout == "NCHW" or spec.is_text:
        return model
    import torch

    class _FromNHWC(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.permute(0, 3, 1, 2))

    return _FromNHWC(model)
