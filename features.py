"""Audio -> feature vector: the one place where features are defined.

Every stage (make_dataset_16k.py, train_16k.py, model_conv.py, predict.py)
calls this module. The constants below define the configuration that
make_dataset_16k.py builds a dataset with (``feature_config()``); every
dataset and model stores that configuration (a :class:`FeatureConfig`), and
whoever consumes them computes features from the stored one, so a model is
never fed features it was not trained on.

``FEATURES`` picks a preset:

``"seed"``, the seed method exactly, step by step (each a small function below):
  1. ``load_audio``: any WAV/FLAC/OGG, resampled to 16 kHz mono (as librosa.load).
  2. ``reduce_noise``: spectral gating (noisereduce), noise profile = the first
     25000 samples.
  3. ``trim_silence``: drop leading/trailing silence (top_db 20, frame 512, hop 64).
  4. ``mean_stft_magnitude``: |STFT| (n_fft 512, hop 256, window 512), mean over
     time -> 257 values.
  5. ``minmax_normalise``: scale that vector to [0, 1] per clip.

``"logmel"``: no noise reduction (it removed what distinguishes sources the
model has not heard), trim, log-mel spectrogram made level-independent, then
per-band mean and standard deviation plus a few spectral-shape statistics
(``logmel_statistics``), for the MLP.

``"logmel_patch"``: the loudest
``PATCH_FRAMES`` frames (about 1 s) of that log-mel spectrogram, flattened,
for the small CNN (train_16k.py picks it with MODEL = "auto"). On dev16k it
generalised best to recording sources the model had not heard (README).

``"logmel_stream"``, the default: the same patch, computed so that a microcontroller can
build it as the samples arrive (``logmel_stream``): uncentred STFT frames on
one grid, trimmed and chosen as whole frames by their exact energies, and
windows of long recordings that start on that grid. A device then computes
each frame once and keeps mel rows, not samples.

The log-mel presets give dB values relative to the clip's mean level (not
a fixed range); models standardise them with the training set's mean and
std, stored with the model. The log-mel presets need only an FFT, a
filterbank, logs and sums, so they fit a microcontroller; the seed preset's
noise reduction (noisereduce) is Python-only, and without it the seed preset
is as cheap. Edit the constants below to change a method; datasets and
models built with other values are then refused until they are rebuilt.
"""

import dataclasses
import functools
import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

FEATURES = "logmel_stream"    # "seed", "logmel" (MLP), "logmel_patch", "logmel_stream" (CNN, recommended), "efficientat" (pretrained tier)
SAMPLE_RATE = 16000           # Hz; every clip is resampled to this
NOISE_REDUCTION = True        # seed preset: spectral gating on/off (Python only, not on a device)
NOISE_PROFILE_SAMPLES = 25000  # leading samples that define the noise profile
TRIM = True                   # trim leading/trailing silence on/off (all presets)
TRIM_TOP_DB = 20              # dB below the peak that counts as silence
TRIM_FRAME_LENGTH = 512       # samples per frame when measuring loudness for trim
TRIM_HOP_LENGTH = 64          # samples between those frames
N_FFT = 512                   # FFT size -> N_FFT // 2 + 1 = 257 frequency bins
HOP_LENGTH = 256              # samples between STFT frames
WIN_LENGTH = 512              # STFT window length in samples
N_MELS = 40                   # log-mel presets: mel bands
MEL_FMIN = 50.0               # lowest mel band edge, Hz
MEL_FMAX = 8000.0             # highest mel band edge, Hz
MEL_TOP_DB = 80.0             # log-mel floor: this many dB below the clip's loudest cell
PATCH_FRAMES = 61             # logmel_patch: frames per patch (61 x 16 ms = about 1 s)
FEATURE_VERSION = 3           # bump when the code (not a constant) changes the features
MIN_CLIP_S = 0.1              # shorter clips are refused: too short to describe a sound
MAX_ABS_SAMPLE = 1000.0       # larger samples are refused: not audio scaled to [-1, 1]

EFFICIENTAT_SAMPLE_RATE = 32000  # efficientat preset: the AudioSet tagger's own front end (32 kHz,
EFFICIENTAT_N_FFT = 1024      # ... 1024-point STFT of 800-sample Hann windows every 320 samples,
EFFICIENTAT_WIN_LENGTH = 800  # ... 128 Kaldi mel bands from 0 to 15 kHz, 100 frames = 1 s);
EFFICIENTAT_HOP_LENGTH = 320  # ... change them only for a backbone trained with other values
EFFICIENTAT_N_MELS = 128      # efficientat preset: mel bands
EFFICIENTAT_FMAX = 15000.0    # efficientat preset: highest mel band edge, Hz
EFFICIENTAT_PATCH_FRAMES = 100  # efficientat preset: frames per patch (1 s)

