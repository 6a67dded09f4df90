"""A run folder: ``model.npz``, ``history.json`` (and ``best.npz``), written so that a kill at any
moment leaves a checkpoint that ``--resume`` can continue exactly.

* One training at a time per folder: a new run takes a folder that does not exist yet (or is empty),
  created atomically, so two starts never share one; a running training holds an advisory lock
  (``.lock``, ``fcntl.flock``) that a second ``--resume`` of the same folder is refused by.
* Each checkpoint writes ``history.json`` first and ``model.npz`` last, each atomically. The model
  carries its epoch (``epochs_trained``), so the two can disagree in one way only: a kill between the
  two writes leaves the history one epoch ahead, and :func:`load` drops that record; the model and its
  random state are that epoch's start, so training it again gives the same numbers.
* :func:`load` checks every field of a run before a single batch is trained.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mnist_nn.errors import ModelFileError, RunFolderError, UsageError
from mnist_nn.fileio import write_text
from mnist_nn.settings import Settings

DEFAULT_PARENT = Path("runs")
LATEST = "latest"
HISTORY_LIMIT = 64 * 2**20  # bytes; a record is ~200 bytes, so ~300,000 epochs
OWN_FILES = ("model.npz", "best.npz", "history.json", "learning_curve.png", ".lock")
RECORD_NUMBERS = ("test_accuracy", "train_cost", "seconds")


@dataclass
class RunFolder:
    """An output folder this process holds the lock of."""

    path: Path
    created: bool  # made by this process (and so removed again if nothing was saved in it)
    lock_fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def discard_if_unused(self) -> bool:
        """Remove the folder again if this process made it and nothing but the lock is in it."""
        if not self.created or any(p.name != ".lock" for p in self.path.iterdir()):
            return False
        self.release()
        (self.path / ".lock").unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            return False
        return True


def lock(folder: Path, flag: str = "--resume") -> int:
    """Hold ``folder``'s lock (until the returned descriptor is closed, or the process ends)."""
    error = UsageError if flag == "--out" else RunFolderError
    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise error(f"{flag} {folder}: cannot write there ({exc.strerror}); choose another folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        fix = "choose another --out" if flag == "--out" else "wait for it or stop it"
        raise error(f"{flag} {folder}: another training is running in this folder; {fix}") from None
    return fd


def create(out: str | os.PathLike | None = None) -> RunFolder:
    """Take a new run folder: ``out`` (refused if it holds anything), or ``runs/<date-time>`` with a
    ``-2``, ``-3``... suffix when another run started in the same second."""
    if out is not None:
        path = Path(out)
        try:
            path.mkdir(parents=True)
            created = True
        except FileExistsError:
            if not path.is_dir():
                raise UsageError(f"--out {path}: exists and is not a folder; choose another --out") from None
            created = False
        except OSError as exc:
            raise UsageError(f"--out {path}: cannot write there ({exc.strerror}); choose another folder") from None
        if not created and any(p.name != ".lock" for p in path.iterdir()):
            held = (path / "history.json").exists() or (path / "model.npz").exists()
            raise UsageError(f"--out {path}: holds a run already; continue it with --resume {path}, or choose "
                             "another --out" if held else
                             f"--out {path}: holds other files; a run starts in a new or empty folder: choose another --out")
        folder = _take(path, created)
        if not created and any(p.name != ".lock" for p in path.iterdir()):  # someone was quicker
            folder.release()
            raise UsageError(f"--out {path}: another run started there at the same time; choose another --out")
        return folder
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        path = DEFAULT_PARENT / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"{DEFAULT_PARENT}: cannot write there ({exc.strerror}); "
                                 f"choose another folder with --out") from None
        return _take(path, True)
    raise RunFolderError(f"{DEFAULT_PARENT}: 1000 runs started this second; choose a folder with --out")


def _take(path: Path, created: bool) -> RunFolder:
    """Lock ``path`` as a new run's folder; if that fails (or Ctrl-C comes), a folder made here goes again."""
    try:
        return RunFolder(path, created, lock(path, "--out"))
    except BaseException:
        if created:
            (path / ".lock").unlink(missing_ok=True)
            try:
                path.rmdir()
            except OSError:
                pass
        raise


def point_latest(folder: Path) -> None:
    """Make ``runs/latest`` name ``folder`` (for runs in the default parent only), atomically."""
    if folder.parent != DEFAULT_PARENT:
        return
    link = DEFAULT_PARENT / LATEST
    tmp = DEFAULT_PARENT / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(folder.name, tmp)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # a convenience only: never fail a run for it


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_FILES = ("best.npz", "history.json", "model.npz")  # in the order save writes them


