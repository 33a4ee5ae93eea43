"""Live listening: audio blocks from the microphone (sounddevice), or from
a recording at real-time pace, through exactly the windows, features,
model, smoothing and events that predict.py applies to files.

Events are found as predict.py finds them, over every window so far: an
event is reported when it first appears (its onset may still move back by
the smoothing's half width) and when it has ended for good.
"""

import time
from pathlib import Path

import numpy as np

import features
from pipeline.errors import PipelineError
from pipeline.events import find_events, smooth, window_centres

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
        16-bit WAV (``<class>_<start>ms.wav``), kept while it is in memory.
    """

    def __init__(self, classifier, events, *, save_dir=None, context_s=1.0, keep_s=600.0):
        self.classifier, self.events = classifier, events
        self.rate = classifier.config.sample_rate
        self.window = int(events.window_s * self.rate)
        self.save_dir = Path(save_dir) if save_dir else None
        self.context = int(context_s * self.rate)
        self.keep = int(keep_s * self.rate)  # audio kept for saving events
        self.starts, self.probs = [], []
        self.reported, self.ended = set(), []
        self.audio, self.audio_start, self.total = np.zeros(0, np.float32), 0, 0
        self.latencies = []  # stream seconds from an event's onset to its first report
        self.error = None  # why the source stopped early (a FeatureError), if it did

    def _keep_audio(self, block):
        self.audio = np.concatenate([self.audio, block])
        self.total += len(block)
        if len(self.audio) > self.keep:
            drop = len(self.audio) - self.keep
            self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop

    def blocks(self, source):
        """Pass ``source``'s blocks on, keeping the recent audio."""
        for block in source:
            self._keep_audio(np.asarray(block, np.float32))
            yield block

    def current_events(self, final=False):
        """predict.py's events over the windows so far."""
        if not self.probs:
            return []
        probs = np.array(self.probs, np.float32)
        centres = window_centres(self.starts, self.window, self.total, self.rate)
        found = find_events(centres, smooth(probs, self.events.smooth_windows),
                            self.classifier.labels, self.events.thresholds,
                            min_duration=self.events.min_event_s, hop_s=self.events.hop_s,
                            background=self.events.background)
        if not final:  # the last windows' smoothing is not complete yet: they may still change
            settled = len(centres) - 2 - self.events.smooth_windows // 2
            limit = centres[settled] + self.events.hop_s / 2 if settled >= 0 else -1.0
            found = [dict(e, open=e["end_s"] > round(limit, 3)) for e in found]
        return found

    def run(self, source, *, on_window=None, on_event=None):
        """Consume ``source`` (blocks of float32 samples) until it ends or
        KeyboardInterrupt; call ``on_window(time_s, probs)`` and
        ``on_event(kind, event)`` ("start" or "end"). Returns the events."""
        from pipeline.inference import classified_windows
        windows = classified_windows(self.classifier, self.blocks(source),
                                     window_s=self.events.window_s, hop_s=self.events.hop_s,
                                     batch=1)  # each window as soon as it is complete
        try:
            for start, n_samples, row, _ in windows:
                self.starts.append(start)
                self.probs.append(row)
                now_s = (start + n_samples) / self.rate
                if on_window:
                    on_window(now_s, row)
                self._report(self.current_events(), now_s, on_event)
        except KeyboardInterrupt:
            pass
        except (features.FeatureError, OSError) as err:  # e.g. a file corrupt half-way
            self.error = err  # the events so far are still closed, saved and returned
        final = self.current_events(final=True)
        self._report(final, self.total / self.rate, on_event, final=True)
        return final

    def _report(self, found, now_s, on_event, final=False):
        for event in found:
            key = (event["class"], event["start_s"])
            if key not in self.reported and not any(
                    k[0] == key[0] and abs(k[1] - key[1]) <= self.events.window_s
                    for k in self.reported):
                self.reported.add(key)
                self.latencies.append(now_s - event["start_s"])
                if on_event:
                    on_event("start", event)
            if (final or not event.get("open")) and key not in {
                    (e["class"], e["start_s"]) for e in self.ended}:
                self.ended.append(event)
                self._save(event)
                if on_event:
                    on_event("end", event)

    def _save(self, event):
        if self.save_dir is None:
            return
        import soundfile

        from pipeline.files import atomic_path
        lo = max(int(event["start_s"] * self.rate) - self.context, self.audio_start)
        hi = min(int(event["end_s"] * self.rate) + self.context, self.total)
        if hi <= lo:
            return
        clip = self.audio[lo - self.audio_start:hi - self.audio_start]
        name = f"{event['class']}_{int(round(event['start_s'] * 1000)):09d}ms.wav"
        with atomic_path(self.save_dir / name) as tmp:
            soundfile.write(tmp, clip, self.rate, subtype="PCM_16", format="WAV")
