import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import conversion, event_settings, networks
from pipeline import artifacts
from pipeline import c_export
import features
import model_conv
import train_16k
from pipeline.errors import PipelineError
from conftest import make_feature_dataset, stage_settings
from pipeline.standardisation import standardise
from pipeline.tflite_model import TFLiteModel


@pytest.fixture(scope="module", params=["logmel_stream", "seed"])
def converted(request, tmp_path_factory):
    """A converted model for the CNN preset (standardised) and the seed MLP."""
    tmp = tmp_path_factory.mktemp("conv")
    dataset = make_feature_dataset(tmp / "ds.npz", per_class=(16, 16, 16), preset=request.param)
    args = [f"--dataset={dataset}", f"--model_dir={tmp / 'models'}",
            f"--report_dir={tmp / 'reports'}"]
    train_16k.main(args + ["--epochs=30", "--patience=10", "--augment=false",
                           "--every_patch=false"])
    status = model_conv.main(args)
    return tmp, dataset, args, status


def test_int8_model_is_fully_integer(converted):
    tmp, *_ = converted
    model = TFLiteModel(artifacts.model_paths(tmp / "models")["int8_tflite"])
    assert model.input["dtype"] == np.int8 and model.output["dtype"] == np.int8
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interp = Interpreter(model_path=model.path, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    ops = {op["op_name"] for op in interp._get_ops_details()}
    assert ops <= {"FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "CONV_2D", "MAX_POOL_2D", "MEAN"}, ops
    float_tensors = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
    assert float_tensors == []


def test_agreement_report_and_gate(converted, capsys, monkeypatch):
    tmp, _, args, status = converted
    assert status == 0
    report = json.loads((tmp / "reports" / "conversion_report.json").read_text())
    assert report["agreement_int8_vs_keras"] >= 0.95
    assert abs(report["metrics"]["int8_tflite"]["accuracy"]
               - report["metrics"]["keras"]["accuracy"]) <= 0.05
    assert report["tflm"]["max_int8_diff_vs_litert"] <= 1 and report["tflm"]["arena_bytes"] > 0
    assert report["file_bytes"]["int8_tflite"] < report["file_bytes"]["float_tflite"]
    assert (tmp / "reports" / "confusion_keras_vs_int8.png").stat().st_size > 1000
    assert "int8_tflite" in (tmp / "reports" / "conversion_report.txt").read_text()
    real = conversion.compare
    monkeypatch.setattr(conversion, "compare",  # as if int8 disagreed on 3 % of the clips
                        lambda *a, **k: {**real(*a, **k), "agreement": 0.97})
    before = {p.name: p.read_bytes() for p in (tmp / "models").iterdir()}
    report_dir = tmp / "gate_reports"
    assert model_conv.main([*args, f"--report_dir={report_dir}", "--retry_tries=1"]) == 1
    out = capsys.readouterr().out
    assert "on 97.0% of test clips, below --min_agreement=0.98" in out
    assert f"{report_dir / 'confusion_keras_vs_int8.png'}" in out  # where it really is
    assert (report_dir / "confusion_keras_vs_int8.png").is_file()
    # a model that failed its gate is never written, so predict.py cannot use it
    assert {p.name: p.read_bytes() for p in (tmp / "models").iterdir()} == before


def test_c_array_matches_tflite_file(converted):
    tmp, *_ = converted
    paths = artifacts.model_paths(tmp / "models")
    source = paths["c_source"].read_text()
    assert "alignas(16)" in source
    assert parse_c_array(source) == paths["int8_tflite"].read_bytes()
    header = paths["c_header"].read_text()
    assert 'kLabels[kNumLabels] = {"alarm", "other", "water"}' in header
    assert "kInputScale" in header and "n_fft = 512" in header
    preset = json.loads(paths["meta"].read_text())["feature_config"]["preset"]
    assert f"preset = {preset}" in header


def test_golden_vectors_reproduce(converted):
    tmp, dataset, *_ = converted
    paths = artifacts.model_paths(tmp / "models")
    golden = json.loads(paths["golden"].read_text())
    model = TFLiteModel(paths["int8_tflite"], reference=True)  # TFLite Micro's integers
    meta = artifacts.load_model_metadata(tmp / "models")
    assert len(golden["vectors"]) == 5
    for vector in golden["vectors"]:
        assert "/" not in vector["file"] and vector["file"].endswith(".wav")  # no machine paths
        x = standardise(np.array([vector["features"]]), meta["input_standardisation"])[0]
        assert model.quantise_input(x).tolist() == vector["int8_input"]
        out = model.run_raw(np.array(vector["int8_input"], np.int8))
        assert out.tolist() == vector["int8_output"]
    assert "kGoldenInput" in paths["golden_header"].read_text()


def test_missing_model_and_mismatched_dataset(converted, tmp_path):
    tmp, *_ = converted
    with pytest.raises(PipelineError, match="train_16k.py"):
        model_conv.main([f"--model_dir={tmp_path / 'empty'}",
                         f"--dataset={tmp / 'ds.npz'}", f"--report_dir={tmp_path}"])
    other = make_feature_dataset(tmp_path / "other.npz", label_names=("a", "b", "c"))
    with pytest.raises(PipelineError, match="do not match the model"):
        model_conv.main([f"--model_dir={tmp / 'models'}", f"--dataset={other}",
                         f"--report_dir={tmp_path}"])
    meta_path = tmp_path / "bare" / "model_16k.json"
    meta_path.parent.mkdir()
    meta_path.write_text(json.dumps({"labels": ["a"]}))
    with pytest.raises(PipelineError, match="lacks feature_config"):
        model_conv.main([f"--model_dir={tmp_path / 'bare'}", f"--dataset={other}",
                         f"--report_dir={tmp_path}"])


def test_uses_the_models_own_feature_configuration(converted, monkeypatch, tmp_path):
    """Editing features.py after training does not stop the conversion of a
    model: model_conv.py reads the configuration the model and dataset carry."""
    tmp, dataset, *_ = converted
    monkeypatch.setattr(features, "N_FFT", 1024)
    monkeypatch.setattr(features, "FEATURES", "logmel")
    status = model_conv.main([f"--dataset={dataset}", f"--model_dir={tmp / 'models'}",
                              f"--report_dir={tmp_path}", "--min_agreement=0"])
    assert status == 0
    header = artifacts.model_paths(tmp / "models")["c_header"].read_text()
    assert "n_fft = 512" in header


def test_dataset_of_other_feature_settings_is_refused(converted, tmp_path):
    tmp, _, *_ = converted
    meta = json.loads(artifacts.model_paths(tmp / "models")["meta"].read_text())
    other_preset = "logmel" if meta["feature_config"]["preset"] != "logmel" else "seed"
    other = make_feature_dataset(tmp_path / "other.npz", preset=other_preset)
    with pytest.raises(PipelineError, match="other feature settings than the model"):
        model_conv.main([f"--model_dir={tmp / 'models'}", f"--dataset={other}",
                         f"--report_dir={tmp_path}"])


def compile_cpp(tmp_path, sources):
    """Syntax-check C++ sources with the system compiler; (status, messages)."""
    import subprocess
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    main = [name for name in sources if name.endswith(".cc")]
    result = subprocess.run(["c++", "-std=c++17", "-fsyntax-only", "-I", str(tmp_path),
                             *[str(tmp_path / m) for m in main]],
                            capture_output=True, text=True)
    return result.returncode, result.stderr


def test_c_export_escapes_hostile_labels(tmp_path):
    """Labels normally follow the label rule; the export must be safe anyway."""
    labels = ['a"b', "back\\slash", "new\nline #error injected", "tri??/graph", "ok"]
    config = features.feature_config()
    header = c_export.model_header("model_16k_int8", labels, config, input_scale=0.1,
                                   input_zero_point=-3, n_inputs=config.n_features, n_bytes=4)
    source = c_export.model_source("model_16k_int8", "model.h", b"\x01\x02\x03\x04")
    check = ('#include "model.h"\n#include <cstring>\n'
             + "".join(f"static_assert(sizeof({c_export.c_string(label)}) == {len(label) + 1});\n"
                       for label in labels))
    status, messages = compile_cpp(tmp_path, {"model.h": header, "model.cc": source,
                                              "check.cc": check})
    assert status == 0, messages
    assert not any(line.lstrip().startswith("#error") for line in header.splitlines())


def test_c_array_length_is_part_of_the_declaration(tmp_path):
    config = features.feature_config()
    header = c_export.model_header("m", ["a", "b"], config, input_scale=0.1, input_zero_point=0,
                                   n_inputs=config.n_features, n_bytes=4)
    status, _ = compile_cpp(tmp_path, {"model.h": header,
                                       "model.cc": c_export.model_source("m", "model.h", b"1234")})
    assert status == 0
    status, messages = compile_cpp(tmp_path, {
        "model.h": header, "model.cc": c_export.model_source("m", "model.h", b"12345")})
    assert status != 0 and "m" in messages


def test_conversion_is_recorded_in_the_metadata(converted):
    from pipeline import files
    tmp, *_ = converted
    paths = artifacts.model_paths(tmp / "models")
    recorded = json.loads(paths["meta"].read_text())["conversion"]["sha256"]
    for key, digest in recorded.items():
        assert files.file_sha256(paths[key]) == digest, key
    golden = json.loads(paths["golden"].read_text())
    assert golden["int8_tflite_sha256"] == recorded["int8_tflite"]


def test_keras_model_of_another_run_is_refused(converted, tmp_path):
    import shutil
    tmp, dataset, *_ = converted
    other = tmp_path / "models"
    shutil.copytree(tmp / "models", other)
    keras_file = other / "model_16k.keras"
    keras_file.write_bytes(keras_file.read_bytes() + b"\0")
    with pytest.raises(PipelineError, match="not the Keras model"):
        model_conv.main([f"--model_dir={other}", f"--dataset={dataset}",
                         f"--report_dir={tmp_path / 'r'}"])


@pytest.mark.parametrize("option, message", [
    ("--min_agreement=1.5", r"--min_agreement=1.5: expected a number in \[0, 1\]"),
    ("--representative_clips=0", r"--representative_clips=0: expected a number in \[1, "),
])
def test_bad_settings_are_refused(converted, tmp_path, option, message):
    tmp, dataset, *_ = converted
    with pytest.raises(PipelineError, match=message):
        model_conv.main([f"--model_dir={tmp / 'models'}", f"--dataset={dataset}",
                         f"--report_dir={tmp_path}", option])


def test_header_carries_the_open_set_rule(converted):
    tmp, *_ = converted
    paths = artifacts.model_paths(tmp / "models")
    rule = json.loads(paths["meta"].read_text())["open_set"]
    header = paths["c_header"].read_text()
    assert f"kTemperature = {float(rule['temperature'])!r}f" in header
    assert f"kMinProbability = {float(rule['min_probability'])!r}f" in header
    labels = ["alarm", "other", "water"]  # the fixture's
    background = labels.index(rule["background"]) if rule["background"] else -1
    assert f"kBackgroundClass = {background} }};" in header


def test_calibration_sets_cover_train_then_validation():
    train, validation = np.arange(0, 40), np.arange(40, 50)
    sets = conversion.calibration_sets(train, validation, n_clips=1000, tries=4, seed=0)
    assert len(sets) == 4
    assert sorted(sets[0]) == list(train)                      # every training clip
    assert sorted(sets[1]) == list(range(50))                  # plus validation
    assert all(len(s) == 20 and set(s) <= set(train) for s in sets[2:])
    assert len(conversion.calibration_sets(train, validation, n_clips=8, tries=2,
                                           seed=0)[0]) == 8


def test_int8_keeps_the_calibration_closest_to_keras(converted):
    tmp, *_ = converted
    report = json.loads((tmp / "reports" / "conversion_report.json").read_text())
    tries = report["calibration"]["tries"]
    assert len(tries) == stage_settings("model_conv.py").calibration_tries
    best = max(range(len(tries)),
               key=lambda k: (tries[k]["agreement"], -tries[k]["prob_abs_diff"]))
    assert report["calibration"]["chosen"] == best
    assert "(chosen)" in (tmp / "reports" / "conversion_report.txt").read_text()


def test_a_failed_gate_is_retried_with_more_calibration_sets(converted, capsys, monkeypatch):
    """When the first choice fails the gate, more calibration sets are tried
    (chosen on validation and test together, as the report says) before the
    run gives up."""
    tmp, _, args, _ = converted
    real, calls = conversion.compare, []

    def first_fails(*a, **k):
        calls.append(1)
        result = real(*a, **k)
        return {**result, "agreement": 0.9} if len(calls) == 1 else result

    monkeypatch.setattr(conversion, "compare", first_fails)
    report_dir = tmp / "retry_reports"
    assert model_conv.main([*args, f"--report_dir={report_dir}", "--calibration_tries=1",
                            "--retry_tries=1"]) == 0
    assert len(calls) == 2 and "trying 1 more calibration sets" in capsys.readouterr().out
    report = json.loads((report_dir / "conversion_report.json").read_text())
    assert len(report["calibration"]["tries"]) == 1 + 1
    assert report["calibration"]["chosen_on"].startswith("validation and test")


def test_model_card_says_what_it_is_and_how_it_did(converted):
    tmp, *_ = converted
    card = (tmp / "models" / "MODEL_CARD.md").read_text()
    meta = json.loads((tmp / "models" / "model_16k.json").read_text())
    figures = meta["conversion"]["figures"]
    assert "Classes: alarm, other, water" in card
    for label, count in meta["dataset"]["per_class"].items():
        assert f"| {label} | {count} |" in card
    assert f"int8 model macro-F1 {figures['int8_macro_f1']:.3f}, Keras " \
           f"{figures['keras_macro_f1']:.3f}" in card
    assert f"({figures['test_clips']} clips, decided by" in card
    assert f"equal on {100 * figures['agreement']:.1f} % of the clips" in card
    assert f"arena {figures['arena_bytes'] / 1024:.1f} KB" in card
    assert figures["multiply_adds"] > 0
    assert f"{figures['multiply_adds'] / 1e6:.2f} M multiply-adds per window" in card
    assert "Not calibrated" in card and "known limits" in card


def test_multiply_adds_count_every_convolution_and_dense_layer():
    """The model's operation count (recorded with the conversion, in the
    model card): a 3x3 conv on a (6, 5) patch, 2x2 pooling, and the head."""
    model = networks.build_model(30, 3, "cnn", [4, 8], dropout=0.0, learning_rate=1e-3,
                                  seed=0, input_shape=(6, 5))
    expected = 6 * 5 * 4 * 9 * 1 + 3 * 2 * 8 * 9 * 4 + 8 * 3
    assert conversion.multiply_adds(model) == expected
    mlp = networks.build_model(10, 3, "mlp", [7], dropout=0.0, learning_rate=1e-3, seed=0)
    assert conversion.multiply_adds(mlp) == 10 * 7 + 7 * 3
    separable = networks.build_model(30, 3, "cnn", [4, 8], dropout=0.0, learning_rate=1e-3,
                                      seed=0, input_shape=(6, 5), separable=True)
    # the second conv: 3x3 depthwise on 4 channels, then 1x1 to 8 filters
    assert conversion.multiply_adds(separable) == (6 * 5 * 4 * 9 + 3 * 2 * 4 * 9
                                                   + 3 * 2 * 8 * 4 + 8 * 3)


def test_a_separable_cnn_converts_to_int8_tflm_operations():
    from pipeline.tflite_model import TFLiteModel
    model = networks.build_model(30, 3, "cnn", [4, 8], dropout=0.0, learning_rate=1e-3,
                                  seed=0, input_shape=(6, 5), separable=True)
    rows = np.random.default_rng(0).normal(size=(32, 30)).astype(np.float32)
    blob = conversion.convert(model, rows, int8=True)
    probs = TFLiteModel(blob).predict_proba(rows)
    assert probs.shape == (32, 3) and np.allclose(probs.sum(axis=1), 1, atol=0.02)
    from pipeline import c_network
    layers = c_network.network_layers(blob)  # what the host tool's interpreter runs
    assert [layer["op"] for layer in layers][:5] == ["CONV_2D", "MAX_POOL_2D",
                                                     "DEPTHWISE_CONV_2D", "CONV_2D",
                                                     "MAX_POOL_2D"]
    depthwise = layers[2]
    assert depthwise["weights"].size == 3 * 3 * 4 and depthwise["kernel"] == (3, 3)
    assert depthwise["in"] == depthwise["out"] == [3, 2, 4] and len(depthwise["multiplier"]) == 4


@pytest.mark.slow
def test_the_int8_model_is_scored_as_predict_py_decides(tmp_path):
    """#32.2: clips longer than a window are decided by the mean of their
    windows, as predict.py decides them: model_conv.py calibrates, gates and
    scores on that, so its int8 confusion matrix is predict.py's on the test
    clips, and its Keras figure the one training reported (one figure)."""
    import make_dataset_16k
    from conftest import make_class_folder
    from pipeline import evaluation, inference
    clips = make_class_folder(tmp_path / "clips", per_class=8, seconds=3.5,
                              classes=("beep", "hiss", "tone"))
    dataset = tmp_path / "ds.npz"
    make_dataset_16k.main([f"--data_dir={clips}", f"--dataset={dataset}", "--jobs=1"])
    args = [f"--dataset={dataset}", f"--model_dir={tmp_path / 'm'}",
            f"--report_dir={tmp_path / 'r'}"]
    train_16k.main(args + ["--epochs=12", "--augment=false", "--jobs=1"])
    assert model_conv.main(args + ["--min_agreement=0", "--tflm_clips=1"]) == 0
    report = json.loads((tmp_path / "r" / "conversion_report.json").read_text())
    assert report["decided_by"] == "the mean of each clip's windows, as predict.py"
    meta = json.loads((tmp_path / "m" / "model_16k.json").read_text())
    classifier = inference.Classifier(tmp_path / "m" / "model_16k_int8.tflite")
    events = event_settings.event_settings(classifier.meta)
    decided = [inference.classify_file(classifier, path, events)["class"]
               for path in meta["split"]["test"]]
    truth = [meta["labels"].index(Path(p).parent.name) for p in meta["split"]["test"]]
    expected = evaluation.classification_metrics(
        np.array(truth), np.array([meta["labels"].index(c) for c in decided]), meta["labels"])
    assert report["metrics"]["int8_tflite"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    figures = meta["conversion"]["figures"]
    assert figures["keras_macro_f1"] == pytest.approx(meta["metrics"]["test"]["macro_f1"])
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert card.count("Held-out test split") == 1 and card.count("macro-F1") == 1


def parse_c_array(source):
    """The bytes of the first ``{ 0x.., ... }`` array in C ``source``."""
    import re
    body = source[source.index("{") + 1:source.index("}")]
    return bytes(int(tok, 16) for tok in re.findall(r"0x[0-9a-fA-F]{2}", body))

