"""Long recordings: overlapping windows, smoothing over windows, and events
(runs of windows where a class stays above its threshold). predict.py uses
these, and so will calibration and the device front end's tests."""

from collections import deque
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
            run = probs[first:last + 1, c]
            event = run_event(label, centres[first], centres[last], peak=run.max(),
                              mean=run.mean(), hop_s=hop_s, min_duration=min_duration)
            if event is not None:
                events.append(event)
    return sorted(events, key=lambda e: e["start_s"])


def run_event(label, first_centre, last_centre, *, peak, mean, hop_s, min_duration):
    """The event of a run of windows (centres in seconds): from half a hop
    before the first centre (not before 0) to half a hop after the last,
    times rounded to the millisecond; None when shorter than
    ``min_duration`` (compared before rounding)."""
    start, end = max(0.0, first_centre - hop_s / 2), last_centre + hop_s / 2
    if end - start < min_duration:
        return None
    return {"class": label, "start_s": round(float(start), 3), "end_s": round(float(end), 3),
            "peak_probability": float(peak), "mean_probability": float(mean)}


class EventTracker:
    """:func:`find_events` over :func:`smooth`'s probabilities, one window at
    a time, in constant time and memory per window (as the device's
    af_events.c does): live listening can run all day.

    A window's smoothed value is final once ``smooth_windows // 2`` later
    windows have arrived; runs over final values are kept as summaries
    (first and last centre, peak, sum), never as lists of windows. Each push
    also smooths the pending windows as though the stream ended there (as
    :func:`smooth` does at a recording's end), so an event is announced as
    soon as it would be found; its onset may still move back by up to the
    smoothing's half width.

    Parameters
    ----------
    labels : sequence of str
    settings : EventSettings

    Notes
    -----
    :meth:`push` and :meth:`finish` return ``(kind, event)`` pairs: "start"
    (an event first found; its ``end_s`` is where it has reached) or "end"
    (the event as :func:`find_events` gives it over the whole stream, with
    ``mean_probability`` summed in float64). Every ended event was started
    first; a start whose smoothed values later fall short never ends.
    """

    def __init__(self, labels, settings):
        self.labels, self.settings = list(labels), settings
        self.classes = [c for c, label in enumerate(self.labels)
                        if label not in settings.background]
        self.half = max(int(settings.smooth_windows), 1) // 2
        self.rows = deque(maxlen=2 * self.half + 1)  # the last windows' probabilities
        self.pending = deque()  # centres of the windows whose smoothing is not final
        self.pushed = 0
        self.runs = {c: None for c in self.classes}  # the open run over final values
        self.announced = {c: [] for c in self.classes}  # [first, last] window of each start

    @property
    def settled(self):
        """How many windows have their final smoothed value."""
        return self.pushed - len(self.pending)

    def push(self, centre_s, probs):
        """Add the next window (centre in seconds, probabilities shape
        (classes,)); returns the (kind, event) pairs it causes."""
        self.rows.append(np.asarray(probs, np.float32))
        self.pending.append(float(centre_s))
        self.pushed += 1
        found = []
        if len(self.pending) > self.half:  # the oldest pending window has all its neighbours
            found += self._settle(np.stack(self.rows).mean(axis=0))
        return found + self._announce_pending()

    def finish(self):
        """The stream ended: settle the pending windows (fewer neighbours, as
        :func:`smooth` at a recording's end) and close every run."""
        found = []
        while self.pending:
            found += self._settle(self._mean_if_ended(self.settled))
        for c in self.classes:
            found += self._close(c)
        return found

    def _mean_if_ended(self, index):
        """Window ``index``'s smoothed value as though the stream ended now."""
        return np.stack(list(self.rows)[-(self.pushed - index + self.half):]).mean(axis=0)

    def _extend(self, run, index, centre, value):
        if run is None:
            run = {"first": index, "start": centre, "peak": -np.inf, "sum": 0.0, "count": 0}
        run.update(last=index, end=centre, peak=max(run["peak"], value),
                   sum=run["sum"] + value, count=run["count"] + 1)
        return run

    def _event(self, c, run):
        """find_events' event for a run, or None when it is too short."""
        return run_event(self.labels[c], run["start"], run["end"], peak=run["peak"],
                         mean=run["sum"] / run["count"], hop_s=self.settings.hop_s,
                         min_duration=self.settings.min_event_s)

    def _settle(self, value):
        index, centre = self.settled, self.pending.popleft()
        found = []
        for c in self.classes:
            if value[c] >= self.settings.thresholds[self.labels[c]]:
                self.runs[c] = self._extend(self.runs[c], index, centre, float(value[c]))
            else:
                found += self._close(c)
        # a start whose run never settled (its values fell short) is forgotten
        for c in self.classes:
            open_first = self.runs[c]["first"] if self.runs[c] else self.settled
            self.announced[c] = [s for s in self.announced[c]
                                 if s[1] + self.half >= min(open_first, self.settled)]
        return found

    def _overlapping(self, c, run):
        """Announced spans within the smoothing's half width of ``run``."""
        return [s for s in self.announced[c]
                if s[0] <= run["last"] + self.half and run["first"] <= s[1] + self.half]

    def _close(self, c):
        run, self.runs[c] = self.runs[c], None
        event = self._event(c, run) if run else None
        if event is None:
            return []
        started = self._overlapping(c, run)
        self.announced[c] = [s for s in self.announced[c] if s not in started]
        return ([] if started else [("start", event)]) + [("end", event)]

    def _announce_pending(self):
        """Start every run of the open run plus the pending windows (smoothed
        as though the stream ended now) that is long enough and new."""
        first = self.settled
        values = [self._mean_if_ended(first + k) for k in range(len(self.pending))]
        found = []
        for c in self.classes:
            threshold = self.settings.thresholds[self.labels[c]]
            run, runs = (dict(self.runs[c]) if self.runs[c] else None), []
            for k, (centre, value) in enumerate(zip(self.pending, values)):
                if value[c] >= threshold:
                    run = self._extend(run, first + k, centre, float(value[c]))
                elif run is not None:
                    runs, run = runs + [run], None
            for run in runs + ([run] if run else []):
                event = self._event(c, run)
                if event is None:
                    continue
                spans = self._overlapping(c, run)
                if spans:
                    spans[-1][1] = max(spans[-1][1], run["last"])
                else:
                    self.announced[c].append([run["first"], run["last"]])
                    found.append(("start", event))
        return found
