"""Shared fixtures: small synthetic clips written to temporary folders."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 16000
# What makes a test slow: training, converting, building C or emulating a
# board (seconds to minutes each). A test is marked ``slow`` when its own
# source or that of any fixture it uses (however deep) makes one of these calls.
SLOW_CALLS = ("train_16k.main", "model_conv.main", "training.fit(", "conversion.convert(",
              "conversion.best_int8(", "model.fit(", "make_tool(", "compile_api_test(",
              "emulation.", "readme_block(", "readme_recipe(", "subprocess.run([\"make\"")


def _slow_source(function, seen):
    """Whether ``function``, or a helper of the test modules it calls, makes
    one of SLOW_CALLS."""
    import inspect
    import re
    if function in seen:
        return False
    seen.add(function)
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if any(call in source for call in SLOW_CALLS):
        return True
    helpers = (getattr(function, "__globals__", {}).get(name)
               for name in set(re.findall(r"\b(\w+)\(", source)))
    return any(_slow_source(h, seen) for h in helpers if inspect.isfunction(h)
               and (h.__module__ == "conftest" or h.__module__.startswith("test_")))


def pytest_collection_modifyitems(items):
    """Mark the tests that train, convert, build or emulate (directly or
    through a fixture) as ``slow``, so ``pytest -m "not slow"`` is a quick
    check; CI runs all."""
    for item in items:
        seen = set()
        functions = [getattr(item, "function", None)]
        for defs in getattr(item, "_fixtureinfo", None) and \
                item._fixtureinfo.name2fixturedefs.values() or ():
            functions += [d.func for d in defs]
        if any(_slow_source(f, seen) for f in functions if f is not None):
            item.add_marker(pytest.mark.slow)


def stage_settings(stage, argv=()):
    """A stage's settings (defaults, then ``argv``), read from its source:
    tests run pipeline/ functions with them, never the stage itself."""
    from pipeline import settings
    return settings.stage_settings(ROOT / stage, argv)


def train_settings(argv=()):
    return stage_settings("train_16k.py", argv)


def tone(freq_hz, seconds=1.0, sr=SR, level=0.5, noise=0.01, seed=0):
    """A sine tone with a little white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (level * np.sin(2 * np.pi * freq_hz * t)
            + noise * rng.standard_normal(t.size)).astype(np.float32)


def noise(seconds=1.0, sr=SR, level=0.3, seed=0, low_hz=None):
    """White noise, optionally low-passed at ``low_hz`` by an FFT mask."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * sr))
    if low_hz:
        spec = np.fft.rfft(x)
        spec[np.fft.rfftfreq(x.size, 1 / sr) > low_hz] = 0
        x = np.fft.irfft(spec, n=x.size)
    return (level * x / np.abs(x).max()).astype(np.float32)


def write(path, audio, sr=SR, subtype="PCM_16", fmt=None):
    import soundfile as sf
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype, format=fmt)
    return path


def make_class_folder(root, per_class=8, seconds=1.0, classes=("hiss", "tone")):
    """An easy two- or three-class folder: high tones, low hiss, mid tones."""
    recipes = {
        "tone": lambda i: tone(2500 + 150 * i, seconds, seed=i),
        "hiss": lambda i: noise(seconds, seed=100 + i, low_hz=1500),
        "beep": lambda i: tone(600 + 40 * i, seconds, seed=200 + i),
    }
    for label in classes:
        for i in range(per_class):
            write(Path(root) / label / f"{label}_{i}.wav", recipes[label](i))
    return Path(root)


@pytest.fixture
def easy_folder(tmp_path):
    return make_class_folder(tmp_path / "clips")


def make_feature_dataset(path, per_class=(12, 12, 12), clips_per_group=2, seed=0,
                         label_names=("alarm", "other", "water"), preset=None, n_sources=0):
    """A dataset file of easy, separable feature vectors (no audio needed):
    class k has a bump at its own bins. Groups hold ``clips_per_group`` clips;
    with ``n_sources`` the groups are dealt to that many sources in turn.
    ``preset`` defaults to features.FEATURES."""
    import features
    from pipeline import artifacts
    config = features.feature_config(preset)
    rng = np.random.default_rng(seed)
    rows, labels, paths, groups = [], [], [], []
    shape = config.input_shape or (1, config.n_features)  # (frames, bands) for 2-D presets
    for k, count in enumerate(per_class):
        centre = (k + 1) * shape[1] // (len(per_class) + 1)
        half = max(shape[1] // 10, 1)
        for i in range(count):
            v = 0.1 * rng.random(shape)
            v[:, max(centre - half, 0):centre + half] += 1.0  # class k: its own bands
            rows.append(((v - v.min()) / (v.max() - v.min())).ravel())
            labels.append(k)
            paths.append(f"clips/{label_names[k]}/{i}.wav")
            groups.append(f"{label_names[k]}-rec{i // clips_per_group}")
    sources = ([f"src{int(g.rsplit('rec', 1)[1]) % n_sources}" for g in groups]
               if n_sources else None)
    artifacts.save_dataset(path, np.array(rows, np.float32), labels,
                           label_names=list(label_names[:len(per_class)]), paths=paths,
                           groups=groups, config=config, sources=sources)
    return path


def golden_clip(seconds=1.5, sr=SR):
    """The clip whose features are pinned in tests/golden/features.json: a
    tone, a rising chirp and noise from integer arithmetic (no random
    generator, whose stream could change with numpy), with a quiet lead-in
    so that trimming matters."""
    n = int(seconds * sr)
    k = np.arange(n, dtype=np.int64)
    hashed = (k * k * 1103515245 + k * 12345) % 2147483647
    pseudo_noise = hashed / 2147483647.0 - 0.5
    t = k / sr
    y = (0.4 * np.sin(2 * np.pi * 1000.0 * t)
         + 0.3 * np.sin(2 * np.pi * (300.0 + 1500.0 * t) * t)
         + 0.2 * pseudo_noise)
    y[: sr // 4] *= 0.01  # quiet lead-in
    return y.astype(np.float32)
