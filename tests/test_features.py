import json
from pathlib import Path

import librosa
import noisereduce
import numpy as np
import pytest

import features
from conftest import SR, golden_clip, noise, tone, write

SEED = features.feature_config("seed")
DEFAULT = features.feature_config()
GOLDEN = Path(__file__).with_name("golden") / "features.json"


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
    assert np.array_equal(features.extract_or_reason(path, DEFAULT).vector,
                          features.extract_or_reason(path, DEFAULT).vector)


def test_switches_change_the_configuration(monkeypatch):
    """Noise reduction and trimming off: exactly the plain |STFT| mean of the
    raw clip; on: exactly the seed method; and most bins differ between them."""
    y = tone(900.0, 1.5) + noise(1.5, level=0.2, seed=4)
    with_nr = features.features_from_audio(y, SEED)
    monkeypatch.setattr(features, "NOISE_REDUCTION", False)
    monkeypatch.setattr(features, "TRIM", False)
    config = features.feature_config("seed")
    assert config.noise_reduction is False and config.trim is False and config != SEED
    without = features.features_from_audio(y, config)
    v = np.abs(librosa.stft(y, n_fft=512, hop_length=256, win_length=512)).mean(axis=1)
    np.testing.assert_allclose(without, (v - v.min()) / (v.max() - v.min()), atol=1e-6)
    np.testing.assert_allclose(with_nr, seed_method(y), atol=1e-6)
    assert np.mean(np.abs(without - with_nr) > 1e-4) > 0.9


