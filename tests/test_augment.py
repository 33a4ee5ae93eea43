import numpy as np
import pytest

from pipeline import conversion, networks, training
from pipeline import augment
import features
from conftest import make_class_folder, noise, tone, train_settings
import make_dataset_16k
from pipeline import artifacts, copies, splits
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


def test_augmentation_touches_training_clips_only(dataset):
    """Copies used in training are copies of training clips, keep their
    clip's label, and mix in only training clips as background."""
    labels, groups = dataset["labels"], dataset["groups"]
    train, val, test = splits.train_val_test_split(labels, groups, test_fraction=0.2,
                                                   val_fraction=0.2, seed=42)
    rows, partner = copies.all_copies(dataset, pool=4, dataset=None, jobs=1)
    assert rows.shape == (len(labels), 4, dataset["features"].shape[1])
    assert np.all(partner[:, ::2] == -1) and np.all(partner[:, 1::2] >= 0)  # odd: background
    group_of = np.asarray(groups)
    assert all(group_of[partner[i, j]] != group_of[i] for i in range(len(labels))
               for j in (1, 3))
    extra, of, _ = copies.training_copies(rows, partner, train, copies=2, seed=0)
    assert set(of) <= set(train) and len(extra) == len(of) <= 2 * len(train)
    held_out = set(val) | set(test)
    for row, clip in zip(extra, of):
        j = next(j for j in range(4) if np.array_equal(rows[clip, j], row))
        assert partner[clip, j] not in held_out
    cfg = train_settings(["--jobs=1", "--every_patch=false"])
    x, y, copy_of, _, view_of = training.augmented_training_set(dataset, train, cfg, (rows, partner))
    assert view_of is None  # without EVERY_PATCH, the clips are their own rows
    every, of_all, _ = copies.training_copies(rows, partner, train, copies=4, seed=cfg.seed)
    assert len(x) == len(y) == len(train) + len(every) and len(copy_of) == len(every)
    assert np.array_equal(x[:len(train)], dataset["features"][train])
    assert np.array_equal(np.asarray(train)[copy_of], of_all)
    # each copy keeps its clip's label (and so its place in its group's split)
    assert np.array_equal(y.argmax(axis=1), np.concatenate([labels[train], labels[of_all]]))


def test_copies_are_cached_by_content_and_settings(dataset, tmp_path, monkeypatch):
    """The second run reads every copy from the cache (and gives the same
    rows, in any clip order); other settings get their own cache."""
    cache = tmp_path / "ds.npz"
    first, partner = copies.all_copies(dataset, pool=2, dataset=cache, jobs=1)
    assert len(list(tmp_path.glob("ds_copies_*.npz"))) == 1
    monkeypatch.setattr(copies, "clip_copies",
                        lambda *a, **k: pytest.fail("the cache should have had every copy"))
    order = np.random.default_rng(0).permutation(len(dataset["paths"]))
    shuffled = {key: [dataset[key][i] for i in order] for key in ("paths", "sources")}
    again, _ = copies.all_copies({**dataset, **shuffled}, pool=2, dataset=cache, jobs=1)
    np.testing.assert_array_equal(again, first[order])
    monkeypatch.undo()
    other, _ = copies.all_copies(dataset, pool=2, dataset=cache, jobs=1, room_probability=1.0)
    assert len(list(tmp_path.glob("ds_copies_*.npz"))) == 2
    assert not np.array_equal(np.nan_to_num(other), np.nan_to_num(first))


def test_partners_come_from_other_sources():
    keys = [f"{i:032x}" for i in range(12)]
    sources = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    chosen = copies.partners(keys, sources, pool=4)
    for i, row in enumerate(chosen):
        assert row[0] == row[2] == -1
        assert sources[row[1]] != sources[i] and sources[row[3]] != sources[i]
        assert sources[row[1]] != sources[row[3]]  # two other sources, where there are two


def test_microphone_responses(tmp_path):
    import soundfile
    y = tone(1000.0, 1.0)
    delta = np.zeros(64, np.float32)
    delta[0] = 0.3
    np.testing.assert_allclose(augment.convolve_response(y, delta), y, atol=1e-6)
    assert augment.convolve_response(y, np.ones(400)).size == y.size
    with pytest.raises(artifacts.PipelineError, match="no impulse responses"):
        copies.responses_in(tmp_path, 16000)
    soundfile.write(tmp_path / "mic.wav", np.r_[1.0, np.zeros(99)].astype(np.float32), 44100)
    responses, digest = copies.responses_in(tmp_path, 16000)
    assert len(responses) == 1 and len(digest) == 32


