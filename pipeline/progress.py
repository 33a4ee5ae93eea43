"""Progress on long work, in a terminal and when output is piped or logged.

In a terminal, tqdm's bar. Otherwise (``| tee log``, CI, nohup) a plain
line at the start, at least every ``every_s`` seconds and at the end, so a
log never goes quiet for minutes.
"""

import sys
import time

EVERY_S = 30.0  # at most this long between two lines when output is not a terminal


class Progress:
    """``update(n)`` as work is done; ``close()`` at the end (or use ``with``).

    Parameters
    ----------
    total : int or None
    desc : str
    unit : str
    stream : file, optional
        Where lines go (default: stderr, as tqdm's bar).
    every_s : float
    """

    def __init__(self, total, desc, unit="item", *, stream=None, every_s=EVERY_S):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done, self.started = 0, time.monotonic()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
        else:
            self._line("started")
            self.last = time.monotonic()

    def _line(self, what):
        of = f"/{self.total}" if self.total is not None else ""
        elapsed = time.monotonic() - self.started
        print(f"{self.desc}: {self.done}{of} {self.unit}s {what} ({elapsed:.0f} s)",
              file=self.stream, flush=True)

    def update(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last >= self.every_s:
            self._line("done")
            self.last = time.monotonic()

    def set_total(self, total):
        """The real total, once known (early stopping ends training sooner)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        else:
            self._line("done, finished")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iterate(iterable, total, desc, unit="item"):
    """Yield from ``iterable``, reporting progress as :class:`Progress`."""
    with Progress(total, desc, unit) as progress:
        for item in iterable:
            yield item
            progress.update()


def keras_callback(epochs, desc):
    """A Keras callback that reports epochs as :class:`Progress` does, and
    whose total becomes the epochs actually run when early stopping ends
    training (the bar no longer counts to EPOCHS)."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.progress = Progress(epochs, desc, "epoch")

        def on_epoch_end(self, epoch, logs=None):
            self.progress.update()

        def on_train_end(self, logs=None):
            self.progress.set_total(self.progress.done)
            self.progress.close()

    return EpochProgress()
