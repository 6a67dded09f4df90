"""One whole training run: :func:`fit` (a new run) and :func:`resume` (continue a run folder), also
importable as ``mnist_nn.fit`` and ``mnist_nn.resume``.

Every front end (the ``train`` command, the scripts, later the sweep and the web playground) calls
these; nothing here prints, parses flags or exits. A run trains epoch after epoch; each epoch is
measured (cost and accuracy on the training, validation and test sets) and checkpointed on the
other core while the next one trains: the jit kernels release the GIL, so the measuring, about two
thirds of an epoch's time, costs nothing. It works on a snapshot of the network, so the next epoch
may change the weights freely.

Ctrl-C (and SIGTERM, see :mod:`mnist_nn.cli`) arrive as KeyboardInterrupt: the epochs already
measured are checkpointed whole, then the exception goes on to the caller with ``.run`` attached.
"""

from __future__ import annotations

import copy
import platform
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mnist_nn import __version__, runfolder
from mnist_nn.errors import CheckpointError, DivergedError, UsageError
from mnist_nn.network import Network
from mnist_nn.settings import Settings

STUCK_EPOCHS = 5  # epochs in a row a digit is never predicted before the run warns (fewer, and slow
                  # starts on small data sets were flagged; the stuck mode on MNIST lasts the whole run)
SNAPSHOTS_IN_FLIGHT = 2  # epochs waiting to be measured; bounds the memory the copies take


@dataclass
class Run:
    """What a run did: its settings, the trained network and one record per epoch."""

    settings: Settings
    network: Network
    records: list[dict] = field(default_factory=list)
    folder: Path | None = None
    warnings: list[dict] = field(default_factory=list)
    prepared_seconds: float = 0.0  # data and kernels made ready, before the first epoch
    train_seconds: float = 0.0  # this call's epochs
    epochs_this_call: int = 0
    note: str | None = None  # what resume had to reconcile
    measure_in_background: bool = True  # see fit()
    # Early stopping (settings.patience): {"epoch", "best_epoch", "patience"} once the run stopped; the
    # network is then the best epoch's (best.npz), while model.npz keeps the last epoch to resume from.
    stopped_early: dict | None = None

    @property
    def final(self) -> dict | None:
        return self.records[-1] if self.records else None

    @property
    def best(self) -> dict | None:
        """The epoch with the best validation accuracy (test accuracy when there is no validation set)."""
        if not self.records:
            return None
        key = "validation_accuracy" if self.records[-1].get("validation_accuracy") is not None else "test_accuracy"
        return max(self.records, key=lambda r: r[key])


def fit(settings: Settings, data=None, *, out=None, on_epoch: Callable | None = None,
        on_batches: Callable | None = None, on_epoch_start: Callable | None = None,
        measure_in_background: bool = True) -> Run:
    """Train a new network as ``settings`` say and return the :class:`Run`.

    data: an ``MnistData``, or a function ``data(settings) -> MnistData`` called once the output
        folder is taken (``load_mnist(validation_size=settings.validation_size, dtype=settings.dtype)``
        when None). out: a folder for the checkpoints (a path, refused if it holds anything, or a
        :class:`runfolder.RunFolder` already taken), or None to keep everything in memory.
    on_epoch(record, run): after each epoch is measured (from the measuring thread); ``record`` has
        epoch, test/validation/train accuracy, train_cost, seconds, and ``warnings`` (messages) when
        this epoch raised any (they are also in ``run.warnings`` and history.json).
    on_batches(k): k more mini-batches done (the epoch then runs in ~50 slices, for a progress bar).
    on_epoch_start(epoch, total): before each epoch trains.
    measure_in_background: measure and checkpoint each epoch on a second thread while the next one
        trains (a run then keeps about 1.5 cores busy); False measures between epochs on one core, as
        a sweep's workers do, each of which has a core of its own.
    """
    settings.check()
    net = Network(settings.sizes, settings.activation, settings.cost, settings.init, settings.seed, settings.dtype,
                  batch_norm=settings.batch_norm)
    net.use_optimizer(settings.optimizer_rule())
    folder = runfolder.create(out) if out is not None and not isinstance(out, runfolder.RunFolder) else out
    run = Run(settings, net, folder=folder.path if folder else None, measure_in_background=measure_in_background)
    return _train(run, folder, data, on_epoch, on_batches, on_epoch_start)


