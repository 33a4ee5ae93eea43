"""MODEL_CARD.md: what a trained model is for, what it was trained on, how
it did and where it is weak, written from the model metadata alone
(model_conv.py writes it; calibrate.py rewrites it with its figures)."""

import html
import re
from pathlib import Path

CARD_NAME = "MODEL_CARD.md"


def _text(value):
    """Free text from the user's data (source names, paths) as inert
    markdown: one line, HTML escaped, markdown's markup characters escaped,
    so a name can neither start a heading nor carry a tag or a link."""
    flat = " ".join(str(value).split())
    return re.sub(r"([\\`*_\[\]{}()#+!|~>-])", r"\\\1", html.escape(flat, quote=False))


def _pct(value):
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "n/a"


def _f1(value):
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _data_section(meta):
    data = meta.get("dataset", {})
    lines = ["## Data", "",
             f"Trained on {_text(data.get('path', '?'))} ({data.get('clips', '?')} clips; "
             f"sha256 `{str(data.get('sha256', '?'))[:12]}…`)."]
    per_class = data.get("per_class")
    if per_class:
        lines += ["", "| class | clips |", "|---|---|"]
        lines += [f"| {label} | {count} |" for label, count in per_class.items()]
    if data.get("groups"):
        lines.append(f"\n{data['groups']} groups (source recordings): clips of one group never "
                     "sit on both sides of a split.")
    sources = data.get("sources") or {}
    if len(sources) > 1:
        lines.append(f"{len(sources)} sources: " + ", ".join(
            f"{_text(name)} ({count})" for name, count in sorted(sources.items())) + ".")
    split = meta.get("split", {})
    lines.append(f"\nSplit: {len(split.get('train', []))} training, "
                 f"{len(split.get('validation', []))} validation (early stopping), "
                 f"{len(split.get('test', []))} test clips.")
    return lines


def _measured_section(meta):
    test = meta.get("metrics", {}).get("test") or {}
    figures = meta.get("conversion", {}).get("figures")
    lines = ["## How it was measured", ""]
    if figures:  # one figure: the clips decided as predict.py decides them
        lines.append(f"- Held-out test split ({figures['test_clips']} clips, decided by "
                     f"{_text(figures.get('decided_by', 'their dataset rows'))}): int8 model "
                     f"macro-F1 {_f1(figures['int8_macro_f1'])}, Keras "
                     f"{_f1(figures['keras_macro_f1'])}; decisions equal on "
                     f"{_pct(figures['agreement'])} of the clips.")
    else:
        lines.append(f"- Held-out test split (Keras): macro-F1 {_f1(test.get('macro_f1'))}, "
                     f"accuracy {_f1(test.get('accuracy'))}; per class: " + ", ".join(
                         f"{k} {_f1(v.get('f1'))}"
                         for k, v in (test.get("per_class") or {}).items()))
    cv = meta.get("metrics", {}).get("cross_validation")
    if cv:
        kind = "leave-one-source-out" if cv.get("kind") == "source" else f"{cv.get('kind')} CV"
        lines.append(f"- {kind}: pooled macro-F1 {_f1(cv['pooled']['macro_f1'])}; per "
                     + ("source" if cv.get("kind") == "source" else "fold") + ": " + ", ".join(
                         f"{_text(f['name'])} {_f1(f['macro_f1'])}" for f in cv["folds"]))
    calibration = meta.get("calibration")
    if calibration:
        lines.append(f"- Calibrated by calibrate.py for {calibration.get('target_fa_per_hour')} "
                     f"false activation(s) per hour on {calibration.get('hours', 0):.1f} h of "
                     f"stream ({calibration.get('distinct_background_s', 0) / 60:.1f} min of "
                     f"distinct background), {calibration.get('window_s')} s windows every "
                     f"{calibration.get('hop_s')} s:")
        for label, row in (calibration.get("per_class") or {}).items():
            lines.append(f"  - {label}: threshold {row.get('threshold')}, recall "
                         f"{_f1(row.get('recall'))}, {row.get('false_per_hour', 0):.2f} false "
                         "activations per hour")
    else:
        events = meta.get("events", {})
        lines.append(f"- Not calibrated: thresholds are the training default "
                     f"({events.get('threshold')}); false activations per hour are not "
                     "measured. Run `python calibrate.py` with your own background audio.")
    return lines


