"""Where a sweep runs: a Dask client on a ``LocalCluster`` of single-threaded worker processes, or on
an existing cluster (``dask scheduler`` and ``dask worker``), and the runs submitted to it.

Each run is one ``client.submit(train_one, ...)``, collected with ``as_completed``; the results come
back to this process, which writes them. A worker that dies has its run rescheduled by the scheduler
(up to ``distributed.scheduler.allowed-failures`` deaths, then ``KilledWorker``); a run that raises
on the worker (its temporary disk full, say) is tried again ``retries`` times.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterable

from mnist_nn.errors import MnistNNError, UsageError
from mnist_nn.sweep.work import DataSource, DataUnavailable, train_one

RETRIES = 2
CONNECT_TIMEOUT = "20s"


class SweepStopped(MnistNNError):
    """Every worker failed the same way (no data, no mnist_nn): the sweep cannot go on."""


@contextmanager
def connect(scheduler: str | None = None, workers: int | None = None):
    """A Dask ``Client``: to ``scheduler`` (``tcp://HOST:PORT``) or to a new LocalCluster of ``workers``
    single-threaded processes on 127.0.0.1 (default: one per core), closed again on the way out."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError('the sweep needs Dask distributed: pip install ".[sweep]"') from None
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the sweep says what matters in its own lines
    with ExitStack() as stack:  # closed in reverse: client, cluster, Dask's config, the scratch folder
        if scheduler:
            try:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc}); start one "
                                 f"with `dask scheduler` or check the address") from None
        else:
            # The local workers' files and Dask's lock files in a folder of ours, removed afterwards.
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="mnist_nn-dask-"))
            stack.enter_context(dask.config.set({"temporary-directory": scratch}))
            with _sigint_ignored_by_children():
                # Logs silenced: a run's failure is reported by the sweep, once.
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
                    local_directory=scratch))
            client = Client(cluster, set_as_default=False)
        stack.enter_context(client)
        yield client


@contextmanager
def _sigint_ignored_by_children():
    """Start the local workers with SIGINT ignored (an ignored signal stays ignored across exec, and
    Python keeps it so): a Ctrl-C in the terminal reaches the whole process group, and this process
    alone should handle it, cancel the runs and close the workers, instead of every worker printing
    a traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_all(client, planned: Iterable, source: DataSource, on_result: Callable, retries: int = RETRIES) -> None:
    """Submit every planned run and call ``on_result(planned, outcome)`` as each finishes, in order of
    finishing. ``outcome`` is what :func:`train_one` returned, or ``{"status": "error", ...}`` for a
    run whose worker died too often or that raised every try. A KeyboardInterrupt cancels what is left."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    by_key = {}
    futures = []
    for run in planned:
        future = client.submit(train_one, run.settings.to_dict(), source, key=f"mnist_nn-run-{run.run_id}",
                               pure=False, retries=retries)
        by_key[future.key] = run
        futures.append(future)
    try:
        for future in as_completed(futures, loop=client.loop):
            run = by_key[future.key]
            try:
                outcome = future.result()
            except DataUnavailable as exc:
                raise SweepStopped(f"{exc}; give the workers the data (--data-dir as the workers see it, or "
                                   f"--mirror) and run the same command again") from None
            except ImportError as exc:  # unpickling train_one on a worker without mnist_nn
                raise SweepStopped(f"a worker cannot run mnist_nn ({type(exc).__name__}: {exc}); install the same "
                                   f"mnist_nn on every worker and run the same command again") from None
            except KilledWorker as exc:
                outcome = {"status": "error", "error": f"its workers died every time it ran ({exc}); run the "
                                                       f"same command again to retry it"}
            except Exception as exc:  # raised on a worker every try: a worker's problem, retried by a rerun
                outcome = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            on_result(run, outcome)
    finally:
        client.cancel([f for f in futures if not f.done()], force=True)
