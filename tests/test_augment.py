import numpy as np
import pytest

from pipeline import augment
import features
import train_16k
from conftest import make_class_folder, noise, tone
import make_dataset_16k
from pipeline import artifacts, splits
from pipeline.standardisation import fit_standardisation, standardise


def test_augment_clip_is_deterministic_and_finite():
    y = tone(1000.0, 2.0)
    a = augment.augment_clip(y, np.random.default_rng(1), 16000, background=noise(1.0))
    b = augment.augment_clip(y, np.random.default_rng(1), 16000, background=noise(1.0))
    assert np.array_equal(a, b) and np.all(np.isfinite(a))
    assert y.size // 2 <= a.size <= y.size
    assert not np.array_equal(a, augment.augment_clip(y, np.random.default_rng(2), 16000))


def test_mix_at_snr_hits_the_ratio():
    y, n = tone(500.0, 1.0, noise=0), noise(1.0, seed=3)
    mixed = augment.mix_at_snr(y, n, 10.0)
    added = mixed - y
    assert abs(10 * np.log10(np.mean(y ** 2) / np.mean(added ** 2)) - 10.0) < 1e-6


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    for colour, expected in (("white", 0), ("pink", -1), ("brown", -2)):
        x = augment.coloured_noise(2 ** 16, rng, colour)
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size)
        band = (freqs > 0.01) & (freqs < 0.4)
        slope = np.polyfit(np.log10(freqs[band]), np.log10(spectrum[band]), 1)[0]
        assert abs(slope - expected) < 0.2, (colour, slope)


@pytest.fixture
def dataset(tmp_path):
    folder = make_class_folder(tmp_path / "clips", per_class=9, classes=("beep", "hiss", "tone"))
    path = tmp_path / "ds.npz"
    make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={path}", "--jobs=1"])
    return artifacts.load_dataset(path)


def test_augmentation_touches_training_clips_only(dataset, monkeypatch):
    labels, groups = dataset["labels"], dataset["groups"]
    train, val, test = splits.train_val_test_split(labels, groups, test_fraction=0.2,
                                                   val_fraction=0.2, seed=42)
    calls = []
    real = augment.augmented_rows

    def spy(path, background, **kwargs):
        calls.append((path, background))
        return real(path, background, **kwargs)

    monkeypatch.setattr(augment, "augmented_rows", spy)
    cfg = train_16k.settings.parse_settings(vars(train_16k), ["--jobs=1", "--augment_copies=2"])
    x, y = train_16k.augmented_training_set(dataset, train, cfg)
    train_paths = {dataset["paths"][i] for i in train}
    group_of = dict(zip(dataset["paths"], groups))
    assert {p for p, _ in calls} == train_paths  # every training clip, nothing else
    assert all(b in train_paths and group_of[b] != group_of[p] for p, b in calls)
    assert len(x) == len(y) == 3 * len(train)
    assert np.array_equal(x[:len(train)], dataset["features"][train])
    # each clip's copies keep its label (and so its place in its group's split)
    expected = np.concatenate([labels[train], np.repeat(labels[train], 2)])
    assert np.array_equal(y, expected)


def test_augmentation_off_and_missing_clips(dataset, tmp_path):
    train = np.arange(6)
    cfg = train_16k.settings.parse_settings(vars(train_16k), ["--augment=false"])
    x, _ = train_16k.augmented_training_set(dataset, train, cfg)
    assert len(x) == 6
    moved = dict(dataset, paths=[str(tmp_path / "gone.wav")] * len(dataset["paths"]))
    cfg = train_16k.settings.parse_settings(vars(train_16k), [])
    with pytest.raises(artifacts.PipelineError, match="missing.*--augment=false"):
        train_16k.augmented_training_set(moved, train, cfg)


def test_standardisation_only_where_the_preset_asks():
    x = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    scaling = fit_standardisation(x, features.feature_config("logmel"))
    assert scaling == {"mean": [2.0, 5.0], "std": [1.0, 1.0]}
    assert standardise(x, scaling).tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    assert fit_standardisation(x, features.feature_config("seed")) is None
    assert standardise(x, None) is not None and np.array_equal(standardise(x, None), x)


def test_spec_augment_masks_and_band_eq():
    patch = np.random.default_rng(1).normal(0, 10, (61, 40)).astype(np.float32)
    out = augment.spec_augment(patch.copy(), np.random.default_rng(5))
    assert out.shape == patch.shape
    assert np.array_equal(out, augment.spec_augment(patch.copy(), np.random.default_rng(5)))
    floor = out.min()
    masked = np.isclose(out, floor)
    # masked cells are whole rows or columns; the rest moved by a smooth curve
    diff = np.where(masked, np.nan, out - patch)
    per_band = np.nanmean(diff, axis=0)
    assert np.nanmax(np.abs(per_band)) <= augment.BAND_EQ_DB + 1e-4
    assert np.nanmax(np.nanstd(diff, axis=0)) < 1e-4  # one gain per band, all frames
    rows_masked = masked.all(axis=1).sum()
    cols_masked = masked.all(axis=0).sum()
    assert rows_masked <= augment.TIME_MASKS * augment.TIME_MASK_FRAMES
    assert cols_masked <= augment.BAND_MASKS * augment.BAND_MASK_BANDS


def test_batch_norm_cnn_converts_to_the_same_int8_ops():
    import model_conv
    from pipeline.tflite_model import TFLiteModel
    config = features.feature_config("logmel_patch")
    model = train_16k.build_model(config.n_features, 3, "cnn", [4, 4], dropout=0.1,
                                  learning_rate=1e-3, seed=0, input_shape=config.input_shape,
                                  batch_norm=True)
    assert any("BatchNormalization" in type(layer).__name__ for layer in model.layers)
    calibration = np.random.default_rng(0).normal(size=(20, config.n_features)).astype(np.float32)
    blob = model_conv.convert(model, calibration, int8=True)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interp = Interpreter(model_content=blob, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    ops = {op["op_name"] for op in interp._get_ops_details()}
    assert ops <= {"FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "CONV_2D", "MAX_POOL_2D", "MEAN"}, ops
    assert TFLiteModel(blob).is_int8