PRESETS = ("seed", "logmel", "logmel_patch", "logmel_stream", "efficientat")
PATCH_PRESETS = ("logmel_patch", "logmel_stream", "efficientat")  # 2-D patches
DEVICE_PRESETS = ("seed", "logmel", "logmel_patch", "logmel_stream")  # a C front end exists
PREEMPHASIS = 0.97            # efficientat: y[n] = x[n + 1] - 0.97 x[n], as EfficientAT's front end
LOG_OFFSET = 1e-5             # efficientat: log(mel + 1e-5), then (x + 4.5) / 5 (EfficientAT's scaling)
PATCH_TOLERANCE = 1e-4        # relative: runs this close to the loudest count as equally loud
LEVEL_FLOOR_DB = 80.0         # logmel preset: frame levels this far below the loudest are floored
# what shape_statistics computes, in the order device/ computes all of them
SHAPE_STATISTICS_KNOWN = ("flatness", "centroid", "bandwidth", "rolloff", "flux", "level")
SHAPE_STATISTICS = SHAPE_STATISTICS_KNOWN  # logmel preset: the statistics used, in order

# noisereduce pads each side of the clip with 30000 zeros by default. Frames
# farther from the signal than one window plus the 50 ms mask smoothing are
# gated to exactly zero, so a 3120-sample pad (30000 - 105 * 256: the STFT
# frame grid stays where the default puts it) gives the same output, to float
# rounding, at about half the cost. tests/test_features.py checks this.
_NOISEREDUCE_PADDING = 3120

class FeatureError(ValueError):
    """A clip that cannot give a meaningful feature vector.

    Attributes
    ----------
    reason : str
        What is wrong, in words, without the file name.
    path : str or None
        The file, when one is known.
    """

    def __init__(self, reason, path=None):
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class SilentAudio(FeatureError):
    """Audio with nothing to describe: all zeros, every frame below the
    trimming threshold, or a constant spectrum. For a window of a long
    recording this means "no event"; every other FeatureError is a fault."""


