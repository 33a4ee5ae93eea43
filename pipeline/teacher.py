"""A pretrained AudioSet tagger as a teacher: its class scores and
embedding for clips or feature patches, cached by content, and its AudioSet
classes mapped to the project's classes.

Two kinds of TFLite tagger are known, told apart by their input:

- ``mel``: EfficientAT's MobileNetV3 taggers (e.g. mn04_as), exported with a
  ``serving_default`` signature ``mel`` (B, 1, 128, T) -> ``logits`` (B, 527),
  ``embedding``; fed the ``efficientat`` features of features.py at 32 kHz;
- ``waveform``: YAMNet, 15600 samples at 16 kHz (0.975 s) -> 521 scores; its
  embedding is the input of its last fully connected layer.

A teacher is a folder holding one ``.tflite`` file and its class list (a CSV
with a ``display_name`` column, in output order), or the ``.tflite`` file
itself with the CSV beside it. Nothing is downloaded: the README says where
to get them.
"""

import csv
import difflib
import hashlib
from pathlib import Path

import numpy as np

import features
from pipeline.errors import PipelineError
from pipeline.files import file_sha256, write_npz

# The project's classes as AudioSet display names (edit to add a class or a
# name): a class scores the largest of its names' probabilities; the one
# class of a model's labels not listed here (e.g. "other") scores the rest.
CLASS_MAP = {
    "water": ["Water", "Water tap, faucet", "Sink (filling or washing)",
              "Bathtub (filling or washing)", "Toilet flush", "Rain", "Rain on surface",
              "Raindrop", "Stream", "Waterfall", "Pour", "Trickle, dribble", "Gush",
              "Drip", "Liquid", "Fill (with liquid)", "Splash, splatter"],
    "alarm": ["Alarm", "Smoke detector, smoke alarm", "Fire alarm", "Alarm clock", "Siren",
              "Civil defense siren", "Buzzer", "Beep, bleep", "Telephone bell ringing",
              "Ringtone", "Police car (siren)", "Ambulance (siren)",
              "Fire engine, fire truck (siren)", "Emergency vehicle", "Car alarm",
              "Reversing beeps"],
}
YAMNET_WINDOW = 15600         # YAMNet: samples per frame at 16 kHz
YAMNET_HOP = 7800             # YAMNet: hop between frames (its own 0.48 s)
MIN_SECONDS = 0.5             # shorter clips are zero-padded (as EfficientAT's evaluation does)
CACHE_VERSION = 1             # bump when what a cached output is changes


def teacher_files(path):
    """The ``.tflite`` file and class CSV of a teacher folder or file."""
    path = Path(path)
    if path.is_dir():
        models = sorted(path.glob("*.tflite"))
        if len(models) != 1:
            raise PipelineError(f"{path}: expected one .tflite teacher model in the folder, "
                                f"found {len(models)}")
        model = models[0]
    elif path.suffix == ".tflite" and path.is_file():
        model = path
    else:
        raise PipelineError(f"{path}: no teacher there. Pass --teacher=FOLDER holding a "
                            "pretrained tagger's .tflite file and class list (README: "
                            "'Best model on real recordings')")
    lists = [p for p in sorted(model.parent.glob("*.csv")) if _is_class_list(p)]
    if len(lists) != 1:
        raise PipelineError(f"{model.parent}: expected one class list (CSV with a "
                            f"display_name column) beside {model.name}, found {len(lists)}")
    return model, lists[0]