def test_freq_mixstyle_mixes_band_statistics():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6, 61 * 40)).astype(np.float32) * 3 + 10
    same = augment.freq_mixstyle(rows, (61, 40), np.random.default_rng(1), probability=0.0,
                                 alpha=0.3)
    np.testing.assert_array_equal(same, rows)
    mixed = augment.freq_mixstyle(rows, (61, 40), np.random.default_rng(1), probability=1.0,
                                  alpha=0.3).reshape(6, 61, 40)
    means, original = mixed.mean(axis=1), rows.reshape(6, 61, 40).mean(axis=1)
    assert means.min() >= original.min() - 1e-3 and means.max() <= original.max() + 1e-3
    assert not np.allclose(mixed.reshape(6, -1), rows)


def test_mixup_keeps_the_clips_and_mixes_targets():
    from pipeline.epochs import epoch_plan, keras_batches, numpy_batches
    copy_of = np.repeat(np.arange(4), 2)
    rows, partners, weights = epoch_plan(copy_of, 4, copies=1, epochs=3, seed=0, mixup=0.3)
    assert np.all(weights[rows < 4] == 1) and np.all(weights[rows >= 4] >= 0.5)
    assert np.any(weights < 1) and np.array_equal(np.sort(rows, axis=1)[:, :4],
                                                  np.tile(np.arange(4), (3, 1)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1, 0, 1] + [0, 0, 1, 1, 0, 0, 1, 1]]
    fit = keras_batches(x, y, copy_of, 4, copies=1, batch_size=3, epochs=3, seed=0, mixup=0.3)
    batches = list(fit["x"].as_numpy_iterator())
    assert fit["steps_per_epoch"] == 3 and len(batches) == 9
    targets = np.concatenate([b[1] for b in batches])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(targets.max(axis=1) >= 0.5 - 1e-6)  # the copy's own class dominates
    # Keras on another backend: the same batches as NumPy, class weights per row
    plan = epoch_plan(copy_of, 4, copies=1, epochs=3, seed=0, mixup=0.3)
    plain = list(numpy_batches(x, y, plan, batch_size=3, mixup=0.3,
                               class_weight={0: 1.0, 1: 2.0}))
    assert len(plain) == 9
    for (xb, yb), (xn, yn, wn) in zip(batches, plain):
        np.testing.assert_allclose(xn, xb, atol=1e-6)
        np.testing.assert_allclose(yn, yb, atol=1e-6)
        np.testing.assert_array_equal(wn, np.where(yn.argmax(axis=1) == 1, 2.0, 1.0))


