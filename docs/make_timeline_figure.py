"""The README's timeline picture: a 40 s recording stitched from the demo
clips (other, alarm, other, water, other), run through predict.py.

    python make_dataset_16k.py --demo && python train_16k.py && python model_conv.py
    python docs/make_timeline_figure.py          # -> docs/timeline.png
    (other predict.py options, e.g. --model_dir=DIR, are passed on)
"""

import sys
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
import predict  # noqa: E402  (a doc helper, not a stage: it runs predict.py's main)

DEMO = ROOT / "data" / "demo"


def clips(label, count):
    return [features.load_audio(p, 16000) for p in sorted((DEMO / label).glob("*.wav"))[:count]]


def main():
    parts = [*clips("other", 4), *clips("alarm", 3), *clips("other", 4), *clips("water", 3),
             *clips("other", 4)]
    recording = ROOT / "data" / "demo_recording.wav"
    soundfile.write(recording, np.concatenate(parts), 16000, subtype="PCM_16")
    return predict.main([str(recording), f"--timeline={ROOT / 'docs' / 'timeline.png'}",
                         *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