def _limits_section(meta):
    rate = meta.get("feature_config", {}).get("sample_rate", "?")
    lines = ["## Intended use and known limits", "",
             f"For detecting the classes above in audio at {rate} Hz (other rates are "
             "resampled), window by window, on a "
             "device or a computer. It is not a safety device: a missed alarm is possible.",
             "- Sounds it has never heard are forced into one of its classes unless the "
             "open-set rule is on (`--open_set_class`).",
             "- Microphones and rooms it has never heard are its weak point; measure with "
             "`train_16k.py --folds=source` before trusting it somewhere new."]
    cv = meta.get("metrics", {}).get("cross_validation")
    if cv and cv.get("kind") == "source":
        weak = sorted(cv["folds"], key=lambda f: f["macro_f1"])[:3]
        lines.append("- Weakest when left out of training: " + ", ".join(
            f"{_text(f['name'])} (macro-F1 {_f1(f['macro_f1'])})" for f in weak) + ".")
    return lines


def _size_line(meta):
    figures = meta.get("conversion", {}).get("figures")
    if not figures:
        return (f"{meta.get('model_type', '?')} model, not converted yet: the int8 model, its "
                "size and its test figures come with `python model_conv.py`.")
    return (f"{meta.get('model_type', '?')} with {figures.get('parameters', '?')} parameters, "
            f"{figures.get('multiply_adds', 0) / 1e6:.2f} M multiply-adds per window; "
            f"int8 model {figures.get('int8_bytes', 0) / 1024:.1f} KB of flash, TensorFlow "
            f"Lite Micro arena {figures.get('arena_bytes', 0) / 1024:.1f} KB."
            + (f" Speed: {figures['int8_ms_per_window']:.2f} ms per window for the int8 model "
               f"(LiteRT, one clip at a time, on {figures.get('machine', '?')})."
               if "int8_ms_per_window" in figures else ""))


def _backbone_lines(meta):
    """Where a pretrained-tier model's backbone comes from."""
    teacher = meta.get("teacher")
    if not teacher:
        return []
    return ["", f"Backbone: the pretrained tagger `{teacher.get('file')}` (sha256 "
                f"`{str(teacher.get('sha256'))[:12]}…`), rebuilt in Keras with its weights; "
                "only the head was trained here. Its licence and training data (AudioSet) "
                "come with it: see the folder it was taken from."]


def model_card(meta):
    """The card's markdown text.

    Parameters
    ----------
    meta : dict
        The raw model metadata (model_16k.json as JSON).
    """
    labels = meta.get("labels", [])
    events = meta.get("events", {})
    background = events.get("background", [])
    detects = [x for x in labels if x not in background]
    feature = meta.get("feature_config", {})
    lines = ["# Model card (generated by train_16k.py and model_conv.py; calibrate.py updates "
             "it)", "",
             "## What it detects", "",
             f"Classes: {', '.join(labels)}. Events are formed for "
             f"{', '.join(detects) or 'no class'}"
             + (f"; {', '.join(background)} is background." if background else "."),
             f"Input: {feature.get('preset')} features (feature version "
             f"{feature.get('version')}) of {events.get('window_s')} s windows every "
             f"{events.get('hop_s')} s at {feature.get('sample_rate')} Hz.", "",
             *_data_section(meta), "", *_measured_section(meta), "",
             "## Size", "", _size_line(meta),
             *_backbone_lines(meta), "",
             *_limits_section(meta)]
    return "\n".join(lines) + "\n"


def card_path(model_dir):
    return Path(model_dir) / CARD_NAME
