"""The figures the scripts save under reports/ (all written atomically)."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import features  # noqa: E402
from pipeline.files import atomic_path  # noqa: E402


def file_name_part(label):
    """``label`` safe to put in a file name: anything but letters, digits,
    '_' and '-' becomes '_' (no path separators, no '..')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(label)) or "_"


def save_figure(fig, path):
    """Save a matplotlib figure atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)


def waveform_stages(path, out_png, config):
    """Waveform as loaded, after noise reduction and after trimming."""
    y = features.load_audio(path, config.sample_rate)
    stages = [("as loaded", y)]
    if config.noise_reduction:
        y = features.reduce_noise(y, config.sample_rate, config.noise_profile_samples)
        stages.append(("after noise reduction", y))
    if config.trim:
        y = features.trim_silence(y, config.trim_top_db, config.trim_frame_length,
                                  config.trim_hop_length)
        stages.append(("after trimming", y))
    fig, axes = plt.subplots(len(stages), 1, figsize=(8, 2.2 * len(stages)), sharey=True)
    for ax, (title, wave) in zip(np.atleast_1d(axes), stages):
        ax.plot(np.arange(wave.size) / config.sample_rate, wave, lw=0.5)
        ax.set_title(f"{path}: {title}", fontsize=9)
        ax.set_xlabel("time (s)")
    fig.tight_layout()
    save_figure(fig, out_png)


def band_profile(feature_matrix, config):
    """What each feature row says about frequency: the seed's normalised
    spectrum (x in Hz), or the mean level per mel band (x = band index)."""
    if config.preset == "seed":
        return np.linspace(0, config.sample_rate / 2, feature_matrix.shape[1]), \
            feature_matrix, "frequency (Hz)"
    if config.input_shape:
        profile = feature_matrix.reshape(len(feature_matrix), -1, config.n_mels).mean(axis=1)
    else:
        profile = feature_matrix[:, :config.n_mels]  # the band means come first
    return np.arange(config.n_mels), profile, "mel band"


def class_signatures(feature_matrix, labels, label_names, *, config, out_png):
    """Per-class mean band profile (the seed's 'frequency signature').

    Returns
    -------
    dict
        label -> the mean profile drawn for it (classes without rows are left out).
    """
    x, profile, x_label = band_profile(feature_matrix, config)
    fig, ax = plt.subplots(figsize=(8, 4))
    drawn = {}
    for index, name in enumerate(label_names):
        rows = profile[labels == index]
        if len(rows):
            drawn[name] = rows.mean(axis=0)
            ax.plot(x, drawn[name], label=f"{name} ({len(rows)})")
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean value (normalised)" if config.preset == "seed"
                  else "mean level, dB relative to the clip")
    ax.set_title(f"Per-class signature ({config.preset} features)")
    ax.legend()
    save_figure(fig, out_png)
    return drawn


def _draw_confusion(ax, matrix, label_names, title):
    """Row-normalised confusion matrix with the share in each cell."""
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right")
    ax.set_yticks(ticks, label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in ticks:
        for j in ticks:
            ax.text(j, i, f"{share[i, j]:.2f}\n({matrix[i, j]})", ha="center", va="center",
                    fontsize=8, color="white" if share[i, j] > 0.5 else "black")


def confusion_matrices(named_matrices, label_names, out_png):
    """One or more normalised confusion matrices side by side.

    Parameters
    ----------
    named_matrices : list of (title, np.ndarray)
    """
    count = len(named_matrices)
    fig, axes = plt.subplots(1, count, figsize=(4.5 * count, 4.2), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], named_matrices):
        _draw_confusion(ax, np.asarray(matrix), label_names, title)
    fig.tight_layout()
    save_figure(fig, out_png)


def training_curves(history, out_png):
    """Loss and accuracy per epoch, training vs validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out_png)


