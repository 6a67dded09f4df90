"""The Train tab's one training at a time: :func:`mnist_nn.fit` in a worker thread, its progress as a
list of events that any number of server-sent-event streams replay and follow.

The run is saved under ``--runs`` exactly as ``python -m mnist_nn.train`` saves it (``fit(out=...)``
writes the checkpoints; the learning curve is drawn at the end), and its lines are the command's
own (``train.Reporter``, ``train.summary``, ``train.interrupted_message``). Stop (the page's button,
or the server shutting down) raises :class:`StopTraining`, a KeyboardInterrupt, from ``fit``'s
progress callbacks: ``fit`` handles it as it handles Ctrl-C, keeping every finished epoch's checkpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable

from mnist_nn import runfolder, train
from mnist_nn.errors import MnistNNError
from mnist_nn.fitting import fit
from mnist_nn.settings import Settings

FINISHED = ("done", "stopped", "error")
MAX_EVENTS = 200_000  # progress events are dropped past this (epoch and end events never): bounded memory
KEEP_FINISHED = 20  # finished jobs whose events are kept for late readers; older ones are forgotten


class Busy(MnistNNError):
    """A training is running already (one at a time: they would share the two cores)."""


class StopTraining(KeyboardInterrupt):
    """Raised in the training thread where Ctrl-C would arrive, so that fit keeps what is finished."""


class _Lines(train.Reporter):
    """The train command's epoch and warning lines, sent as events instead of printed."""

    def __init__(self, job: "Job"):
        self.quiet, self.bar, self.job = False, None, job

    def say(self, line: str, err: bool = False) -> None:
        self.job.publish("line", text=line, stream="stderr" if err else "stdout")


