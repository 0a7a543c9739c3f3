"""How well the *source* of an image (hospital, database) can be told from its pixels: part of the shortcut audit.

A logistic regression on simple features (a 24 x 24 thumbnail and a 32-bin intensity histogram, both
standardised) is fitted on the train and validation images of the audit's split and scored on its test
images with :func:`covid_tf.evaluation.summary.compute_metrics` (ROC-AUC with a 95 % bootstrap CI;
macro one-vs-rest for more than two sources). When sources differ between classes, a source that is easy
to predict is a shortcut a classifier can take. Sources come from the ``source`` column of the dataset's
``metadata.csv``; with fewer than two sources nothing is fitted and the result says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.images import load_image
from covid_tf.data.sources import SOURCE_COLUMN, image_sources, source_table
from covid_tf.evaluation.metrics import to_jsonable
from covid_tf.evaluation.summary import compute_metrics

THUMBNAIL = 24
HISTOGRAM_BINS = 32


def simple_features(paths: Sequence[str]) -> np.ndarray:
    """(N, F) features of image files: a ``THUMBNAIL``-pixel grayscale thumbnail and an intensity histogram."""
    rows = []
    for path in paths:
        image = load_image(path, channels=1)
        thumbnail = load_image(path, channels=1, size=THUMBNAIL).ravel()
        histogram = np.histogram(image, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / image.size
        rows.append(np.concatenate([thumbnail, histogram, [image.mean(), image.std()]]))
    return np.asarray(rows, dtype=np.float64)


def _unavailable(reason: str, counts: dict | None = None) -> dict:
    return {"available": False, "reason": reason, "counts": counts or {}}


def source_predictability(data: str | Path, split: pd.DataFrame, *, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """Test ROC-AUC (with its CI) of predicting each image's source; ``available`` False with a reason when
    there is no ``source`` column, fewer than two sources, or too few images of a source to fit or score."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sources = image_sources(data, split["path"].tolist())
    if sources is None:
        return _unavailable(f"no {SOURCE_COLUMN!r} column in {source_table(data) or Path(data) / 'metadata.csv'}")
    frame = split.reset_index(drop=True).assign(source=sources.to_numpy())
    frame = frame[(frame["source"] != "") & (frame["split"] != "")]
    counts = {name: group["label"].value_counts().to_dict() for name, group in frame.groupby("source")}
    names = sorted(counts)
    if len(names) < 2:
        return _unavailable(f"one source only ({', '.join(names) or 'none listed'})", counts)
    train, test = frame[frame["split"].isin(["train", "val"])], frame[frame["split"] == "test"]
    if train["source"].nunique() < 2 or test["source"].nunique() < 2:
        return _unavailable("fewer than two sources among the training or the test images", counts)
    names = sorted(train["source"].unique())
    test = test[test["source"].isin(names)]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    model.fit(simple_features(train["path"].tolist()), train["source"].to_numpy())
    probabilities = model.predict_proba(simple_features(test["path"].tolist()))
    y_true = np.asarray([names.index(source) for source in test["source"]])
    metrics = compute_metrics(y_true, probabilities, names, n_bootstrap=n_bootstrap, seed=seed)
    low, high = metrics["ci95"]["roc_auc"]
    majority = float(test["source"].value_counts(normalize=True).max())
    return to_jsonable({"available": True, "sources": names, "features": "thumbnail + intensity histogram",
                        "classifier": "logistic regression", "roc_auc": metrics["roc_auc"], "ci_low": low,
                        "ci_high": high, "accuracy": metrics["accuracy"], "majority_share": majority,
                        "n_train": len(train), "n_test": len(test), "counts": counts})