class TooShort(FeatureError):
    """Audio shorter than ``MIN_CLIP_S``."""


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides a feature vector: built once from the
    constants above (:func:`feature_config`) or from what a dataset or model
    stored (:meth:`from_dict`), then passed explicitly to every function.

    Two configurations give the same features exactly when they are equal.
    Fields a preset does not use are None.
    """

    preset: str
    version: int
    sample_rate: int
    noise_reduction: bool
    noise_profile_samples: int | None  # seed preset with noise reduction
    trim: bool
    trim_top_db: float
    trim_frame_length: int
    trim_hop_length: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int | None = None        # log-mel presets
    fmin: float | None = None
    fmax: float | None = None
    top_db: float | None = None
    patch_frames: int | None = None  # patch presets
    patch_tolerance: float | None = None  # logmel_patch, efficientat: loudest-run ties
    level_floor_db: float | None = None   # logmel: frame level floor
    shape_statistics: tuple | None = None  # logmel: the spectral-shape statistics, in order
    preemphasis: float | None = None      # efficientat
    log_offset: float | None = None       # efficientat

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown feature preset {self.preset!r}; expected one of {PRESETS}")
        if isinstance(self.shape_statistics, list):  # as JSON stores it
            object.__setattr__(self, "shape_statistics", tuple(self.shape_statistics))
        positive = ("sample_rate", "trim_top_db", "trim_frame_length", "trim_hop_length",
                    "n_fft", "hop_length", "win_length")
        positive += ("noise_profile_samples",) if self.noise_reduction else ()
        if self.preset != "seed":
            positive += ("n_mels",) + (("top_db",) if self.preset != "efficientat" else ())
        if self.preset in PATCH_PRESETS:
            positive += ("patch_frames",)
        if self.preset in ("logmel_patch", "efficientat"):
            positive += ("patch_tolerance",)
        if self.preset == "logmel":
            positive += ("level_floor_db",)
            unknown = set(self.shape_statistics or ()) - set(SHAPE_STATISTICS_KNOWN)
            if not self.shape_statistics or unknown:
                raise ValueError(f"shape_statistics must name some of {SHAPE_STATISTICS_KNOWN}, "
                                 f"got {self.shape_statistics!r}")
        if self.preset == "efficientat":
            positive += ("preemphasis", "log_offset")
        bad = [f"{name}={getattr(self, name)!r}" for name in positive
               if not isinstance(getattr(self, name), (int, float))
               or not getattr(self, name) > 0]
        if bad:
            raise ValueError(f"feature settings must be positive numbers, got {', '.join(bad)}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if self.preset != "seed" and not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"expected 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, "
                             f"fmax={self.fmax}, sample_rate={self.sample_rate}")

    @property
    def standardise(self):
        """Whether models z-score these features with training statistics
        (not the seed's, nor a pretrained backbone's: it expects its own scale)."""
        return self.preset not in ("seed", "efficientat")

    @property
    def input_shape(self):
        """(frames, bands) for 2-D features, else None."""
        return (self.patch_frames, self.n_mels) if self.preset in PATCH_PRESETS else None

    @property
    def window_alignment(self):
        """Long recordings' windows start at multiples of this many samples
        (the STFT grid for "logmel_stream", so a device can share frames
        between overlapping windows; else 1)."""
        return self.hop_length if self.preset == "logmel_stream" else 1

    @property
    def n_features(self):
        """Length of the flat feature vector."""
        if self.preset == "seed":
            return self.n_fft // 2 + 1
        if self.preset == "logmel":
            return 2 * self.n_mels + 2 * len(self.shape_statistics)
        return self.patch_frames * self.n_mels

    def to_dict(self):
        """Plain JSON values, as stored in datasets and models: the fields
        the preset uses plus derived facts for readers (n_features, ...)."""
        stored = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.shape_statistics:
            stored["shape_statistics"] = list(self.shape_statistics)
        if self.preset == "seed":
            stored.update(normalisation="minmax")
        elif self.preset == "efficientat":
            stored.update(normalisation="efficientat")
        else:
            stored.update(normalisation="level")
        if self.preset == "logmel":
            stored.update(statistics=["band_mean", "band_std", *self.shape_statistics])
        if self.input_shape:
            stored.update(input_shape=list(self.input_shape))
        stored.update(standardise=self.standardise, n_features=self.n_features)
        return stored

    @classmethod
    def from_dict(cls, stored):
        """The configuration a dataset or model stored.

        Raises
        ------
        ValueError
            If ``stored`` is not exactly what :meth:`to_dict` writes for
            some configuration (missing, unknown or inconsistent keys).
        """
        if not isinstance(stored, dict):
            raise ValueError(f"expected a feature configuration dict, got {type(stored).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        current = feature_config(stored.get("preset")) if stored.get("preset") in PRESETS else None
        missing = sorted(set(current.to_dict()) - set(stored)) if current else []
        if missing:
            raise ValueError(f"no {', '.join(missing)} stored (made by an older features.py, "
                             "before every constant that shapes features was stored)")
        try:
            config = cls(**{k: stored.get(k) for k in names})
        except TypeError as err:  # e.g. a comparison with None
            raise ValueError(f"invalid feature configuration ({err})") from None
        expected = config.to_dict()
        wrong = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        if wrong:
            raise ValueError(f"inconsistent feature configuration (keys {', '.join(wrong)})")
        return config

    def differences(self, other):
        """Names of the settings where ``other`` differs, with both values."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [(k, mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                if mine.get(k) != theirs.get(k)]


def feature_config(preset=None):
    """The configuration the constants at the top of this file define.

    Parameters
    ----------
    preset : str, optional
        One of ``PRESETS``; defaults to ``FEATURES``.

    Returns
    -------
    FeatureConfig
    """
    preset = preset or FEATURES
    if preset not in PRESETS:
        raise ValueError(f"unknown feature preset {preset!r}; expected one of {PRESETS}")
    if preset == "efficientat":
        return FeatureConfig(
            preset=preset, version=FEATURE_VERSION, sample_rate=EFFICIENTAT_SAMPLE_RATE,
            noise_reduction=False, noise_profile_samples=None, trim=TRIM,
            trim_top_db=TRIM_TOP_DB, trim_frame_length=TRIM_FRAME_LENGTH,
            trim_hop_length=TRIM_HOP_LENGTH, n_fft=EFFICIENTAT_N_FFT,
            hop_length=EFFICIENTAT_HOP_LENGTH, win_length=EFFICIENTAT_WIN_LENGTH,
            n_mels=EFFICIENTAT_N_MELS, fmin=0.0, fmax=EFFICIENTAT_FMAX, top_db=None,
            patch_frames=EFFICIENTAT_PATCH_FRAMES, patch_tolerance=PATCH_TOLERANCE,
            preemphasis=PREEMPHASIS, log_offset=LOG_OFFSET)
    log_mel, stream = preset != "seed", preset == "logmel_stream"
    reduce = NOISE_REDUCTION and preset == "seed"
    return FeatureConfig(
        preset=preset, version=FEATURE_VERSION, sample_rate=SAMPLE_RATE, noise_reduction=reduce,
        noise_profile_samples=NOISE_PROFILE_SAMPLES if reduce else None, trim=TRIM,
        trim_top_db=TRIM_TOP_DB,
        trim_frame_length=N_FFT if stream else TRIM_FRAME_LENGTH,  # trims whole STFT frames
        trim_hop_length=HOP_LENGTH if stream else TRIM_HOP_LENGTH,
        n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
        n_mels=N_MELS if log_mel else None, fmin=MEL_FMIN if log_mel else None,
        fmax=MEL_FMAX if log_mel else None, top_db=MEL_TOP_DB if log_mel else None,
        patch_frames=PATCH_FRAMES if preset in PATCH_PRESETS else None,
        patch_tolerance=PATCH_TOLERANCE if preset == "logmel_patch" else None,
        level_floor_db=LEVEL_FLOOR_DB if preset == "logmel" else None,
        shape_statistics=tuple(SHAPE_STATISTICS) if preset == "logmel" else None)


