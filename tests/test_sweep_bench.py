"""benchmarks/bench_sweep.py on the tiny data: its table and JSON, and its flags checked first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TinyMnist
from sweephelp import default_signals, require_dask, write_trusted_cache

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sweep.py"


def bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_signals)


def test_bench_sweep_prints_its_table_and_writes_json(tmp_path):
    require_dask()
    cache = write_trusted_cache(tmp_path / "cache", TinyMnist())
    result = bench("--quick", "--workers", "1", "--validation-size", "100", "--data-dir", str(cache), "--offline",
                   "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png"))
    assert result.returncode == 0, result.stderr
    assert "| sweep, 1 worker(s) |" in result.stdout and "| one process, fit() after fit(), on one core (as a worker does) |" in result.stdout
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["runs"] == 2 and [s["workers"] for s in figures["sweeps"]] == [1]
    assert figures["sweeps"][0]["runs_per_minute"] > 0 and figures["one_process_seconds"] > 0
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_sweep_flags_are_checked_first(tmp_path):
    for args, message in ((["--runs", "0"], "--runs: 0 is less than 1"),
                          (["--json", "/proc/x.json"], "/proc/x.json: cannot write there"),
                          (["--plot", "/proc/x.png"], "/proc/x.png: cannot write there")):
        result = bench(*args, "--data-dir", str(tmp_path), "--offline")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
