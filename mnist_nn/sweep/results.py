"""A sweep's output folder: ``results.jsonl`` (one JSON object per finished run) and ``runs/<run_id>/``.

* One sweep at a time writes a folder (an advisory lock, ``.sweep.lock``).
* A run's folder is written first, under a hidden name, and renamed into place; then its line is
  appended to ``results.jsonl`` with one ``write`` (``O_APPEND``) and an fsync. A line therefore
  always has its folder, and a kill leaves at most a folder without a line, which the next sweep
  of that run replaces.
* Statuses: ``ok``; ``failed`` (the run's own failure: bad settings, divergence; never redone);
  ``error`` (the worker's: lost, out of retries; the next sweep of the folder does the run again).
  A later line of a run supersedes an earlier one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mnist_nn.errors import UsageError
from mnist_nn.settings import Settings
from mnist_nn.sweep.grid import run_key

RESULTS = "results.jsonl"
RUNS = "runs"
LOCK = ".sweep.lock"
RESULTS_LIMIT = 256 * 2**20  # bytes; a line is ~1 kB, so a quarter of a million runs
LINE_LIMIT = 1 << 20  # bytes in one line; far over what a run writes
DONE = ("ok", "failed")
ALLOWED_FILES = ("model.npz", "best.npz", "history.json")


@dataclass
class SweepFolder:
    path: Path
    lock_fd: int | None = field(default=None, repr=False)
    created: bool = False  # made by this sweep (and removed again if it ends with nothing in it)

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    def release(self) -> None:
        """Let go of the lock; a folder this sweep made and wrote nothing to is removed again."""
        if self.lock_fd is None:
            return
        if self.created and not self.results_path.exists() and not any((self.path / RUNS).iterdir()):
            for leftover in (self.path / RUNS, self.path / LOCK):
                try:
                    leftover.rmdir() if leftover.is_dir() else leftover.unlink()
                except OSError:
                    pass
            try:
                self.path.rmdir()
            except OSError:
                pass
        os.close(self.lock_fd)
        self.lock_fd = None


def take(out) -> SweepFolder:
    """Open (or make) the sweep folder ``out`` and hold its lock."""
    path = Path(out)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / RUNS).mkdir(exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise UsageError(f"--out {path}: exists and is not a folder; choose another --out") from None
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write there ({exc.strerror or exc}); choose another --out") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UsageError(f"--out {path}: another sweep is writing to this folder; wait for it or choose another "
                         f"--out") from None
    if (path / "history.json").exists() or (path / "model.npz").exists():
        os.close(fd)
        raise UsageError(f"--out {path}: holds a training run, not a sweep; choose another --out")
    return SweepFolder(path, fd, created)


def read(path: Path) -> tuple[list[dict], list[str]]:
    """The results in ``path``/results.jsonl (the latest line of each run) and notes on lines skipped.

    Every line is checked: an object with a ``run_id``, a ``status`` and settings a run can have.
    A last line without its newline (a kill in the middle of a write) is skipped.
    """
    file = path / RESULTS
    if not file.exists():
        return [], []
    where = f"{file}"
    try:
        if file.stat().st_size > RESULTS_LIMIT:
            raise UsageError(f"{where}: over {RESULTS_LIMIT >> 20} MiB; start a new sweep folder with another --out")
        raw = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    latest: dict[str, dict] = {}
    notes = []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        notes.append(f"{where}: the last line is incomplete (a sweep was killed while writing it); ignored")
        lines.pop()
    for number, line in enumerate(lines, 1):
        problem = None
        try:
            record = json.loads(line) if len(line) <= LINE_LIMIT else None
            if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
                problem = "not a result object with a run_id"
            elif record.get("status") not in (*DONE, "error"):
                problem = f"status {record.get('status')!r} is not ok, failed or error"
            else:
                settings = _settings(record)
                record["key"] = run_key(settings)  # recomputed: a newer Settings fills in new defaults
                record["settings"] = settings.to_dict()
        except (ValueError, RecursionError) as exc:
            problem = f"not readable ({exc})"
        except UsageError as exc:
            problem = str(exc)
        if problem:
            notes.append(f"{where} line {number}: {problem}; ignored")
            continue
        latest.pop(record["key"], None)  # a later line of the same run replaces it, and moves to the end
        latest[record["key"]] = record
    return list(latest.values()), notes


def _settings(record: dict) -> Settings:
    """The settings of a result line, checked; a failed run's may be the very values no run can use."""
    try:
        return Settings.from_dict(record.get("settings"), where="settings")
    except UsageError:
        if record["status"] != "failed" or not isinstance(record.get("settings"), dict):
            raise
        known = {f for f in Settings.__dataclass_fields__}
        try:
            return Settings(**{k: v for k, v in record["settings"].items() if k in known})
        except TypeError as exc:
            raise UsageError(f"settings: {exc}") from None


def done_keys(results: list[dict]) -> set[str]:
    return {r["key"] for r in results if r["status"] in DONE}


def append(folder: SweepFolder, record: dict) -> None:
    """Add one line to results.jsonl, whole: one write to a file opened for appending, then fsync."""
    line = (json.dumps({k: v for k, v in record.items() if k != "key"}, allow_nan=False) + "\n").encode()
    fd = os.open(folder.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"only {written} of {len(line)} bytes written")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_run(folder: SweepFolder, run_id: str, files: dict[str, bytes]) -> Path:
    """``runs/<run_id>/`` from the files a worker sent back, in place at once (written under a hidden
    name, then renamed); a folder of the same run left by a killed sweep is replaced."""
    runs = folder.path / RUNS
    final = runs / run_id
    staging = runs / f".{run_id}.part-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name, content in files.items():
            if name not in ALLOWED_FILES:
                raise ValueError(f"a worker sent back an unexpected file {name!r}")
            (staging / name).write_bytes(content)
        if final.exists():  # no line in results.jsonl names it (that is why the run was done again)
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def result_record(planned, outcome: dict) -> dict:
    """The line of results.jsonl for a finished run, from what the worker sent back."""
    record = {"run_id": planned.run_id, "key": planned.key, "status": outcome["status"],
              "settings": planned.settings.to_dict(), "seed": planned.settings.seed,
              "worker": outcome.get("worker"), "seconds": outcome.get("seconds"),
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if outcome["status"] != "ok":
        return {**record, "error": outcome.get("error", "unknown error")}
    records = outcome["records"]
    final = records[-1]
    has_validation = final.get("validation_accuracy") is not None
    best = max(records, key=lambda r: r["validation_accuracy"] if has_validation else r["test_accuracy"])
    warnings = outcome.get("warnings", [])
    return {**record,
            "final_test_accuracy": final["test_accuracy"],
            "final_validation_accuracy": final.get("validation_accuracy"),
            "final_train_accuracy": final.get("train_accuracy"),
            "best_validation_accuracy": best.get("validation_accuracy"),
            "best_test_accuracy": best["test_accuracy"],
            "best_epoch": best["epoch"], "epochs": len(records),
            "train_seconds": outcome.get("train_seconds"),
            "stuck_digits": sorted({w["digit"] for w in warnings}),
            "stuck_at_end": sorted({w["digit"] for w in warnings if "recovered_epoch" not in w}),
            "folder": f"{RUNS}/{planned.run_id}"}
