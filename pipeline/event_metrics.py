"""Event-based scores of detected events against labelled ones: a detection
is right when it overlaps a labelled event of the same class, widened by the
tolerance on both sides (a windowed detector's onset can fall a window
early or late); each labelled event matches at most one detection, closest
onsets first. Delays are detected minus labelled onsets."""

import numpy as np


def match_events(reference, detected, tolerance_s):
    """Greedy one-to-one matching by onset distance, per class.

    Parameters
    ----------
    reference, detected : list of (start_s, end_s, label)
    tolerance_s : float
        A labelled event counts as [start - tolerance, end + tolerance].

    Returns
    -------
    dict label -> {"true_positives", "false_positives", "false_negatives"};
    :func:`onset_delays` gives the matched pairs' delays.
    """
    counts = {}
    for label in sorted({e[2] for e in reference} | {e[2] for e in detected}):
        ref = sorted(e[:2] for e in reference if e[2] == label)
        det = sorted(e[:2] for e in detected if e[2] == label)
        used_ref, used_det = _matched(ref, det, tolerance_s)
        counts[label] = {"true_positives": len(used_ref),
                         "false_positives": len(det) - len(used_det),
                         "false_negatives": len(ref) - len(used_ref)}
    return counts


def _matched(ref, det, tolerance_s):
    """Greedy pairs of overlapping (start, end) events, closest onsets
    first: {ref index: det index}, and the used detections."""
    pairs = sorted((abs(r[0] - d[0]), i, j) for i, r in enumerate(ref) for j, d in enumerate(det)
                   if d[0] <= r[1] + tolerance_s and d[1] >= r[0] - tolerance_s)
    used_ref, used_det = {}, set()
    for _, i, j in pairs:
        if i not in used_ref and j not in used_det:
            used_ref[i] = j
            used_det.add(j)
    return used_ref, used_det


def onset_delays(reference, detected, tolerance_s):
    """Detected minus labelled onset (seconds) of each matched pair of one
    class's (start_s, end_s) events."""
    ref, det = sorted(reference), sorted(detected)
    used_ref, _ = _matched(ref, det, tolerance_s)
    return [det[j][0] - ref[i][0] for i, j in used_ref.items()]


def _scores(tp, fp, fn):
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}


def event_scores(counts, hours):
    """Per-class and overall (micro) precision, recall, F1, and false
    activations per hour of audio (``hours``)."""
    per_class = {label: {**c, **_scores(c["true_positives"], c["false_positives"],
                                         c["false_negatives"]),
                         "false_activations_per_hour": c["false_positives"] / hours
                         if hours > 0 else float("nan")}
                 for label, c in counts.items()}
    total = {k: int(np.sum([c[k] for c in counts.values()]))
             for k in ("true_positives", "false_positives", "false_negatives")}
    overall = {**total, **_scores(total["true_positives"], total["false_positives"],
                                  total["false_negatives"]),
               "false_activations_per_hour": total["false_positives"] / hours
               if hours > 0 else float("nan")}
    return {"per_class": per_class, "overall": overall, "hours": hours}


def standard_event_scores(reference, detected, labels, *, collar_s=0.2, offset_fraction=0.2):
    """Event-based precision, recall and F1 as published sound-event
    detection results report them (sed_eval, the DCASE toolbox): an
    estimated event is right when its onset is within ``collar_s`` of a
    reference onset and its offset within the larger of ``collar_s`` and
    ``offset_fraction`` of the reference's length.

    Parameters
    ----------
    reference, detected : list of (start_s, end_s, (recording, label))
    labels : list of str
        The event classes scored.

    Returns
    -------
    dict: ``per_class`` {label: {precision, recall, f1}} and ``overall``
    (micro-averaged), ``collar_s``, ``offset_fraction``
    """
    import dcase_util
    import sed_eval

    def container(events):
        return dcase_util.containers.MetaDataContainer([
            {"filename": str(recording), "event_label": label, "onset": float(start),
             "offset": float(end)} for start, end, (recording, label) in events])

    metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(labels), t_collar=collar_s, percentage_of_length=offset_fraction)
    recordings = sorted({e[2][0] for e in reference} | {e[2][0] for e in detected}, key=str)
    for recording in recordings:
        metrics.evaluate(
            reference_event_list=container([e for e in reference if e[2][0] == recording]),
            estimated_event_list=container([e for e in detected if e[2][0] == recording]))

    def scores(measures):
        f = measures["f_measure"]
        return {"precision": f["precision"], "recall": f["recall"], "f1": f["f_measure"]}

    classwise = metrics.results_class_wise_metrics()
    return {"per_class": {label: scores(classwise[label]) for label in labels},
            "overall": scores(metrics.results_overall_metrics()),
            "collar_s": collar_s, "offset_fraction": offset_fraction}
