"""Pin the features of one synthetic clip per preset for test_features.py.

    python tests/make_golden_features.py

Run it only after bumping FEATURE_VERSION in features.py: it refuses to
overwrite the values pinned for the current version, because firmware and
stored models depend on features staying what that version number says.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import features  # noqa: E402
from conftest import golden_clip  # noqa: E402
from pipeline import files  # noqa: E402

GOLDEN = Path(__file__).with_name("golden") / "features.json"


def golden_values():
    """{preset: {"config": ..., "features": [...]}} for the current code."""
    y = golden_clip()
    pinned = {}
    for preset in features.PRESETS:
        config = features.feature_config(preset)
        vector = features.features_from_audio(y, config)
        pinned[preset] = {"config": config.to_dict(),
                          "features": [round(float(v), 6) for v in vector]}
    return pinned


def main():
    presets = golden_values()
    if GOLDEN.is_file():
        old = json.loads(GOLDEN.read_text(encoding="utf-8"))
        if old["feature_version"] == features.FEATURE_VERSION:
            new = {k: v for k, v in presets.items() if k not in old["presets"]}
            if not new:
                raise SystemExit(f"{GOLDEN} already pins FEATURE_VERSION "
                                 f"{features.FEATURE_VERSION}. Bump FEATURE_VERSION in "
                                 "features.py when the features change, then run this again.")
            presets = {**old["presets"], **new}  # a new preset: pinned ones stay as they are
            print(f"added preset(s) {', '.join(new)}")
    files.write_json(GOLDEN, {"feature_version": features.FEATURE_VERSION, "presets": presets})
    print(f"wrote {GOLDEN} for FEATURE_VERSION {features.FEATURE_VERSION}")


if __name__ == "__main__":
    main()
