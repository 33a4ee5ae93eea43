"""A small synthetic water / alarm / other dataset, made offline in seconds.

It exists so that the quick start runs end to end on a fresh machine with no
data. The sounds are *synthetic* imitations (filtered noise with droplets,
beeps and sirens, harmonics and knocks); a model trained on them says nothing
about real recordings. ``python make_dataset_16k.py --demo`` writes them to
``data/demo/<class>/*.wav``.
"""

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
CLIPS_PER_CLASS = 30
CLASSES = ("alarm", "other", "water")


def _noise(rng, n, colour):
    """White noise, or brown-ish (integrated) noise for colour="brown"."""
    white = rng.standard_normal(n)
    if colour == "brown":
        brown = np.cumsum(white)
        brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # remove drift
        return brown / (np.abs(brown).max() + 1e-9)
    return white / np.abs(white).max()


def _bandpass(x, low_hz, high_hz, sr=SAMPLE_RATE):
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, n=x.size)


def water(rng, n, sr=SAMPLE_RATE):
    """Flowing broadband noise with a slow swell and droplet transients."""
    t = np.arange(n) / sr
    low, high = rng.uniform(300, 1200), rng.uniform(4000, 7500)
    flow = _bandpass(_noise(rng, n, "white"), low, high)
    flow *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)
    drops = np.zeros(n)
    for start in rng.integers(0, max(n - 800, 1), size=rng.integers(5, 40)):
        length = min(800, n - start)
        tt = np.arange(length) / sr
        freq = rng.uniform(800, 4000) * (1 + 3 * tt)  # droplets chirp upwards
        drops[start:start + length] += np.sin(2 * np.pi * freq * tt) * np.exp(-tt * 150)
    return flow / np.abs(flow).max() + rng.uniform(0.1, 0.5) * drops


def alarm(rng, n, sr=SAMPLE_RATE):
    """A beeping tone, a sweeping siren or a buzzer."""
    t = np.arange(n) / sr
    kind = rng.integers(3)
    if kind == 0:  # beep-beep: a tone gated on and off
        tone = np.sin(2 * np.pi * rng.uniform(2000, 4000) * t)
        gate = (np.sin(2 * np.pi * rng.uniform(2, 6) * t) > 0).astype(float)
        return tone * gate
    if kind == 1:  # siren: frequency sweeps up and down
        centre, depth = rng.uniform(700, 1500), rng.uniform(200, 500)
        phase = 2 * np.pi * np.cumsum(centre + depth * np.sin(2 * np.pi * rng.uniform(0.3, 2) * t)) / sr
        return np.sin(phase)
    square = np.sign(np.sin(2 * np.pi * rng.uniform(300, 600) * t))  # buzzer
    return 0.6 * square * (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > -0.3)


def other(rng, n, sr=SAMPLE_RATE):
    """Speech-like harmonics, knocks, mains hum or a little melody."""
    t = np.arange(n) / sr
    kind = rng.integers(4)
    if kind == 0:  # voiced harmonics with vibrato and a syllable envelope
        f0 = rng.uniform(100, 250) * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voice = sum(np.sin(k * phase) / k for k in range(1, 12))
        return voice * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2)
    if kind == 1:  # knocks: decaying low thumps
        out = np.zeros(n)
        for start in rng.integers(0, max(n - 3000, 1), size=rng.integers(2, 8)):
            tt = np.arange(min(3000, n - start)) / sr
            out[start:start + tt.size] += np.sin(2 * np.pi * rng.uniform(80, 250) * tt) * np.exp(-tt * 40)
        return out
    if kind == 2:  # hum: 50/60 Hz and harmonics
        base = rng.choice([50.0, 60.0])
        return sum(np.sin(2 * np.pi * base * k * t) / k for k in range(1, 8))
    notes = rng.choice([262, 294, 330, 349, 392, 440, 494], size=8)  # melody
    per_note = -(-n // notes.size)
    freq = np.repeat(notes, per_note)[:n]
    return np.sin(2 * np.pi * np.cumsum(freq) / sr) + 0.3 * np.sin(4 * np.pi * np.cumsum(freq) / sr)


GENERATORS = {"alarm": alarm, "other": other, "water": water}


def make_clip(label, rng, sr=SAMPLE_RATE):
    """One clip of ``label``: 1-3 s, random level, with background noise."""
    n = int(sr * rng.uniform(1.0, 3.0))
    clip = GENERATORS[label](rng, n, sr)
    clip = clip / (np.abs(clip).max() + 1e-9)
    clip += rng.uniform(0.005, 0.05) * _noise(rng, n, "brown")
    return (clip / np.abs(clip).max() * rng.uniform(0.1, 0.9)).astype(np.float32)


def write_demo(folder, clips_per_class=CLIPS_PER_CLASS, seed=0):
    """Write the demo set into ``folder/<class>/<class>_NN.wav``.

    Returns
    -------
    int
        Number of clips written. Same seed, same files.
    """
    import soundfile as sf
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    for label in CLASSES:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_class):
            sf.write(folder / label / f"{label}_{i:02d}.wav", make_clip(label, rng),
                     SAMPLE_RATE, subtype="PCM_16")
    (folder / "README.txt").write_text(
        "Synthetic demo clips written by make_dataset_16k.py --demo. "
        "Not real recordings.\n", encoding="utf-8")
    return clips_per_class * len(CLASSES)