class Job:
    """One training: its settings, its run folder, its events so far and its state."""

    def __init__(self, job_id: str, settings: Settings, folder: runfolder.RunFolder, run_id: str):
        self.id, self.settings, self.folder, self.run_id = job_id, settings, folder, run_id
        self.state = "starting"
        self.events: list[dict] = []
        self.stop_requested = threading.Event()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def describe(self) -> dict:
        return {"job": self.id, "run": self.run_id, "state": self.state, "settings": self.settings.to_dict(),
                "events": len(self.events)}

    # ---------------------------------------------------------------- events

    def publish(self, kind: str, state: str | None = None, **data) -> None:
        """Append an event and wake every stream waiting for one (from any thread); ``state``, a new
        state set together with the event, so that no stream sees the one without the other."""
        with self._lock:
            if kind == "progress" and len(self.events) >= MAX_EVENTS:
                return
            if state is not None:
                self.state = state
            self.events.append({"id": len(self.events), "kind": kind, **({"state": state} if state else {}),
                                **data})
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's loop is closed: nobody is waiting any more
                pass

    async def stream(self, start: int = 0, client_gone=None):
        """The events from number ``start`` on as server-sent-event text, following new ones until the
        training has finished, or until ``client_gone()`` (an async check) says the client has left:
        writing on to a closed connection only fills the log with asyncio's complaints."""
        wake = asyncio.Event()
        waiter = (asyncio.get_running_loop(), wake)
        with self._lock:
            self._waiters.add(waiter)
        try:
            position = max(0, start)
            while True:
                wake.clear()
                with self._lock:
                    fresh, finished = self.events[position:], self.state in FINISHED
                if client_gone is not None and await client_gone():
                    return
                for event in fresh:
                    yield f"id: {event['id']}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n"
                position += len(fresh)
                if finished and not fresh:
                    return
                if not fresh:
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=15)
                    except asyncio.TimeoutError:
                        yield ": still here\n\n"  # a comment: keeps proxies and the browser from giving up
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    # ---------------------------------------------------------------- the work

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise StopTraining()

    def run(self, load_data: Callable) -> None:
        """Train (in the worker thread); every outcome ends in one ``end`` event."""
        lines = _Lines(self)
        batches = {"done": 0, "per_epoch": 1}

        def data(settings: Settings):
            loaded = load_data(settings)
            n_train = len(loaded.train.labels)
            batches["per_epoch"] = -(-n_train // settings.batch_size)
            s = settings
            lines.say(f"Network {'-'.join(map(str, s.sizes))}  activation {s.activation}  cost {s.cost}  "
                      f"init {s.init}  {s.dtype}  backend {s.backend}  seed {s.seed}  {n_train} training "
                      f"images, batch {s.batch_size}, lr {s.lr}, l2 {s.l2}")
            return loaded

        def epoch_start(epoch: int, total: int) -> None:
            self._check_stop()
            batches["done"] = 0
            self.publish("epoch_start", state="training", epoch=epoch, total=total)

        def on_batches(k: int) -> None:
            self._check_stop()
            batches["done"] += k
            self.publish("progress", fraction=round(batches["done"] / batches["per_epoch"], 4))

        def on_epoch(record: dict, run) -> None:
            self.publish("epoch", record=record, total=run.settings.epochs)
            lines.epoch_done(record, run)

        try:
            run = fit(self.settings, data, out=self.folder, on_epoch=on_epoch, on_batches=on_batches,
                      on_epoch_start=epoch_start)
            plotted = self._plot(run, lines)
            self._end("done", train.summary(run, plotted))
        except StopTraining as exc:
            message = train.interrupted_message(getattr(exc, "run", None), 130)
            self._end("stopped", ["stopped" + message.removeprefix("interrupted")])
        except (MnistNNError, ValueError) as exc:  # a setting the data cannot take, a full disk, divergence
            self._end("error", [f"error: {exc}"])
        except Exception as exc:  # a bug: the server says so and keeps serving
            traceback.print_exc(file=sys.stderr)
            self._end("error", [f"error: an internal error ({type(exc).__name__}: {exc}); see the server's output"])
        finally:
            self.folder.release()

    def _plot(self, run, lines: _Lines) -> bool:
        from mnist_nn.plots import learning_curves

        try:
            learning_curves([run.records], [f"{'-'.join(map(str, run.settings.sizes))} lr {run.settings.lr}"],
                            run.folder / "learning_curve.png")
            return True
        except OSError as exc:
            lines.say(f"warning: could not write learning_curve.png ({exc.strerror or exc})", err=True)
            return False

    def _end(self, state: str, lines: list[str]) -> None:
        self.publish("end", state=state, lines=lines, run=self.run_id)


class Trainer:
    """Starts trainings (one at a time) into new folders under ``runs``; ``load_data(settings)`` gives
    the data, as ``fit``'s ``data`` argument."""

    def __init__(self, runs: Path, load_data: Callable):
        self.runs, self.load_data = Path(runs), load_data
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.closing = False
        self.interrupted: list[Job] = []

    def current(self) -> Job | None:
        with self._lock:
            return next((j for j in self.jobs.values() if j.state not in FINISHED), None)

    def start(self, settings: Settings) -> Job:
        with self._lock:
            if self.closing:
                raise Busy("the server is shutting down")
            running = next((j for j in self.jobs.values() if j.state not in FINISHED), None)
            if running is not None:
                raise Busy(f"training {running.run_id} is running (job {running.id}); stop it or wait for it to finish")
            folder, run_id = self._new_folder()
            job = Job(str(next(self._ids)), settings, folder, run_id)
            finished = [j for j in self.jobs.values() if j.state in FINISHED]
            for old in finished[:max(0, len(finished) - KEEP_FINISHED)]:
                del self.jobs[old.id]
            self.jobs[job.id] = job
        job.thread = threading.Thread(target=job.run, args=(self.load_data,), name=f"training {run_id}")
        job.thread.start()
        return job

    def _new_folder(self) -> tuple[runfolder.RunFolder, str]:
        """A new run folder ``runs/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... when that name is taken), taken
        and locked as the train command takes its ``--out``."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for attempt in range(1, 1000):
            name = stamp if attempt == 1 else f"{stamp}-{attempt}"
            if (self.runs / name).exists():
                continue
            try:
                return runfolder.create(self.runs / name), name
            except MnistNNError:  # another process took the name between the look and the take
                continue
        raise Busy(f"{self.runs}: 1000 runs started this second; try again")

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def stop_all(self) -> None:
        """Ask every training to stop (the server is shutting down), and let no new one start."""
        with self._lock:
            self.closing = True
            for job in self.jobs.values():
                if job.state not in FINISHED:
                    self.interrupted.append(job)
                job.stop_requested.set()

    def wait(self) -> list[Job]:
        """Wait for every training thread to wind up; the jobs :meth:`stop_all` interrupted."""
        with self._lock:
            threads = [j.thread for j in self.jobs.values() if j.thread is not None]
        for thread in threads:
            thread.join()
        return list(dict.fromkeys(self.interrupted))
