"""The teacher and the pretrained tier, on a tiny tagger built here
(tests/tiny_teacher.py), never on the real, downloaded ones."""

import json

import numpy as np
import pytest

import features
import make_dataset_16k
from conftest import make_class_folder
from pipeline import pretrained, teacher, tflite_keras
from pipeline.errors import PipelineError
from tiny_teacher import NAMES, make_teacher


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("teacher"))


def test_keras_backbone_equals_the_tflite_file(teacher_dir):
    tutor = teacher.Teacher(teacher_dir)
    assert tutor.kind == "mel" and tutor.sample_rate == 32000
    model = tflite_keras.keras_model(tutor.model_path, (1, 128, 100))
    mel = np.random.default_rng(3).normal(0, 1, (4, 1, 128, 100)).astype(np.float32)
    ours, theirs = model.predict(mel, verbose=0), tutor._runner(mel=mel)
    assert set(ours) == {"logits", "embedding", "hidden"}
    for key in ours:
        assert np.abs(ours[key] - theirs[key]).max() < 1e-4 * max(1, np.abs(theirs[key]).max())
    # and the weights are the file's, not fresh ones: another seed differs
    assert np.abs(ours["logits"] - theirs["logits"]).max() < np.abs(theirs["logits"]).max() / 100


def test_an_unknown_operator_is_refused_by_name(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def serve(x):
        return tf.nn.softmax(tf.concat([x, x * x], axis=1))

    path = tmp_path / "odd.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], serve).convert())
    with pytest.raises(PipelineError, match="CONCATENATION|SOFTMAX"):
        tflite_keras.keras_model(path, (4,))


def test_not_a_teacher_folder_names_the_fix(tmp_path):
    with pytest.raises(PipelineError, match="--teacher=FOLDER"):
        teacher.Teacher(tmp_path / "missing")
    (tmp_path / "a.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(PipelineError, match="class list"):
        teacher.Teacher(tmp_path)


def test_class_map_is_checked_by_name():
    labels = ["alarm", "other", "water"]
    indices, background = teacher.class_indices(
        {"water": ["Water tap, faucet", "Rain"], "alarm": ["Alarm"]}, NAMES, labels)
    assert indices == {"water": [1, 4], "alarm": [2]} and background == "other"
    with pytest.raises(PipelineError, match="'Rian' \\(closest: Rain"):
        teacher.class_indices({"water": ["Rian"], "alarm": ["Alarm"]}, NAMES, labels)
    with pytest.raises(PipelineError, match="not among the labels"):
        teacher.class_indices({"fire": ["Alarm"], "water": ["Rain"]}, NAMES, labels)
    with pytest.raises(PipelineError, match="exactly one background"):
        teacher.class_indices({"water": ["Rain"]}, NAMES, labels)


def test_the_shipped_class_map_names_audioset_classes():
    # Every name must be a real AudioSet display name; a few that EfficientAT's
    # and YAMNet's lists share, spelled as they spell them.
    names = {n for names in teacher.CLASS_MAP.values() for n in names}
    assert {"Water tap, faucet", "Smoke detector, smoke alarm", "Toilet flush"} <= names
    assert all(n == n.strip() and n for n in names)


def test_zero_shot_follows_the_mapped_scores():
    labels = ["alarm", "other", "water"]
    indices = {"water": [1, 4], "alarm": [2]}
    scores = np.array([[0.1, 0.9, 0.05, 0.0, 0.2],    # a tap: water
                       [0.9, 0.05, 0.8, 0.0, 0.0],    # speech and an alarm: alarm
                       [0.9, 0.05, 0.05, 0.9, 0.1]])  # speech and music: other
    probs = teacher.zero_shot(scores, indices, "other", labels)
    assert probs.argmax(axis=1).tolist() == [2, 0, 1]
    assert np.allclose(probs.sum(axis=1), 1)


def test_efficientat_front_end():
    config = features.feature_config("efficientat")
    banks = features.kaldi_mel_banks(32000, 1024, n_mels=128, fmin=0.0, fmax=15000.0)
    assert banks.shape == (128, 513) and not banks[:, -1].any()
    assert np.all(banks.max(axis=1) > 0) and banks.min() >= 0  # every band sees a bin
    sr = config.sample_rate
    t = np.arange(2 * sr) / sr
    y = np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 3000 * t), 0.001 * np.sin(2 * np.pi * 50 * t))
    mel = features.efficientat_logmel(y.astype(np.float32), config)
    assert mel.shape == (128, 1 + (y.size - 1) // config.hop_length)
    loud = mel[:, 150]
    band = np.argmax(loud)
    assert banks[band, round(3000 / (sr / 1024))] > 0  # the tone's own band
    patch = features.features_from_audio(y.astype(np.float32), config).reshape(100, 128)
    assert patch[:, band].mean() > mel[band, :90].mean() + 1  # the loud second was chosen
    short = features.features_from_audio(y[-sr // 4:].astype(np.float32), config)
    assert short.shape == (config.n_features,)  # a short clip is padded to one patch


def test_teacher_runs_once_per_row_and_clip(teacher_dir, tmp_path, monkeypatch):
    tutor = teacher.Teacher(teacher_dir)
    rows = np.random.default_rng(0).normal(0, 1, (6, 12800)).astype(np.float32)
    cache = teacher.PatchCache(tutor, tmp_path / "patches.npz")
    logits, embedding = cache.outputs(rows)
    direct = tutor.patch_outputs(rows)
    assert np.allclose(logits, direct[0]) and np.allclose(embedding, direct[1])
    cache.save()
    calls = []
    monkeypatch.setattr(tutor, "patch_outputs", lambda r: calls.append(len(r)))
    again = teacher.PatchCache(tutor, tmp_path / "patches.npz").outputs(rows[::-1])
    assert calls == [] and np.allclose(again[1], embedding[::-1])

    folder = make_class_folder(tmp_path / "clips", per_class=2)
    paths = sorted(str(p) for p in folder.rglob("*.wav"))
    first = teacher.clip_outputs(tutor, paths, cache=tmp_path / "clips.npz")
    monkeypatch.setattr(tutor, "clip_outputs", lambda y: 1 / 0)  # must not run again
    second = teacher.clip_outputs(tutor, paths, cache=tmp_path / "clips.npz")
    assert np.array_equal(first[0], second[0]) and first[1].shape == (len(paths), 16)


def test_the_teacher_hears_each_copys_own_audio_once(teacher_dir, tmp_path, monkeypatch):
    """#33 item 1: the teacher's embedding of an augmented copy is its output
    on that copy's own audio (the audio whose features all_copies stores,
    resampled to the teacher's rate), cached by content, copy and teacher."""
    import soxr
    from pipeline import artifacts, copies
    folder = make_class_folder(tmp_path / "clips", per_class=3)
    make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={tmp_path / 'ds.npz'}",
                           "--jobs=1"])
    data = artifacts.load_dataset(tmp_path / "ds.npz")
    tutor = teacher.Teacher(teacher_dir)
    settings = dict(pool=2, dataset=tmp_path / "ds.npz", jobs=1)
    embedding = copies.all_copy_embeddings(data, tutor, **settings)
    rows, partner = copies.all_copies(data, **settings)
    assert embedding.shape == (len(data["paths"]), 2, 16)
    plan = copies._Plan(data, 2, spec=False, ir_dir=None, ir_probability=0.0,
                        room_probability=0.0, mix_labels=None)
    config = data["feature_config"]
    for i, j in ((0, 0), (len(data["paths"]) - 1, 1)):
        y = features.load_audio(data["paths"][i], config.sample_rate)
        audio, _ = copies.augmented_audio(
            y, data["paths"][partner[i, j]] if partner[i, j] >= 0 else None,
            copies.copy_seed(plan.keys[i], j, plan.ident), sample_rate=config.sample_rate,
            responses=None, ir_probability=0.0, room_probability=0.0)
        assert np.allclose(features.features_from_audio(audio, config), rows[i, j])
        heard = soxr.resample(audio.astype(np.float32), config.sample_rate, tutor.sample_rate,
                              quality="HQ")
        assert np.allclose(tutor.clip_outputs(heard)[1], embedding[i, j], atol=1e-5)
    assert not np.allclose(embedding[:, 0], embedding[:, 1])  # each copy its own audio
    calls = []
    monkeypatch.setattr(copies, "clip_copy_embeddings", lambda *a, **k: calls.append(a))
    again = copies.all_copy_embeddings(data, tutor, **settings)
    assert calls == [] and np.array_equal(again, embedding)


def test_copies_can_take_the_teachers_targets_of_their_own_audio(monkeypatch):
    """--distil_copies=teacher: each copy's soft target is the head's
    probabilities of that copy's embedding (its clip's row, its copy)."""
    from types import SimpleNamespace
    from pipeline import copies, distillation
    train = np.array([3, 5])
    embedding = np.arange(6 * 2 * 2, dtype=np.float32).reshape(6, 2, 2)
    monkeypatch.setattr(distillation.teachers, "Teacher", lambda path: "tutor")
    monkeypatch.setattr(distillation, "teacher_targets", lambda *a, **k: (
        np.tile([[0.5, 0.5]], (6, 1)).astype(np.float32), lambda e: np.stack(
            [e[:, 0] / (e[:, 0] + e[:, 1]), e[:, 1] / (e[:, 0] + e[:, 1])], 1)))
    monkeypatch.setattr(copies, "all_copy_embeddings", lambda data, tutor, **k: embedding)
    cfg = SimpleNamespace(distil_from="t", unlabelled=None, distil_weight=1.0, dataset="d",
                          distil_temperature=1.0, seed=0, distil_copies="teacher")
    x = np.zeros((5, 4), np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 1]]
    copy_of, copy_index = np.array([0, 1, 1]), np.array([1, 0, 1])
    _, soft, _ = distillation.training_targets({}, train, cfg, x, y=y, copy_of=copy_of,
                                               view_of=None, copy_index=copy_index,
                                               copy_settings={})
    assert np.allclose(soft[:2], 0.5)  # the clips: their own probabilities
    for row, (clip, copy) in enumerate(zip(train[copy_of], copy_index)):
        e = embedding[clip, copy]
        assert np.allclose(soft[2 + row], e / e.sum())


