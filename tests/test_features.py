import librosa
import noisereduce
import numpy as np
import pytest

import features
from conftest import SR, noise, tone, write

SEED = features.feature_config("seed")


def seed_method(y):
    """The seed README's steps, called directly (noisereduce 3 spelling)."""
    reduced = noisereduce.reduce_noise(y=y, sr=SR, y_noise=y[:25000], stationary=True)
    trimmed, _ = librosa.effects.trim(reduced, top_db=20, frame_length=512, hop_length=64)
    v = np.abs(librosa.stft(trimmed, n_fft=512, hop_length=256, win_length=512)).mean(axis=1)
    return (v - v.min()) / (v.max() - v.min())


def test_tone_gives_peak_at_its_bin_in_unit_range():
    v = features.features_from_audio(tone(1000.0, seconds=2.0), SEED)
    assert v.shape == (257,) and v.dtype == np.float32
    assert v.min() == 0.0 and v.max() == 1.0
    assert abs(int(np.argmax(v)) - round(1000.0 / (SR / 512))) <= 1


@pytest.mark.parametrize("seconds", [0.5, 3.0])  # shorter and longer than the noise profile
def test_matches_seed_method_exactly(seconds):
    y = tone(700.0, seconds) + noise(seconds, level=0.05, seed=3)
    np.testing.assert_allclose(features.features_from_audio(y, SEED), seed_method(y), atol=1e-6)


def test_matches_seed_method_with_leading_digital_silence():
    y = np.concatenate([np.zeros(8000, np.float32), tone(1200.0, 2.0) + noise(2.0, level=0.1)])
    np.testing.assert_allclose(features.features_from_audio(y, SEED), seed_method(y), atol=1e-6)


def test_deterministic(tmp_path):
    path = write(tmp_path / "a.wav", tone(440.0) + noise(level=0.1))
    assert np.array_equal(features.extract_features(path), features.extract_features(path))


def test_switches_change_the_configuration(monkeypatch):
    y = tone(900.0, 1.5) + noise(1.5, level=0.2, seed=4)
    with_nr = features.features_from_audio(y, SEED)
    monkeypatch.setattr(features, "NOISE_REDUCTION", False)
    monkeypatch.setattr(features, "TRIM", False)
    config = features.feature_config("seed")
    assert config["noise_reduction"] is False and config["trim"] is False
    without = features.features_from_audio(y, config)
    assert without.shape == with_nr.shape and not np.allclose(without, with_nr)


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(0, np.float32), "zero-length"),
    (np.zeros(16000, np.float32), "silence"),
    (np.full(16000, np.nan, np.float32), "NaN"),
])
def test_meaningless_audio_raises_clear_error(audio, reason):
    with pytest.raises(features.FeatureError, match=reason):
        features.features_from_audio(audio)


def test_constant_spectrum_raises():
    with pytest.raises(features.FeatureError, match="constant"):
        features.minmax_normalise(np.full(257, 3.0))


def test_error_names_the_file(tmp_path):
    path = write(tmp_path / "quiet.wav", np.zeros(8000, np.float32))
    with pytest.raises(features.FeatureError, match="quiet.wav: all samples are zero"):
        features.extract_features(path)
    bad = tmp_path / "junk.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(features.FeatureError, match="junk.wav: cannot read audio"):
        features.extract_features(bad)


@pytest.mark.parametrize("preset", features.PRESETS)
def test_each_preset_shape_finite_deterministic(preset):
    config = features.feature_config(preset)
    for y in (tone(440.0, 0.2), tone(3000.0, 2.5) + noise(2.5, level=0.2), noise(1.0, seed=9)):
        v = features.features_from_audio(y, config)
        assert v.shape == (config["n_features"],) and v.dtype == np.float32
        assert np.all(np.isfinite(v))
        assert np.array_equal(v, features.features_from_audio(y.copy(), config))
    assert config["preset"] == preset and config["standardise"] == (preset != "seed")


@pytest.mark.parametrize("preset", ["logmel", "logmel_patch"])
def test_logmel_presets_ignore_level_and_separate_sounds(preset):
    config = features.feature_config(preset)
    y = tone(1500.0, 1.5) + noise(1.5, level=0.1)
    loud, quiet = (features.features_from_audio(g * y, config) for g in (1.0, 0.05))
    np.testing.assert_allclose(loud, quiet, atol=1e-3)
    other = features.features_from_audio(noise(1.5, seed=2, low_hz=800), config)
    assert np.abs(other - loud).max() > 1.0


def test_patch_is_the_loudest_second():
    config = features.feature_config("logmel_patch")
    y = np.concatenate([noise(2.0, level=0.01, seed=1), tone(2000.0, 1.0), noise(2.0, level=0.01)])
    patch = features.features_from_audio(y, config).reshape(config["input_shape"])
    band = int(np.argmax(patch.mean(axis=0)))  # the tone's band dominates the whole patch
    mel_hz = features._mel_basis(SR, 512, 40, 50.0, 8000.0).argmax(axis=1) * SR / 512
    assert abs(mel_hz[band] - 2000.0) < 300


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown feature preset 'mfcc'"):
        features.feature_config("mfcc")


def test_extract_or_reason_never_raises(tmp_path):
    vector, duration, reason = features.extract_or_reason(tmp_path / "missing.wav",
                                                          features.feature_config())
    assert vector is None and duration == 0.0 and "cannot read audio" in reason


def test_load_resamples_and_mixes_down(tmp_path):
    stereo = np.stack([tone(500.0, 1.0, sr=44100), tone(500.0, 1.0, sr=44100)], axis=1)
    y = features.load_audio(write(tmp_path / "s.wav", stereo, sr=44100))
    assert y.ndim == 1 and abs(y.size - SR) <= 1


def test_parameters_checked_early():
    with pytest.raises(ValueError, match="profile_samples must be positive"):
        features.reduce_noise(tone(500.0), profile_samples=0)
    with pytest.raises(ValueError, match="win_length"):
        features.mean_stft_magnitude(tone(500.0), n_fft=256, win_length=512)
    with pytest.raises(ValueError, match="mono"):
        features.features_from_audio(np.zeros((2, 100), np.float32))


@pytest.mark.parametrize("rate, channels, subtype", [(16000, 1, "PCM_16"), (44100, 2, "PCM_24"),
                                                     (8000, 1, "PCM_U8"), (48000, 2, "FLOAT")])
def test_load_matches_librosa_load(tmp_path, rate, channels, subtype):
    audio = tone(750.0, 1.2, sr=rate) + noise(1.2, sr=rate, level=0.1)
    audio = np.stack([audio, 0.5 * audio], axis=1) if channels == 2 else audio
    path = write(tmp_path / "x.wav", audio, sr=rate, subtype=subtype)
    expected, _ = librosa.load(path, sr=SR)
    np.testing.assert_allclose(features.load_audio(path), expected, atol=1e-6)
