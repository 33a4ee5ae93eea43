"""Writing files atomically, and reading the JSON that stages hand on.

Everything is written to a temporary file in the same folder and then moved
into place with ``os.replace``, so an interrupted run never leaves a
half-written file and never destroys the previous one.
"""

import contextlib
import csv
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name keeps ``path``'s suffix because some writers (Keras,
    matplotlib) choose the format from it. On any error, including
    KeyboardInterrupt, the temporary file is removed and ``path`` is
    untouched. A symbolic link (/dev/stdout) or a path that exists and is
    not a regular file (a FIFO, a device) is written in place instead:
    renaming over it would replace the link or device with a file.
    """
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path}: is a folder; give a file name to write")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        # /dev/stdout (a link), a FIFO, a terminal: written in place, never
        # renamed over (that would replace the link or device with a file)
        try:
            yield str(path)
        except OSError as err:
            raise PipelineError(f"{path}: cannot write there ({err.strerror or err})") from None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's process id is in the name, so that a later run can tell
    # the leftovers of a killed writer from a write in progress.
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.{os.getpid()}.",
                                   suffix=f".tmp{path.suffix}")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def check_regular(path, what):
    """Raise PipelineError unless ``path`` is a regular file (a device such
    as /dev/zero, a FIFO or a folder would hang a reader or be replaced by
    a writer)."""
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise PipelineError(f"{path}: {what} cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{path}: {what} is not a regular file; give a file path")


def check_writable(option, folder):
    """Raise PipelineError unless files can be created in ``folder`` (made if
    missing), before any long work starts.

    Parameters
    ----------
    option : str
        The setting that names the folder, for the message (e.g. "--model_dir").
    folder : str or Path
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise PipelineError(f"{folder}: cannot write there ({err.strerror or err}); fix it "
                            f"or choose another {option}") from None


def remove_stale_temporaries(path):
    """Delete the temporary files that a killed :func:`atomic_path` write of
    ``path`` left behind (their writer process no longer runs).

    Returns
    -------
    list of Path
        What was removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        pid = tmp.name[len(path.stem) + 2:].split(".", 1)[0]
        if pid.isdigit() and _process_exists(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def remove_stale_temporaries_in(folder):
    """:func:`remove_stale_temporaries` for every file of ``folder``: the
    temporary files of killed writers, whatever they were writing."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp*"):
        stem, _, rest = tmp.name[1:].partition(".tmp")
        parts = stem.split(".")
        if len(parts) >= 3 and parts[-2].isdigit():  # .{stem}.{pid}.{random}.tmp{suffix}
            target = Path(folder) / (".".join(parts[:-2]) + rest)
            removed += remove_stale_temporaries(target)
    return removed


def _process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    """Write ``obj`` as indented, standard JSON, atomically: NaN and
    infinities (which standard JSON lacks) become null."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_csv(path, rows):
    """Write ``rows`` (the header first) as CSV, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)


def write_npz(path, **arrays):
    """Save arrays to an ``.npz`` file atomically."""
    import numpy as np
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_json(path, what, made_by):
    """Load a JSON file or raise PipelineError naming the command that makes it."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: {what} not found. Run `{made_by}` first.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: {what} is not valid JSON ({err}). "
                            f"Run `{made_by}` again.") from None


def file_digest(path, digest):
    """Hex digest of a file, read in blocks into ``digest`` (a hashlib object)."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path):
    """Hex SHA-256 of a file."""
    return file_digest(path, hashlib.sha256())
