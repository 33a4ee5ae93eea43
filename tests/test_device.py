"""The device front end (device/) gives the model the same input as
features.py and predict.py: float features, int8 inputs, classes through the
TFLite Micro interpreter, and events. Builds the C code with the system
compiler into a temporary folder."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import features
import make_dataset_16k
import model_conv
import train_16k
from conftest import ROOT, make_class_folder, noise, tone, train_settings, write
from pipeline import artifacts, event_settings, events, frontend_header, inference, open_set
from pipeline.standardisation import standardise
from pipeline.tflite_model import TFLiteModel

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")

CLASSES = ("beep", "hiss", "tone")
SR = 16000


def build(model_dir, build_dir):
    """``make -C device`` against ``model_dir``'s generated header."""
    result = subprocess.run(["make", "-s", "-C", str(ROOT / "device"), f"MODEL_DIR={model_dir}",
                             f"BUILD_DIR={build_dir}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return build_dir / "features"


def compile_api_test(model_dir, out, *flags):
    device = ROOT / "device"
    sources = [device / "src" / name
               for name in ("af_frontend.c", "af_rfft.c", "af_events.c", "af_net.c")]
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion",
                    *flags, f"-I{device / 'include'}", f"-I{model_dir}", *map(str, sources),
                    str(device / "tests" / "api_test.c"), "-lm", "-o", str(out)], check=True)
    return out


def test_front_end_maths_is_single_precision(trained, tmp_path):
    """The M4F's FPU is single precision: the front end must not promote a
    float to double anywhere (software double maths cost 58 % of a window)."""
    _, model_dir, _ = trained
    device = ROOT / "device"
    for name in ("af_frontend.c", "af_rfft.c"):
        subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic",
                        "-Wdouble-promotion", "-Wconversion", f"-I{device / 'include'}",
                        f"-I{model_dir}", "-c", str(device / "src" / name), "-o",
                        str(tmp_path / f"{name}.o")], check=True)
    source = (device / "src" / "af_frontend.c").read_text()
    body = source.split("Streaming (pipeline/events.py's stream_windows)")[0]
    assert "double" not in body.split("*/", 1)[1]  # beyond the opening comment
    # feature constants come from the generated header, not from literals here
    assert "80.0f" not in source and "1e-4" not in source


def default_event_settings():
    """The event settings train_16k.py stores with a model by default."""
    stored = event_settings.default_events(
        window_s=train_settings().window_s, hop_s=train_settings().hop_s,
        smooth_windows=train_settings().smooth_windows, threshold=train_settings().threshold,
        min_event_s=train_settings().min_event_s, background=train_settings().background_classes)
    return event_settings.event_settings({"labels": list(CLASSES), "events": stored})


def header_only(tmp, preset, **changes):
    """A front-end header for ``preset`` without a trained model (no
    standardisation, unit input scale): enough to compare float features."""
    config = features.feature_config(preset)
    if changes:
        config = features.FeatureConfig.from_dict({**config.to_dict(), **changes})
    folder = tmp / preset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_16k_frontend.h").write_text(frontend_header.frontend_header(
        config, scaling=None, input_scale=0.1, input_zero_point=0, labels=list(CLASSES),
        events=default_event_settings(), min_clip_s=features.MIN_CLIP_S))
    return folder, config


def int16_clip(y):
    """Audio as a 16-bit WAV holds it, and as soundfile reads it back."""
    return np.round(np.clip(y, -1, 32767 / 32768) * 32768).astype(np.int16)