def resume(run_dir, epochs: int, data=None, *, changes: dict | None = None, on_epoch: Callable | None = None,
           on_batches: Callable | None = None, on_epoch_start: Callable | None = None) -> Run:
    """Continue the run in ``run_dir`` for ``epochs`` more epochs: the same numbers as one uninterrupted run.

    changes: settings to change (``backend``; any of ``Settings.FIXED`` that differs is refused).
    """
    path = runfolder.resolve(run_dir)
    folder = runfolder.RunFolder(path, created=False, lock_fd=runfolder.lock(path))
    try:
        saved = runfolder.load(path)
        runfolder.clean_stale_parts(path)
        for key, value in (changes or {}).items():
            if key in Settings.FIXED and value != getattr(saved.settings, key):
                raise UsageError(f"--resume: the run was trained with {key}={getattr(saved.settings, key)!r}; "
                                 f"drop --{key.replace('_', '-')} or start a new run")
        kept = {k: v for k, v in (changes or {}).items() if k not in (*Settings.FIXED, "epochs")}
        settings = saved.settings.replace(**kept, epochs=len(saved.records) + epochs)
        settings.check()
        if epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {epochs}")
    except BaseException:
        folder.release()
        raise
    run = Run(settings, saved.network, list(saved.records), path, list(saved.history.get("warnings", [])),
              note=saved.note)
    run.network.use_optimizer(settings.optimizer_rule())  # the saved state goes on (same rule: FIXED)
    return _train(run, folder, data, on_epoch, on_batches, on_epoch_start)


def versions() -> dict:
    import numba

    return {"mnist_nn": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "machine": platform.machine()}


def divergence(net: Network, cost: float, accuracy: float, start_weight: float) -> str | None:
    """Why training has diverged, or None.

    NaN or inf anywhere is divergence. So is the quieter failure of a stable network at a huge
    learning rate: the weights blow up, every unit saturates, and accuracy falls to chance level.
    """
    if not np.isfinite(cost) or not all(np.isfinite(p).all() for p in net.weights + net.biases):
        return "the cost or the weights became NaN/inf"
    largest = max(float(np.abs(w).max()) for w in net.weights)
    if accuracy <= 1.5 / net.sizes[-1] and largest > 10 * start_weight:
        return (f"the weights blew up (largest |w| {largest:.3g}, was {start_weight:.3g}) and test accuracy "
                f"fell to chance level ({100 * accuracy:.2f}%)")
    return None


class _AtOnce:
    """An executor that runs each task at once, in the caller's thread (for measuring on one core)."""

    def submit(self, task, *args) -> Future:
        done = Future()
        try:
            done.set_result(task(*args))
        except Exception as exc:  # reported by finish(), as a pool's task's would be; Ctrl-C goes on up
            done.set_exception(exc)
        return done

    def shutdown(self, wait: bool = True) -> None:
        pass