def _is_class_list(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return "display_name" in (csv.DictReader(handle).fieldnames or [])


def class_names(path):
    """The display names of a class list CSV, in output order."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [row["display_name"] for row in csv.DictReader(handle)]


def class_indices(class_map, names, labels):
    """``class_map`` (class -> AudioSet names) as class -> output indices,
    checked: every name must exist, every mapped class must be one of
    ``labels``, and exactly one label must be left unmapped (the background).

    Returns
    -------
    dict str -> list of int, and the background label
    """
    position = {name: k for k, name in enumerate(names)}
    unknown = [n for names_ in class_map.values() for n in names_ if n not in position]
    if unknown:
        hints = [f"{n!r} (closest: {', '.join(difflib.get_close_matches(n, names, 2)) or '-'})"
                 for n in unknown]
        raise PipelineError(f"teacher.CLASS_MAP: not a class of this teacher: {'; '.join(hints)}")
    extra = [c for c in class_map if c not in labels]
    if extra:
        raise PipelineError(f"teacher.CLASS_MAP: classes {extra} are not among the labels "
                            f"{labels}")
    rest = [c for c in labels if c not in class_map]
    if len(rest) != 1:
        raise PipelineError(f"teacher.CLASS_MAP must leave exactly one background class "
                            f"unmapped; unmapped: {rest}")
    return {c: [position[n] for n in class_map[c]] for c in class_map}, rest[0]


def zero_shot(scores, indices, background, labels):
    """Project-class probabilities from AudioSet scores, with no training:
    a class gets the largest score of its AudioSet classes, the background
    class one minus the largest of those, then rows are normalised.

    Parameters
    ----------
    scores : np.ndarray, shape (n, audioset_classes), in [0, 1]

    Returns
    -------
    np.ndarray, shape (n, len(labels)), rows sum to 1
    """
    scores = np.atleast_2d(scores)
    out = np.zeros((len(scores), len(labels)), np.float64)
    for c, label in enumerate(labels):
        if label != background:
            out[:, c] = scores[:, indices[label]].max(axis=1)
    out[:, labels.index(background)] = 1.0 - out.max(axis=1)
    out = np.maximum(out, 1e-6)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


class Teacher:
    """A pretrained tagger run by LiteRT (no TensorFlow).

    Parameters
    ----------
    path : str or Path
        A teacher folder or ``.tflite`` file (:func:`teacher_files`).
    """

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter
        self.model_path, self.class_list = teacher_files(path)
        self.class_names = class_names(self.class_list)
        self.sha256 = file_sha256(self.model_path)
        interpreter = self._load(Interpreter)
        signatures = interpreter.get_signature_list()
        if signatures and "mel" in next(iter(signatures.values()))["inputs"]:
            self.kind, self.sample_rate = "mel", features.EFFICIENTAT_SAMPLE_RATE
            self._runner = interpreter.get_signature_runner()
        else:
            self.kind, self.sample_rate = "waveform", 16000
            # its embedding is an intermediate tensor, which LiteRT keeps only when asked
            self._interpreter = self._load(Interpreter, preserve=True)
            self._embedding_index = _last_dense_input(self.model_path)
        self.feature_config = features.feature_config("efficientat")

    def _load(self, Interpreter, preserve=False):
        import warnings
        try:
            with warnings.catch_warnings():  # "preserve_all_tensors is for debugging"
                warnings.simplefilter("ignore")
                return Interpreter(model_path=str(self.model_path), num_threads=1,
                                   experimental_preserve_all_tensors=preserve)
        except Exception as err:  # LiteRT's errors vary; all mean "not a model"
            raise PipelineError(f"{self.model_path}: cannot load the teacher "
                                f"({str(err)[:200]})") from None

    def patch_outputs(self, rows, *, batch=64):
        """Scores and embeddings of ``efficientat`` feature rows.

        Parameters
        ----------
        rows : np.ndarray, shape (n, frames * mels): flattened (frames, mels)

        Returns
        -------
        logits : np.ndarray, shape (n, audioset_classes): the scores' log-odds
        embedding : np.ndarray, shape (n, embedding size)
        """
        if self.kind != "mel":
            raise PipelineError(f"{self.model_path}: a waveform teacher cannot run on log-mel "
                                "patches; use an EfficientAT teacher for the pretrained tier")
        frames, mels = self.feature_config.input_shape
        rows = np.asarray(rows, np.float32).reshape(-1, frames, mels)
        logits, embedding = [], []
        for start in range(0, len(rows), batch):
            mel = np.ascontiguousarray(rows[start:start + batch].transpose(0, 2, 1)[:, None])
            out = self._runner(mel=mel)
            logits.append(out["logits"])
            embedding.append(out["embedding"])
        if not logits:
            return np.zeros((0, len(self.class_names)), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(logits), np.concatenate(embedding)

    def clip_outputs(self, y):
        """Scores and embedding of a whole clip (mono float32 at
        ``self.sample_rate``): one pass of the tagger (EfficientAT), or the
        mean over its 0.975 s frames (YAMNet).

        Returns
        -------
        scores : np.ndarray, shape (audioset_classes,)
        embedding : np.ndarray, shape (embedding size,)
        """
        y = np.asarray(y, np.float32)
        minimum = int(MIN_SECONDS * self.sample_rate)
        if y.size < minimum:
            y = np.pad(y, (0, minimum - y.size))
        if self.kind == "mel":
            out = self._runner(mel=features.efficientat_logmel(y, self.feature_config)[None, None])
            return _sigmoid(out["logits"])[0], out["embedding"][0]
        if y.size < YAMNET_WINDOW:
            y = np.pad(y, (0, YAMNET_WINDOW - y.size))
        scores, embedding = [], []
        interpreter = self._interpreter
        index_in = interpreter.get_input_details()[0]["index"]
        index_out = interpreter.get_output_details()[0]["index"]
        for start in range(0, y.size - YAMNET_WINDOW + 1, YAMNET_HOP):
            interpreter.set_tensor(index_in, y[start:start + YAMNET_WINDOW])
            interpreter.invoke()
            scores.append(interpreter.get_tensor(index_out).reshape(-1))
            embedding.append(interpreter.get_tensor(self._embedding_index).reshape(-1))
        return np.mean(scores, axis=0), np.mean(embedding, axis=0)


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def _last_dense_input(model_path):
    """Index of the tensor a waveform tagger's last FULLY_CONNECTED layer reads."""
    from pipeline.tflite_keras import read_graph
    dense = [ins[0] for op, ins, _, _ in read_graph(model_path)["ops"] if op == "FULLY_CONNECTED"]
    if not dense:
        raise PipelineError(f"{model_path}: no fully connected layer, so no embedding")
    return dense[-1]


def clip_cache_path(cache_dir, teacher):
    """Where a teacher's clip outputs are cached: one file per teacher."""
    return Path(cache_dir) / f"teacher_{teacher.sha256[:16]}_v{CACHE_VERSION}.npz"


def clip_outputs(teacher, paths, *, cache=None, progress=None):
    """Scores and embeddings of whole clips, each computed once per file
    content (a blake2b key of its bytes) and cached in ``cache`` (an .npz
    path, :func:`clip_cache_path`), so a LOSO fold never runs the teacher.

    Returns
    -------
    scores : np.ndarray, shape (len(paths), audioset_classes)
    embedding : np.ndarray, shape (len(paths), embedding size)
    """
    from pipeline.content_cache import file_key
    stored = _load_outputs(cache, teacher, "scores")
    keys = [file_key(p) for p in paths]
    fresh = 0
    for path, key in zip(paths, keys):
        if key not in stored:
            try:
                y = features.load_audio(path, teacher.sample_rate)
            except features.FeatureError as err:
                raise PipelineError(str(err)) from None
            stored[key] = teacher.clip_outputs(y)
            fresh += 1
        if progress is not None:
            progress.update(1)
    if cache is not None and fresh:
        _save_outputs(cache, teacher, stored, "scores")
    return (np.stack([stored[k][0] for k in keys]).astype(np.float32),
            np.stack([stored[k][1] for k in keys]).astype(np.float32))


def _load_outputs(path, teacher, first):
    """{content key: (``first`` output, embedding)} of a cache file of this
    teacher; empty when there is none, or it is another teacher's."""
    if path is None or not Path(path).is_file():
        return {}
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["teacher"]) != teacher.sha256:
            return {}
        return {str(k): (a, e) for k, a, e in zip(saved["keys"], saved[first],
                                                  saved["embedding"])}


