"""Simulated continuous-listening streams for calibration: event clips
placed at known times over background made of "other" clips, at a chosen
signal-to-noise ratio, and the model's window probabilities over them.
Streams are produced block by block, so hours of them never sit in memory."""

import math
import os

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


_WORKER = {}  # per process: the classifier and the clips' audio, loaded once


def segment_probabilities(model, clip_list, events, *, snr_db, seconds, gap_s, seed,
                          parent_pid=None):
    """One simulated segment: its window centres, class probabilities, the
    true events [(start_s, end_s, label)] and its length in seconds. In a
    worker process (``parent_pid``), the worker ends itself when the run's
    process dies, even by SIGKILL."""
    import features
    from pipeline.inference import Classifier, stream_probabilities
    from pipeline.workers import exit_with_parent
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    if _WORKER.get("model") != model:
        _WORKER.clear()
        _WORKER.update(model=model, classifier=Classifier(model), audio={})
    classifier, audio = _WORKER["classifier"], _WORKER["audio"]
    rate = classifier.config.sample_rate
    for path, _ in clip_list:
        if path not in audio:
            audio[path] = features.load_audio(path, rate)
    event_clips = [(audio[p], label) for p, label in clip_list if label not in events.background]
    backgrounds = [audio[p] for p, label in clip_list if label in events.background]
    planned, total, order = plan_stream([len(a) for a, _ in event_clips], len(backgrounds),
                                        seconds=seconds, gap_s=gap_s, sample_rate=rate,
                                        seed=seed)
    blocks = stream_blocks(backgrounds, [a for a, _ in event_clips], planned, total=total,
                           order=order, snr_db=snr_db)
    centres, probs, _, _ = stream_probabilities(classifier, blocks, window_s=events.window_s,
                                                hop_s=events.hop_s)
    truth = [(at / rate, (at + len(event_clips[k][0])) / rate, event_clips[k][1])
             for at, k in planned]
    return centres, probs, truth, total / rate


def simulated_segments(model, clip_list, events, *, snrs_db, hours, segment_s, gap_s, seed,
                       jobs=-1):
    """Every segment of every SNR's stream (:func:`segment_probabilities`):
    ``hours`` per SNR in independent segments of about ``segment_s``,
    computed in parallel by ``jobs`` processes."""
    import joblib

    from pipeline.progress import iterate
    from pipeline.workers import worker_count
    n = max(1, math.ceil(hours * 3600 / segment_s))
    seconds = hours * 3600 / n
    specs = [(snr, k) for snr in snrs_db for k in range(n)]
    calls = (joblib.delayed(segment_probabilities)(
        str(model), clip_list, events, snr_db=snr, seconds=seconds, gap_s=gap_s,
        seed=[seed, int(round(snr * 10)) + 1000, k], parent_pid=os.getpid())
        for snr, k in specs)
    workers = worker_count(jobs, len(specs))
    return list(iterate(joblib.Parallel(n_jobs=workers, return_as="generator")(calls),
                        total=len(specs), desc="streams", unit="segment"))