def test_golden_features_are_pinned_by_feature_version():
    """Firmware and stored models rely on FEATURE_VERSION: features may only
    change together with it (then run tests/make_golden_features.py)."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["feature_version"] == features.FEATURE_VERSION, (
        "FEATURE_VERSION changed: pin the new features with "
        "`python tests/make_golden_features.py`")
    y = golden_clip()
    for preset, pinned in golden["presets"].items():
        config = features.feature_config(preset)
        assert config.to_dict() == pinned["config"], (
            f"{preset}: features.py's settings differ from the pinned ones; if that is "
            "intended, bump FEATURE_VERSION and run tests/make_golden_features.py")
        vector = features.features_from_audio(y, config)
        tolerance = 1e-5 if preset == "seed" else 1e-3  # [0, 1] values vs dB
        np.testing.assert_allclose(vector, pinned["features"], rtol=0, atol=tolerance,
                                   err_msg=f"{preset} features changed without a "
                                           "FEATURE_VERSION bump")
    assert set(golden["presets"]) == set(features.PRESETS)


def test_feature_config_round_trips_and_rejects_tampering():
    for preset in features.PRESETS:
        config = features.feature_config(preset)
        stored = json.loads(json.dumps(config.to_dict()))
        assert features.FeatureConfig.from_dict(stored) == config
        assert stored["n_features"] == config.n_features
    stored = DEFAULT.to_dict()
    for change in ({"n_features": 7}, {"unknown": 1}, {"n_mels": None}, {"preset": "mfcc"},
                   {"n_fft": "512"}, {"win_length": 1024}):
        with pytest.raises(ValueError):
            features.FeatureConfig.from_dict({**stored, **change})
    with pytest.raises(ValueError, match="positive"):
        features.FeatureConfig(**{**features.dataclasses.asdict(DEFAULT), "hop_length": 0})
    with pytest.raises(TypeError, match="FeatureConfig"):
        features.features_from_audio(tone(500.0), DEFAULT.to_dict())


@pytest.mark.parametrize("audio, reason", [
    (np.zeros(0, np.float32), "zero-length"),
    (np.zeros(16000, np.float32), "silence"),
    (np.full(16000, np.nan, np.float32), "NaN"),
])
def test_meaningless_audio_raises_clear_error(audio, reason):
    with pytest.raises(features.FeatureError, match=reason) as err:
        features.features_from_audio(audio, DEFAULT)
    assert err.value.path is None and reason in err.value.reason


def test_constant_spectrum_raises():
    with pytest.raises(features.FeatureError, match="constant"):
        features.minmax_normalise(np.full(257, 3.0))


def test_errors_name_the_file_and_say_why(tmp_path):
    path = write(tmp_path / "quiet.wav", np.zeros(8000, np.float32))
    quiet = features.extract_or_reason(path, DEFAULT)
    assert quiet.vector is None and quiet.reason.startswith("all samples are zero")
    bad = tmp_path / "junk.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(features.FeatureError, match="junk.wav: cannot read audio") as err:
        features.load_audio(bad, 16000)
    assert err.value.path == str(bad) and err.value.reason.startswith("cannot read audio")
    assert features.extract_or_reason(bad, DEFAULT).reason.startswith("cannot read audio")


@pytest.mark.parametrize("preset", features.PRESETS)
def test_each_preset_shape_finite_deterministic(preset):
    config = features.feature_config(preset)
    for y in (tone(440.0, 0.2), tone(3000.0, 2.5) + noise(2.5, level=0.2), noise(1.0, seed=9)):
        v = features.features_from_audio(y, config)
        assert v.shape == (config.n_features,) and v.dtype == np.float32
        assert np.all(np.isfinite(v))
        assert np.array_equal(v, features.features_from_audio(y.copy(), config))
    assert config.preset == preset
    assert config.standardise == (preset not in ("seed", "efficientat"))  # a backbone's own scale


@pytest.mark.parametrize("preset", ["logmel", "logmel_patch", "logmel_stream"])
def test_logmel_presets_ignore_level_and_separate_sounds(preset):
    config = features.feature_config(preset)
    y = tone(1500.0, 1.5) + noise(1.5, level=0.1)
    loud, quiet = (features.features_from_audio(g * y, config) for g in (1.0, 0.05))
    np.testing.assert_allclose(loud, quiet, atol=1e-3)
    other = features.features_from_audio(noise(1.5, seed=2, low_hz=800), config)
    assert np.abs(other - loud).max() > 1.0
    # Where the sound is: the tone's mel band stands highest in the tone's
    # band means, and the low-passed noise has its energy below 800 Hz.
    bands = config.n_mels
    tone_means = (loud.reshape(-1, bands).mean(axis=0) if config.input_shape
                  else loud[:bands])
    noise_means = (other.reshape(-1, bands).mean(axis=0) if config.input_shape
                   else other[:bands])
    centres = mel_band_centres_hz(config)
    assert abs(centres[int(np.argmax(tone_means))] - 1500.0) < 200
    assert centres[noise_means > noise_means.max() - 10].max() < 1000


def mel_band_centres_hz(config):
    bank = features.kaldi_mel_banks if config.preset == "efficientat" else features.mel_basis
    basis = bank(config.sample_rate, config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
                 fmax=config.fmax)
    return basis.argmax(axis=1) * config.sample_rate / config.n_fft


@pytest.mark.parametrize("preset", features.PATCH_PRESETS)
def test_patch_is_the_loudest_second(preset):
    config = features.feature_config(preset)
    sr = config.sample_rate  # audio at the preset's own rate
    y = np.concatenate([noise(2.0, sr, level=0.01, seed=1), tone(2000.0, 1.0, sr),
                        noise(2.0, sr, level=0.01)])
    patch = features.features_from_audio(y, config).reshape(config.input_shape)
    band = int(np.argmax(patch.mean(axis=0)))  # the tone's band dominates the whole patch
    assert abs(mel_band_centres_hz(config)[band] - 2000.0) < 300
    # the tone fills the patch: its band is loud in every frame, not only some
    assert np.all(patch[:, band] > patch.mean(axis=1))


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown feature preset 'mfcc'"):
        features.feature_config("mfcc")


def test_extract_or_reason_reports_bad_clips_and_surfaces_bugs(tmp_path, monkeypatch):
    result = features.extract_or_reason(tmp_path / "missing.wav", DEFAULT)
    assert result == (None, 0.0, "cannot read audio (file not found)")
    path = write(tmp_path / "silent.wav", np.zeros(8000, np.float32))
    result = features.extract_or_reason(path, DEFAULT)
    assert result.vector is None and result.duration_s == 0.5 and "zero" in result.reason
    # A bug is not a "skipped clip": it propagates.
    monkeypatch.setattr(features, DEFAULT.preset, lambda y, config: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        features.extract_or_reason(write(tmp_path / "ok.wav", tone(500.0)), DEFAULT)


def test_load_resamples_and_mixes_down(tmp_path):
    stereo = np.stack([tone(500.0, 1.0, sr=44100), tone(500.0, 1.0, sr=44100)], axis=1)
    y = features.load_audio(write(tmp_path / "s.wav", stereo, sr=44100), SR)
    assert y.ndim == 1 and abs(y.size - SR) <= 1


def test_parameters_checked_early():
    with pytest.raises(ValueError, match="profile_samples must be positive"):
        features.reduce_noise(tone(500.0), SR, profile_samples=0)
    with pytest.raises(ValueError, match="win_length"):
        features.mean_stft_magnitude(tone(500.0), n_fft=256, hop_length=128, win_length=512)
    with pytest.raises(ValueError, match="mono"):
        features.features_from_audio(np.zeros((2, 100), np.float32), DEFAULT)


@pytest.mark.parametrize("rate, channels, subtype", [(16000, 1, "PCM_16"), (44100, 2, "PCM_24"),
                                                     (8000, 1, "PCM_U8"), (48000, 2, "FLOAT")])
def test_load_matches_librosa_load(tmp_path, rate, channels, subtype):
    audio = tone(750.0, 1.2, sr=rate) + noise(1.2, sr=rate, level=0.1)
    audio = np.stack([audio, 0.5 * audio], axis=1) if channels == 2 else audio
    path = write(tmp_path / "x.wav", audio, sr=rate, subtype=subtype)
    expected, _ = librosa.load(path, sr=SR)
    np.testing.assert_allclose(features.load_audio(path, SR), expected, atol=1e-6)


def test_loudest_patch_ignores_rounding_level_differences():
    steady = 1.0 + 1e-9 * np.random.default_rng(0).normal(size=100)  # equal up to rounding
    assert features.loudest_patch_start(steady, 10) == 0
    loud = np.ones(100)
    loud[40:50] = 3.0
    assert features.loudest_patch_start(loud, 10) == 40
    assert features.loudest_patch_start(loud, 200) == 0  # fewer frames than a patch
    nearly = np.ones(30)
    nearly[20:] = 1.01  # 1 % louder frames: the run of them wins
    assert features.loudest_patch_start(nearly, 10) == 20


def test_stream_preset_trims_and_chooses_whole_frames_exactly():
    """logmel_stream: frame energies are exact integer sums of squared
    16-bit samples; silence in front of the sound by whole frame hops, or
    after it, does not change the features (trimming drops whole frames);
    windows of long recordings start on the frame grid."""
    config = features.feature_config("logmel_stream")
    rng = np.random.default_rng(0)
    q = rng.integers(-32768, 32768, size=5000)
    energy = features.frame_energies(q / 32768.0, config.n_fft, config.hop_length)
    brute = [int(np.sum(q[t:t + config.n_fft] ** 2))
             for t in range(0, len(q) - config.n_fft + 1, config.hop_length)]
    assert energy.dtype == np.int64 and energy.tolist() == brute
    y = np.round((tone(1200.0, 1.3) + noise(1.3, level=0.05)) * 32767) / 32768
    padded = [np.concatenate([np.zeros(k * config.hop_length), y, np.zeros(300 + k * 1000)])
              for k in (1, 2, 7)]  # frames of silence only are trimmed away
    v = features.features_from_audio(padded[0], config)
    for other in padded[1:]:
        np.testing.assert_allclose(features.features_from_audio(other, config), v, atol=1e-4)
    assert config.window_alignment == config.hop_length
    assert features.feature_config("logmel_patch").window_alignment == 1
    with pytest.raises(features.FeatureError, match="silent"):
        features.features_from_audio(np.r_[np.zeros(2000), 1e-6], config)


# Constants of features.py that do not shape a preset's features (and so are
# not stored): the choice of preset, the version, input checks, lists.
NOT_SHAPING = {"FEATURES", "FEATURE_VERSION", "MIN_CLIP_S", "MAX_ABS_SAMPLE", "PRESETS",
               "PATCH_PRESETS", "DEVICE_PRESETS", "SHAPE_STATISTICS_KNOWN"}


def edited(value):
    """Another valid-looking value of a constant, or None."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2
    if isinstance(value, float):
        return value * 0.5 if value else 1e-3
    if isinstance(value, tuple) and len(value) > 1:
        return value[:-1]
    return None


