"""Wrong labels and outliers from the features: out-of-fold probabilities ranked by cleanlab.

Out-of-fold: each photo's probabilities come from a logistic regression fitted on the other folds, so a photo
never vouches for its own label. Duplicate groups stay inside one fold (a twin in the training folds would
vouch for it). cleanlab's confident learning (`find_label_issues`) picks the suspects; its label quality score
ranks them, the most doubtful first. Outliers are the photos farthest from their nearest neighbours in feature
space (cleanlab's `OutOfDistribution`, mean cosine distance to the 10 nearest): off-topic or broken photos.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

FOLDS = 5
OUTLIER_SHARE = 0.005  # the outlier list: this share of the photos, at least MIN_OUTLIERS
MIN_OUTLIERS = 10


class AuditError(ValueError):
    """The data cannot be audited as asked; the message says why."""


@dataclass
class LabelIssues:
    probabilities: np.ndarray  # (n, classes) out of fold
    quality: np.ndarray  # (n,) cleanlab label quality, 0 (surely wrong) .. 1
    ranked: np.ndarray  # indices of the suspects, most doubtful first
    suggested: np.ndarray  # (n,) the likeliest class other than the given one
    folds: int
    accuracy: float  # out-of-fold accuracy of the given labels: how well the features separate the classes


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = FOLDS,
                              seed: int = 0) -> tuple[np.ndarray, int]:
    """(n, classes) probabilities by k-fold logistic regression on standardised features; the folds used."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.bincount(labels).min())
    if smallest < 2:
        raise AuditError("every class needs at least 2 photos for out-of-fold predictions; a class has "
                         f"{smallest}")
    folds = max(2, min(folds, smallest))
    # C < 1: features have ~1000 values for a few hundred photos per class; firmer regularisation keeps the
    # probabilities from being overconfident, which confident learning relies on.
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    # One BLAS thread: on a busy machine L-BFGS with a threaded BLAS spends 100x longer waiting than computing.
    with threadpool_limits(1):
        probs = cross_val_predict(model, features, labels, groups=groups, cv=cv, method="predict_proba")
    return probs, folds


def find_label_issues(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int = FOLDS
                      ) -> LabelIssues:
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    probs, folds = out_of_fold_probabilities(features, labels, groups, folds)
    quality = get_label_quality_scores(labels, probs)
    flagged = cleanlab_find(labels, probs, filter_by="prune_by_noise_rate")
    ranked = np.flatnonzero(flagged)
    ranked = ranked[np.argsort(quality[ranked], kind="stable")]
    return LabelIssues(probs, quality, ranked, suggest(probs, labels), folds,
                       float((probs.argmax(1) == labels).mean()))


def suggest(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The likeliest class other than the given one: what a suspect probably is."""
    other = probs.copy()
    other[np.arange(len(labels)), labels] = -1
    return other.argmax(1)


def find_outliers(features: np.ndarray, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the `count` most isolated photos, most isolated first; every photo's score, lower = farther)."""
    from cleanlab.outlier import OutOfDistribution

    n = len(features)
    if n < 3:
        return np.zeros(0, dtype=int), np.ones(n)
    with contextlib.redirect_stdout(io.StringIO()), threadpool_limits(1):  # cleanlab prints its progress
        scores = OutOfDistribution(params={"k": min(10, n - 1)}).fit_score(features=features)
    count = min(n, max(MIN_OUTLIERS, round(n * OUTLIER_SHARE))) if count is None else min(n, count)
    return np.argsort(scores, kind="stable")[:count], scores


def per_class(ranked: np.ndarray, labels: np.ndarray, suggested: np.ndarray, class_names: Sequence[str]) -> dict:
    """Per given class: how many suspects and the classes they probably belong to (most common first)."""
    out = {}
    for c, name in enumerate(class_names):
        mine = [int(i) for i in ranked if labels[i] == c]
        likely = Counter(class_names[suggested[i]] for i in mine)
        out[name] = {"photos": int((labels == c).sum()), "suspects": len(mine), "likely": dict(likely.most_common())}
    return out
