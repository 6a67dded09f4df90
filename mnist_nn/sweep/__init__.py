"""Many runs over seeds and settings on Dask distributed: ``python -m mnist_nn.sweep`` (the command,
in ``__main__.py``) and :func:`run_sweep` (the same from Python).

    >>> from mnist_nn.sweep import grid, run_sweep
    >>> flags = grid.training_flags()
    >>> planned = grid.plan({"lr": [0.5, 3.0]}, seeds=[0, 1, 2], flags=flags)
    >>> outcome = run_sweep(planned, "sweeps/lr", workers=2)
    >>> outcome.summary["best"]

The pieces: ``grid`` (flags and files to runs), ``cluster`` (the Dask client and the submitting),
``work`` (what a worker does: one :func:`mnist_nn.fit`), ``results`` (the output folder),
``summary`` and ``plot`` (the table and the picture). Needs ``pip install ".[sweep]"``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mnist_nn.sweep.work import DataSource

__all__ = ["DataSource", "SweepOutcome", "run_sweep"]


@dataclass
class SweepOutcome:
    folder: Path
    planned: int  # runs in the plan
    skipped: int  # already in results.jsonl
    done: list[dict] = field(default_factory=list)  # this call's new result lines
    summary: dict | None = None  # over every result in the folder
    written: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # results.jsonl lines skipped
    interrupted: bool = False


def run_sweep(planned: list, out, *, source: DataSource = DataSource(), scheduler: str | None = None,
              workers: int | None = None, on_start: Callable | None = None, on_result: Callable | None = None,
              retries: int | None = None) -> SweepOutcome:
    """Do every planned run not yet in ``out``/results.jsonl, write each as it finishes, then the summary.

    on_start(todo, results): once the cluster is up, before the first submission, with the runs to do
    and the results already there. on_result(record, folder): after each run's line is written.
    A KeyboardInterrupt stops the sweep with every finished run kept; the summary is written and the
    exception goes on, with ``.outcome`` attached.
    """
    from mnist_nn.sweep import cluster, results

    folder = results.take(out)
    try:
        existing, notes = results.read(folder.path)
        done = results.done_keys(existing)
        todo = [p for p in planned if p.key not in done]
        outcome = SweepOutcome(folder.path, len(planned), len(planned) - len(todo), notes=notes)

        def record(run, result: dict) -> None:
            line = results.result_record(run, result)
            if result["status"] == "ok":
                results.write_run(folder, run.run_id, result["files"])
            results.append(folder, line)
            outcome.done.append(line)
            existing.append(line)
            if on_result is not None:
                on_result(line, folder.path)

        runnable = [run for run in todo if not run.problem]

        def begin() -> None:
            if on_start is not None:
                on_start(todo, existing)
            for run in todo:
                if run.problem:  # settings no run can use: recorded as failed, no worker needed
                    record(run, {"status": "failed", "error": run.problem, "worker": None, "seconds": 0.0})

        try:
            if runnable:
                with cluster.connect(scheduler, workers) as client:
                    begin()  # once the cluster is up: the clock of a benchmark starts here
                    cluster.run_all(client, runnable, source, record,
                                    retries=cluster.RETRIES if retries is None else retries)
            else:
                begin()
        except KeyboardInterrupt as exc:
            outcome.interrupted = True
            with _signals_ignored():  # a second Ctrl-C must not cut the summary short
                _finish(folder, outcome)
            exc.outcome = outcome
            raise
        _finish(folder, outcome)
        return outcome
    finally:
        folder.release()


@contextmanager
def _signals_ignored():
    import signal
    import threading

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _finish(folder, outcome: SweepOutcome) -> None:
    """The summary over every run in the folder (a rerun's and earlier sweeps' alike)."""
    from mnist_nn.sweep import results, summary

    everything, _ = results.read(folder.path)
    outcome.summary = summary.summarize(everything)
    outcome.written = summary.write(folder.path, outcome.summary)