def test_the_head_is_a_regularised_logistic_regression():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, (30, 4)), rng.normal(2, 1, (30, 4))])
    labels = np.repeat([0, 1], 30)
    kernel, bias = pretrained.fit_head(x, labels, 2, c=1.0)
    assert kernel.shape == (4, 2) and ((x @ kernel + bias).argmax(axis=1) == labels).mean() > 0.9
    weak, _ = pretrained.fit_head(x, labels, 2, c=1e-4)
    assert np.abs(weak).max() < np.abs(kernel).max() / 10  # C regularises
    with pytest.raises(PipelineError, match="every class"):
        pretrained.fit_head(x[:30], labels[:30], 2, c=1.0)
    with pytest.raises(PipelineError, match="--head_input"):
        pretrained.head_features((x, x), "hidden")


def test_folded_standardisation_equals_the_standardised_head():
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(5, 3)), rng.normal(size=3)
    e = rng.normal(2, 3, (10, 5))
    mean, std = pretrained.embedding_scaling(e)
    folded_k, folded_b = pretrained.fold_scaling(kernel, bias, mean, std)
    assert np.allclose(e @ folded_k + folded_b, ((e - mean) / std) @ kernel + bias, atol=1e-5)


def test_pretrained_needs_its_features_and_a_teacher(tmp_path):
    import train_16k
    from conftest import make_feature_dataset
    dataset = make_feature_dataset(tmp_path / "ds.npz")
    with pytest.raises(PipelineError, match="--features=efficientat"):
        train_16k.main([f"--dataset={dataset}", "--architecture=pretrained", "--teacher=x",
                        f"--model_dir={tmp_path / 'm'}"])
    dataset = make_feature_dataset(tmp_path / "eat.npz", preset="efficientat")
    with pytest.raises(PipelineError, match="--teacher=FOLDER"):
        train_16k.main([f"--dataset={dataset}", "--architecture=pretrained",
                        f"--model_dir={tmp_path / 'm'}"])


