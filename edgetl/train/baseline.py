"""The simplest honest baseline: logistic regression on raw (downsampled) pixels."""

from __future__ import annotations

import logging
import time

import numpy as np

from edgetl.data import ImageData, SampleSet
from edgetl.progress import track
from edgetl.runtime.preprocess import resize
from edgetl.spec import ModelSpec
from edgetl.train.metrics import classification_metrics

log = logging.getLogger("edgetl")


def pixel_matrix(
    samples: SampleSet, side: int, limit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images as rows of ``side x side x 3`` pixels in [0, 1] (a seeded subset when ``limit``)."""
    idx = np.arange(len(samples))
    if limit is not None and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    spec = ModelSpec(labels=("x",), input_size=(side, side), resize="squash")
    rows = [np.asarray(resize(samples.image(int(i)), spec), np.float32).ravel() / 255.0 for i in
            track(idx, f"pixels ({side}x{side})")]
    return np.stack(rows), samples.labels[idx]


def pixel_logistic_regression(data: ImageData, side: int = 28, max_train: int = 20000, seed: int = 0) -> dict:
    """Fit multinomial logistic regression on pixels of the train split; metrics on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    x_train, y_train = pixel_matrix(data.train, side, max_train, seed)
    x_test, y_test = pixel_matrix(data.test, side)
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=300, C=0.1)
    clf.fit(scaler.transform(x_train), y_train)
    preds = clf.predict(scaler.transform(x_test))
    metrics = classification_metrics(y_test, preds, data.classes)
    metrics.update(name="logistic regression on pixels", train_samples=len(y_train),
                   seconds=round(time.perf_counter() - start, 1), params=int(clf.coef_.size + clf.intercept_.size))
    log.info("pixel logistic regression: test accuracy %.4f", metrics["accuracy"])
    return metrics


def tfidf_logistic_regression(data, seed: int = 0) -> dict:
    """TF-IDF (word 1-2 grams) + logistic regression: the simple text model to beat."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x_train = vectorizer.fit_transform(data.train.texts)
    clf = LogisticRegression(max_iter=1000, C=4.0, random_state=seed).fit(x_train, data.train.labels)
    preds = clf.predict(vectorizer.transform(data.test.texts))
    metrics = classification_metrics(data.test.labels, preds, data.classes)
    metrics.update(name="TF-IDF + logistic regression", train_samples=len(data.train),
                   seconds=round(time.perf_counter() - start, 1), params=int(clf.coef_.size + clf.intercept_.size))
    log.info("TF-IDF logistic regression: test accuracy %.4f", metrics["accuracy"])
    return metrics