class _Measurer:
    """Measures and checkpoints each epoch's snapshot on a second thread, in epoch order."""

    def __init__(self, run: Run, folder, data, on_epoch):
        self.run, self.folder, self.data, self.on_epoch = run, folder, data, on_epoch
        self.pool = ThreadPoolExecutor(max_workers=1) if run.measure_in_background else _AtOnce()
        self.slots = threading.Semaphore(SNAPSHOTS_IN_FLIGHT)
        self.failed = threading.Event()
        self.futures = []
        self.start_weight = max(float(np.abs(w).max()) for w in run.network.weights)
        self.unpredicted = {}  # digit -> epochs in a row it was never predicted
        self.warned = {w.get("digit") for w in run.warnings}
        self.best_score = self._best_score()
        self.best_network = None  # the best epoch's snapshot, for early stopping
        self.stop = threading.Event()  # set once early stopping decided: later epochs are not recorded
        self.sparse = None
        if run.settings.backend == "jit" and len(run.network.sizes) == 3:
            # One sparse copy of the training images, for the training kernel and the measuring alike.
            from mnist_nn.backends import jit

            self.sparse = jit.sparse_rows(np.asarray(data.train.images, dtype=run.network.dtype), run.network.dtype)
        self.futures.append(self.pool.submit(self._prepare))

    def _best_score(self):
        best = self.run.best
        return None if best is None or best.get("validation_accuracy") is None else best["validation_accuracy"]

    def _prepare(self):
        net, data = self.run.network, self.data
        self.train = net.evaluator(*data.train, sparse=self.sparse)
        self.test = net.evaluator(*data.test)
        self.validation = net.evaluator(*data.validation) if len(data.validation.labels) else None

    def submit(self, epoch: int, net: Network, seconds: float) -> None:
        self.slots.acquire()
        self.futures.append(self.pool.submit(self._measure, epoch, copy.deepcopy(net), seconds))

    def _measure(self, epoch: int, snapshot: Network, seconds: float) -> None:
        try:
            if self.failed.is_set() or self.stop.is_set():
                return  # an epoch trained after a divergence, a failed write or the early stop: not recorded
            self._measure_and_save(epoch, snapshot, seconds)
        except BaseException:
            self.failed.set()
            raise
        finally:
            self.slots.release()

    def _measure_and_save(self, epoch: int, snapshot: Network, seconds: float) -> None:
        run, data, l2 = self.run, self.data, self.run.settings.l2
        with np.errstate(all="ignore"):
            cost, train_predicted = self.train(l2, snapshot)
            test_accuracy = float(np.mean(self.test(0.0, snapshot)[1] == data.test.labels))
            val_predicted = self.validation(0.0, snapshot)[1] if self.validation else None
        why = divergence(snapshot, cost, test_accuracy, self.start_weight)
        if why:
            kept = (f"the checkpoint after epoch {len(run.records)} is kept in {run.folder}"
                    if run.records and run.folder else "nothing was saved")
            raise DivergedError(f"training diverged in epoch {epoch}: {why}; try a smaller --lr "
                                f"(now {run.settings.lr}); {kept}")
        val_accuracy = float(np.mean(val_predicted == data.validation.labels)) if self.validation else None
        record = {"epoch": epoch, "test_accuracy": test_accuracy, "validation_accuracy": val_accuracy,
                  "train_accuracy": float(np.mean(train_predicted == data.train.labels)),
                  "train_cost": float(cost), "lr": run.settings.lr_at(epoch - 1), "seconds": round(seconds, 4)}
        warnings = self._stuck_warnings(epoch, val_predicted if self.validation else train_predicted)
        run.warnings.extend(warnings)
        run.records.append(record)
        is_best = val_accuracy is not None and (self.best_score is None or val_accuracy > self.best_score)
        if is_best:
            self.best_score = val_accuracy
            if run.settings.patience:
                self.best_network = snapshot
        self._check_patience(epoch)
        if self.folder is not None:
            self._save(snapshot, is_best)
        if self.on_epoch is not None:
            self.on_epoch({**record, "warnings": [w["message"] for w in warnings]} if warnings else record, run)

    def _check_patience(self, epoch: int) -> None:
        """Early stopping: K epochs without a better validation accuracy than the best one (ties do not
        count as better, as the best epoch is the first to reach it). Decided from the records alone, so
        the epoch it stops at does not depend on how far training ran ahead of the measuring."""
        patience, run = self.run.settings.patience, self.run
        if not patience or epoch >= run.settings.epochs:
            return
        best = run.best
        if epoch - best["epoch"] >= patience:
            run.stopped_early = {"epoch": epoch, "best_epoch": best["epoch"], "patience": patience}
            self.stop.set()

    def _stuck_warnings(self, epoch: int, predicted) -> list[dict]:
        """Digits no image was predicted as, STUCK_EPOCHS epochs in a row: their output units are stuck."""
        n_classes = self.run.network.sizes[-1]
        counts = np.bincount(predicted, minlength=n_classes)
        for digit in range(n_classes):
            self.unpredicted[digit] = self.unpredicted.get(digit, 0) + 1 if counts[digit] == 0 else 0
        for warning in self.run.warnings:  # a stuck digit predicted again (and still) is recorded as such
            if counts[warning["digit"]] == 0:
                warning.pop("recovered_epoch", None)
            elif "recovered_epoch" not in warning:
                warning["recovered_epoch"] = epoch
        found = []
        for digit, streak in sorted(self.unpredicted.items()):
            if streak >= STUCK_EPOCHS and digit not in self.warned:
                self.warned.add(digit)
                which = "validation" if self.validation else "training"
                found.append({"epoch": epoch, "digit": digit, "message": (
                    f"digit {digit} has not been predicted for a single {which} image for {streak} epochs: "
                    f"its output unit is stuck (saturated), which caps accuracy near 90%; try another --seed, "
                    f"or --cost cross-entropy --init scaled")})
        return found

    def _save(self, snapshot: Network, is_best: bool) -> None:
        run = self.run
        extra = {"versions": versions(), "warnings": run.warnings}
        if run.stopped_early:
            extra["stopped_early"] = run.stopped_early
        try:
            runfolder.save(run.folder, snapshot, run.settings, run.records, extra, is_best)
        except OSError as exc:
            run.records.pop()
            problem = (f"could not write the checkpoint of epoch {len(run.records) + 1} to {run.folder} "
                       f"({exc.strerror or exc})")
            if run.records:
                raise CheckpointError(f"{problem}; the checkpoint after epoch {len(run.records)} is kept; free some "
                                      f"space and continue with --resume {run.folder}") from None
            # The first checkpoint is incomplete (best.npz may be written, history.json not): remove its
            # pieces, so that the folder, empty again, is removed when the run winds up.
            for name in runfolder.CHECKPOINT_FILES:
                (run.folder / name).unlink(missing_ok=True)
            raise CheckpointError(f"{problem}; nothing was saved; free some space and start the run again") from None
        if self.folder.created and len(run.records) == 1:
            runfolder.point_latest(run.folder)  # runs/latest: the newest run, once it holds a checkpoint

    def finish(self) -> BaseException | None:
        """Wait for every epoch still being measured; the first error one of them raised."""
        self.pool.shutdown(wait=True)
        for future in self.futures:
            if future.exception() is not None:
                return future.exception()
        return None


