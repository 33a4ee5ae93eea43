"""Simulated continuous-listening streams for calibration: event clips
placed at known times over background made of "other" clips, at a chosen
signal-to-noise ratio. Streams are produced block by block, so hours of
them never sit in memory."""

import numpy as np


def rms(y):
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0


def plan_stream(event_lengths, n_background, *, seconds, gap_s, sample_rate, seed):
    """Where the events go in one stream, and the background clips' order.

    Parameters
    ----------
    event_lengths : list of int
        Length in samples of each event clip to draw from.
    n_background : int
        Background clips to draw from.
    seconds : float
    gap_s : float
        Mean gap between events (1 s plus an exponential), seconds.

    Returns
    -------
    events : list of (start sample, clip index), not overlapping, in order
    total : int, samples
    order : np.ndarray, background clips in the order they are laid end to end
    """
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    events, t = [], int(rng.exponential(gap_s) * sample_rate)
    while event_lengths:
        k = int(rng.integers(len(event_lengths)))
        if t + event_lengths[k] > total:
            break
        events.append((t, k))
        t += event_lengths[k] + int((1.0 + rng.exponential(gap_s)) * sample_rate)
    return events, total, rng.permutation(n_background)


def stream_blocks(backgrounds, event_clips, events, *, total, order, snr_db, block=160000):
    """The stream's samples, ``block`` at a time: background clips end to end
    (in ``order``, repeated), events added at their starts, scaled to
    ``snr_db`` above the background's RMS; clipped to [-1, 1]."""
    background_rms = np.mean([rms(b) for b in backgrounds]) or 1.0
    tape = np.concatenate([backgrounds[i] for i in order]).astype(np.float32)
    gains = [10 ** (snr_db / 20) * background_rms / (rms(c) or 1.0) for c in event_clips]
    for start in range(0, total, block):
        end = min(total, start + block)
        index = np.arange(start, end) % len(tape)
        out = tape[index].copy()
        for at, k in events:
            clip = event_clips[k]
            lo, hi = max(start, at), min(end, at + len(clip))
            if lo < hi:
                out[lo - start:hi - start] += gains[k] * clip[lo - at:hi - at]
        yield np.clip(out, -1.0, 1.0).astype(np.float32)
