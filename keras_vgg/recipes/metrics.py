"""Held-out measures of a transfer, as the paper reports them (Appendix B):
mean class recall for single-label data (Caltech), mean average precision
for multi-label data (VOC); top-1 accuracy beside them.

Plain NumPy on score arrays, so the same functions judge a softmax head, a
sigmoid head and an SVM's decision values.
"""

import numpy as np


def top1_accuracy(scores, labels):
    """Fraction of images whose highest score is their class."""
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


def mean_class_recall(scores, labels):
    """The mean over classes of the fraction of each class's images that are
    classified as that class (the classes present in `labels`); unlike
    accuracy it weighs every class alike however many images it has."""
    labels = np.asarray(labels)
    predicted = np.argmax(scores, axis=1)
    return float(np.mean([np.mean(predicted[labels == c] == c)
                          for c in np.unique(labels)]))


def average_precision(scores, positives):
    """Average precision of one class: the precision at each distinct score
    threshold, weighted by the recall gained there (scikit-learn's
    `average_precision_score`: no interpolation; tied scores are one
    threshold). NaN when the class has no positive."""
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives) > 0.5
    if not positives.any():
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, positives = scores[order], positives[order]
    # The last index of each run of equal scores: one threshold per run.
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_pos = np.cumsum(positives)[ends]
    precision = true_pos / (ends + 1)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores, targets):
    """mAP over the classes that have at least one positive in `targets`
    (multi-hot, `(N, classes)`)."""
    aps = [average_precision(scores[:, c], targets[:, c])
           for c in range(targets.shape[1])]
    return float(np.nanmean(aps))


def held_out(scores, labels, multi_label):
    """The measures of a transfer on held-out images, as a dict."""
    scores = np.asarray(scores)
    if multi_label:
        return {"mean_average_precision": mean_average_precision(scores, labels),
                "images": int(len(scores))}
    return {"top1_accuracy": top1_accuracy(scores, labels),
            "mean_class_recall": mean_class_recall(scores, labels),
            "images": int(len(scores))}


def headline(results, multi_label):
    """The one figure the paper reports for such data: mAP or mean class recall."""
    return results["mean_average_precision" if multi_label else "mean_class_recall"]
