"""The live event tracker: predict.py's events, one window at a time."""

import numpy as np
import pytest

from pipeline.events import EventSettings, EventTracker, find_events, smooth

LABELS = ["alarm", "other", "water"]


def settings(smooth_windows, min_event_s, hop_s=0.5):
    return EventSettings(window_s=1.0, hop_s=hop_s, smooth_windows=smooth_windows,
                         thresholds={"alarm": 0.6, "other": 0.5, "water": 0.4},
                         min_event_s=min_event_s, background=frozenset({"other"}))


def bursty_probabilities(n, seed):
    """Probabilities that wander in and out of events, with one-window blips."""
    rng = np.random.default_rng(seed)
    level = np.cumsum(rng.normal(0, 0.25, (n, len(LABELS))), axis=0)
    level += rng.normal(0, 1.0, level.shape) * (rng.random((n, 1)) < 0.1)
    e = np.exp(level - level.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def tracked(probs, centres, cfg):
    tracker, said = EventTracker(LABELS, cfg), []
    for centre, row in zip(centres, probs):
        said += tracker.push(centre, row)
    return said + tracker.finish()


@pytest.mark.parametrize("smooth_windows", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("min_event_s", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_ended_events_are_find_events_over_the_whole_stream(smooth_windows, min_event_s,
                                                                 seed):
    cfg = settings(smooth_windows, min_event_s)
    probs = bursty_probabilities(300, seed)
    centres = 0.5 + 0.5 * np.arange(len(probs))
    centres[-1] -= 0.2  # the last window ends at the recording's end, off the hop grid
    expected = find_events(centres, smooth(probs, smooth_windows), LABELS, cfg.thresholds,
                           min_duration=min_event_s, hop_s=cfg.hop_s, background=cfg.background)
    said = tracked(probs, centres, cfg)
    ended = [e for kind, e in said if kind == "end"]
    assert expected, "the stream should hold events"
    key = ("class", "start_s", "end_s", "peak_probability")
    assert sorted(tuple(e[k] for k in key) for e in ended) == \
        sorted(tuple(e[k] for k in key) for e in expected)
    for got, want in zip(sorted(ended, key=lambda e: (e["class"], e["start_s"])),
                         sorted(expected, key=lambda e: (e["class"], e["start_s"]))):
        assert got["mean_probability"] == pytest.approx(want["mean_probability"], rel=1e-5)
    # every ended event was announced first, and announced once
    for event in ended:
        starts = [i for i, (kind, e) in enumerate(said) if kind == "start"
                  and e["class"] == event["class"] and e["start_s"] < event["end_s"]
                  and e["end_s"] > event["start_s"] - cfg.hop_s * smooth_windows]
        assert starts and starts[0] < said.index(("end", event))


def test_an_event_is_announced_while_it_lasts():
    """A 30-window alarm is started long before it ends; a second one two
    seconds later is announced again (round three, 6)."""
    cfg = settings(3, 1.0)
    probs = np.tile(np.float32([0.05, 0.9, 0.05]), (100, 1))
    probs[20:50] = [0.9, 0.05, 0.05]
    probs[54:70] = [0.9, 0.05, 0.05]
    tracker, times = EventTracker(LABELS, cfg), []
    for k, row in enumerate(probs):
        times += [(k, kind, e["start_s"]) for kind, e in tracker.push(0.5 + 0.5 * k, row)]
    times += [(len(probs), kind, e["start_s"]) for kind, e in tracker.finish()]
    starts = [(k, t) for k, kind, t in times if kind == "start"]
    ends = [(k, t) for k, kind, t in times if kind == "end"]
    assert [t for _, t in starts] == [t for _, t in ends] == [10.25, 27.25]
    assert starts[0][0] <= 22 and ends[0][0] >= 50  # reported within 2 windows of its onset


def test_time_and_memory_per_window_do_not_grow():
    """A run that never ends (a day of water) is a summary, not a list."""
    cfg = settings(5, 1.0)
    tracker = EventTracker(LABELS, cfg)
    row = np.float32([0.05, 0.05, 0.9])
    for k in range(5000):
        tracker.push(0.5 + 0.5 * k, row)
    assert len(tracker.rows) == 5 and len(tracker.pending) == 2
    assert all(len(spans) <= 1 for spans in tracker.announced.values())
    (kind, event), = tracker.finish()
    assert kind == "end" and event["start_s"] == 0.25 and event["end_s"] == 2500.25


def test_no_smoothing_as_smooth_takes_it():
    """smooth_windows 0 or 1: each window's own probabilities."""
    cfg = settings(0, 0.0)
    probs = bursty_probabilities(50, 3)
    centres = 0.5 + 0.5 * np.arange(50)
    expected = find_events(centres, smooth(probs, 0), LABELS, cfg.thresholds, min_duration=0.0,
                           hop_s=0.5, background=cfg.background)
    assert sorted((e["class"], e["start_s"]) for k, e in tracked(probs, centres, cfg)
                  if k == "end") == sorted((e["class"], e["start_s"]) for e in expected)


def test_the_listener_keeps_the_last_minutes_of_audio_in_a_ring(tmp_path):
    """Saved event audio is the stream's own samples, across the ring's
    wrap, and only as far back as the ring reaches."""
    from types import SimpleNamespace

    import soundfile

    from pipeline.live import Listener
    classifier = SimpleNamespace(config=SimpleNamespace(sample_rate=100), labels=LABELS)
    listener = Listener(classifier, settings(3, 0.0), save_dir=tmp_path, context_s=0.5,
                        keep_s=10.0)
    stream = np.random.default_rng(0).uniform(-0.5, 0.5, 2500).astype(np.float32)
    for block in (stream[:700], stream[700:1650], stream[1650:2500]):  # ring of 1000 wraps
        listener._keep_audio(block)
    assert listener.total == 2500 and len(listener.ring) == 1000
    listener._save({"class": "alarm", "start_s": 20.0, "end_s": 22.0})
    listener._save({"class": "water", "start_s": 10.0, "end_s": 16.0})  # partly forgotten
    alarm, _ = soundfile.read(tmp_path / "alarm_000020000ms.wav", dtype="float32")
    water, _ = soundfile.read(tmp_path / "water_000010000ms.wav", dtype="float32")
    step = 1 / 32768  # 16-bit WAV
    assert np.allclose(alarm, stream[1950:2250], atol=step)
    assert np.allclose(water, stream[1500:1650], atol=step)
    listener._keep_audio(np.arange(1200, dtype=np.float32))  # a block longer than the ring
    assert listener.total == 3700 and listener.ring[3699 % 1000] == 1199.0
    assert listener.ring[2700 % 1000] == 200.0
