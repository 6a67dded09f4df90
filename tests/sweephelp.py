"""What the sweep tests share: the Dask extra (skip, or fail in CI), a tiny data cache the worker
processes trust, the sweep command as a real process, and a real ``dask scheduler`` with ``dask worker``
processes on 127.0.0.1, every process killed when its test ends, pass or fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TinyMnist, write_trusted_cache  # noqa: F401  (re-exported for the sweep tests)

EXTRA_MESSAGE = 'Dask distributed is not installed: pip install ".[sweep]" to run the sweep tests'
START_LIMIT_S = 120  # a generous bound on a cluster starting; only ever reached when something is broken


def require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        if os.environ.get("MNIST_NN_REQUIRE_EXTRAS") == "1":
            pytest.fail(EXTRA_MESSAGE)
        pytest.skip(EXTRA_MESSAGE)
    if shutil.which("dask", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")) is None:
        message = "the dask command is not on PATH: pip install \".[sweep]\" into this environment"
        pytest.fail(message) if os.environ.get("MNIST_NN_REQUIRE_EXTRAS") == "1" else pytest.skip(message)


@pytest.fixture
def procs():
    """Processes a test starts, all killed when it ends, pass or fail."""
    started = Processes()
    try:
        yield started
    finally:
        started.kill_all()


def default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


class Processes:
    """Children in their own sessions (a signal to one reaches its own workers, as a terminal's would),
    all killed, with their process groups, when the test ends."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                preexec_fn=default_signals, **kwargs)
        self.started.append(proc)
        return proc

    def sweep(self, *args, **kwargs) -> subprocess.Popen:
        return self.start([sys.executable, "-m", "mnist_nn.sweep", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, **kwargs)

    def kill_all(self) -> None:
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.communicate(timeout=30)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def run_sweep(*args, timeout=300) -> subprocess.CompletedProcess:
    """The sweep command to its end (killed with its workers if it outlives ``timeout``)."""
    procs = Processes()
    try:
        proc = procs.sweep(*args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        procs.kill_all()


def dask_command() -> list[str]:
    return [str(Path(sys.executable).parent / "dask")] if (Path(sys.executable).parent / "dask").exists() else ["dask"]


def start_cluster(procs: Processes, folder: Path, n_workers: int) -> tuple[str, dict[str, subprocess.Popen]]:
    """A ``dask scheduler`` and ``n_workers`` ``dask worker --nthreads 1`` processes (no nanny, so a
    killed worker stays dead), all on 127.0.0.1; the scheduler's address and the workers by name."""
    scheduler_file = folder / "scheduler.json"
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    # Their working folders in the test's own folder: a killed worker's are not left in /tmp.
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(folder / "dask")}
    procs.start([*dask_command(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(scheduler_file)],
                stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.log", "w"), env=env)
    deadline = time.monotonic() + START_LIMIT_S
    while not scheduler_file.exists() or not scheduler_file.read_text().strip():
        assert time.monotonic() < deadline, (logs / "scheduler.log").read_text()
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    workers = {}
    for i in range(n_workers):
        name = f"w{i}"
        workers[name] = procs.start([*dask_command(), "worker", address, "--nthreads", "1", "--no-nanny",
                                     "--host", "127.0.0.1", "--no-dashboard", "--name", name],
                                    stdout=subprocess.DEVNULL, stderr=open(logs / f"{name}.log", "w"), env=env)
    return address, workers


def read_results(folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