def _load_data(settings: Settings, data):
    if callable(data):
        return data(settings)
    if data is None:
        from mnist_nn.data import load_mnist

        data = load_mnist(validation_size=settings.validation_size, dtype=settings.dtype)
    return data


def _training_part(data, settings: Settings):
    """``data`` with the training split cut to its first ``settings.train_size`` images (0: all)."""
    if not settings.train_size or settings.train_size >= len(data.train.labels):
        return data
    train = type(data.train)(*(part[:settings.train_size] for part in data.train))
    return data._replace(train=train)


def _train(run: Run, folder, data, on_epoch, on_batches, on_epoch_start) -> Run:
    settings, net = run.settings, run.network
    started = time.perf_counter()
    try:
        data = _training_part(_load_data(settings, data), settings)
        train_x, train_y = data.train
        if settings.train_size > len(train_y):
            raise UsageError(f"--train-size {settings.train_size} is larger than the training set ({len(train_y)})")
        if settings.batch_size > len(train_y):
            raise UsageError(f"--batch-size {settings.batch_size} is larger than the training set ({len(train_y)})")
        measurer = _Measurer(run, folder, data, on_epoch)
    except BaseException:
        if folder is not None:
            folder.discard_if_unused()
            folder.release()
        raise
    clock = [started]
    total = settings.epochs
    recorded_before = len(run.records)
    todo = total - len(run.records)

    def before_first_epoch():
        clock[0] = time.perf_counter()  # epoch 1's time is the epoch's, not the preparation's
        run.prepared_seconds = clock[0] - started
        if on_epoch_start is not None:
            on_epoch_start(len(run.records) + 1, total)

    def after_epoch(epoch: int, trained: Network):
        seconds = time.perf_counter() - clock[0]
        if measurer.failed.is_set() or measurer.stop.is_set():
            return False
        measurer.submit(epoch, trained, seconds)
        run.epochs_this_call += 1
        if epoch < total and on_epoch_start is not None:
            on_epoch_start(epoch + 1, total)
        clock[0] = time.perf_counter()

    class Progress:
        start = staticmethod(before_first_epoch)
        if on_batches is not None:
            batches = staticmethod(on_batches)

    try:
        lr = settings.lr if settings.lr_schedule == "constant" else settings.lr_at
        net.sgd(train_x, train_y, todo, settings.batch_size, lr, settings.l2, backend=settings.backend,
                on_epoch=after_epoch, progress=Progress(), sparse=measurer.sparse)
    except KeyboardInterrupt as exc:
        _wind_up(run, folder, measurer, started, recorded_before)
        exc.run = run
        raise
    problem = _wind_up(run, folder, measurer, started, recorded_before)
    if problem is not None:
        raise problem
    return run


def _wind_up(run: Run, folder, measurer: _Measurer, started: float, recorded_before: int) -> BaseException | None:
    """Wait for the checkpoints still being written (a second Ctrl-C meanwhile is ignored: the last
    checkpoint must be whole), release the folder, and remove it if nothing was saved."""
    import signal

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        problem = measurer.finish()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    run.train_seconds = time.perf_counter() - started - run.prepared_seconds
    run.epochs_this_call = len(run.records) - recorded_before  # not the epochs trained past an early stop
    if run.stopped_early and problem is None:
        run.network = measurer.best_network or (Network.load(run.folder / "best.npz") if run.folder else run.network)
    if folder is not None:
        if not run.records:
            folder.discard_if_unused()
        folder.release()
    return problem