def coarse_spectrogram(path, sample_rate, *, hop_s=0.05, n_mels=64, max_frames=4000):
    """A log-mel spectrogram of a recording of any length for display,
    computed block by block (shape (n_mels, frames), dB) and the frame
    times in seconds. Frames are ``hop_s`` apart, or farther for a long
    recording, so there are at most about ``max_frames`` (a figure shows no
    more): memory stays flat however long the recording is."""
    import librosa
    hop_s = max(hop_s, features.audio_duration(path) / max_frames)
    n_fft, hop = 1024, max(1, int(hop_s * sample_rate))
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    frames, carry = [], np.zeros(0, np.float32)
    for block in features.stream_audio(path, sample_rate, block_s=30.0):
        y = np.concatenate([carry, block])
        usable = (len(y) - n_fft) // hop + 1 if len(y) >= n_fft else 0
        if usable:
            spec = np.abs(librosa.stft(y[:(usable - 1) * hop + n_fft], n_fft=n_fft, hop_length=hop,
                                       center=False)) ** 2
            frames.append((basis @ spec).astype(np.float32))
        carry = y[usable * hop:]
    mel = np.concatenate(frames, axis=1) if frames else np.zeros((n_mels, 0))
    times = (np.arange(mel.shape[1]) * hop + n_fft / 2) / sample_rate
    return librosa.power_to_db(mel + 1e-12, ref=np.max(mel) if mel.size else 1.0, top_db=80), times


def timeline(path, centres, probs, label_names, *, events, thresholds, background=(),
             labelled=(), sample_rate, out_png):
    """One recording, top to bottom: its spectrogram; the smoothed class
    probabilities with each event class's threshold; the detected events as
    bars; and the labelled events, when there are any.

    Parameters
    ----------
    centres : np.ndarray, shape (windows,), seconds
    probs : np.ndarray, shape (windows, classes), smoothed
    events : list of dict (predict.py's)
    thresholds : dict class -> threshold
    labelled : list of (start_s, end_s, class)
    """
    spec, times = coarse_spectrogram(path, sample_rate)
    rows = 4 if labelled else 3
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.0 * rows + 1), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1, 1][:rows]})
    end = max(float(times[-1]) if times.size else 0.0, float(centres[-1]) if len(centres) else 0.0)
    axes[0].imshow(spec, origin="lower", aspect="auto", cmap="magma",
                   extent=[0, end, 0, spec.shape[0]])
    axes[0].set_ylabel("mel band")
    axes[0].set_title(f"{Path(path).name}", fontsize=9)
    colours = {}
    for c, name in enumerate(label_names):
        (line,) = axes[1].plot(centres, probs[:, c], label=name, marker=".", markersize=3)
        colours[name] = line.get_color()
        if name not in background:
            axes[1].axhline(thresholds[name], color=colours[name], linestyle="--", linewidth=0.8)
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel("probability\n(dashed: threshold)")
    axes[1].legend(loc="upper right", fontsize=8)

    def bars(ax, spans, title):
        names = [n for n in label_names if n not in background]
        for start, stop, name in spans:
            ax.barh(names.index(name) if name in names else 0, stop - start, left=start,
                    color=colours.get(name, "grey"), height=0.6)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.set_ylim(-0.5, len(names) - 0.5)
        ax.set_ylabel(title)

    bars(axes[2], [(e["start_s"], e["end_s"], e["class"]) for e in events], "detected")
    if labelled:
        bars(axes[3], labelled, "labelled")
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, end)
    fig.tight_layout()
    save_figure(fig, out_png)


def seed_spread(scores, out_png, *, xlabel, baseline=None):
    """One row per setting: its mean as a bar, each seed's score as a dot,
    so a difference can be read against the spread of seeds.

    Parameters
    ----------
    scores : dict
        {setting: [score of each seed]}, drawn top to bottom in this order.
    out_png : str or Path
    xlabel : str
    baseline : str, optional
        A setting whose mean is drawn as a dashed line across every row.
    """
    names = list(scores)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    ax.barh(y, [np.mean(scores[n]) for n in names], color="#bcd3ea", height=0.6)
    for row, name in zip(y, names):
        ax.plot(scores[name], [row] * len(scores[name]), "o", color="#1f4e79", ms=4)
    if baseline in scores:
        ax.axvline(np.mean(scores[baseline]), color="#c0392b", ls="--", lw=1,
                   label=f"{baseline} (mean)")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), fontsize=8, frameon=False)
    low = min(min(v) for v in scores.values())
    ax.set_xlim(max(0.0, low - 0.05), min(1.0, max(max(v) for v in scores.values()) + 0.02))
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel(xlabel)
    save_figure(fig, out_png)
