"""Training-time audio augmentation: new views of training clips.

train_16k.py calls ``augmented_rows`` for the clips of the training split
only; each copy keeps its source clip's label and group, so validation and
test clips are never touched and no source crosses a split. The signal
functions are pure given their ``rng``; ``augmented_rows`` reads the clip
files and seeds its own generator: same files and seed, same copies.
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


def augment_clip(y, rng, sample_rate, background=None):
    """One augmented copy: crop, shift, mild EQ, background or synthetic
    noise, gain."""
    keep = int(y.size * rng.uniform(MIN_CROP, 1.0))
    start = rng.integers(0, y.size - keep + 1)
    y = y[start:start + keep]
    y = np.roll(y, int(rng.uniform(-MAX_SHIFT, MAX_SHIFT) * y.size))
    y = tilt_eq(y, rng.uniform(-TILT_DB_PER_OCTAVE, TILT_DB_PER_OCTAVE), sample_rate)
    if background is not None and background.size and rng.random() < 0.5:
        y = mix_at_snr(y, np.roll(background, rng.integers(background.size)),
                       rng.uniform(*SNR_BACKGROUND_DB))
    else:
        colour = rng.choice(["white", "pink", "brown"])
        y = mix_at_snr(y, coloured_noise(y.size, rng, colour), rng.uniform(*SNR_NOISE_DB))
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


def augmented_rows(path, background_path, *, copies, seed, config, spec=False):
    """Feature vectors of ``copies`` augmented versions of one file.

    Parameters
    ----------
    path, background_path : str
        The clip, and another training clip to mix in (or None).
    copies : int
    seed : int
    config : features.FeatureConfig
    spec : bool
        Also apply :func:`spec_augment` to each copy (2-D presets only).

    Returns
    -------
    np.ndarray, shape (k, n_features), k <= copies: copies whose features
    cannot be computed (e.g. the clip turned silent) are left out.
    """
    rng = np.random.default_rng(seed)
    y = features.load_audio(path, config.sample_rate)
    background = (features.load_audio(background_path, config.sample_rate)
                  if background_path else None)
    rows = []
    for _ in range(copies):
        try:
            row = features.features_from_audio(
                augment_clip(y, rng, config.sample_rate, background), config)
        except features.FeatureError:
            continue
        if spec and config.input_shape:
            row = spec_augment(row.reshape(config.input_shape), rng).ravel()
        rows.append(row)
    return np.array(rows, np.float32).reshape(len(rows), config.n_features)
