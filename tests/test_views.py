"""Every patch: the windows of each clip (pipeline/views.py), training on
them and deciding clips by them (EVERY_PATCH)."""

import numpy as np
import pytest

import features
import make_dataset_16k
from conftest import make_class_folder, tone, train_settings
from pipeline import clip_decisions, open_set, standardisation, training
from pipeline import artifacts, views
from pipeline.epochs import epoch_rows
from pipeline.events import window_starts


@pytest.fixture
def long_dataset(tmp_path):
    folder = make_class_folder(tmp_path / "clips", per_class=6, seconds=3.5,
                               classes=("hiss", "tone"))
    path = tmp_path / "ds.npz"
    make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={path}", "--jobs=1"])
    return artifacts.load_dataset(path), path


def test_clip_windows_are_the_windows_predict_classifies():
    config = features.feature_config()
    short = tone(800.0, 1.5)
    rows = views.clip_windows(short, config, window_s=2.0, hop_s=1.0)
    np.testing.assert_array_equal(rows, features.features_from_audio(short, config)[None])
    y = np.concatenate([tone(800.0, 2.0), np.zeros(32000, np.float32), tone(300.0, 1.3)])
    rows = views.clip_windows(y, config, window_s=2.0, hop_s=1.0)
    starts = window_starts(len(y), 32000, 16000, config.window_alignment)
    usable = []
    for s in starts:
        try:
            usable.append(features.features_from_audio(y[s:s + 32000], config))
        except features.FeatureError:  # the silent window in the middle
            pass
    assert len(usable) == len(rows) < len(starts)
    np.testing.assert_array_equal(rows, np.array(usable))
    with pytest.raises(ValueError, match="at least one sample"):
        views.clip_windows(y, config, window_s=2.0, hop_s=0.0)


def test_all_windows_are_cached_by_content(long_dataset, monkeypatch, capsys):
    data, path = long_dataset
    capsys.readouterr()
    rows, of = views.all_windows(data, window_s=2.0, hop_s=1.0, dataset=path, jobs=1)
    n = len(data["paths"])  # the progress ends at every clip (not one short)
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"windows: {n}/{n} clips done")
    assert np.array_equal(np.unique(of), np.arange(len(data["paths"])))
    expected = window_starts(56000, 32000, 16000, data["feature_config"].window_alignment)
    assert len(expected) == 3 and np.all(np.bincount(of) == 3)  # 3.5 s: at 0, 1 and 1.5 s
    first = rows[of == 0]
    y = features.load_audio(data["paths"][0], 16000)
    np.testing.assert_array_equal(first, views.clip_windows(y, data["feature_config"],
                                                            window_s=2.0, hop_s=1.0))

    def computed(*args, **kwargs):
        raise RuntimeError("computed again")

    monkeypatch.setattr(views, "_clip_task", computed)
    again, of_again = views.all_windows(data, window_s=2.0, hop_s=1.0, dataset=path, jobs=1)
    np.testing.assert_array_equal(again, rows)
    np.testing.assert_array_equal(of_again, of)
    with pytest.raises(RuntimeError, match="computed again"):  # other settings: not cached
        views.all_windows(data, window_s=1.5, hop_s=0.5, dataset=path, jobs=1)


def test_mean_by_clip():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.5, 0.5]], np.float32)
    of = np.array([7, 7, 3, 9])
    np.testing.assert_allclose(views.mean_by_clip(probs, of, [3, 7, 9]),
                               [[0.2, 0.8], [0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="at least one window"):
        views.mean_by_clip(probs, of, [3, 7, 9, 11])


def test_each_epoch_takes_one_view_of_every_clip():
    view_of = np.array([0, 0, 0, 1, 2, 2])
    copy_of = np.array([0, 1, 2])
    seen = set()
    for epoch in range(30):
        rows = epoch_rows(copy_of, 3, copies=1, epoch=epoch, seed=0, view_of=view_of)
        views_taken = rows[rows < len(view_of)]
        assert sorted(view_of[views_taken]) == [0, 1, 2]
        assert sorted(rows[rows >= len(view_of)] - len(view_of)) == [0, 1, 2]
        seen |= set(views_taken.tolist())
    assert seen == set(range(len(view_of)))  # over the epochs, every window was trained on


def test_every_patch_trains_on_windows_and_decides_by_them(long_dataset):
    data, path = long_dataset
    cfg = train_settings([f"--dataset={path}", "--every_patch=true",
                          "--augment=false", "--epochs=2", "--jobs=1"])
    windows = training.clip_windows(data, cfg)
    train = np.arange(0, len(data["paths"]), 2)
    x, y, copy_of, _, view_of = training.augmented_training_set(data, train, cfg, None,
                                                              windows=windows)
    assert len(x) == 3 * len(train) and len(copy_of) == 0  # three windows of each 3.5 s clip
    assert np.array_equal(np.asarray(train)[view_of], windows[1][np.isin(windows[1], train)])
    np.testing.assert_array_equal(y.argmax(axis=1), data["labels"][train][view_of])
    model, _, scaling = training.fit(data, train, train, cfg, windows=windows, progress_desc="")
    test = np.arange(1, len(data["paths"]), 2)
    def predict(rows):
        return clip_decisions.predict_proba(model, rows)

    probs = clip_decisions.clip_probabilities(predict, data, test, scaling=scaling,
                                              windows=windows)
    one = windows[0][windows[1] == test[0]]
    expected = predict(standardisation.standardise(one, scaling)).mean(axis=0)
    np.testing.assert_allclose(probs[0], expected, rtol=1e-5, atol=1e-6)
    rule = {"temperature": 2.0, "min_probability": 0.0, "background": None}
    calibrated = clip_decisions.clip_probabilities(predict, data, test, scaling=scaling,
                                                   windows=windows, rule=rule)
    one_calibrated = open_set.calibrate(predict(standardisation.standardise(one, scaling)), 2.0)
    # each window calibrated, then the mean: as predict.py decides
    np.testing.assert_allclose(calibrated[0], one_calibrated.mean(axis=0), rtol=1e-5, atol=1e-6)
    off = train_settings(["--every_patch=false"])
    assert training.clip_windows(data, off) is None


def test_every_patch_needs_the_audio(long_dataset, tmp_path):
    data, path = long_dataset
    moved = {**data, "paths": [str(tmp_path / "gone" / "a.wav")] * len(data["paths"])}
    cfg = train_settings(["--every_patch=true"])
    with pytest.raises(artifacts.PipelineError, match="missing.*--every_patch=false"):
        training.clip_windows(moved, cfg)