def save(folder: Path, net, settings: Settings, records: list[dict], extra: dict, best: bool) -> None:
    """One checkpoint: ``best.npz`` (when this epoch is the best so far), ``history.json``, then
    ``model.npz``. Raises OSError as the file system does (the caller names the checkpoint kept)."""
    last = records[-1] if records else {}
    net.metadata = {"training": {k: getattr(settings, k) for k in (*Settings.FIXED, "backend")},
                    "test_accuracy": last.get("test_accuracy"),
                    "validation_accuracy": last.get("validation_accuracy")}
    net.metadata["training"]["hidden"] = list(settings.hidden)
    if best:
        net.save(folder / "best.npz")
    history = {"settings": settings.to_dict(), "seed": settings.seed, **extra, "epochs": records}
    write_text(folder / "history.json", json.dumps(history, indent=1, allow_nan=False))
    net.save(folder / "model.npz")


@dataclass
class Checkpoint:
    settings: Settings
    records: list[dict]
    history: dict
    network: object
    note: str | None  # what :func:`load` had to reconcile, for the user


def resolve(run_dir: str | os.PathLike) -> Path:
    """The real folder behind ``run_dir`` (``runs/latest`` is a symlink)."""
    path = Path(run_dir)
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise UsageError(f"--resume {run_dir}: no such run folder; give a folder written by mnist_nn.train") from None


def load(path: Path) -> Checkpoint:
    """Read and check the run in ``path`` (see the module docstring); RunFolderError names what is wrong."""
    from mnist_nn.network import Network

    where = f"--resume {path}"
    history_path = path / "history.json"
    if not path.is_dir():
        raise RunFolderError(f"{where}: not a folder; give a run folder written by mnist_nn.train")
    if not history_path.is_file():
        raise RunFolderError(f"{where}: no readable history.json there; give a folder written by mnist_nn.train")
    try:
        if history_path.stat().st_size > HISTORY_LIMIT:
            raise RunFolderError(f"{where}: history.json is over {HISTORY_LIMIT // 2**20} MiB, far more than a run writes")
        history = json.loads(history_path.read_bytes())
    except RecursionError:
        raise RunFolderError(f"{where}: history.json is nested too deeply to be a run's history") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{where}: history.json is not readable JSON ({exc})") from None
    if not isinstance(history, dict) or "settings" not in history or "epochs" not in history:
        raise RunFolderError(f"{where}: history.json lacks settings or epochs; it was not written by mnist_nn.train")
    settings = Settings.from_dict(history["settings"], where=f"{where}: history.json settings", error=RunFolderError)
    records = history["epochs"]
    if not isinstance(records, list):
        raise RunFolderError(f"{where}: history.json epochs is not a list")
    for i, record in enumerate(records):
        _check_record(record, i + 1, where)
    try:
        net = Network.load(path / "model.npz")
    except ModelFileError as exc:
        raise RunFolderError(f"{where}: {exc}") from None
    expected = {"sizes": settings.sizes, "activation": settings.activation, "cost": settings.cost,
                "init": settings.init, "dtype": settings.dtype, "batch_norm": settings.batch_norm,
                "optimizer": settings.optimizer}
    found = {"sizes": net.sizes, "activation": net.activation.name, "cost": net.cost_function.name,
             "init": net.init, "dtype": net.dtype.name, "batch_norm": net.bn is not None,
             "optimizer": net.optimizer.name}
    for key, value in expected.items():
        if found[key] != value:
            raise RunFolderError(f"{where}: model.npz has {key} {found[key]} but history.json says {value}; "
                                 f"the folder was changed by hand: start a new run")
    note = None
    if len(records) == net.epochs_trained + 1:  # killed between the history and the model write
        records = records[:-1]
        note = f"epoch {net.epochs_trained + 1}'s checkpoint was incomplete (the run was killed); training it again"
    elif len(records) != net.epochs_trained:
        raise RunFolderError(f"{where}: history.json lists {len(records)} epochs but model.npz holds epoch "
                             f"{net.epochs_trained}; the folder was changed by hand: start a new run")
    if not records:
        raise RunFolderError(f"{where}: no epoch was completed in this run; start a new run instead")
    return Checkpoint(settings, records, history, net, note)


def _check_record(record, epoch: int, where: str) -> None:
    if not isinstance(record, dict):
        raise RunFolderError(f"{where}: history.json epoch {epoch} is not a JSON object")
    if record.get("epoch") != epoch:
        raise RunFolderError(f"{where}: history.json epoch {epoch} is numbered {record.get('epoch')!r}")
    for key in RECORD_NUMBERS:
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RunFolderError(f"{where}: history.json epoch {epoch} lacks a number for {key}")
    if not 0 <= record["test_accuracy"] <= 1:
        raise RunFolderError(f"{where}: history.json epoch {epoch} has test_accuracy {record['test_accuracy']}")


def clean_stale_parts(path: Path) -> None:
    """Temporary files a killed run left (this process holds the folder's lock, so none is live)."""
    for part in path.glob(".*.part"):
        if part.is_file() and any(part.name.startswith(f".{name}.") for name in OWN_FILES):
            part.unlink(missing_ok=True)
