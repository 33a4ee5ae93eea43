"""Live listening: audio blocks from the microphone (sounddevice), or from
a recording at real-time pace, through exactly the windows, features,
model, smoothing and events that predict.py applies to files.

Events are predict.py's events, found window by window
(:class:`pipeline.events.EventTracker`): an event is reported when it first
appears (its onset may still move back by the smoothing's half width) and
when it has ended for good. Time and memory per hop stay constant however
long it listens (bench/bench_listen.py runs a day of audio).
"""

import time
from collections import deque
from pathlib import Path

import numpy as np

import features
from pipeline.errors import PipelineError
from pipeline.events import EventTracker

KEEP_EVENTS = 1000  # ended events a listener returns: the last ones (its counts are of all)
INSTALL = ("live listening needs sounddevice and the PortAudio library: "
           "pip install sounddevice, and apt-get install libportaudio2 (Debian/Ubuntu) "
           "or brew install portaudio (macOS)")


def file_blocks(path, sample_rate, *, speed=1.0, block_s=0.1):
    """A recording as blocks of ``block_s`` seconds, released at ``speed``
    times real time (``speed`` <= 0: as fast as they are read)."""
    started, fed = time.monotonic(), 0
    for chunk in features.stream_audio(path, sample_rate, block_s=block_s):
        fed += len(chunk)
        if speed > 0:
            wait = fed / sample_rate / speed - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
        yield chunk


def microphone_blocks(sample_rate, *, block_s=0.1):
    """Blocks from the default input device, mono float32 at ``sample_rate``;
    PipelineError naming what to install when there is no PortAudio or no
    input device."""
    try:
        import sounddevice
    except (ImportError, OSError):  # no package, or the package without PortAudio
        raise PipelineError(INSTALL) from None
    try:
        sounddevice.check_input_settings(channels=1, samplerate=sample_rate, dtype="float32")
        stream = sounddevice.InputStream(channels=1, samplerate=sample_rate, dtype="float32",
                                         blocksize=int(block_s * sample_rate))
    except Exception as err:  # PortAudioError, ValueError: no (usable) input device
        raise PipelineError(f"no usable microphone ({err}); plug one in, or give "
                            "--listen=RECORDING.wav") from None
    with stream:
        while True:
            block, _ = stream.read(int(block_s * sample_rate))
            yield block[:, 0].copy()


class Listener:
    """Classify a stream window by window and report events as they come.

    Parameters
    ----------
    classifier : pipeline.inference.Classifier
    events : pipeline.events.EventSettings
    save_dir : str or Path or None
        Each finished event's audio, with ``context_s`` before and after, as
        16-bit WAV (``<class>_<start>ms.wav``), as far as the last
        ``keep_s`` seconds (a ring buffer) still hold it.
    """

    def __init__(self, classifier, events, *, save_dir=None, context_s=1.0, keep_s=600.0):
        self.classifier, self.events = classifier, events
        self.rate = classifier.config.sample_rate
        self.save_dir = Path(save_dir) if save_dir else None
        self.context = int(context_s * self.rate)
        self.ring = np.zeros(max(int(keep_s * self.rate), 1), np.float32)
        self.total = 0  # samples heard; sample t lives at ring[t % len(ring)]
        self.tracker = EventTracker(classifier.labels, events)
        # what a day of listening keeps: counts and latency figures, and the
        # last KEEP_EVENTS events (all of them in any recording of sane length)
        self.ended = deque(maxlen=KEEP_EVENTS)
        self.counts = {label: 0 for label in classifier.labels}
        self.latency = {"count": 0, "sum": 0.0, "max": 0.0}  # onset to first report, seconds
        self.error = None  # why the source stopped early (a FeatureError), if it did

    def _keep_audio(self, block):
        self.total += len(block)
        block = block[-len(self.ring):]  # a block longer than the ring: its end
        at = (self.total - len(block)) % len(self.ring)
        first = min(len(block), len(self.ring) - at)
        self.ring[at:at + first] = block[:first]
        self.ring[:len(block) - first] = block[first:]

    def blocks(self, source):
        """Pass ``source``'s blocks on, keeping the recent audio."""
        for block in source:
            block = np.asarray(block, np.float32)
            self._keep_audio(block)
            yield block

    def run(self, source, *, on_window=None, on_event=None):
        """Consume ``source`` (blocks of float32 samples) until it ends or
        KeyboardInterrupt; call ``on_window(time_s, probs)`` and
        ``on_event(kind, event)`` ("start" or "end"). Returns the ended
        events."""
        from pipeline.inference import classified_windows
        windows = classified_windows(self.classifier, self.blocks(source),
                                     window_s=self.events.window_s, hop_s=self.events.hop_s,
                                     batch=1)  # each window as soon as it is complete
        try:
            for start, n_samples, row, _ in windows:
                now_s = (start + n_samples) / self.rate
                if on_window:
                    on_window(now_s, row)
                centre = (start + n_samples / 2) / self.rate  # as events.window_centres
                self._report(self.tracker.push(centre, row), now_s, on_event)
        except KeyboardInterrupt:
            pass
        except (features.FeatureError, OSError) as err:  # e.g. a file corrupt half-way
            self.error = err  # the events so far are still closed, saved and returned
        self._report(self.tracker.finish(), self.total / self.rate, on_event)
        return list(self.ended)

    def _report(self, found, now_s, on_event):
        for kind, event in found:
            if kind == "start":
                delay = now_s - event["start_s"]
                self.latency.update(count=self.latency["count"] + 1,
                                    sum=self.latency["sum"] + delay,
                                    max=max(self.latency["max"], delay))
            else:
                self.ended.append(event)
                self.counts[event["class"]] += 1
                self._save(event)
            if on_event:
                on_event(kind, event)

    def _save(self, event):
        if self.save_dir is None:
            return
        import soundfile

        from pipeline.files import atomic_path
        lo = max(int(event["start_s"] * self.rate) - self.context, self.total - len(self.ring), 0)
        hi = min(int(event["end_s"] * self.rate) + self.context, self.total)
        if hi <= lo:
            return
        clip = self.ring[np.arange(lo, hi) % len(self.ring)]
        name = f"{event['class']}_{int(round(event['start_s'] * 1000)):09d}ms.wav"
        with atomic_path(self.save_dir / name) as tmp:
            soundfile.write(tmp, clip, self.rate, subtype="PCM_16", format="WAV")
