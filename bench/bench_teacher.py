"""What a pretrained AudioSet tagger knows about our classes, before any
training of ours: zero-shot (teacher.CLASS_MAP) and a linear probe on its
embeddings, by leave-one-source-out and grouped 5-fold CV.

    python bench/bench_teacher.py TEACHER --manifest=CSV [--out=reports/teacher.md]
        [--reference=true]

TEACHER is a teacher folder (e.g. ../shared/models/efficientat_mn04_as). Each
clip's scores and embedding are computed once and cached in CACHE_DIR. With
--reference (an EfficientAT folder that ships ``mel_reference.py``), it
first checks features.efficientat_logmel against that reference and the
Keras backbone (pipeline/tflite_keras.py) against the TFLite file on real
clips, and prints the largest differences.
"""

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import features  # noqa: E402
from pipeline import clips, evaluation, files, settings, splits, teacher  # noqa: E402
from pipeline.progress import Progress  # noqa: E402

MANIFEST = None                # CSV with path,label,group,source (dev16k's manifest)
OUT = "reports/teacher.md"     # the tables, as markdown
CACHE_DIR = "reports/cache"    # teacher outputs of every clip, computed once
REFERENCE = False              # also check the front end and the Keras backbone on real clips
REFERENCE_CLIPS = 20           # clips for that check
FOLDS = 5                      # grouped, stratified CV folds of the linear probe
PROBE_C = 1.0                  # inverse regularisation of the logistic-regression probe
SEED = 42                      # folds


def probe_predictions(x, labels, split_list, *, c):
    """Pooled held-out predictions of a standardised logistic regression
    (balanced class weights) trained on each split's training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    pred = np.full(len(labels), -1)
    for split in split_list:
        train = np.concatenate([split.train, split.validation])
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=c, class_weight="balanced", max_iter=2000))
        model.fit(x[train], labels[train])
        pred[split.test] = model.predict(x[split.test])
    return pred


def per_source_table(labels, pred, sources, names):
    """Markdown rows: macro-F1 and accuracy of each source's clips."""
    lines = ["| source | clips | accuracy | macro-F1 of its classes |", "|---|---|---|---|"]
    for source in sorted(set(sources)):
        rows = np.flatnonzero(np.asarray(sources) == source)
        m = evaluation.classification_metrics(labels[rows], pred[rows], names)
        lines.append(f"| {source[:60]} | {len(rows)} | {m['accuracy']:.3f} | "
                     f"{m['macro_f1']:.3f} |")
    return lines


def summary(title, labels, pred, names):
    m = evaluation.classification_metrics(labels, pred, names)
    per_class = " / ".join(f"{n} {m['per_class'][n]['f1']:.2f}" for n in names)
    precision = " / ".join(f"{n} {m['per_class'][n]['precision']:.2f}" for n in names)
    return (f"| {title} | {m['macro_f1']:.3f} | {m['accuracy']:.3f} | {per_class} | "
            f"{precision} |")


def reference_check(folder, found, n):
    """Largest differences of our front end and Keras backbone against the
    teacher folder's own reference, on ``n`` clips spread over the set."""
    sys.path.insert(0, str(folder))
    import mel_reference
    from pipeline import tflite_keras
    tutor = teacher.Teacher(folder)
    config = features.feature_config("efficientat")
    chosen = [found[k] for k in np.linspace(0, len(found) - 1, n).astype(int)]
    mel_diff, out_diff = 0.0, {}
    backbone = tflite_keras.keras_model(tutor.model_path, (1, 128, config.patch_frames))
    for clip in chosen:
        y = features.load_audio(clip.path, config.sample_rate)
        mel_diff = max(mel_diff, float(np.abs(features.efficientat_logmel(y, config)
                                              - mel_reference.log_mel(y)).max()))
        row = features.features_from_audio(y, config)
        mel = row.reshape(config.input_shape).T[None, None]
        ours = backbone.predict(mel, verbose=0)
        theirs = tutor._runner(mel=mel)
        for key in ("logits", "embedding"):
            out_diff[key] = max(out_diff.get(key, 0.0),
                                float(np.abs(ours[key] - theirs[key]).max()))
    return (f"Front end and backbone on {n} real clips: features.efficientat_logmel vs "
            f"mel_reference.log_mel max |diff| {mel_diff:.2e}; Keras backbone vs the TFLite "
            f"file: logits {out_diff['logits']:.2e}, embedding {out_diff['embedding']:.2e} "
            "(max |diff|)")


def main(argv=None):
    parser = settings.parser_from_constants(globals(), __doc__)
    parser.add_argument("teacher", help="teacher folder (a .tflite tagger and its class list)")
    cfg = settings.parse_settings(globals(), argv, parser)
    if not cfg.manifest:
        raise SystemExit("pass --manifest=CSV (groups and sources come from it)")
    found, _ = clips.clips_from_manifest(cfg.manifest)
    names = sorted({c.label for c in found})
    labels = np.array([names.index(c.label) for c in found])
    groups = [c.group for c in found]
    sources = [c.source for c in found]
    tutor = teacher.Teacher(cfg.teacher)
    lines = [f"# Teacher {tutor.model_path.name} ({tutor.kind} input), {len(found)} clips, "
             f"{len(set(sources))} sources, manifest {cfg.manifest}", ""]
    if cfg.reference:
        lines += [reference_check(Path(cfg.teacher), found, cfg.reference_clips), ""]
        print(lines[-2], flush=True)

    started = time.perf_counter()
    Path(cfg.cache_dir).mkdir(parents=True, exist_ok=True)
    with Progress(len(found), "teacher outputs", "clip") as bar:
        scores, embedding = teacher.clip_outputs(
            tutor, [c.path for c in found], cache=teacher.clip_cache_path(cfg.cache_dir, tutor),
            progress=bar)
    seconds = time.perf_counter() - started
    indices, background = teacher.class_indices(teacher.CLASS_MAP, tutor.class_names, names)
    zero = teacher.zero_shot(scores, indices, background, names).argmax(axis=1)

    loso = list(splits.source_splits(labels, groups, sources, val_fraction=0.2, seed=cfg.seed))
    cv = list(splits.cv_splits(labels, groups, cfg.folds, val_fraction=0.2, seed=cfg.seed))
    probe_loso = probe_predictions(embedding, labels, loso, c=cfg.probe_c)
    probe_cv = probe_predictions(embedding, labels, cv, c=cfg.probe_c)
    logit_loso = probe_predictions(np.log(scores / (1 - scores + 1e-7) + 1e-7), labels, loso,
                                   c=cfg.probe_c)
    lines += [f"Teacher outputs of every clip: {seconds:.1f} s (cached in {cfg.cache_dir}).", "",
              "| method | macro-F1 | accuracy | per-class F1 | per-class precision |",
              "|---|---|---|---|---|",
              summary("zero-shot (CLASS_MAP; no training; every clip)", labels, zero, names),
              summary("linear probe on embeddings, LOSO", labels, probe_loso, names),
              summary("linear probe on logits, LOSO", labels, logit_loso,
                      names),
              summary(f"linear probe on embeddings, grouped {cfg.folds}-fold CV", labels,
                      probe_cv, names), "",
              "Zero-shot per source:", "", *per_source_table(labels, zero, sources, names), "",
              "Linear probe (embeddings), LOSO, per held-out source:", "",
              *per_source_table(labels, probe_loso, sources, names), ""]
    text = "\n".join(lines)
    files.write_text(Path(cfg.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