def audio_duration(path):
    """Length of an audio file in seconds, from its header (nothing decoded).

    Raises
    ------
    FeatureError
        If the file cannot be opened as audio; ``err.path`` is the file.
    """
    import soundfile
    _check_regular(path)
    try:
        info = soundfile.info(path)
    except Exception as err:  # libsndfile's errors vary by format; all mean "cannot decode"
        raise _unreadable(path, err) from None
    return info.frames / info.samplerate if info.samplerate else 0.0


def load_audio(path, sample_rate, max_seconds=None):
    """Load a clip as mono float32 at ``sample_rate``.

    Parameters
    ----------
    path : str or Path
        WAV (any rate, bit depth, channel count), FLAC or OGG file.
    sample_rate : int > 0
    max_seconds : float, optional
        A longer file is refused before it is decoded, so a stray hour-long
        recording never fills the memory (use :func:`stream_audio` for those).

    Returns
    -------
    np.ndarray, shape (n,), float32

    Raises
    ------
    FeatureError
        If the file cannot be decoded or is too long; ``err.path`` is the file.
    """
    import soundfile
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    _check_regular(path)
    if max_seconds is not None:
        seconds = audio_duration(path)
        if seconds > max_seconds:
            raise FeatureError(f"{seconds:.0f} s long, more than the {max_seconds:g} s a clip "
                               "may have; cut it into clips first", path)
    # Same steps as librosa.load(path, sr=sample_rate): float32 samples,
    # channel mean, soxr_hq resampling; read with soundfile directly, which
    # avoids librosa's slow first call in every worker process.
    try:
        y, native_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors vary by format; all mean "cannot decode"
        raise _unreadable(path, err) from None
    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if native_rate != sample_rate and y.size:
        import librosa
        y = librosa.resample(y, orig_sr=native_rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def stream_audio(path, sample_rate, block_s=10.0):
    """A file of any length as mono float32 blocks at ``sample_rate``, read
    and resampled block by block (soxr's streaming resampler, the same HQ
    filter as :func:`load_audio`), so memory does not grow with duration.

    Yields
    ------
    np.ndarray, shape (k,), float32
    """
    import soundfile
    import soxr
    _check_regular(path)
    try:
        handle = soundfile.SoundFile(path)
    except Exception as err:  # libsndfile's errors vary by format; all mean "cannot decode"
        raise _unreadable(path, err) from None
    with handle:
        native_rate = handle.samplerate
        resampler = (soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32",
                                          quality="HQ") if native_rate != sample_rate else None)
        blocksize = max(int(block_s * native_rate), 1)
        while True:
            try:
                block = handle.read(blocksize, dtype="float32", always_2d=True)
            except Exception as err:  # a truncated or corrupt file, found mid-way
                raise _unreadable(path, err) from None
            last = len(block) < blocksize
            mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            mono = np.ascontiguousarray(mono, dtype=np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if mono.size:
                yield mono
            if last:
                return


def _check_regular(path):
    """FeatureError unless ``path`` is a regular file: a device such as
    /dev/zero or a FIFO would hang the decoder, never ending the run."""
    # (a missing or unreadable file is left to the decoder, whose error names it)
    if os.path.exists(path) and not os.path.isfile(path):
        raise FeatureError("not a regular file (a device, FIFO or folder); give an audio file",
                           path)


def _unreadable(path, err):
    """The FeatureError for a file soundfile could not open or decode."""
    return FeatureError(f"cannot read audio ({_read_error_reason(path, err)})", path)


def _read_error_reason(path, err):
    """Why soundfile could not decode a file, in words."""
    if not os.path.exists(path):
        return "file not found"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file, 0 bytes"
    detail = str(err).strip().split(":")[-1].strip() or type(err).__name__
    return f"not a readable audio file: {detail}"


def reduce_noise(y, sample_rate, profile_samples):
    """Spectral-gating noise reduction with the clip's first samples as noise.

    noisereduce 3 only uses ``y_noise`` in its *stationary* mode (the
    non-stationary mode estimates the noise floor itself and ignores it), so
    stationary gating is what honours the seed's noise profile.

    A clip shorter than ``profile_samples`` uses the whole clip as its
    profile, exactly as the seed's ``y[:25000]`` does. Gating then keeps the
    time-frequency cells that stand 1.5 standard deviations above the clip's
    own level in that band: transients and tones survive, steady background
    is removed.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
    sample_rate : int
    profile_samples : int > 0

    Returns
    -------
    np.ndarray, shape (n,), float32
    """
    import noisereduce
    if profile_samples <= 0:
        raise ValueError(f"profile_samples must be positive, got {profile_samples}")
    reduced = noisereduce.reduce_noise(y=y, sr=sample_rate, y_noise=y[:profile_samples],
                                       stationary=True, padding=_NOISEREDUCE_PADDING)
    return np.asarray(reduced, dtype=np.float32)


def trim_silence(y, top_db, frame_length, hop_length):
    """Remove leading and trailing parts quieter than ``top_db`` below the peak.

    Same frames and rule as ``librosa.effects.trim(y, top_db,
    frame_length=..., hop_length=...)[0]`` (frame mean square, zero-padded by
    half a frame, in dB relative to the loudest frame), with the frames'
    energies taken from one running sum instead of a frame matrix: a
    frame's energy is then O(1), not O(frame_length), which made trimming
    the most expensive step of a feature vector.
    """
    if top_db <= 0 or frame_length <= 0 or hop_length <= 0:
        raise ValueError(f"top_db, frame_length and hop_length must be positive, got "
                         f"{top_db}, {frame_length}, {hop_length}")
    padded = np.pad(np.asarray(y, np.float64), frame_length // 2, mode="constant")
    if padded.size < frame_length:
        return y[:0]
    running = np.concatenate([[0.0], np.cumsum(np.square(padded))])
    starts = np.arange(1 + (padded.size - frame_length) // hop_length) * hop_length
    power = np.maximum((running[starts + frame_length] - running[starts]) / frame_length, 1e-10)
    loud = np.flatnonzero(10.0 * np.log10(power / power.max()) > -top_db)
    if loud.size == 0:
        return y[:0]
    return y[loud[0] * hop_length:min(y.size, (loud[-1] + 1) * hop_length)]


def stft_magnitude(y, n_fft, hop_length, win_length, *, center=True):
    """|STFT|, shape (n_fft // 2 + 1, frames); librosa's Hann-windowed STFT,
    centred (zero-padded by n_fft // 2) or, with ``center=False``, frames
    ``t * hop_length .. + n_fft`` of ``y`` itself."""
    import librosa
    if win_length > n_fft:
        raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
    with warnings.catch_warnings():
        # A clip shorter than n_fft is zero-padded, as the seed does; no need to warn.
        warnings.filterwarnings("ignore", message="n_fft=.*too large")
        return np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length,
                                   win_length=win_length, center=center))


def mean_stft_magnitude(y, n_fft, hop_length, win_length):
    """Mean over time of |STFT|: one value per frequency bin (n_fft // 2 + 1)."""
    return stft_magnitude(y, n_fft, hop_length, win_length).mean(axis=1)


def minmax_normalise(v):
    """Scale ``v`` to [0, 1]; raise FeatureError if it is constant."""
    v = np.asarray(v, dtype=np.float64)
    low, high = v.min(), v.max()
    if not high - low > 1e-12 * max(abs(high), 1e-30):
        raise SilentAudio("spectrum is constant, so it cannot be normalised")
    return (v - low) / (high - low)


def power_spectrogram(y, config):
    """|STFT|^2 with ``config``'s STFT settings, shape (n_fft // 2 + 1, frames)."""
    return stft_magnitude(y, config.n_fft, config.hop_length, config.win_length) ** 2


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate, n_fft, *, n_mels, fmin, fmax):
    """librosa's (Slaney) mel filterbank, shape (n_mels, n_fft // 2 + 1)."""
    import librosa
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def level_normalised_logmel(power, config):
    """Log-mel spectrogram (dB) that ignores the clip's overall level.

    The floor sits ``config.top_db`` below the loudest cell, and the mean over
    all cells is subtracted, so a gain change leaves the result unchanged.

    Returns
    -------
    np.ndarray, shape (n_mels, frames), dB relative to the clip's mean cell
    """
    basis = mel_basis(config.sample_rate, config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
                      fmax=config.fmax)
    # einsum, not a BLAS matmul: BLAS sums in an order that depends on its
    # thread count, and features must not depend on the number of workers.
    mel = np.einsum("mf,ft->mt", basis, power)
    db = 10.0 * np.log10(np.maximum(mel, 1e-12))
    db = np.maximum(db, db.max() - config.top_db)
    if db.max() - db.min() < 1e-6:
        raise SilentAudio("log-mel spectrogram is constant")
    return db - db.mean()