def _save_outputs(path, teacher, stored, first):
    """Write :func:`_load_outputs`' dict back, atomically."""
    ordered = sorted(stored)
    write_npz(path, teacher=np.array(teacher.sha256), keys=np.array(ordered),
              **{first: np.stack([stored[k][0] for k in ordered])},
              embedding=np.stack([stored[k][1] for k in ordered]))


def row_key(row):
    """A content key of one feature row."""
    return hashlib.blake2b(np.ascontiguousarray(row, np.float32).tobytes(),
                           digest_size=16).hexdigest()


class PatchCache:
    """Teacher outputs (logits, embedding) of ``efficientat`` feature rows, computed once per row
    content and kept in an .npz file (beside the dataset), so that every
    fold, seed and retraining reuses them."""

    def __init__(self, teacher, path=None):
        self.teacher, self.path, self.fresh = teacher, path, 0
        self.stored = _load_outputs(path, teacher, "logits")

    def outputs(self, rows, *, progress_desc=None, chunk=512):
        """(logits, embedding) of ``rows``, shape (n, ...) each; with
        ``progress_desc``, progress lines while new rows are computed."""
        from pipeline.progress import Progress
        keys = [row_key(r) for r in rows]
        missing = sorted({k: i for i, k in enumerate(keys) if k not in self.stored}.items())
        bar = Progress(len(missing), progress_desc, "window") if progress_desc and missing else None
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            logits, embedding = self.teacher.patch_outputs(rows[[i for _, i in part]])
            for (key, _), s, e in zip(part, logits, embedding):
                self.stored[key] = (s, e)
            self.fresh += len(part)
            if bar:
                bar.update(len(part))
        if bar:
            bar.close()
        return (np.stack([self.stored[k][0] for k in keys]),
                np.stack([self.stored[k][1] for k in keys]))

    def save(self):
        """Write what was computed since loading (nothing when nothing was)."""
        if self.path is None or not self.fresh:
            return
        _save_outputs(self.path, self.teacher, self.stored, "logits")
        self.fresh = 0
