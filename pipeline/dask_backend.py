"""Connecting make_dataset_16k.py to a Dask cluster.

Extraction itself does not change: joblib's "dask" backend runs the same
``features.extract_many`` tasks on the cluster's workers, so the dataset
is the same as with local processes. This module only opens (or starts) the
cluster and turns Dask's failures into messages a user can act on.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError

CONNECT_TIMEOUT_S = 5  # give up on an unreachable scheduler after this long
NANNY_MALLOC_SETTING = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@contextmanager
def client(scheduler=None, jobs=-1):
    """A ``dask.distributed.Client`` for ``scheduler``, or for a new local
    cluster of ``jobs`` single-threaded worker processes when it is None.

    On a remote cluster the workers get this checkout's features.py through
    ``Client.upload_file``, so they compute exactly the features it defines.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise PipelineError("--backend=dask needs Dask: pip install 'dask[distributed]'") from None
    cluster = None
    if scheduler:
        try:
            dask_client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise PipelineError(
                f"cannot reach the Dask scheduler at {scheduler!r} within "
                f"{CONNECT_TIMEOUT_S} s ({type(err).__name__}). Check the address "
                "(tcp://HOST:8786) and that `dask scheduler` is running.") from None
        dask_client.upload_file(str(Path(__file__).resolve().parents[1] / "features.py"))
    else:
        import dask
        workers = jobs if jobs and jobs > 0 else os.cpu_count()
        # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 on workers, which
        # turns off glibc's adaptive mmap threshold: every large numpy
        # temporary is then mapped and unmapped, and feature extraction ran
        # about twice as slow as in a plain process. Leave malloc alone.
        with dask.config.set({NANNY_MALLOC_SETTING: None}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        dask_client = Client(cluster)
    try:
        yield dask_client
    except Exception as err:
        if type(err).__name__ in ("KilledWorker", "CommClosedError", "FutureCancelledError"):
            raise PipelineError(
                f"Dask workers kept dying while extracting features ({err}); the previous "
                "dataset is untouched. Check the workers' memory and logs, then re-run: "
                "finished clips are not cached until a run completes.") from None
        raise
    finally:
        dask_client.close()
        if cluster is not None:
            cluster.close()