def shape_statistics(power, sample_rate, *, names=SHAPE_STATISTICS,
                     level_floor_db=LEVEL_FLOOR_DB):
    """Mean and std over time of the statistics ``names`` (in that order,
    some of ``SHAPE_STATISTICS_KNOWN``): spectral flatness, centroid,
    bandwidth, 85 % rolloff (all from the power spectrum, frequencies in
    kHz), spectral flux and frame level (dB relative to the loudest frame,
    floored ``level_floor_db`` below it).

    Returns
    -------
    np.ndarray, shape (2 * len(names),): all means, then all stds.
    """
    eps = 1e-12
    freqs_khz = np.linspace(0, sample_rate / 2000, power.shape[0])[:, None]
    total = power.sum(axis=0, keepdims=True) + eps
    flatness = np.exp(np.mean(np.log(power + eps), axis=0)) / (total[0] / power.shape[0])
    centroid = (freqs_khz * power).sum(axis=0) / total[0]
    bandwidth = np.sqrt((((freqs_khz - centroid) ** 2) * power).sum(axis=0) / total[0])
    rolloff = freqs_khz[np.argmax(np.cumsum(power, axis=0) >= 0.85 * total, axis=0), 0]
    log_power = np.log10(power + eps)
    flux = np.concatenate([[0.0], np.mean(np.abs(np.diff(log_power, axis=1)), axis=0)])
    level = 10 * np.log10(total[0])
    level = np.maximum(level - level.max(), -level_floor_db)
    found = dict(flatness=flatness, centroid=centroid, bandwidth=bandwidth, rolloff=rolloff,
                 flux=flux, level=level)
    rows = np.stack([found[name] for name in names])
    return np.concatenate([rows.mean(axis=1), rows.std(axis=1)])


