"""Training-time audio augmentation: new views of training clips.

The signal functions are pure given their ``rng``. pipeline/copies.py makes
and caches each clip's augmented copies with them; train_16k.py uses the
copies of training clips only.
"""

import numpy as np

import features

SNR_BACKGROUND_DB = (5.0, 20.0)  # other clips mixed in at this signal-to-noise ratio
SNR_NOISE_DB = (10.0, 30.0)      # synthetic noise at this SNR
GAIN_DB = (-12.0, 6.0)           # random level change
TILT_DB_PER_OCTAVE = 3.0         # mild EQ: spectral tilt up to +/- this
MAX_SHIFT = 0.25                 # circular time shift up to this share of the clip
MIN_CROP = 0.5                   # keep a random segment of at least this share of the clip
BAND_EQ_DB = 6.0                 # log-mel patches: smooth random per-band gain up to +/- this
TIME_MASKS, TIME_MASK_FRAMES = 2, 8    # SpecAugment: masks of up to this many frames
BAND_MASKS, BAND_MASK_BANDS = 2, 5     # SpecAugment: masks of up to this many mel bands
ROOM_RT60_S = (0.2, 1.0)         # synthetic rooms: reverberation time range, seconds


def coloured_noise(n, rng, colour):
    """White, pink (1/f) or brown (1/f^2) noise with unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    power = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    noise = np.fft.irfft(spectrum / freqs ** (power / 2), n=n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def mix_at_snr(y, other, snr_db):
    """``y`` plus ``other`` (looped or cut to length) at ``snr_db``."""
    other = np.resize(other, y.shape)
    signal_power = np.mean(y ** 2) + 1e-12
    other_power = np.mean(other ** 2) + 1e-12
    return y + other * np.sqrt(signal_power / (other_power * 10 ** (snr_db / 10)))


def tilt_eq(y, db_per_octave, sample_rate):
    """Spectral tilt: gain rises (or falls) by ``db_per_octave`` above 1 kHz."""
    spectrum = np.fft.rfft(y)
    freqs = np.maximum(np.fft.rfftfreq(y.size, 1 / sample_rate), 20.0)
    gain_db = db_per_octave * np.log2(freqs / 1000.0)
    return np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=y.size)


def convolve_response(y, response):
    """``y`` as heard through an impulse response (a microphone's or a
    room's), its level kept: the response is normalised to unit energy and
    the result cut to ``y``'s length."""
    from scipy.signal import fftconvolve
    response = np.asarray(response, np.float64)
    response = response / (np.sqrt(np.sum(response ** 2)) + 1e-12)
    return fftconvolve(y, response)[:y.size]


def room_response(rng, sample_rate):
    """A synthetic room: exponentially decaying noise with a random RT60 in
    ROOM_RT60_S, after a direct path (a cheap stand-in for an image-source
    simulation that still smears onsets and colours the tail)."""
    rt60 = rng.uniform(*ROOM_RT60_S)
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[0] = 0.0
    direct = np.zeros(n)
    direct[0] = 1.0
    return direct + tail * rng.uniform(0.1, 0.5) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)


def augment_clip(y, rng, sample_rate, background=None, *, response=None, room=False):
    """One augmented copy: crop, shift, ``background`` mixed in (else
    synthetic noise), through a microphone ``response`` and a synthetic
    room when given, mild EQ, gain."""
    keep = int(y.size * rng.uniform(MIN_CROP, 1.0))
    start = rng.integers(0, y.size - keep + 1)
    y = y[start:start + keep]
    y = np.roll(y, int(rng.uniform(-MAX_SHIFT, MAX_SHIFT) * y.size))
    if background is not None and background.size:
        y = mix_at_snr(y, np.roll(background, rng.integers(background.size)),
                       rng.uniform(*SNR_BACKGROUND_DB))
    else:
        colour = rng.choice(["white", "pink", "brown"])
        y = mix_at_snr(y, coloured_noise(y.size, rng, colour), rng.uniform(*SNR_NOISE_DB))
    if room:
        y = convolve_response(y, room_response(rng, sample_rate))
    if response is not None:
        y = convolve_response(y, response)
    y = tilt_eq(y, rng.uniform(-TILT_DB_PER_OCTAVE, TILT_DB_PER_OCTAVE), sample_rate)
    return (y * 10 ** (rng.uniform(*GAIN_DB) / 20)).astype(np.float32)


