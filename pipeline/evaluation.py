"""Classification metrics in one shape for every script and report."""

import numpy as np


def classification_metrics(y_true, y_pred, label_names):
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the
    confusion matrix, as plain JSON-compatible values.

    Parameters
    ----------
    y_true, y_pred : array-like of int
        Class indices into ``label_names``.
    label_names : list of str
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and equal length, got "
                         f"{y_true.shape} and {y_pred.shape}")
    indices = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0)
    present = support > 0  # macro-F1 over the classes that occur
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if y_true.size else 0.0,
        "macro_f1": float(np.mean(f1[present])) if present.any() else 0.0,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "labels": list(label_names),
    }


def report_text(metrics, title="classification report"):
    """A readable per-class table of :func:`classification_metrics` output."""
    lines = [title, f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:<14}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                     f"{row['f1']:>10.3f}{row['support']:>10d}")
    lines.append(f"accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}")
    return "\n".join(lines) + "\n"