def logmel_statistics(y, config):
    """The "logmel" preset: per-band mean and std of the level-normalised
    log-mel spectrogram, then ``shape_statistics``."""
    power = power_spectrogram(y, config)
    db = level_normalised_logmel(power, config)
    return np.concatenate([db.mean(axis=1), db.std(axis=1),
                           shape_statistics(power, config.sample_rate,
                                            names=config.shape_statistics,
                                            level_floor_db=config.level_floor_db)])


def logmel_patch(y, config):
    """The "logmel_patch" preset: the ``config.patch_frames`` consecutive
    frames with the most energy (padded with the floor when the clip is
    shorter), as a flattened (frames, mels) array."""
    power = power_spectrogram(y, config)
    db = level_normalised_logmel(power, config)
    frames = config.patch_frames
    if db.shape[1] < frames:
        db = np.pad(db, ((0, 0), (0, frames - db.shape[1])), constant_values=db.min())
    start = loudest_patch_start(power.sum(axis=0, dtype=np.float64), frames,
                                tolerance=config.patch_tolerance)
    return db[:, start:start + frames].T.ravel()


def loudest_patch_start(frame_energy, frames, *, tolerance=PATCH_TOLERANCE):
    """First frame of the loudest run of ``frames`` frames: the earliest run
    whose summed energy is within ``tolerance`` (relative) of the largest sum.

    A tolerance rather than the exact maximum, because runs of a steady sound
    have equal energy up to rounding, and the device front end (device/),
    whose sums round differently, must choose the same run. 0 when there are
    fewer than ``frames`` frames.
    """
    if len(frame_energy) < frames:
        return 0
    energy = np.convolve(np.asarray(frame_energy, np.float64), np.ones(frames), mode="valid")
    return int(np.argmax(energy >= energy.max() * (1.0 - tolerance)))


