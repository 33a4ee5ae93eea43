"""Long recordings: overlapping windows, smoothing over windows, and events
(runs of windows where a class stays above its threshold). predict.py uses
these, and so will calibration and the device front end's tests."""

from typing import NamedTuple

import numpy as np


class EventSettings(NamedTuple):
    """How a long recording becomes events (predict.py's settings)."""

    window_s: float            # window length, seconds
    hop_s: float               # step between windows, seconds
    smooth_windows: int        # moving average over this many windows
    thresholds: dict           # class -> smoothed probability that starts an event
    min_event_s: float         # shorter events are dropped
    background: frozenset      # classes that never form events


def window_starts(n_samples, window, hop, align=1):
    """Start samples of overlapping windows covering the whole recording:
    every ``hop`` samples, rounded down to a multiple of ``align`` (the
    feature grid, see ``FeatureConfig.window_alignment``); the last one ends
    at the recording's end (less than ``align`` samples before it)."""
    if n_samples <= window:
        return [0]
    starts = [k * hop // align * align for k in range((n_samples - window) // hop + 1)]
    starts = [s for s in starts if s + window <= n_samples]
    last = (n_samples - window) // align * align
    if starts[-1] + window < n_samples and last > starts[-1]:
        starts.append(last)
    return starts


def stream_windows(blocks, window, hop, align=1):
    """The windows of :func:`window_starts` cut from a stream of sample
    blocks, holding at most one window plus one block in memory.

    Parameters
    ----------
    blocks : iterable of np.ndarray
    window, hop, align : int
        In samples.

    Yields
    ------
    (start, samples) : int, np.ndarray
        The same starts as ``window_starts(total, window, hop, align)``; when
        the whole stream is no longer than a window, one window of all of it.
    """
    buffer, buffer_start, total = np.zeros(0, np.float32), 0, 0
    k, last_start = 0, None
    next_start = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        total += len(block)
        while next_start + window <= total:
            offset = next_start - buffer_start
            yield next_start, buffer[offset:offset + window]
            k += 1
            last_start, next_start = next_start, k * hop // align * align
        # the last window may end at the end: keep from its earliest start
        keep_from = min(next_start, (total - window) // align * align)
        if keep_from > buffer_start:
            buffer, buffer_start = buffer[keep_from - buffer_start:], keep_from
    if last_start is None:
        yield 0, buffer
    else:
        last = (total - window) // align * align
        if last_start + window < total and last > last_start:
            yield last, buffer[last - buffer_start:last - buffer_start + window]


def window_centres(starts, window, n_samples, sample_rate):
    """Centre of each window in seconds (a window is cut at the recording's end)."""
    return np.array([(s + min(window, n_samples - s) / 2) / sample_rate for s in starts])


def smooth(probs, width):
    """Centred moving average over ``width`` windows (fewer at the edges)."""
    half = max(int(width), 1) // 2
    return np.stack([probs[max(0, i - half):i + half + 1].mean(axis=0)
                     for i in range(len(probs))])


def find_events(centres, probs, labels, thresholds, *, min_duration, hop_s, background):
    """Runs of windows whose smoothed probability reaches the class threshold.

    An event spans from half a hop before its first window's centre to half
    a hop after its last; events shorter than ``min_duration`` are dropped.

    Returns
    -------
    list of dict
        ``class``, ``start_s``, ``end_s``, ``peak_probability``,
        ``mean_probability``; sorted by start.
    """
    events = []
    for c, label in enumerate(labels):
        if label in background:
            continue
        above = np.concatenate([[False], probs[:, c] >= thresholds[label], [False]])
        edges = np.flatnonzero(np.diff(above.astype(int)))
        for first, last in zip(edges[::2], edges[1::2] - 1):
            start = max(0.0, centres[first] - hop_s / 2)
            end = centres[last] + hop_s / 2
            if end - start >= min_duration:
                run = probs[first:last + 1, c]
                events.append({"class": label, "start_s": round(float(start), 3),
                               "end_s": round(float(end), 3),
                               "peak_probability": float(run.max()),
                               "mean_probability": float(run.mean())})
    return sorted(events, key=lambda e: e["start_s"])