def synthetic_clips():
    """Tones, chirps, noise, silence then sound, shorter than a patch, longer than a window."""
    t = np.arange(int(1.5 * SR)) / SR
    chirp = 0.5 * np.sin(2 * np.pi * (200 + 2000 * t) * t)
    late = np.concatenate([np.zeros(SR // 2), tone(1200, 1.0, level=0.4)])
    beeps = np.concatenate([tone(900, 0.3, level=0.5), np.zeros(SR // 4)] * 8)
    return {"tone": tone(440, 1.2, level=0.5), "chirp": chirp, "noise": noise(1.8, seed=3),
            "silence_then_tone": late, "short": tone(3000, 0.4, level=0.3, seed=5),
            "quiet_hiss": noise(0.9, level=0.01, seed=8, low_hz=2000),
            "long_beeps": beeps[: int(4.4 * SR)]}


def write_clips(folder):
    return {name: write(folder / f"{name}.wav", int16_clip(y) / 32768.0)
            for name, y in synthetic_clips().items()}


def python_windows(path, config, window_s, hop_s):
    """features.py's features of predict.py's windows of ``path``."""
    if features.audio_duration(path) <= window_s:
        return [features.features_from_audio(features.load_audio(path, SR), config)]
    windows = events.stream_windows(features.stream_audio(path, SR), int(window_s * SR),
                                    int(hop_s * SR), config.window_alignment)
    return [features.features_from_audio(samples, config) for _, samples in windows]


def c_windows(tool, path, as_float=True):
    result = subprocess.run([str(tool), *(["--float"] if as_float else []), str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [np.array(line.split(), np.float64 if as_float else np.int64)
            for line in result.stdout.splitlines()]


@pytest.mark.parametrize("preset, changes", [("logmel_patch", {}), ("logmel", {}),
                                             ("seed", {"noise_reduction": False}),
                                             ("logmel_stream", {})])
def test_c_features_equal_features_py(tmp_path, preset, changes):
    model_dir, config = header_only(tmp_path, preset, **changes)
    tool = build(model_dir, tmp_path / "build")
    settings = default_event_settings()
    for name, path in write_clips(tmp_path / "clips").items():
        expected = python_windows(path, config, settings.window_s, settings.hop_s)
        got = c_windows(tool, path)
        assert len(got) == len(expected), name
        for c, py in zip(got, expected):
            assert c.shape == py.shape
            # dB for the log-mel presets; [0, 1] for seed; shape statistics in their own units
            assert np.max(np.abs(c - py)) < 1e-3, (name, float(np.max(np.abs(c - py))))


def test_noise_reduction_model_fails_to_build_with_a_reason(tmp_path):
    model_dir, _ = header_only(tmp_path, "seed", noise_reduction=True)
    result = subprocess.run(["make", "-s", "-C", str(ROOT / "device"), f"MODEL_DIR={model_dir}",
                             f"BUILD_DIR={tmp_path / 'b'}"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "noise reduction" in result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small logmel_patch CNN on three easy classes, converted, and the C
    front end built against its generated header."""
    tmp = tmp_path_factory.mktemp("device")
    clips = make_class_folder(tmp / "clips", per_class=8, classes=CLASSES)
    dataset = tmp / "ds.npz"
    make_dataset_16k.main([f"--data_dir={clips}", f"--dataset={dataset}", "--jobs=1"])
    args = [f"--dataset={dataset}", f"--model_dir={tmp / 'models'}", f"--report_dir={tmp / 'r'}"]
    train_16k.main(args + ["--epochs=40", "--patience=10", "--augment=false"])
    model_conv.main(args + ["--min_agreement=0"])
    return tmp, tmp / "models", build(tmp / "models", tmp / "build")


def test_int8_inputs_equal_predict_py_and_tflm_gives_its_class(trained):
    from tflite_micro.python.tflite_micro import runtime
    tmp, model_dir, tool = trained
    classifier = inference.Classifier(model_dir / "model_16k_int8.tflite")
    tflite = TFLiteModel(model_dir / "model_16k_int8.tflite")
    meta = classifier.meta
    micro = runtime.Interpreter.from_bytes((model_dir / "model_16k_int8.tflite").read_bytes())
    settings = event_settings.event_settings(classifier.meta)
    same = total = 0
    for name, path in write_clips(tmp / "fresh").items():
        rows = python_windows(path, meta["feature_config"], settings.window_s, settings.hop_s)
        expected = [tflite.quantise_input(r) for r in
                    standardise(np.stack(rows), meta["input_standardisation"])]
        got = c_windows(tool, path, as_float=False)
        assert len(got) == len(expected), name
        for c, py in zip(got, expected):
            assert np.max(np.abs(c - py)) <= 1, name
            same, total = same + int(np.sum(c == py)), total + py.size
        if len(got) == 1:  # a clip: the class predict.py gives it
            micro.set_input(got[0].astype(np.int8)[None, :], 0)
            micro.invoke()
            probs = tflite.dequantise_output(micro.get_output(0)[0])[None, :]
            _, decided = open_set.apply_rule(probs, meta.get("open_set"), classifier.labels)
            result = inference.classify_file(classifier, path, settings)
            assert classifier.labels[int(decided[0])] == result["class"], name
    assert same / total >= 0.999, f"{same}/{total} int8 inputs identical"


def long_recording(folder):
    """A recording with quiet and loud hiss, tones, and a silent stretch."""
    parts = [noise(6.0, level=0.05, seed=1, low_hz=1500), tone(2600, 5.0, level=0.4),
             noise(4.0, level=0.3, seed=2, low_hz=1500), tone(700, 3.5, level=0.5, seed=4),
             np.zeros(3 * SR, np.float32), tone(2800, 2.2, level=0.5, seed=6)]
    return write(folder / "long.wav", int16_clip(np.concatenate(parts)) / 32768.0)


def predict_py_view(model_dir, folder):
    """:func:`long_recording`, with predict.py's events, window centres and
    window probabilities for it."""
    classifier = inference.Classifier(model_dir / "model_16k_int8.tflite")
    settings = event_settings.event_settings(classifier.meta)
    path = long_recording(folder)
    expected = inference.classify_file(classifier, path, settings)["events"]
    centres, probs, _, _ = inference.window_probabilities(classifier, path,
                                                          window_s=settings.window_s,
                                                          hop_s=settings.hop_s)
    return path, expected, centres, probs


def test_c_events_equal_predict_py_events(trained, tmp_path):
    _, model_dir, tool = trained
    path, expected, centres, probs = predict_py_view(model_dir, tmp_path)
    table = tmp_path / "probs.txt"
    table.write_text("".join(f"{float(c)!r} " + " ".join(f"{p:.9g}" for p in row) + "\n"
                             for c, row in zip(centres, probs)))
    result = subprocess.run([str(tool), "--events", str(table)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    got = [line.split() for line in result.stdout.splitlines()]
    assert expected, "the recording should hold events"
    assert [(g[0], round(float(g[1]), 3), round(float(g[2]), 3)) for g in got] == \
        [(e["class"], e["start_s"], e["end_s"]) for e in expected]
    for g, e in zip(got, expected):
        assert float(g[3]) == pytest.approx(e["peak_probability"], abs=1e-7)
        assert float(g[4]) == pytest.approx(e["mean_probability"], abs=1e-5)
    table.write_text("1.0 0.5 oops 0.1\n")
    result = subprocess.run([str(tool), "--events", str(table)], capture_output=True, text=True)
    assert result.returncode == 1 and f"{table}: line 1" in result.stderr


def test_c_api_rejects_bad_input_with_error_codes(trained, tmp_path):
    """api_test's checks (bad calls, events, the network's requantisation and
    convolutions against textbook loops) pass with the portable network and
    with its Cortex-M4 path (emulated instructions), whose first layer has
    its own code."""
    _, model_dir, _ = trained
    for flags in ([], ["-DAF_NET_DSP_EMULATE"]):
        program = compile_api_test(model_dir, tmp_path / "api_test", *flags)
        result = subprocess.run([str(program)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
        assert "0 failure(s)" in result.stdout and "FAIL" not in result.stdout
        assert "ok: net: 1 channel (a first layer): fused pooling" in result.stdout


def portable_rfft(model_dir, tmp_path, x):
    """The device's portable FFT of ``x``, packed as its callers expect."""
    program = compile_api_test(model_dir, tmp_path / "api_test")
    result = subprocess.run([str(program), "rfft", str(len(x))],
                            input="\n".join(str(float(v)) for v in x),
                            capture_output=True, text=True, check=True)
    return np.array(result.stdout.split(), np.float32)


def test_the_open_set_decision_in_c_is_predict_pys(trained, tmp_path):
    """af_decide gives open_set.decide's class for random calibrated
    probabilities, rules with and without a background class, and ties."""
    program = compile_api_test(trained[1], tmp_path / "api_test")
    rng = np.random.default_rng(3)
    labels = ["alarm", "other", "water"]
    cases = [(rng.dirichlet(np.ones(3) * 0.7).astype(np.float32), rng.uniform(0.3, 0.9), b)
             for b in (None, "other", "alarm") for _ in range(12)]
    cases.append((np.float32([0.4, 0.4, 0.2]), 0.0, None))  # a tie: the first class
    for probs, min_p, background in cases:
        rule = {"temperature": 1.0, "min_probability": float(min_p), "background": background}
        want = int(open_set.decide(probs, rule, labels)[0])
        index = labels.index(background) if background else -1
        got = subprocess.run([str(program), "decide", repr(float(np.float32(min_p))), str(index),
                              *[repr(float(p)) for p in probs]], capture_output=True, text=True,
                             check=True).stdout
        assert int(got) == want, (probs, min_p, background)
    bad = subprocess.run([str(program), "decide", "0.5", "3", "0.2", "0.3", "0.5"],
                         capture_output=True, text=True, check=True).stdout
    assert int(bad) == -1  # a background class the model does not have


@pytest.mark.parametrize("n", [64, 512])
def test_portable_fft_packs_as_cmsis_dsp_documents(trained, tmp_path, n):
    """CMSIS-DSP's arm_rfft_fast_f32 format: [Re 0, Re n/2, Re 1, Im 1, ...]."""
    x = np.random.default_rng(n).normal(size=n).astype(np.float32)
    ours = portable_rfft(trained[1], tmp_path, x)
    exact = np.fft.rfft(x.astype(np.float64))
    packed = np.concatenate([[exact[0].real, exact[-1].real],
                             np.stack([exact[1:-1].real, exact[1:-1].imag], 1).ravel()])
    assert np.max(np.abs(ours - packed)) < 1e-4 * np.max(np.abs(packed))


@pytest.mark.parametrize("n", [64, 512])
def test_portable_fft_equals_arm_cmsis_dsp(trained, tmp_path, n):
    """The same against Arm's own code, where its Python package is installed."""
    cmsisdsp = pytest.importorskip(
        "cmsisdsp", reason="optional: `pip install cmsisdsp` (builds from source, ~2 min) "
        "compares the device FFT with Arm's own")
    x = np.random.default_rng(n).normal(size=n).astype(np.float32)
    ours = portable_rfft(trained[1], tmp_path, x)
    instance = cmsisdsp.arm_rfft_fast_instance_f32()
    assert cmsisdsp.arm_rfft_fast_init_f32(instance, n) == 0
    arm = cmsisdsp.arm_rfft_fast_f32(instance, x.copy(), 0)
    assert np.max(np.abs(ours - arm)) < 1e-4 * np.max(np.abs(arm))


@pytest.mark.parametrize("kind, message", [
    ("missing", "cannot open"), ("text", "not a WAV file"),
    ("rate", "44100 Hz"), ("stereo", "2 channel(s)"), ("silent", "silent"),
    ("float", "not integer PCM")])
def test_host_tool_refuses_bad_files(trained, tmp_path, kind, message):
    _, _, tool = trained
    path = tmp_path / f"{kind}.wav"
    if kind == "text":
        path.write_text("this is not audio")
    elif kind == "rate":
        write(path, tone(440, 0.5, sr=44100), sr=44100)
    elif kind == "stereo":
        write(path, np.stack([tone(440, 0.5), tone(440, 0.5)], 1))
    elif kind == "silent":
        write(path, np.zeros(SR, np.float32))
    elif kind == "float":
        write(path, tone(440, 0.5), subtype="FLOAT")
    result = subprocess.run([str(tool), str(path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert str(path) in result.stderr and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_memory_report_and_readme_figure(trained):
    _, _, tool = trained
    out = subprocess.run([str(tool), "--memory"], capture_output=True, text=True,
                         check=True).stdout
    scratch = [line for line in out.splitlines() if line.startswith("scratch")][0]
    macro, function, window = [int(w) for w in scratch.replace("(", " ").replace(")", " ")
                               .split() if w.isdigit()]
    assert macro == function > 0 and window == (8 if features.FEATURES == "logmel_stream"
                                                 else macro)
    total = int(out.split("total:")[1].split()[0])
    readme = (ROOT / "device" / "README.md").read_text()  # the fixture has the default features
    assert f"`AF_MODEL_SCRATCH_BYTES`: {macro:,} bytes" in readme.replace("\n", " ")
    assert f"**{total:,}**" in readme


def test_golden_vectors_carry_short_clips_samples(trained, tmp_path):
    _, model_dir, tool = trained
    golden = json.loads((model_dir / "model_16k_golden.json").read_text())
    with_samples = [v for v in golden["vectors"] if "samples" in v]
    assert with_samples, "short golden clips carry their raw samples"
    meta = artifacts.load_model_metadata(model_dir)
    # the golden outputs are TFLite Micro's integers: LiteRT's reference kernels
    tflite = TFLiteModel(model_dir / "model_16k_int8.tflite", reference=True)
    for v in with_samples:
        y = np.array(v["samples"], np.float32) / 32768.0
        row = features.features_from_audio(y, meta["feature_config"])
        q = tflite.quantise_input(standardise(row[None, :],
                                                      meta["input_standardisation"]))[0]
        assert np.array_equal(q, np.array(v["int8_input"]))
        assert np.array_equal(tflite.run_raw(q), np.array(v["int8_output"]))
        wav = write(tmp_path / v["file"], y)  # the device front end on the same samples
        [c_input] = c_windows(tool, wav, as_float=False)
        assert np.max(np.abs(c_input - q)) <= 1 and np.mean(c_input == q) >= 0.999


def test_generated_headers_are_c99_and_cpp(trained, tmp_path):
    """A C firmware and a TFLite Micro C++ project include the same files:
    the model array, its header, the golden vectors and the front-end
    header compile as C99 and as C++17, without warnings."""
    _, model_dir, _ = trained
    probe = ('#include "model_16k_int8.h"\n#include "model_16k_golden.h"\n'
             '#include "model_16k_frontend.h"\n'
             "int main(void) { return kGoldenSampleCount[0] < 0 || kNumLabels < 2 || "
             "model_16k_int8_len == 0 || af_model_frontend.n_features != kNumFeatures; }\n")
    (tmp_path / "probe.c").write_text(probe)
    (tmp_path / "probe.cc").write_text(probe)
    device = ROOT / "device"
    library = [str(device / "src" / n) for n in ("af_frontend.c", "af_rfft.c", "af_events.c")]
    warnings = ["-Wall", "-Wextra", "-pedantic", "-Werror"]
    subprocess.run(["cc", "-std=c99", *warnings, f"-I{model_dir}", f"-I{device / 'include'}",
                    str(tmp_path / "probe.c"), "-x", "c", str(model_dir / "model_16k_int8.cc"),
                    "-x", "none", *library, "-lm", "-o", str(tmp_path / "c_probe")], check=True)
    if shutil.which("c++"):
        objects = []
        for source in library:  # the library is C: compiled as C, linked into C++
            objects.append(str(tmp_path / (Path(source).stem + ".o")))
            subprocess.run(["cc", "-std=c99", "-c", f"-I{device / 'include'}", source, "-o",
                            objects[-1]], check=True)
        subprocess.run(["c++", "-std=c++17", *warnings, f"-I{model_dir}",
                        f"-I{device / 'include'}", str(tmp_path / "probe.cc"),
                        str(model_dir / "model_16k_int8.cc"), *objects, "-o",
                        str(tmp_path / "cpp_probe")], check=True)


def test_output_probabilities_equal_predict_py(trained, tmp_path):
    _, model_dir, _ = trained
    program = compile_api_test(model_dir, tmp_path / "api_test")
    rng = np.random.default_rng(0)
    for temperature in (1.0, 0.7, 2.5):
        q = rng.integers(-128, 128, size=3)
        q[0] = -128  # a class at exactly 0 (clamped to 1e-7 before the log)
        result = subprocess.run([str(program), "probs", str(temperature), str(1 / 256), "-128",
                                 *map(str, q)], capture_output=True, text=True, check=True)
        got = np.array(result.stdout.split(), np.float32)
        expected = open_set.calibrate((q[None, :] + 128) / np.float32(256), temperature)[0]
        assert np.max(np.abs(got - expected)) < 1e-6


@pytest.mark.parametrize("header", ["model_16k_frontend.h", "model_16k_net.h", "model_16k_int8.h"])
def test_build_refuses_a_header_the_metadata_does_not_vouch_for(trained, tmp_path, header):
    """make checks every generated header (the network's too: round three,
    security 1) against model_16k.json."""
    _, model_dir, _ = trained
    other = tmp_path / "models"
    shutil.copytree(model_dir, other)
    with open(other / header, "a") as fh:
        fh.write("/* edited */\n")
    result = make_tool(other, tmp_path / "b")
    assert result.returncode != 0
    assert f"{header} is not the header that model_16k.json" in result.stderr
    assert "python model_conv.py" in result.stderr


def test_silent_clip_is_an_error_as_in_predict_py(trained, tmp_path):
    _, _, tool = trained
    wav = write(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32))  # exactly one window
    result = subprocess.run([str(tool), str(wav)], capture_output=True, text=True)
    assert result.returncode == 1 and "silent" in result.stderr


def test_model_with_more_classes_than_the_event_code_fails_to_build(tmp_path):
    labels = [f"c{i}" for i in range(20)]
    config = features.feature_config("logmel_patch")
    folder = tmp_path / "m"
    folder.mkdir()
    ev = events.EventSettings(window_s=2.0, hop_s=1.0, smooth_windows=3,
                              thresholds={x: 0.5 for x in labels}, min_event_s=1.0,
                              background=frozenset())
    (folder / "model_16k_frontend.h").write_text(frontend_header.frontend_header(
        config, scaling=None, input_scale=0.1, input_zero_point=0, labels=labels, events=ev,
        min_clip_s=features.MIN_CLIP_S))
    result = subprocess.run(["make", "-s", "-C", str(ROOT / "device"), f"MODEL_DIR={folder}",
                             f"BUILD_DIR={tmp_path / 'b'}"], capture_output=True, text=True)
    assert result.returncode != 0 and "-DAF_EVENTS_MAX_CLASSES=20" in result.stderr


# ----------------------------------------------------------------------------
# On an emulated Cortex-M4F (QEMU mps2-an386): the same input, and its cost.

from pipeline import emulation  # noqa: E402

needs_arm = pytest.mark.skipif(
    bool(emulation.missing_tools()),
    reason=f"needs {', '.join(emulation.missing_tools())}: {emulation.INSTALL}")


@pytest.fixture(scope="module")
def m4(trained):
    tmp, model_dir, _ = trained
    return emulation.build(model_dir, tmp / "m4")


@needs_arm
def test_m4_int8_inputs_equal_the_host_and_predict_py(trained, m4, tmp_path):
    """Every golden clip (and a recording of several windows): the emulated
    board gives the host tool's int8 input byte for byte, and predict.py's as
    closely as the host does."""
    _, model_dir, tool = trained
    golden = json.loads((model_dir / "model_16k_golden.json").read_text())
    clips = {v["file"]: np.array(v["samples"], np.int16) for v in golden["vectors"]
             if "samples" in v}
    expected = {v["file"]: np.array(v["int8_input"]) for v in golden["vectors"]
                if "samples" in v}
    assert clips, "the golden vectors carry short clips' samples"
    clips["recording.wav"] = int16_clip(np.concatenate(
        [tone(2600, 2.5, level=0.4), noise(2.0, level=0.2, seed=7)]))
    for name, samples in clips.items():
        board = emulation.run(m4, samples)
        host = c_windows(tool, write(tmp_path / name, samples / 32768.0), as_float=False)
        assert len(board["inputs"]) == len(host), name
        for got, want in zip(board["inputs"], host):
            np.testing.assert_array_equal(got, want)
        if name in expected:
            [got] = board["inputs"]
            assert np.max(np.abs(got - expected[name])) <= 1, name
            assert np.mean(got == expected[name]) >= 0.999, name
        assert all(n > 0 for n in board["instructions"])


@needs_arm
def test_m4_whole_detector_equals_the_host_tool_and_tflite_micro(trained, m4, tmp_path):
    """#35: front end, int8 network and events on the emulated Cortex-M4F
    (with its DSP instructions) give the host tool's `--stream --events`
    windows and events for the same recording, and TFLite Micro's int8
    output for every window's input."""
    from tflite_micro.python.tflite_micro import runtime
    _, model_dir, tool = trained
    samples = int16_clip(features.load_audio(long_recording(tmp_path), SR))
    board = emulation.run(m4, samples)
    host = subprocess.run([str(tool), "--stream", "--events"],
                          input=samples.astype("<i2").tobytes(), capture_output=True)
    assert host.returncode == 0, host.stderr
    lines = [line.split() for line in host.stdout.decode().splitlines()]
    windows = [[float(v) for v in line[1:]] for line in lines if line[0] == "window"]
    events = [line[1:] for line in lines if line[0] == "event"]
    assert events, "the recording should hold events"
    assert len(board["windows"]) == len(windows) >= 10
    np.testing.assert_allclose(board["windows"], windows, atol=2e-6)
    assert board["events"] == events
    micro = runtime.Interpreter.from_bytes((model_dir / "model_16k_int8.tflite").read_bytes())
    usable = [x for x in board["inputs"] if x is not None]
    assert len(usable) == len(board["outputs"]) > 0
    for x, got in zip(usable, board["outputs"]):
        micro.set_input(x.astype(np.int8)[None, :], 0)
        micro.invoke()
        np.testing.assert_array_equal(got, micro.get_output(0)[0].astype(int))
    detector = board["detector"]
    assert detector["net_instructions"] == sum(board["network_instructions"]) > 0
    assert 0 < detector["event_instructions"] < detector["net_instructions"]


@needs_arm
def test_no_double_precision_on_the_device_path(m4):
    """#35, 4: the library's objects for the M4F (front end, FFT, network,
    events) call no soft-double routine (__aeabi_d*) and no double maths
    (cos, sin, exp, log); the Makefile makes -Wdouble-promotion an error."""
    objects = sorted((m4.parent / "m4").glob("af_*.o"))
    assert {p.stem for p in objects} == {"af_frontend", "af_rfft", "af_events", "af_net"}
    symbols = subprocess.run(["arm-none-eabi-nm", "-u", *map(str, objects)], capture_output=True,
                             text=True, check=True).stdout.split()
    doubles = [s for s in symbols if s.startswith("__aeabi_d") or s in ("cos", "sin", "exp",
                                                                       "log", "pow", "sqrt")]
    assert not doubles, doubles


@needs_arm
def test_m4_reports_cost_and_memory(trained, m4):
    board = emulation.run(m4, int16_clip(noise(3.0, level=0.3, seed=2)))
    summary = board["summary"]
    assert summary["windows"] == 2 and summary["window_instructions"] == sum(board["instructions"])
    assert 0 < summary["stack_bytes"] < 16384 and summary["scratch_bytes"] > 0
    sizes = emulation.section_sizes(m4.parent)
    assert sizes["text"] > 1000 and sizes["bss"] == 0  # caller-owned state: no globals


@needs_arm
def test_m4_streaming_preset_computes_each_frame_once_in_little_ram(tmp_path):
    """logmel_stream on the emulated board: the host tool's int8 input byte
    for byte (the host's floats equal features.py's, see above), its frames
    computed while samples are pushed, and far less work per window and
    memory than the sample-ring presets keep."""
    recording = int16_clip(np.concatenate([tone(2600, 2.5, level=0.4), noise(2.3, level=0.2,
                                                                             seed=7)]))
    boards = {}
    for preset in ("logmel_stream", "logmel_patch"):
        model_dir, _ = header_only(tmp_path, preset)
        tool = build(model_dir, tmp_path / f"host_{preset}")
        board = emulation.run(emulation.build(model_dir, tmp_path / f"m4_{preset}"), recording)
        host = c_windows(tool, write(tmp_path / f"{preset}.wav", recording / 32768.0),
                         as_float=False)
        assert len(board["inputs"]) == len(host) == 4  # 0, 0.992, 2, 2.78 s (on the grid)
        for got, want in zip(board["inputs"], host):
            np.testing.assert_array_equal(got, want)
        boards[preset] = board["summary"]
    stream, ring = boards["logmel_stream"], boards["logmel_patch"]
    assert stream["push_instructions"] > 10 * ring["push_instructions"]  # frames while pushing
    assert stream["window_instructions"] * 10 < ring["window_instructions"]
    assert stream["state_bytes"] + stream["scratch_bytes"] < 32 * 1024 < ring["state_bytes"]


def test_c_library_and_features_py_agree_on_the_feature_version():
    """The C library states the FEATURE_VERSION it computes; the generated
    header carries the model's, and the library refuses a mismatch."""
    import re
    header = (ROOT / "device" / "include" / "af_frontend.h").read_text()
    assert int(re.search(r"#define AF_FEATURE_VERSION (\d+)", header).group(1)) == \
        features.FEATURE_VERSION


def test_stream_from_stdin_equals_the_wav_tool(trained, tmp_path):
    """`arecord -r 16000 -f S16_LE -c 1 | features --stream` works on raw
    PCM as it arrives: the same windows as the WAV path."""
    _, _, tool = trained
    samples = int16_clip(np.concatenate([tone(2600, 2.5, level=0.4), noise(3.2, seed=9)]))
    wav = write(tmp_path / "rec.wav", samples / 32768.0)
    piped = subprocess.run([str(tool), "--stream"], input=samples.astype("<i2").tobytes(),
                           capture_output=True, check=True).stdout.decode()
    from_file = subprocess.run([str(tool), str(wav)], capture_output=True, text=True,
                               check=True).stdout
    assert piped == from_file and len(piped.splitlines()) == 5


def test_stream_refuses_file_headers_and_lost_output(trained, tmp_path):
    """Round three, 7 and 8: a WAV, FLAC or Ogg file on stdin is not read as
    samples, and output lost to a full disk is not a success."""
    _, _, tool = trained
    samples = int16_clip(tone(2600, 2.5, level=0.4))
    for fmt, name in (("WAV", "WAV"), ("FLAC", "FLAC"), ("OGG", "Ogg")):
        path = write(tmp_path / f"rec.{fmt.lower()}", samples / 32768.0, fmt=fmt,
                     subtype="VORBIS" if fmt == "OGG" else "PCM_16")
        for args in (["--stream"], ["--stream", "--events"]):
            result = subprocess.run([str(tool), *args], input=path.read_bytes(),
                                    capture_output=True, text=False)
            assert result.returncode == 1 and not result.stdout
            assert f"a {name} file header".encode() in result.stderr
    with open("/dev/full", "w") as full:
        result = subprocess.run([str(tool), "--stream"], input=samples.astype("<i2").tobytes(),
                                stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 1 and b"write error" in result.stderr


def assert_net_equals_tflite_micro(tool, model_dir, clips):
    """features --net gives TFLite Micro's int8 output, exactly, for every
    window's int8 input of ``clips`` ({name: path}); returns how many
    windows were compared and how many had an unsaturated output."""
    from tflite_micro.python.tflite_micro import runtime
    micro = runtime.Interpreter.from_bytes((model_dir / "model_16k_int8.tflite").read_bytes())
    compared = unsaturated = 0
    for name, path in clips.items():
        inputs = c_windows(tool, path, as_float=False)
        result = subprocess.run([str(tool), "--net", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        outputs = [line.split() for line in result.stdout.splitlines()]
        assert len(outputs) == len(inputs), name
        for x, got in zip(inputs, outputs):
            if not len(x):
                assert got == [], name  # a silent window: nothing to classify
                continue
            micro.set_input(x.astype(np.int8)[None, :], 0)
            micro.invoke()
            expected = micro.get_output(0)[0].astype(int)
            np.testing.assert_array_equal(np.array(got, int), expected, err_msg=name)
            compared += 1
            unsaturated += int(expected.max() < 127)
    return compared, unsaturated


def test_c_network_equals_tflite_micro(trained, tmp_path):
    """features --net: the library's int8 interpreter (af_net.c) gives
    TFLite Micro's int8 output, exactly, for every window's int8 input."""
    _, model_dir, tool = trained
    clips = {**write_clips(tmp_path), "long": long_recording(tmp_path)}
    compared, unsaturated = assert_net_equals_tflite_micro(tool, model_dir, clips)
    assert compared >= 20 and unsaturated >= 3


def test_the_dsp_path_gives_the_portable_integers(trained, tmp_path):
    """#35: the Cortex-M4 path of af_net.c (SXTB16, SADD16 and SMLAD; here
    with C versions of those instructions, AF_NET_DSP_EMULATE) gives the
    portable path's int8 outputs exactly, on every window of several clips;
    the ARM build uses the real instructions."""
    _, model_dir, tool = trained
    result = subprocess.run(["make", "-s", "-C", str(ROOT / "device"), f"MODEL_DIR={model_dir}",
                             f"BUILD_DIR={tmp_path / 'dsp'}",
                             "CFLAGS=-std=c99 -O2 -Wall -Wextra -pedantic -DAF_NET_DSP_EMULATE"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    clips = {**write_clips(tmp_path), "long": long_recording(tmp_path)}
    windows = 0
    for path in clips.values():
        portable = subprocess.run([str(tool), "--net", str(path)], capture_output=True,
                                  text=True, check=True).stdout
        dsp = subprocess.run([str(tmp_path / "dsp" / "features"), "--net", str(path)],
                             capture_output=True, text=True, check=True).stdout
        assert dsp == portable and portable
        windows += len(portable.splitlines())
    assert windows >= 20
    if shutil.which("arm-none-eabi-gcc"):
        obj = tmp_path / "af_net_m4.o"
        subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
                        "-mfloat-abi=hard", "-O2", "-std=c99", f"-I{ROOT / 'device' / 'include'}",
                        "-c", str(ROOT / "device" / "src" / "af_net.c"), "-o", str(obj)],
                       check=True)
        code = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True,
                              text=True, check=True).stdout
        assert "smlad" in code and "sxtb16" in code


def test_c_network_runs_a_separable_cnn_as_tflite_micro(trained, tmp_path):
    """SEPARABLE=true: the depthwise convolutions in C equal TFLite Micro's."""
    tmp, _, _ = trained
    args = [f"--dataset={tmp / 'ds.npz'}", f"--model_dir={tmp_path / 'models'}",
            f"--report_dir={tmp_path / 'r'}"]
    train_16k.main(args + ["--epochs=4", "--augment=false", "--separable=true",
                           "--cnn_filters=4,8,8"])
    model_conv.main(args + ["--min_agreement=0"])
    tool = build(tmp_path / "models", tmp_path / "build")
    compared, _ = assert_net_equals_tflite_micro(tool, tmp_path / "models",
                                                 {"long": long_recording(tmp_path)})
    assert compared >= 5


def test_stream_events_equal_predict_py_events(trained, tmp_path):
    """`arecord ... | features --stream --events`: raw PCM on stdin through
    the front end, the int8 network and the event finder, all in C, gives
    predict.py's windows and events for the same recording."""
    _, model_dir, tool = trained
    path, expected, centres, probs = predict_py_view(model_dir, tmp_path)
    samples = int16_clip(features.load_audio(path, SR))
    result = subprocess.run([str(tool), "--stream", "--events"],
                            input=samples.astype("<i2").tobytes(), capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    lines = [line.split() for line in result.stdout.decode().splitlines()]
    windows = [line for line in lines if line[0] == "window"]
    assert [float(w[1]) for w in windows] == pytest.approx(list(centres), abs=1e-3)
    assert np.abs(np.array([w[2:] for w in windows], float) - probs).max() < 0.02
    got = sorted((line[1], float(line[2]), float(line[3])) for line in lines
                 if line[0] == "event")
    assert expected, "the recording should hold events"
    assert got == sorted((e["class"], e["start_s"], e["end_s"]) for e in expected)


def test_host_tool_names_an_operation_it_cannot_run(trained, tmp_path, monkeypatch):
    """A model whose network the host interpreter lacks still builds (the
    front end works), and --stream --events says which operation is missing."""
    from pipeline import c_network
    _, model_dir, _ = trained

    def unsupported(model_bytes):
        raise c_network.UnsupportedNetwork("operation SQUARED_DIFFERENCE")

    monkeypatch.setattr(c_network, "network_layers", unsupported)
    other = edited_model_dir(model_dir, tmp_path, lambda _: c_network.network_header(
        (model_dir / "model_16k_int8.tflite").read_bytes(), source_name="model_16k_int8.tflite"))
    tool = build(other, tmp_path / "b")
    samples = int16_clip(tone(2600, 2.5, level=0.4)).astype("<i2").tobytes()
    result = subprocess.run([str(tool), "--stream", "--events"], input=samples,
                            capture_output=True)
    assert result.returncode == 1 and b"SQUARED_DIFFERENCE" in result.stderr
    assert subprocess.run([str(tool), "--stream"], input=samples,
                          capture_output=True).returncode == 0
    (other / "model_16k_net.h").unlink()  # a model converted before the host tool ran networks
    tool = build(other, tmp_path / "c")
    result = subprocess.run([str(tool), "--stream", "--events"], input=samples,
                            capture_output=True)
    assert result.returncode == 1 and b"run `python model_conv.py`" in result.stderr


@pytest.mark.parametrize("rows", [
    "0.5 0.1 0.2 0.7\n1.5 nan 0.2 0.7\n",     # a NaN probability
    "0.5 0.1 0.2 0.7\n1.5 -0.1 0.2 0.7\n",    # a negative one
    "0.5 0.1 0.2 0.7\n1.5 0.1 1.2 0.7\n",     # one above 1
    "0.5 0.1 0.2 0.7\ninf 0.1 0.2 0.7\n",     # an infinite centre
    "1.5 0.1 0.2 0.7\n0.5 0.1 0.2 0.7\n",     # centres going back
])
def test_events_tool_refuses_impossible_windows(trained, tmp_path, rows):
    """Round three, 9: the events of impossible windows are an error naming
    the line, not 'too many events', `alarm inf inf` or events dropped."""
    _, _, tool = trained
    path = tmp_path / "probs.txt"
    path.write_text(rows)
    result = subprocess.run([str(tool), "--events", str(path)], capture_output=True, text=True)
    assert result.returncode == 1 and not result.stdout
    assert "line 2: probabilities must be in [0, 1] and centres finite" in result.stderr


def edited_model_dir(model_dir, tmp_path, edit):
    """A copy of ``model_dir`` whose network header ``edit`` changed, with
    the metadata vouching for the edited header (a consistent forgery)."""
    import hashlib
    other = tmp_path / "forged"
    shutil.copytree(model_dir, other)
    net = other / "model_16k_net.h"
    old_sum = hashlib.sha256(net.read_bytes()).hexdigest()
    net.write_text(edit(net.read_text()))
    meta = other / "model_16k.json"
    meta.write_text(meta.read_text().replace(old_sum,
                                             hashlib.sha256(net.read_bytes()).hexdigest()))
    return other


def make_tool(model_dir, build_dir):
    return subprocess.run(["make", "-s", "-C", str(ROOT / "device"), f"MODEL_DIR={model_dir}",
                           f"BUILD_DIR={build_dir}"], capture_output=True, text=True)


def test_a_network_of_another_size_does_not_build_or_run(trained, tmp_path):
    """Round three, security 1: a net header with another number of outputs
    fails to compile (it overflowed the caller's buffer), and layers that do
    not chain are refused by af_net_run before anything is read or written."""
    import re
    _, model_dir, _ = trained
    nine = edited_model_dir(model_dir, tmp_path / "nine",
                            lambda text: re.sub(r"MODEL_NET_OUTPUTS = \d+", "MODEL_NET_OUTPUTS = 9",
                                                text))
    result = make_tool(nine, tmp_path / "b9")
    assert result.returncode != 0 and "net_writes_one_value_per_label" in result.stderr

    def widen_second_layer(text):  # the second layer claims a larger input than the first wrote
        rows = text.split("\n    {AF_NET_")
        rows[2] = re.sub(r"^(\w+, \{)(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + 1}",
                         rows[2])
        return "\n    {AF_NET_".join(rows)

    broken = edited_model_dir(model_dir, tmp_path / "chain", widen_second_layer)
    assert make_tool(broken, tmp_path / "bc").returncode == 0
    wav = write(tmp_path / "clip.wav", tone(2600, 2.0, level=0.4))
    result = subprocess.run([str(tmp_path / "bc" / "features"), "--net", str(wav)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "does not fit this model's header" in result.stderr