def frame_energies(y, n_fft, hop_length):
    """Energy of each uncentred STFT frame (samples ``t * hop_length`` to
    ``+ n_fft``): the sum of its squared samples in 16-bit units, so exact
    integers for 16-bit audio, the same the device computes.

    Returns
    -------
    np.ndarray of int64, shape (1 + (len(y) - n_fft) // hop_length,)
    """
    q = np.rint(np.asarray(y, np.float64) * 32768.0).astype(np.int64)
    running = np.concatenate([[0], np.cumsum(q * q)])
    starts = np.arange(1 + (len(q) - n_fft) // hop_length) * hop_length
    return running[starts + n_fft] - running[starts]


def loud_frames(energy, top_db):
    """First and last frame within ``top_db`` of the loudest (energy times
    10^(top_db / 10) above the loudest's; an exact integer test when top_db
    is a multiple of 10), or None when every frame is silent."""
    loudest = int(energy.max())
    if loudest == 0:
        return None
    ratio = 10.0 ** (top_db / 10.0)
    whole = top_db % 10 == 0 and top_db <= 180
    loud = (energy * int(round(ratio)) > loudest if whole
            else energy.astype(np.float64) * ratio > loudest)
    found = np.flatnonzero(loud)
    return int(found[0]), int(found[-1])


def logmel_stream(y, config):
    """The "logmel_stream" preset: the loudest patch of the level-normalised
    log-mel spectrogram, built only from whole frames of one uncentred STFT
    grid (a clip shorter than a frame is zero-padded to one):

    1. frames ``t * hop_length .. + n_fft``; their energies
       (:func:`frame_energies`);
    2. trim: keep the frames from the first to the last within
       ``trim_top_db`` of the loudest (:func:`loud_frames`);
    3. dB with a floor ``top_db`` below the loudest cell of the kept frames,
       minus their mean (:func:`level_normalised_logmel`);
    4. the ``patch_frames`` kept frames with the largest summed energy (the
       first such run: the sums are exact), padded with the floor.
    """
    y = np.asarray(y, np.float32)
    if y.size < config.n_fft:
        y = np.pad(y, (0, config.n_fft - y.size))
    energy = frame_energies(y, config.n_fft, config.hop_length)
    first, last = 0, len(energy) - 1
    if config.trim:
        kept = loud_frames(energy, config.trim_top_db)
        if kept is None:
            raise SilentAudio("every STFT frame is silent")
        first, last = kept
    power = stft_magnitude(y, config.n_fft, config.hop_length, config.win_length,
                           center=False)[:, first:last + 1] ** 2
    db = level_normalised_logmel(power, config)
    frames, energy = config.patch_frames, energy[first:last + 1]
    if db.shape[1] < frames:
        return np.pad(db, ((0, 0), (0, frames - db.shape[1])),
                      constant_values=db.min()).T.ravel()
    running = np.concatenate([[0], np.cumsum(energy)])
    start = int(np.argmax(running[frames:] - running[:-frames]))
    return db[:, start:start + frames].T.ravel()


@functools.lru_cache(maxsize=4)
def kaldi_mel_banks(sample_rate, n_fft, *, n_mels, fmin, fmax):
    """Kaldi's triangular mel filterbank (mel = 1127 ln(1 + f / 700), as
    torchaudio's ``compliance.kaldi.get_mel_banks``), with a zero column for
    the Nyquist bin: what EfficientAT's front end multiplies the power
    spectrum by.

    Returns
    -------
    np.ndarray, shape (n_mels, n_fft // 2 + 1), float64
    """
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)
    low, high = mel(fmin), mel(fmax)
    delta = (high - low) / (n_mels + 1)
    left = low + np.arange(n_mels)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    bins = mel(sample_rate / n_fft * np.arange(n_fft // 2))[None, :]
    banks = np.maximum(0.0, np.minimum((bins - left) / (centre - left),
                                       (right - bins) / (right - centre)))
    return np.pad(banks, ((0, 0), (0, 1)))


def efficientat_logmel(y, config):
    """EfficientAT's log-mel (``AugmentMelSTFT`` in eval mode), the input its
    AudioSet taggers were trained on: pre-emphasis, a centred STFT (reflect
    padding) with a symmetric Hann window of ``win_length`` centred in
    ``n_fft``, power, Kaldi mel filters, ``(log(mel + 1e-5) + 4.5) / 5``.

    Parameters
    ----------
    y : np.ndarray, shape (n,), n > n_fft // 2 + 1, at ``config.sample_rate``

    Returns
    -------
    np.ndarray, shape (n_mels, 1 + (n - 1) // hop_length), float32
    """
    x = np.asarray(y, np.float64)
    x = x[1:] - config.preemphasis * x[:-1]
    pad = config.n_fft // 2
    x = np.pad(x, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, config.n_fft)[::config.hop_length]
    n = np.arange(config.win_length)
    window = np.zeros(config.n_fft)
    start = (config.n_fft - config.win_length) // 2
    window[start:start + config.win_length] = 0.5 - 0.5 * np.cos(
        2 * np.pi * n / (config.win_length - 1))
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2  # (frames, bins)
    banks = kaldi_mel_banks(config.sample_rate, config.n_fft, n_mels=config.n_mels,
                            fmin=config.fmin, fmax=config.fmax)
    mel = np.einsum("mf,tf->mt", banks, power)  # einsum: no thread-dependent sums
    return ((np.log(mel + config.log_offset) + 4.5) / 5.0).astype(np.float32)


def efficientat_patch(y, config):
    """The "efficientat" preset: the ``patch_frames`` consecutive frames of
    :func:`efficientat_logmel` with the most energy (a shorter clip is
    zero-padded to one patch first, as silence), as a flattened
    (frames, mels) array."""
    frames, hop = config.patch_frames, config.hop_length
    y = np.asarray(y, np.float32)
    needed = (frames - 1) * hop + 1
    if y.size < needed:
        y = np.pad(y, (0, needed - y.size))
    mel = efficientat_logmel(y, config)
    energy = np.exp(5.0 * mel.astype(np.float64) - 4.5).sum(axis=0)  # mel power per frame
    start = loudest_patch_start(energy, frames, tolerance=config.patch_tolerance)
    return mel[:, start:start + frames].T.ravel()


def features_from_audio(y, config):
    """The feature vector of audio already loaded at ``config.sample_rate``.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
    config : FeatureConfig

    Returns
    -------
    np.ndarray, shape (config.n_features,), float32. Seed preset: in [0, 1];
    log-mel presets: dB relative to the clip's mean level.

    Raises
    ------
    FeatureError
        For empty, silent or non-finite audio, or when nothing is left after
        noise reduction and trimming.
    """
    # By attribute, not isinstance: a Dask worker that reloads this module
    # (Client.upload_file) holds configurations of the earlier class object.
    if not hasattr(config, "n_features"):
        raise TypeError(f"config must be a FeatureConfig, got {type(config).__name__}")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,), got shape {y.shape}")
    if y.size == 0:
        raise FeatureError("no audio samples (zero-length audio)")
    if not np.all(np.isfinite(y)):
        raise FeatureError("audio contains NaN or infinite samples")
    if not np.any(y):
        raise SilentAudio("all samples are zero (silence)")
    if y.size < MIN_CLIP_S * config.sample_rate:
        raise TooShort(f"too short: {y.size} samples ({1000 * y.size / config.sample_rate:.0f} "
                           f"ms), at least {MIN_CLIP_S:g} s needed")
    peak = float(np.max(np.abs(y)))
    if peak > MAX_ABS_SAMPLE:
        raise FeatureError(f"samples reach {peak:.3g}: not audio scaled to [-1, 1] (a float "
                           "file with the wrong scale?)")
    if config.noise_reduction:
        y = reduce_noise(y, config.sample_rate, config.noise_profile_samples)
    if config.trim and config.preset != "logmel_stream":  # which trims whole STFT frames
        y = trim_silence(y, config.trim_top_db, config.trim_frame_length, config.trim_hop_length)
    if y.size == 0 or not np.any(y):
        raise SilentAudio("nothing left after noise reduction and trimming "
                           "(the clip is silent or pure noise)")
    if config.preset == "seed":
        v = minmax_normalise(mean_stft_magnitude(y, config.n_fft, config.hop_length,
                                                 config.win_length))
    elif config.preset == "logmel":
        v = logmel_statistics(y, config)
    elif config.preset == "logmel_stream":
        v = logmel_stream(y, config)
    elif config.preset == "efficientat":
        v = efficientat_patch(y, config)
    else:
        v = logmel_patch(y, config)
    if not np.all(np.isfinite(v)):  # cannot happen with the floors above; never let it through
        raise FeatureError("features are not finite")
    return v.astype(np.float32)


class Extracted(NamedTuple):
    """What extracting one clip gave: a vector, or None and the reason."""

    vector: np.ndarray | None
    duration_s: float
    reason: str


def extract_or_reason(path, config, max_seconds=None):
    """A clip's features for a worker: a clip that cannot give
    features (FeatureError, which covers undecodable and too long files)
    comes back as an ``Extracted`` with its reason; any other exception is a
    bug and propagates."""
    try:
        y = load_audio(path, config.sample_rate, max_seconds)
    except FeatureError as err:
        return Extracted(None, 0.0, err.reason)
    duration = y.size / config.sample_rate
    try:
        return Extracted(features_from_audio(y, config), duration, "")
    except FeatureError as err:
        return Extracted(None, duration, err.reason)


def extract_many(paths, config, max_seconds=None):
    """``extract_or_reason`` for several files: one parallel task, so that
    per-task scheduling overhead (large on Dask) is paid once per batch."""
    return [extract_or_reason(path, config, max_seconds) for path in paths]
