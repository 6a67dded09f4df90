"""What a Dask worker does for one run of a sweep: :func:`train_one`, a plain function over plain data.

The worker trains with :func:`mnist_nn.fit` into a temporary folder on its own disk and sends back
the files ``fit(out=...)`` wrote (``model.npz``, ``best.npz``, ``history.json``) as bytes, with the
numbers the results file needs: no file system is shared with the client, and the run folder the
client writes is byte for byte the one ``python -m mnist_nn.train`` would have written.

A run that fails by itself (settings a run cannot use, divergence) comes back as a failed result, so
Dask does not retry it; a worker that cannot get the data raises, so the client can stop the sweep
and say so. A worker that dies is Dask's business: its run is rescheduled on another worker.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_nn.errors import CheckpointError, DivergedError, MnistError, UsageError

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # as the train command does (see mnist_nn/train.py)


@dataclass(frozen=True)
class DataSource:
    """Where workers find MNIST, as the *workers* see it: a cache folder (None: each worker's own
    default cache), mirrors to download from, and whether downloading is forbidden."""

    data_dir: str | None = None
    mirrors: tuple[str, ...] | None = None
    offline: bool | None = None


# One copy of the data per worker process and split, loaded on the first run that needs it and
# reused by every later run there: reading and scaling MNIST takes about as long as a short run.
# The arrays are only read by training, so runs sharing them cannot influence each other.
_loaded: dict[tuple, object] = {}
_loading = threading.Lock()


def load_data(source: DataSource, validation_size: int, dtype: str):
    from mnist_nn.data import load_mnist

    key = (source, validation_size, dtype)
    with _loading:
        if key not in _loaded:
            _loaded[key] = load_mnist(source.data_dir, validation_size, dtype=dtype,
                                      mirrors=list(source.mirrors) if source.mirrors else None,
                                      quiet=True, offline=source.offline)
        return _loaded[key]


class DataUnavailable(Exception):
    """The worker could not load MNIST: a problem of the worker's setup, not of the run."""


def worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # called outside a Dask worker (a library caller, a test)
        return f"pid {os.getpid()}"


def train_one(settings_dict: dict, source: DataSource) -> dict:
    """Train one run and return its result (``status`` ok or failed) and, when ok, its files."""
    from mnist_nn import fitting
    from mnist_nn.runfolder import CHECKPOINT_FILES
    from mnist_nn.settings import Settings

    started = time.perf_counter()
    result = {"worker": worker_name()}
    try:
        settings = Settings.from_dict(settings_dict)
        try:
            data = load_data(source, settings.validation_size, settings.dtype)
        except (MnistError, OSError) as exc:
            raise DataUnavailable(f"worker {result['worker']} could not load MNIST: {exc}") from None
        except ValueError as exc:  # the run's split does not fit this data set (a validation set too large)
            raise UsageError(str(exc)) from None
        with tempfile.TemporaryDirectory(prefix="mnist_nn-sweep-") as tmp:
            folder = Path(tmp) / "run"
            # One core per worker: the epochs are measured between epochs, not on a second thread.
            run = fitting.fit(settings, data, out=folder, measure_in_background=False)
            files = {name: (folder / name).read_bytes() for name in CHECKPOINT_FILES if (folder / name).is_file()}
    except (UsageError, DivergedError) as exc:
        return {**result, "status": "failed", "error": str(exc), "seconds": round(time.perf_counter() - started, 3)}
    except CheckpointError as exc:  # the worker's own temporary disk: worth another worker's try
        raise OSError(f"worker {result['worker']}: {exc}") from None
    return {**result, "status": "ok", "files": files, "records": run.records, "warnings": run.warnings,
            "seconds": round(time.perf_counter() - started, 3), "train_seconds": round(run.train_seconds, 3),
            "prepared_seconds": round(run.prepared_seconds, 3)}