def spec_augment(patch, rng):
    """A log-mel patch (frames, bands) as another microphone might give it:
    a smooth random gain curve over the bands (a different frequency
    response), then SpecAugment's time and band masks filled with the
    patch's floor (its quietest cell)."""
    frames, bands = patch.shape
    knots = rng.uniform(-BAND_EQ_DB, BAND_EQ_DB, size=5)
    curve = np.interp(np.linspace(0, 4, bands), np.arange(5), knots)
    out = patch + curve[None, :]
    floor = out.min()
    for _ in range(TIME_MASKS):
        width = rng.integers(0, TIME_MASK_FRAMES + 1)
        start = rng.integers(0, frames - width + 1)
        out[start:start + width, :] = floor
    for _ in range(BAND_MASKS):
        width = rng.integers(0, BAND_MASK_BANDS + 1)
        start = rng.integers(0, bands - width + 1)
        out[:, start:start + width] = floor
    return out


def freq_mixstyle(rows, shape, rng, *, probability, alpha):
    """Freq-MixStyle on log-mel patches: with ``probability``, a patch's
    per-band mean and spread over time are mixed (weight Beta(alpha,
    alpha)) with those of another row, as if heard through another device
    (Schmid et al., DCASE 2022-2024 device generalisation).

    Parameters
    ----------
    rows : np.ndarray, shape (n, frames * bands)
    shape : (frames, bands)

    Returns
    -------
    np.ndarray, shape (n, frames * bands)
    """
    if len(rows) < 2:
        return rows
    patches = rows.reshape(len(rows), *shape).astype(np.float32)
    mean = patches.mean(axis=1, keepdims=True)
    std = patches.std(axis=1, keepdims=True) + 1e-6
    partner = rng.permutation(len(rows))
    weight = rng.beta(alpha, alpha, size=(len(rows), 1, 1)).astype(np.float32)
    mixed_mean = weight * mean + (1 - weight) * mean[partner]
    mixed_std = weight * std + (1 - weight) * std[partner]
    mixed = (patches - mean) / std * mixed_std + mixed_mean
    apply = rng.random(len(rows)) < probability
    patches[apply] = mixed[apply]
    return patches.reshape(len(rows), -1)


def steady_noise(rng, seconds, sample_rate):
    """A steady, featureless noise: coloured noise with a random spectral
    tilt, band-limited to a random band, sometimes with mains hum. Training
    on such noises as background teaches that broadband noise alone is not a
    target class (unheard fans, engines and air conditioners were called
    water); real water keeps its droplets and gurgles."""
    n = int(seconds * sample_rate)
    y = coloured_noise(n, rng, rng.choice(["white", "pink", "brown"]))
    y = tilt_eq(y, rng.uniform(-6.0, 6.0), sample_rate)
    spectrum = np.fft.rfft(y)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    low = rng.uniform(20.0, 1000.0)
    high = rng.uniform(max(2 * low, 1500.0), sample_rate / 2)
    spectrum[(freqs < low) | (freqs > high)] *= 0.01
    y = np.fft.irfft(spectrum, n=n)
    if rng.random() < 0.3:
        mains = rng.choice([50.0, 60.0])
        t = np.arange(n) / sample_rate
        hum = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k
                  for k in range(1, 6))
        y = mix_at_snr(y, hum, rng.uniform(0.0, 20.0))
    return (0.3 * y / (np.max(np.abs(y)) + 1e-12)).astype(np.float32)


def noise_rows(count, config, seed, seconds=2.0):
    """Feature rows of ``count`` :func:`steady_noise` clips (seeded).

    Returns
    -------
    np.ndarray, shape (count, config.n_features)
    """
    rng = np.random.default_rng([seed, 7])
    rows = [features.features_from_audio(steady_noise(rng, seconds, config.sample_rate), config)
            for _ in range(count)]
    return np.array(rows, np.float32).reshape(count, config.n_features)
