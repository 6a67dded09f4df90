"""Starting ``python -m mnist_nn.train`` as a real process, for the tests that signal or kill it.

Every child starts with the default disposition of SIGINT and SIGTERM, whatever the test runner
inherited (a shell's background job has SIGINT ignored, and a child would inherit that and never see
the Ctrl-C a test sends), and the ``processes`` fixture kills every child still running when its test
ends, pass or fail.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest


def tiny_args(cache, out, *extra):
    return ["--data-dir", str(cache), "--offline", "--validation-size", "100", "--out", str(out), *extra]


def default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def run_cli(*args, timeout=300, module="mnist_nn.train"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=default_signals)


class Processes:
    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, *args, module="mnist_nn.train", cwd=None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, cwd=cwd,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                preexec_fn=default_signals)
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=30)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def processes():
    started = Processes()
    try:
        yield started
    finally:
        started.kill_all()
