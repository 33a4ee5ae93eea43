import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import conversion, distillation, networks, training
from pipeline import artifacts, splits
import features
import train_16k
from pipeline.errors import PipelineError
from conftest import make_feature_dataset

FAST = ["--epochs=60", "--patience=15", "--augment=false", "--every_patch=false",
        "--open_set_class=none"]


def train(tmp_path, dataset, name="models", *extra):
    return train_16k.main([f"--dataset={dataset}", f"--model_dir={tmp_path / name}",
                           f"--report_dir={tmp_path / (name + '_reports')}", *FAST, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    train(tmp_path, dataset)
    return tmp_path, dataset


def test_reaches_high_accuracy_and_writes_everything(trained):
    tmp_path, _ = trained
    paths = artifacts.model_paths(tmp_path / "models")
    meta = json.loads(paths["meta"].read_text())
    assert meta["metrics"]["test"]["accuracy"] >= 0.9
    assert meta["labels"] == ["alarm", "other", "water"]
    assert meta["feature_config"] == features.feature_config().to_dict()
    assert paths["labels"].read_text().split() == meta["labels"]
    assert paths["keras"].stat().st_size > 10000
    reports = tmp_path / "models_reports"
    for name in ("confusion_matrix.png", "training_curves.png",
                 "classification_report.txt", "classification_report.json"):
        assert (reports / name).stat().st_size > 100
    report = json.loads((reports / "classification_report.json").read_text())
    assert set(report["per_class"]) == set(meta["labels"]) and "macro_f1" in report


def test_no_group_in_two_splits(trained):
    tmp_path, dataset = trained
    data = artifacts.load_dataset(dataset)
    group_of = dict(zip(data["paths"], data["groups"]))
    split = json.loads(artifacts.model_paths(tmp_path / "models")["meta"].read_text())["split"]
    seen = [{group_of[p] for p in split[name]} for name in ("train", "validation", "test")]
    assert all(seen)
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(split[n]) for n in split) == len(data["paths"])


def test_class_weights_favour_the_rare_class():
    weights = training.class_weights(np.array([0] * 30 + [1] * 5 + [2] * 15), 3)
    assert weights[1] > weights[2] > weights[0]
    milder = training.class_weights(np.array([0] * 30 + [1] * 5 + [2] * 15), 3, power=0.5)
    assert weights[1] > milder[1] > milder[2] > milder[0] > weights[0]
    assert np.isclose(milder[1] / milder[0], np.sqrt(weights[1] / weights[0]))


def test_label_smoothing_softens_the_targets_of_the_loss():
    model = networks.build_model(4, 3, "mlp", [5], dropout=0.0, learning_rate=1e-3, seed=0,
                                  label_smoothing=0.3)
    y, p = np.array([[1.0, 0.0, 0.0]]), np.array([[0.8, 0.1, 0.1]])
    smoothed = -np.sum((0.7 * y + 0.1) * np.log(p))
    assert np.isclose(float(model.loss(y, p)), smoothed, rtol=1e-4)


def test_same_seed_same_metrics(trained):
    tmp_path, dataset = trained
    train(tmp_path, dataset, "again")
    first = json.loads(artifacts.model_paths(tmp_path / "models")["meta"].read_text())
    second = json.loads(artifacts.model_paths(tmp_path / "again")["meta"].read_text())
    assert first["metrics"] == second["metrics"] and first["split"] == second["split"]


def test_cross_validation_keeps_groups_whole(tmp_path, capsys):
    dataset = make_feature_dataset(tmp_path / "ds.npz", per_class=(12, 12), seed=1)
    train(tmp_path, dataset, "cv", "--folds=3", "--epochs=8")
    out = capsys.readouterr().out
    assert "3-fold CV: macro-F1 pooled" in out
    assert "\nfold 1 " in out and "\nfold 3 " in out  # one table row per fold
    cv = json.loads(artifacts.model_paths(tmp_path / "cv")["meta"].read_text())["metrics"]["cross_validation"]
    assert len(cv["folds"]) == 3 and 0 <= cv["macro_f1"]["mean"] <= 1
    data = artifacts.load_dataset(dataset)
    group_of = dict(zip(data["paths"], data["groups"]))
    tested = [{group_of[p] for p in fold["test"]} for fold in cv["folds"]]
    assert sum(len(fold["test"]) for fold in cv["folds"]) == len(data["paths"])
    assert set.union(*tested) == set(data["groups"])
    assert all(not (a & b) for i, a in enumerate(tested) for b in tested[i + 1:])


def test_every_cv_split_keeps_groups_apart():
    """Train, validation and test of every fold: no group on two sides."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 20)
    groups = np.array([f"g{i // 3}" for i in range(60)])[rng.permutation(60)]
    folds = list(splits.cv_splits(labels, groups, 4, val_fraction=0.25, seed=7))
    assert len(folds) == 4
    for _, *parts in folds:
        seen = [set(groups[idx]) for idx in parts]
        assert all(seen) and not (seen[0] & seen[1] | seen[0] & seen[2] | seen[1] & seen[2])
        assert sum(len(idx) for idx in parts) == 60


def test_missing_dataset_names_the_command(tmp_path):
    with pytest.raises(PipelineError, match="make_dataset_16k.py"):
        train(tmp_path, tmp_path / "none.npz")


def test_one_class_and_too_few_groups(tmp_path):
    one = make_feature_dataset(tmp_path / "one.npz", per_class=(10,))
    with pytest.raises(PipelineError, match="only one class"):
        train(tmp_path, one)
    few = make_feature_dataset(tmp_path / "few.npz", per_class=(10, 4), clips_per_group=2)
    with pytest.raises(PipelineError, match="'other' has 2 clip group.*at least 3"):
        train(tmp_path, few)


def test_nan_features_and_other_feature_config(tmp_path, monkeypatch):
    path = make_feature_dataset(tmp_path / "ds.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["features"][3, 5] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(PipelineError, match="1 rows have NaN"):
        train(tmp_path, tmp_path / "nan.npz")
    monkeypatch.setattr(features, "N_FFT", 1024)
    with pytest.raises(PipelineError, match="different feature configuration.*n_fft.*[Rr]ebuild"):
        train(tmp_path, path)


def test_dataset_of_another_preset_trains_its_own_model(tmp_path):
    """A dataset built with --features=logmel is not refused because
    features.FEATURES names another preset; the model stores logmel."""
    dataset = make_feature_dataset(tmp_path / "ds.npz", preset="logmel")
    train(tmp_path, dataset, "logmel")
    meta = json.loads(artifacts.model_paths(tmp_path / "logmel")["meta"].read_text())
    assert meta["feature_config"]["preset"] == "logmel" and meta["model_type"] == "mlp"


@pytest.mark.parametrize("option, message", [("--cnn_filters=abc", "cnn_filters"),
                                             ("--hidden_layers=0", "hidden_layers"),
                                             ("--architecture=rnn", "expected 'mlp'")])
def test_bad_architecture_fails_before_training(tmp_path, option, message):
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    model = "--architecture=mlp" if "hidden" in option else "--architecture=auto"
    with pytest.raises(PipelineError, match=message):
        train(tmp_path, dataset, "bad", model, option)
    assert not (tmp_path / "bad").exists()


def test_retrain_with_other_labels_keeps_previous_model(trained):
    tmp_path, _ = trained
    paths = artifacts.model_paths(tmp_path / "models")
    before = {k: paths[k].read_bytes() for k in ("keras", "meta", "labels")}
    other = make_feature_dataset(tmp_path / "other.npz", label_names=("cat", "dog", "fish"))
    with pytest.raises(PipelineError, match="trained on labels.*replace_model"):
        train(tmp_path, other)
    assert {k: paths[k].read_bytes() for k in before} == before


@pytest.mark.parametrize("option, message", [
    ("--epochs=0", r"--epochs=0: expected a number in \[1, 100000\]"),
    ("--test_fraction=0", r"--test_fraction=0.0: expected a number in \(0, 1\)"),
    ("--test_fraction=1", r"--test_fraction=1.0: expected a number in \(0, 1\)"),
    ("--dropout=1.5", r"--dropout=1.5: expected a number in \[0, 1\)"),
    ("--learning_rate=nan", "--learning_rate=nan: expected a positive finite number"),
    ("--jobs=0", "--jobs=0: expected at least 1, or -1"),
    ("--folds=abc", "--folds='abc': expected 0"),
])
def test_bad_settings_are_refused_before_work(tmp_path, option, message):
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    with pytest.raises(PipelineError, match=message):
        train(tmp_path, dataset, "bad", option)
    assert not (tmp_path / "bad" / "model_16k.keras").exists()


def test_diverged_training_is_not_saved():
    import keras
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)])
    training.check_finite_weights(model, 0.001)  # finite: fine
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    with pytest.raises(PipelineError, match="NaN or infinite weights.*--learning_rate"):
        training.check_finite_weights(model, 1e9)


def test_unwritable_model_dir_is_found_before_training(tmp_path):
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PipelineError, match="cannot write there.*--model_dir"):
        train_16k.main([f"--dataset={dataset}", f"--model_dir={blocker / 'models'}", *FAST])


def test_leave_one_source_out(tmp_path, capsys):
    """--folds=source: every source is held out once, never trained on in
    its own fold, and the report has one row per source."""
    dataset = make_feature_dataset(tmp_path / "ds.npz", n_sources=3)
    train(tmp_path, dataset, "loso", "--folds=source", "--epochs=8", "--jobs=1")
    data = artifacts.load_dataset(dataset)
    source_of = dict(zip(data["paths"], data["sources"]))
    cv = json.loads(artifacts.model_paths(tmp_path / "loso")["meta"].read_text())[
        "metrics"]["cross_validation"]
    assert cv["kind"] == "source" and [f["name"] for f in cv["folds"]] == ["src0", "src1", "src2"]
    for fold in cv["folds"]:
        assert {source_of[p] for p in fold["test"]} == {fold["name"]}
    assert sorted(p for f in cv["folds"] for p in f["test"]) == sorted(data["paths"])
    assert 0 <= cv["pooled"]["macro_f1"] <= 1
    table = (tmp_path / "loso_reports" / "cross_validation.txt").read_text()
    assert table.startswith("leave-one-source-out") and "src2" in table
    assert "leave-one-source-out: macro-F1 pooled" in capsys.readouterr().out
    for _, train_rows, val_rows, test_rows in splits.source_splits(
            data["labels"], data["groups"], data["sources"], val_fraction=0.2, seed=42):
        held_out = set(np.asarray(data["sources"])[test_rows])
        assert len(held_out) == 1
        assert not held_out & set(np.asarray(data["sources"])[np.concatenate([train_rows, val_rows])])


def test_folds_setting_is_checked(tmp_path):
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    with pytest.raises(PipelineError, match="--folds='1'"):
        train(tmp_path, dataset, "x", "--folds=1")
    with pytest.raises(PipelineError, match="at least two sources"):
        train(tmp_path, dataset, "x", "--folds=source")


def test_band_norm_ignores_a_fixed_colouring_and_converts_to_int8():
    """BAND_NORM=1: a constant added to one band of the patch (a microphone's
    or room's colouring, in dB) does not change the model's output, and the
    model still converts to full int8 with TFLM operations only."""
    from pipeline.tflite_model import TFLiteModel
    frames, bands = 6, 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, frames * bands)).astype(np.float32)
    colouring = np.tile(rng.normal(size=bands) * 4, frames).astype(np.float32)
    outputs = {}
    for band_norm in (0.0, 1.0):
        model = networks.build_model(frames * bands, 3, "cnn", [4], dropout=0.0,
                                      learning_rate=1e-3, seed=0, input_shape=(frames, bands),
                                      band_norm=band_norm)
        outputs[band_norm] = np.abs(model.predict(x, verbose=0)
                                    - model.predict(x + colouring, verbose=0)).max()
    assert outputs[1.0] < 1e-5 < outputs[0.0]
    blob = conversion.convert(model, x, int8=True)
    assert TFLiteModel(blob).predict_proba(x).shape == (8, 3)


def test_relaxed_band_norm_subtracts_that_share_of_each_band_mean():
    """BAND_NORM=0.3: the network sees the patch less 0.3 x each band's mean
    over the frames (the same network without it, fed that, agrees), and it
    still converts to full int8."""
    from pipeline.tflite_model import TFLiteModel
    frames, bands, share = 6, 5, 0.3
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, frames * bands)).astype(np.float32)
    relaxed, plain = (networks.build_model(frames * bands, 3, "cnn", [4], dropout=0.0,
                                            learning_rate=1e-3, seed=0,
                                            input_shape=(frames, bands), band_norm=b)
                      for b in (share, 0.0))
    plain.set_weights(relaxed.get_weights())
    patches = x.reshape(8, frames, bands)
    by_hand = (patches - share * patches.mean(axis=1, keepdims=True)).reshape(8, -1)
    np.testing.assert_allclose(relaxed.predict(x, verbose=0), plain.predict(by_hand, verbose=0),
                               atol=1e-5)
    assert np.abs(relaxed.predict(x, verbose=0) - plain.predict(x, verbose=0)).max() > 1e-4
    blob = conversion.convert(relaxed, x, int8=True)
    assert TFLiteModel(blob).predict_proba(x).shape == (8, 3)


def test_band_norm_share_is_checked(tmp_path):
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    with pytest.raises(PipelineError, match="band_norm"):
        train(tmp_path, dataset, "x", "--band_norm=1.5")


def test_distillation_targets_and_teacher_run(tmp_path):
    """Distilled targets mix the labels with the teacher's softened
    probabilities; a run with a teacher trains and saves a model."""
    y = np.eye(3, dtype=np.float32)[[0, 1, 2]]
    teacher = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], np.float32)
    mixed = distillation.distilled_targets(y, teacher, weight=0.5, temperature=2.0)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(mixed.argmax(axis=1) == [0, 1, 2]) and np.all(mixed.max(axis=1) < 1)
    softer = distillation.distilled_targets(y * 0, teacher, weight=1.0, temperature=4.0)
    assert np.all(softer.max(axis=1) < teacher.max(axis=1))  # a higher temperature flattens
    np.testing.assert_allclose(distillation.distilled_targets(y, teacher, weight=0.0,
                                                           temperature=2.0), y)
    path = make_feature_dataset(tmp_path / "ds.npz", preset="logmel_patch")
    train_16k.main([f"--dataset={path}", f"--model_dir={tmp_path / 'm'}", "--epochs=2",
                    f"--report_dir={tmp_path / 'r'}", "--teacher_filters=8", "--cnn_filters=4",
                    "--jobs=1", "--augment=false", "--every_patch=false"])
    assert (tmp_path / "m" / "model_16k.keras").is_file()
    with pytest.raises(PipelineError, match="teacher_filters"):
        train_16k.main([f"--dataset={path}", f"--model_dir={tmp_path / 'm2'}",
                        "--teacher_filters=0"])


def test_pooled_figures_cover_only_the_rows_tested():
    """A LOSO over some sources only (bench_accuracy.py --sources) pools the
    predictions of those sources, not zeros for the rest."""
    labels = np.array([0, 1, 0, 1, 2, 2])
    data = {"labels": labels, "label_names": ["a", "b", "c"],
            "paths": [f"{i}.wav" for i in range(6)]}
    some = [splits.Split("s1", np.arange(2, 6), np.arange(0), np.arange(2))]
    pooled = np.array([0, 1, 2, 2, 2, 2])  # the untested rows hold anything
    result = splits.summarise_splits(data, "source", some, pooled)
    assert result["pooled"]["macro_f1"] == result["folds"][0]["macro_f1"]
    everything = [splits.Split("s1", np.arange(2, 6), np.arange(0), np.arange(2)),
                  splits.Split("s2", np.arange(2), np.arange(0), np.arange(2, 6))]
    assert splits.summarise_splits(data, "source", everything, pooled)["pooled"]["macro_f1"] < 1


def test_bench_train_settings_reach_every_row():
    """bench_accuracy.py --train: train_16k settings parsed as train_16k
    parses them (types, names) and added to each row's overrides."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "bench_accuracy", Path(__file__).resolve().parents[1] / "bench" / "bench_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    flags = bench.train_flags("class_weights=false; cnn_filters=16,48,64;")
    cfg = bench.train_settings(1, cache="x.npz", flags=flags, architecture="cnn")
    assert (cfg.class_weights, cfg.cnn_filters, cfg.seed, cfg.architecture) == \
        (False, "16,48,64", 1, "cnn")
    assert bench.train_flags("") == []
    with pytest.raises(PipelineError, match="'mixup' is not key=value"):
        bench.train_flags("mixup")
