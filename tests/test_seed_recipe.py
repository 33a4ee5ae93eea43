"""The seed's method, literally: the README's three commands on --demo."""

import json
import re

import numpy as np
import pytest

from conftest import ROOT, tone, write
from pipeline.errors import PipelineError


def readme_block(title):
    """The bash lines of the README section ``title``'s first block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).splitlines()


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """The README's 'The seed method, literally' block, run in a fresh
    folder (each stage's main in this process), with fewer epochs."""
    import importlib
    import os
    import shlex
    folder = tmp_path_factory.mktemp("seed")
    quick = {"train_16k.py": ["--epochs=4"], "make_dataset_16k.py": ["--jobs=1"],
             "model_conv.py": ["--min_agreement=0", "--retry_tries=0", "--tflm_clips=1"]}
    here = os.getcwd()
    os.chdir(folder)
    try:
        lines = readme_block("The seed method, literally")
        assert len(lines) == 3
        for line in lines:
            words = shlex.split(line)
            module = importlib.import_module(words[1][:-3])
            assert module.main(words[2:] + quick.get(words[1], [])) == 0, line
    finally:
        os.chdir(here)
    return folder


@pytest.mark.slow
def test_the_seed_recipe_trains_the_seeds_mlp_on_whole_clips(seed_run):
    meta = json.loads((seed_run / "models" / "model_16k.json").read_text())
    assert meta["feature_config"]["preset"] == "seed"
    assert meta["model_type"] == "mlp" and meta["decides_clips_by"] == "whole_clip"
    assert meta["epochs_run"] == 4  # every epoch: no early stopping
    assert meta["input_standardisation"] is None and meta["open_set"] is None
    assert meta["split"]["validation"] == []
    n = meta["dataset"]["clips"]
    assert len(meta["split"]["train"]) + len(meta["split"]["test"]) == n
    import keras
    model = keras.saving.load_model(seed_run / "models" / "model_16k.keras", safe_mode=True)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [256, 256, 128, 128, 3]
    assert [d.activation.__name__ for d in dense] == ["relu"] * 4 + ["softmax"]
    assert [layer.rate for layer in model.layers if hasattr(layer, "rate")] == [0.5]
    report = json.loads((seed_run / "reports" / "conversion_report.json").read_text())
    assert report["test_clips"] == len(meta["split"]["test"])
    assert "no validation split" in report["calibration"]["chosen_on"]


@pytest.mark.slow
def test_predict_decides_a_long_file_by_all_of_it(seed_run, tmp_path, capsys):
    """The seed's model classifies a 9 s recording by its whole-clip
    features, not by windows; modes that need windows say so."""
    import features
    import predict
    from pipeline.inference import Classifier
    long = write(tmp_path / "long.wav", np.concatenate([tone(2700.0, 4.0), tone(900.0, 5.0)]))
    model_dir = seed_run / "models"
    classifier = Classifier(model_dir / "model_16k_int8.tflite")
    expected = classifier.probabilities(features.features_from_audio(
        features.load_audio(long, 16000), classifier.config))[0]
    out = tmp_path / "out.json"
    assert predict.main([f"--model_dir={model_dir}", str(long), "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert "events" not in result
    np.testing.assert_allclose([result["probabilities"][k] for k in classifier.labels],
                               expected, atol=1e-6)
    with pytest.raises(PipelineError, match="--listen needs a model that listens window"):
        predict.main([f"--model_dir={model_dir}", f"--listen={long}"])


def test_the_seed_recipe_refuses_what_the_seed_did_not_do(tmp_path):
    import train_16k
    from conftest import make_feature_dataset
    dataset = make_feature_dataset(tmp_path / "ds.npz")  # logmel features
    with pytest.raises(PipelineError, match="--features=seed"):
        train_16k.main([f"--dataset={dataset}", "--recipe=seed",
                        f"--model_dir={tmp_path / 'm'}"])
    with pytest.raises(PipelineError, match="no --patience, --mixup"):
        train_16k.main([f"--dataset={dataset}", "--recipe=seed", "--mixup=0.2",
                        "--patience=3", f"--model_dir={tmp_path / 'm'}"])
    with pytest.raises(PipelineError, match="--recipe='fast'"):
        train_16k.main([f"--dataset={dataset}", "--recipe=fast"])