def test_unlabelled_audio_from_a_folder_or_a_manifest(tmp_path):
    from pipeline import distillation
    folder = make_class_folder(tmp_path / "pool", per_class=2)
    found = distillation.unlabelled_clips(folder)
    assert len(found.paths) == 4 and found.groups == found.paths and set(found.sources) == {""}
    manifest = tmp_path / "pool.csv"
    manifest.write_text("path,group,source\npool/tone/tone_0.wav,g1,s1\n"
                        "pool/hiss/hiss_0.wav,,s2\n", encoding="utf-8")
    listed = distillation.unlabelled_clips(manifest)
    assert listed.groups[0] == "g1" and listed.groups[1] == listed.paths[1]
    assert listed.sources == ["s1", "s2"]
    with pytest.raises(PipelineError, match="--unlabelled"):
        distillation.unlabelled_clips(tmp_path / "nowhere")
    (tmp_path / "bad.csv").write_text("file\nx.wav\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="'path' column"):
        distillation.unlabelled_clips(tmp_path / "bad.csv")


def test_unlabelled_clips_of_held_out_recordings_and_sources_never_teach():
    from pipeline import distillation
    data = {"paths": ["a", "b", "c", "d"], "groups": ["g1", "g2", "g3", "g4"],
            "sources": ["s1", "s1", "s2", "s3"]}
    pool = distillation.Unlabelled(["p1", "p2", "p3", "p4", "p5"],
                                   ["g1", "g2", "g9", "g8", "g7"], ["s1", "s1", "s2", "s3", ""])
    # training on a, b and c: d (group g4, source s3) is held out
    assert distillation.usable_unlabelled(pool, data, np.array([0, 1, 2])).tolist() == [0, 1, 2, 4]
    # training on a and d: b (g2) and source s2 (c only) are held out
    assert distillation.usable_unlabelled(pool, data, np.array([0, 3])).tolist() == [0, 3, 4]


def test_the_teacher_head_learns_only_from_training_clips():
    from pipeline import distillation
    rng = np.random.default_rng(0)
    e = np.concatenate([rng.normal(0, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    labels = np.repeat([0, 1], 20)
    head = distillation.fit_head(e, labels, 2, seed=0)
    assert (head(e).argmax(axis=1) == labels).mean() > 0.9
    with pytest.raises(PipelineError, match="every class"):
        distillation.fit_head(e[:20], labels[:20], 2, seed=0)


def test_unlabelled_audio_needs_a_teacher(tmp_path):
    import train_16k
    with pytest.raises(PipelineError, match="--unlabelled needs --distil_from"):
        train_16k.main([f"--dataset={tmp_path / 'missing.npz'}", f"--unlabelled={tmp_path}"])
    with pytest.raises(PipelineError, match="--distil_copies=teacher needs --distil_from"):
        train_16k.main([f"--dataset={tmp_path / 'missing.npz'}", "--distil_copies=teacher"])
    with pytest.raises(PipelineError, match="--distil_copies='copy': expected 'clip'"):
        train_16k.main([f"--dataset={tmp_path / 'missing.npz'}", "--distil_copies=copy"])


def test_a_student_learns_from_the_teacher_on_its_copies(teacher_dir, tmp_path):
    """train_16k.py --distil_copies=teacher trains and saves a device model,
    with the teacher's outputs of the copies cached beside the dataset."""
    import train_16k
    folder = make_class_folder(tmp_path / "clips", per_class=4)
    dataset = tmp_path / "ds.npz"
    make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={dataset}", "--jobs=1"])
    train_16k.main([f"--dataset={dataset}", f"--model_dir={tmp_path / 'm'}",
                    f"--report_dir={tmp_path / 'r'}", f"--distil_from={teacher_dir}",
                    "--distil_copies=teacher", "--epochs=2", "--jobs=1", "--augment_pool=2"])
    meta = json.loads((tmp_path / "m" / "model_16k.json").read_text())
    assert meta["settings"]["distil_copies"] == "teacher"
    assert list(tmp_path.glob("ds_copies_*_teacher_*.npz"))


def test_each_training_row_takes_its_own_clips_teacher_probabilities(monkeypatch):
    from types import SimpleNamespace
    from pipeline import distillation
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]],
                     np.float32)  # per dataset clip
    monkeypatch.setattr(teacher, "Teacher", lambda path: None)
    monkeypatch.setattr(distillation, "teacher_targets", lambda *a, **k: (probs, None))
    train = np.array([1, 3])  # dataset clips 1 and 3 are training clips 0 and 1
    view_of = np.array([0, 0, 1, 2])  # two windows of clip 1, one of clip 3, a noise
    copy_of = np.array([1, 0])  # a copy of clip 3, then of clip 1
    y = np.eye(3, dtype=np.float32)[[1, 1, 2, 0, 2, 1]]
    x = np.arange(6, dtype=np.float32)[:, None]
    cfg = SimpleNamespace(distil_from="t", unlabelled=None, distil_weight=1.0, dataset="d",
                          distil_temperature=1.0, seed=0, distil_copies="clip")
    _, soft, _ = distillation.training_targets({}, train, cfg, x, y=y, copy_of=copy_of,
                                               view_of=view_of)
    np.testing.assert_allclose(soft, np.stack([probs[1], probs[1], probs[3], y[3],
                                               probs[3], probs[1]]), atol=1e-6)


# What each stage gets on top of the README's recipe, so the test stays short.
QUICK = {"train_16k.py": ["--epochs=3", "--augment=false", "--jobs=1"],
         "model_conv.py": ["--min_agreement=0", "--calibration_tries=1", "--retry_tries=0",
                           "--tflm_clips=1"],
         "make_dataset_16k.py": ["--jobs=1"]}


def readme_recipe():
    """The bash lines of the README's 'Best model on real recordings' block."""
    import re
    from conftest import ROOT
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Best model on real recordings", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).splitlines()


@pytest.mark.slow
def test_the_readme_recipe_builds_both_models(teacher_dir, tmp_path, monkeypatch, capsys):
    """The README's recipe, line by line (each stage's main in this
    process), on a tiny teacher and tiny clips: two model folders that
    predict.py accepts."""
    import os
    import shlex
    import shutil
    import importlib
    import predict
    from pipeline import artifacts
    teachers = tmp_path / "teachers"
    shutil.copytree(teacher_dir, teachers / "efficientat_mn04_as")
    clips_dir = make_class_folder(tmp_path / "clips", per_class=6, seconds=1.5,
                                  classes=("hiss", "tone", "beep"))
    manifest = tmp_path / "clips.csv"
    rows = [f"{p.relative_to(tmp_path)},{p.parent.name},{p.stem}"
            for p in sorted(clips_dir.rglob("*.wav"))]
    manifest.write_text("path,label,group\n" + "\n".join(rows) + "\n", encoding="utf-8")
    unlabelled = make_class_folder(tmp_path / "unlabelled", per_class=1, classes=("tone",))
    env = {"TEACHERS": str(teachers), "MANIFEST": str(manifest), "SEED": "3",
           "OUT": str(tmp_path / "out"), "UNLABELLED": str(unlabelled)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ran = []
    for line in readme_recipe():
        if "=" in line.split()[0]:  # T=...
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, os.path.expandvars(value))
            continue
        words = shlex.split(os.path.expandvars(line))
        assert words[0] == "python", line
        module = importlib.import_module(words[1][:-3])
        assert module.main(words[2:] + QUICK.get(words[1], [])) == 0, line
        ran.append(words[1])
    assert ran.count("train_16k.py") == 2 and ran.count("model_conv.py") == 2
    assert "teacher (unlabelled): 1/1 clips done" in capsys.readouterr().err
    for name in ("pretrained", "device"):
        assert predict.main([f"--model_dir={tmp_path / 'out' / name}",
                             str(clips_dir / "beep")]) == 0
        assert capsys.readouterr().out.count("beep_") == 6
    out = tmp_path / "out"
    assert (out / "device" / "model_16k_frontend.h").is_file()
    device = artifacts.load_model_metadata(out / "device")
    assert device["model_type"] == "cnn"  # the device model, with its usual features
    assert device["settings"]["distil_from"] == str(teachers / "efficientat_mn04_as")

    # the pretrained tier listens and is calibrated like any model (#33)
    import calibrate
    from conftest import noise, tone, write
    recording = write(tmp_path / "rec.wav", np.concatenate(
        [noise(3.0, seed=1, low_hz=1500), tone(650.0, 3.0, seed=2),
         noise(3.0, seed=3, low_hz=1500)]))
    assert predict.main([f"--model_dir={out / 'pretrained'}", f"--listen={recording}",
                         "--speed=0", "--background_classes=hiss"]) == 0
    assert "listened 0.15 min" in capsys.readouterr().out
    assert calibrate.main([f"--model_dir={out / 'pretrained'}", f"--data_dir={clips_dir}",
                           "--stream_hours=0.02", "--segment_s=60", "--snrs_db=10",
                           "--event_gap_s=10", "--background_classes=hiss", "--jobs=1",
                           f"--report_dir={tmp_path / 'calibration'}", "--store=false"]) == 0
    chosen = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    assert set(chosen["per_class"]) == {"beep", "tone"}

    meta = artifacts.load_model_metadata(out / "pretrained")
    assert meta["model_type"] == "pretrained" and meta["input_standardisation"] is None
    tutor = teacher.Teacher(teacher_dir)
    assert meta["teacher"]["sha256"] == tutor.sha256
    assert not (out / "pretrained" / "model_16k_frontend.h").exists()  # no device files
    card = (out / "pretrained" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Backbone: the pretrained tagger `tiny.tflite`" in card
    assert "multiply-adds per window" in card and "ms per window for the int8 model" in card
    # The saved model (Keras backbone + head with the standardisation folded
    # in) computes what the head computes on the teacher file's logits.
    data = artifacts.load_dataset(out / "pretrained.npz")
    model = artifacts.load_keras_model(out / "pretrained" / "model_16k.keras", meta)
    read = pretrained.head_features(tutor.patch_outputs(data["features"][:5]), "logits")
    head = model.layers[-1]
    assert head.name == "head" and head.kernel.shape == (len(NAMES), 3)
    logits = read @ head.kernel.numpy() + head.bias.numpy()
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.abs(model.predict(data["features"][:5], verbose=0) - expected).max() < 2e-3


@pytest.mark.slow
def test_fine_tuning_trains_the_backbone_too(teacher_dir, tmp_path):
    import make_dataset_16k
    import train_16k
    from pipeline import artifacts
    folder = make_class_folder(tmp_path / "clips", per_class=5, seconds=1.5,
                               classes=("hiss", "tone", "beep"))
    dataset, models = tmp_path / "ds.npz", tmp_path / "models"
    make_dataset_16k.main([f"--data_dir={folder}", f"--dataset={dataset}", "--jobs=1",
                           "--features=efficientat"])
    assert train_16k.main([f"--dataset={dataset}", f"--model_dir={models}",
                           f"--report_dir={tmp_path / 'r'}", "--architecture=pretrained",
                           f"--teacher={teacher_dir}", "--augment=false", "--jobs=1",
                           "--fine_tune_epochs=2", "--fine_tune_rate=0.01"]) == 0
    meta = artifacts.load_model_metadata(models)
    assert meta["epochs_run"] == 2
    model = artifacts.load_keras_model(models / "model_16k.keras", meta)
    backbone = model.get_layer("backbone")
    tutor = teacher.Teacher(teacher_dir)
    original = tflite_keras.keras_model(tutor.model_path, (1, 128, 100))
    moved = [np.abs(a - b).max() for a, b in zip(backbone.get_weights(), original.get_weights())
             if a.shape == b.shape]
    assert moved and max(moved) > 1e-4  # the backbone learned, not only the head
