"""What both benchmark scripts share: thread control, the machine's description, timing, tables.

Import this module *before* NumPy: ``limit_threads`` sets the thread-count variables that BLAS,
OpenMP and Numba read when they load.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


def limit_threads(threads: int) -> None:
    """Pin every thread pool to ``threads`` (call before importing NumPy, Numba or PyTorch)."""
    if "numpy" in sys.modules:
        raise RuntimeError("limit_threads must run before NumPy is imported")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def add_shared_flags(parser, json_help: str, plot_help: str) -> None:
    """The flags both benchmarks take: where results go and where the data is (mnist_nn's data flags)."""
    from mnist_nn.cli import add_data_flags

    parser.add_argument("--json", metavar="PATH", help=json_help)
    parser.add_argument("--plot", metavar="PATH", help=plot_help)
    add_data_flags(parser)


def check_outputs(*paths) -> None:
    """Prove each output file can be written before minutes of benchmarking, not after."""
    from mnist_nn.errors import UsageError
    from mnist_nn.fileio import atomic_write

    for path in paths:
        if path is None:
            continue
        try:
            with atomic_write(path):
                raise _Probe
        except _Probe:
            pass
        except OSError as exc:
            raise UsageError(f"{path}: cannot write there ({exc.strerror or exc}); choose another path") from None


class _Probe(Exception):
    """Leaves atomic_write after its temporary file was made, so the target is never touched."""


def machine() -> str:
    """CPU model, core count and the versions that matter, in one line."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba
    import numpy

    return (f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy {numpy.__version__}, "
            f"Numba {numba.__version__}")


def header(title: str, threads: int) -> str:
    command = " ".join(["python", *sys.argv])
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"## {title}\n\n`{command}`  \n{machine()}; {threads} thread(s); {when}\n"


def time_calls(call, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``call()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float], scale: float = 1.0) -> dict:
    """Median, min and max of per-epoch times, and the times themselves, multiplied by ``scale`` (for
    timings on a subset)."""
    return {"seconds_per_epoch": statistics.median(seconds) * scale, "min": min(seconds) * scale,
            "max": max(seconds) * scale, "epoch_seconds": [round(s * scale, 5) for s in seconds]}


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_bars(labels: list[str], seconds: list[float], width: int = 48) -> str:
    """A log-scale bar chart in plain text (for a terminal or a README), from 0.02 s to 5 s."""
    import math

    low, high = math.log10(0.02), math.log10(5.0)
    pad = max(len(label) for label in labels)
    lines = []
    for label, value in zip(labels, seconds):
        bar = max(1, round((math.log10(max(value, 0.02)) - low) / (high - low) * width))
        lines.append(f"{label:{pad}s} {'#' * bar} {value:.3f} s")
    return "\n".join(lines)