def test_augmentation_off_and_missing_clips(dataset, tmp_path):
    train = np.arange(6)
    cfg = train_settings(["--augment=false",
                                                              "--every_patch=false"])
    assert training.augmentation_pool(dataset, cfg) is None
    x, _, copy_of, _, _ = training.augmented_training_set(dataset, train, cfg, None)
    assert len(x) == 6 and len(copy_of) == 0
    moved = dict(dataset, paths=[str(tmp_path / "gone.wav")] * len(dataset["paths"]))
    cfg = train_settings([])
    with pytest.raises(artifacts.PipelineError, match="missing.*--augment=false"):
        training.augmentation_pool(moved, cfg)


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
    from pipeline.tflite_model import TFLiteModel
    config = features.feature_config("logmel_patch")
    model = networks.build_model(config.n_features, 3, "cnn", [4, 4], dropout=0.1,
                                  learning_rate=1e-3, seed=0, input_shape=config.input_shape,
                                  batch_norm=True)
    assert any("BatchNormalization" in type(layer).__name__ for layer in model.layers)
    calibration = np.random.default_rng(0).normal(size=(20, config.n_features)).astype(np.float32)
    blob = conversion.convert(model, calibration, int8=True)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interp = Interpreter(model_content=blob, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    ops = {op["op_name"] for op in interp._get_ops_details()}
    assert ops <= {"FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "CONV_2D", "MAX_POOL_2D", "MEAN"}, ops
    assert TFLiteModel(blob).is_int8


def test_each_epoch_draws_fresh_copies_of_every_clip():
    """Every clip once per epoch, plus ``copies`` of its own copies (fewer
    when it has fewer); other epochs draw other copies; same seed, same draw."""
    from pipeline.epochs import epoch_rows
    copy_of = np.repeat(np.arange(5), 4)[:-3]  # clip 4 has one copy
    seen = set()
    for epoch in range(6):
        rows = epoch_rows(copy_of, 5, copies=2, epoch=epoch, seed=3)
        assert sorted(rows[rows < 5]) == list(range(5))
        drawn = copy_of[rows[rows >= 5] - 5]
        assert np.array_equal(np.bincount(drawn, minlength=5), [2, 2, 2, 2, 1])
        seen |= set(rows[rows >= 5].tolist())
        np.testing.assert_array_equal(rows, epoch_rows(copy_of, 5, copies=2, epoch=epoch,
                                                       seed=3))
    assert len(seen) == len(copy_of)  # over the epochs, every cached copy was used
    fixed = [sorted(epoch_rows(copy_of, 5, copies=2, epoch=e, seed=3, redraw=False))
             for e in range(3)]
    assert fixed[0] == fixed[1] == fixed[2]


def test_background_partners_only_from_mix_classes(dataset):
    """MIX_CLASSES: only clips of those classes are mixed in as background
    (no target sound under another label); an unknown class is refused."""
    keys = [f"{i:032x}" for i in range(12)]
    sources = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    eligible = [i % 4 == 0 for i in range(12)]
    chosen = copies.partners(keys, sources, pool=4, eligible=eligible)
    mixed = chosen[:, 1::2].ravel()
    assert np.all(mixed >= 0) and all(eligible[k] for k in mixed)
    assert all(sources[chosen[i, j]] != sources[i] for i in range(12) for j in (1, 3))
    cfg = train_settings(["--mix_classes=hiss", "--jobs=1"])
    rows, partner = training.augmentation_pool(dataset, cfg)
    hiss = dataset["label_names"].index("hiss")
    assert np.all(dataset["labels"][partner[:, 1::2][partner[:, 1::2] >= 0]] == hiss)
    cfg = train_settings(["--mix_classes=rain"])
    with pytest.raises(artifacts.PipelineError, match="no class 'rain'"):
        training.augmentation_pool(dataset, cfg)


def test_noise_negatives_are_steady_noises_labelled_background(dataset):
    """NOISE_NEGATIVES: seeded synthetic noises, as many as asked, trained on
    as the background class (after the clips, before the copies)."""
    config = dataset["feature_config"]
    rows = augment.noise_rows(4, config, seed=3)
    assert rows.shape == (4, config.n_features) and np.all(np.isfinite(rows))
    np.testing.assert_array_equal(rows, augment.noise_rows(4, config, seed=3))
    assert not np.array_equal(rows, augment.noise_rows(4, config, seed=4))
    train = np.arange(0, len(dataset["labels"]), 2)
    cfg = train_settings(["--noise_negatives=0.5", "--background_classes=hiss", "--jobs=1",
                          "--every_patch=false"])
    pool = training.augmentation_pool(dataset, cfg)
    x, y, copy_of, _, _ = training.augmented_training_set(dataset, train, cfg, pool)
    n_noise = round(0.5 * len(train))
    noise = slice(len(train), len(train) + n_noise)
    np.testing.assert_array_equal(x[noise], augment.noise_rows(n_noise, config, cfg.seed))
    assert np.all(y[noise].argmax(axis=1) == dataset["label_names"].index("hiss"))
    assert len(x) == len(train) + n_noise + len(copy_of)
    quick = train_settings(["--noise_negatives=0.5", "--background_classes=hiss", "--jobs=1",
                            "--epochs=2", "--every_patch=false"])
    model, history, _ = training.fit(dataset, train, train, quick, pool=pool, progress_desc="")
    assert len(history["loss"]) == 2
    cfg = train_settings(["--noise_negatives=0.5", "--background_classes=rain",
                          "--every_patch=false"])
    with pytest.raises(artifacts.PipelineError, match="needs a background class"):
        training.augmented_training_set(dataset, train, cfg, None)