def shaping_constants():
    return sorted(name for name, value in vars(features).items()
                  if name.isupper() and not name.startswith("_") and name not in NOT_SHAPING
                  and edited(value) is not None)


@pytest.mark.parametrize("preset", features.PRESETS)
def test_every_constant_that_changes_features_is_stored(preset, monkeypatch):
    """#32.3: edit each constant in turn; when the features of a clip change,
    the stored configuration changes too, so a dataset or model made before
    the edit is refused; a constant the preset does not use leaves its
    configuration as it was (its field is None)."""
    from pipeline import artifacts
    from pipeline.errors import PipelineError
    y = golden_clip(seconds=2.5)  # longer than NOISE_PROFILE_SAMPLES
    before = features.feature_config(preset)
    old = features.features_from_audio(y, before)
    unused = []
    for name in shaping_constants():
        with monkeypatch.context() as patch:
            patch.setattr(features, name, edited(getattr(features, name)))
            try:
                after = features.feature_config(preset)
                new = features.features_from_audio(y, after)
            except (ValueError, features.FeatureError):
                continue  # that edit makes no valid configuration
            changed = new.shape != old.shape or not np.allclose(new, old, atol=1e-6)
            if changed:
                assert after != before, f"{name} changes {preset} features but is not stored"
                with pytest.raises(PipelineError, match="Rebuild"):
                    artifacts.check_current(before, "old.npz", "Rebuild it.")
            elif after == before:
                unused.append(name)
    used_by = {"NOISE_PROFILE_SAMPLES": ("seed",), "LEVEL_FLOOR_DB": ("logmel",),
               "SHAPE_STATISTICS": ("logmel",), "PATCH_TOLERANCE": ("logmel_patch",
                                                                    "efficientat"),
               "PREEMPHASIS": ("efficientat",), "LOG_OFFSET": ("efficientat",)}
    for name, presets in used_by.items():
        assert (name in unused) == (preset not in presets), name
