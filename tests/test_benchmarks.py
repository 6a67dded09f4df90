"""Smoke tests of the benchmark scripts: they run and their output is well-formed (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_script(name, *args):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bench_backends_quick(tiny_cache, tmp_path):
    out = run_script("bench_backends.py", "--quick", "--no-peers", "--data-dir", str(tiny_cache), "--offline",
                     "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png"))
    assert "| implementation | dtype | s/epoch (median)" in out
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    assert [(r["implementation"], r["dtype"]) for r in records] == [
        ("mnist_nn loop", "float64"), ("mnist_nn vectorized", "float64"), ("mnist_nn vectorized", "float32"),
        ("mnist_nn jit", "float64"), ("mnist_nn jit", "float32")]
    for r in records:
        assert {"implementation", "dtype", "threads", "seconds_per_epoch", "samples_per_second"} <= set(r)
        assert r["threads"] == 1 and r["seconds_per_epoch"] > 0 and r["min"] <= r["seconds_per_epoch"] <= r["max"]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_scaling_quick(tiny_cache, tmp_path):
    out = run_script("bench_scaling.py", "--quick", "--data-dir", str(tiny_cache), "--offline",
                     "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png"))
    assert "| hidden units | vectorized s | jit s | jit speedup |" in out and "| batch size |" in out
    points = json.loads((tmp_path / "s.json").read_text())["points"]
    assert {(p["sweep"], p["hidden"], p["batch_size"]) for p in points} == {
        *(("hidden", h, 10) for h in (30, 100, 300, 1000)), *(("batch", 30, b) for b in (1, 10, 100, 1000))}
    assert all(p["seconds_per_epoch"] > 0 for p in points)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
