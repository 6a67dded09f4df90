"""scripts/ and benchmarks/ on bad input: one line and exit 2 (or 1), checked before any long work."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent


def run(script, *args):
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def one_line(result, status):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("script,args,message", [
    ("benchmarks/bench_scaling.py", ["--threads", "0"], "--threads: 0 is less than 1"),
    ("benchmarks/bench_scaling.py", ["--samples", "0"], "--samples: 0 is less than 1"),
    ("benchmarks/bench_scaling.py", ["--epochs", "0"], "--epochs: 0 is less than 1"),
    ("benchmarks/bench_backends.py", ["--epochs", "0"], "--epochs: 0 is less than 1"),
    ("benchmarks/bench_backends.py", ["--json", "/proc/x.json"], "/proc/x.json: cannot write there"),
    ("benchmarks/bench_scaling.py", ["--plot", "/proc/x.png"], "/proc/x.png: cannot write there"),
])
def test_benchmark_flags_are_checked_first(script, args, message, tiny_cache):
    result = run(script, "--quick", "--data-dir", str(tiny_cache), "--offline", *args)
    one_line(result, 2)
    assert message in result.stderr and "Seconds" not in result.stdout


def test_benchmark_without_cached_data_is_one_line(tmp_path):
    result = run("benchmarks/bench_backends.py", "--quick", "--no-peers", "--data-dir", str(tmp_path), "--offline")
    one_line(result, 1)
    assert "not in" in result.stderr


def test_plot_history_on_odd_histories(tmp_path, tiny_cache):
    no_cost = tmp_path / "no-cost"
    no_cost.mkdir()
    (no_cost / "history.json").write_text(json.dumps({"epochs": [{"epoch": 1, "test_accuracy": 0.5}]}))
    result = run("scripts/plot_history.py", str(no_cost), "--out", str(tmp_path / "c.png"))
    one_line(result, 2)
    assert "lacks epoch, test_accuracy or train_cost" in result.stderr
    fine = tmp_path / "fine"
    fine.mkdir()
    (fine / "history.json").write_text(json.dumps({"epochs": [{"epoch": 1, "test_accuracy": 0.5, "train_cost": 1.0}]}))
    one_line(run("scripts/plot_history.py", str(fine), "--out", "/proc/x.png"), 2)
    result = run("scripts/plot_history.py", str(fine), "--out", str(tmp_path / "c.png"))  # no settings: fine
    assert result.returncode == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_accuracy_table_is_a_sweep_and_leaves_no_folder(tiny_cache, tmp_path, monkeypatch, capsys):
    from sweephelp import require_dask

    require_dask()
    spec = importlib.util.spec_from_file_location("accuracy_table", REPO / "scripts" / "accuracy_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    monkeypatch.setattr(table, "SETUPS", [("tiny", "--epochs 2 --hidden 12 --lr 1.0 --validation-size 100", "0-1",
                                           0.0, None),
                                          ("tiny, unreachable", "--epochs 2 --hidden 12 --lr 1.0 --validation-size 100 "
                                                                "--cost cross-entropy", "0", 1.01, None)])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert table.main(["--data-dir", str(tiny_cache), "--offline", "--workers", "1"]) == 1  # one bound not met
    printed = capsys.readouterr().out
    assert "| tiny | 0-1 |" in printed and "| yes |" in printed and "| tiny, unreachable | 0 |" in printed
    assert "| NO |" in printed and "sweep folder" not in printed and "3 runs, 0 done before" in printed
    assert list(scratch.iterdir()) == []
    keep = tmp_path / "keep"
    assert table.main(["--data-dir", str(tiny_cache), "--offline", "--workers", "1", "--keep", str(keep)]) == 1
    assert json.loads((keep / "summary.json").read_text())["runs"] == 3
