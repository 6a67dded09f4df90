"""The playground's training through its API, against a real server on tiny data: the form is the train
command's settings, a run trained from the page equals the train command's run, one training at a time,
and Stop, Ctrl-C and SIGTERM keeping the finished epochs and saying how to continue; and the benchmark."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_nn import runfolder
from mnist_nn.settings import Settings
from test_serve import Server, need_extra, site, tiny_cache  # noqa: F401  (site is a fixture)
from trainproc import default_signals, run_cli, tiny_args

TINY_SETTINGS = {"epochs": 2, "hidden": [16], "validation_size": 100, "batch_size": 10, "lr": 3.0}


def test_the_form_is_the_train_commands_settings(site):
    from mnist_nn.train import build_parser

    status, _, form = site.request("GET", "/api/settings")
    assert status == 200
    fields = {f["name"]: f for f in form["fields"]}
    assert list(fields) == [f.name for f in dataclasses.fields(Settings)]
    flags = {}
    for action in build_parser()._actions:
        if action.option_strings and action.help != "==SUPPRESS==":
            flags.setdefault(action.dest, action.option_strings[0])
    for name, field in fields.items():
        default = getattr(Settings(), name)
        assert field["default"] == (list(default) if isinstance(default, tuple) else default)
        assert field["flag"] == flags.get(name)
    assert fields["activation"]["kind"] == "choice" and fields["hidden"]["kind"] == "ints"


def test_bad_settings_are_refused_naming_the_setting(site):
    for settings, words in (({"lr": -1}, "--lr must be positive"), ({"epochs": "many"}, "--epochs"),
                            ({"hidden": 5}, "settings"), ({"momentum_of_doom": 1}, "unknown setting"),
                            ({"activation": "magic"}, "--activation must be one of")):
        status, _, answer = site.post("/api/train", settings)
        assert status == 400 and words in answer["error"], (settings, answer)


def test_a_run_trained_from_the_page_is_the_train_commands_run(site, tmp_path):
    """Also: one training at a time (409), the events arrive as it trains, and the run joins the list."""
    status, _, job = site.post("/api/train", TINY_SETTINGS)
    assert status == 202, job
    assert site.post("/api/train", TINY_SETTINGS)[0] == 409
    events = site.events(job["job"])
    end = events[-1]
    assert end["state"] == "done", end
    epochs = [e["record"] for e in events if e["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    lines = [e["text"] for e in events if e["kind"] == "line"]
    assert any(line.startswith("Epoch 2/2  test ") for line in lines)
    folder = site.runs / job["run"]
    saved = runfolder.load(folder)
    assert saved.records == epochs

    by_cli = run_cli(*tiny_args(site.cache, tmp_path / "cli", "--epochs", "2", "--hidden", "16"))
    assert by_cli.returncode == 0, by_cli.stderr
    theirs = runfolder.load(tmp_path / "cli")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert "learning_curve.png" in {p.name for p in folder.iterdir()}
    assert saved.settings == theirs.settings
    assert [r["test_accuracy"] for r in saved.records] == [r["test_accuracy"] for r in theirs.records]
    assert [r["train_cost"] for r in saved.records] == [r["train_cost"] for r in theirs.records]
    assert np.array_equal(saved.network.weights[0], theirs.network.weights[0])
    assert job["run"] in [m["id"] for m in site.request("GET", "/api/models")[2]["models"]]


def test_stop_keeps_the_finished_epochs_and_says_how_to_continue(site):
    status, _, job = site.post("/api/train", {**TINY_SETTINGS, "epochs": 100_000})
    assert status == 202, job
    first = site.events(job["job"], until=lambda e: e["kind"] == "epoch")
    assert first[-1]["record"]["epoch"] == 1
    assert site.post(f"/api/train/{job['job']}/stop", {})[0] == 202
    end = site.events(job["job"])[-1]
    assert end["state"] == "stopped" and "--resume" in end["lines"][0], end
    saved = runfolder.load(site.runs / job["run"])
    assert len(saved.records) >= 1
    assert site.request("GET", f"/api/train/{job['job']}")[2]["state"] == "stopped"


@pytest.mark.parametrize("signum, exit_status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_while_training_keeps_the_checkpoint(tmp_path, tiny, signum, exit_status):
    need_extra("starlette", "uvicorn")
    cache = tiny_cache(tmp_path / "cache", tiny)
    server = Server(tmp_path / "runs", cache)
    try:
        status, _, job = server.post("/api/train", {**TINY_SETTINGS, "epochs": 100_000})
        assert status == 202, job
        server.events(job["job"], until=lambda e: e["kind"] == "epoch")
        os.kill(server.proc.pid, signum)
        out, err = server.proc.communicate(timeout=120)
        assert server.proc.returncode == exit_status, err
        assert err.startswith("stopped: the checkpoint after epoch ") and "interrupted" in err
        assert "; continue with `python -m mnist_nn.train --resume" in err
        assert "Traceback" not in err
        assert len(runfolder.load(tmp_path / "runs" / job["run"]).records) >= 1
    finally:
        server.close()


def test_a_taken_port_and_a_missing_runs_folder_are_one_line(tmp_path, site):
    (tmp_path / "file").write_text("")
    for args, words in ((["--port", str(site.port)], "choose another --port"),
                        (["--runs", str(tmp_path / "file")], "not a folder")):
        done = run_cli(*args, module="mnist_nn.serve", timeout=120)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_the_benchmark_runs_and_writes_its_table(site, tmp_path):
    """A smoke test (no timing checks): the table, the JSON and the plot of benchmarks/bench_serve.py."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "benchmarks" / "bench_serve.py"),
                           "--runs", str(site.runs), "--model", "tiny-run", "--quick", "--data-dir", str(site.cache),
                           "--offline", "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          preexec_fn=default_signals)
    assert done.returncode == 0, done.stderr
    assert "| input | body bytes | clients | p50 ms | p99 ms | requests/s |" in done.stdout
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    assert [(r["input"], r["clients"]) for r in records] == [
        ("canvas PNG 140x140", 1), ("canvas PNG 140x140", 8), ("784 pixels", 1), ("784 pixels", 8)]
    assert all(r["requests"] == 96 or r["requests"] == 100 for r in records)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_data_is_a_clear_error_and_leaves_no_folder(tmp_path, site):
    """--offline without the data: the evaluation is a 503 that says so, a training ends in an error event,
    and its run folder, empty, is removed again (nothing half-written)."""
    (tmp_path / "empty").mkdir()
    server = Server(site.runs.parent / "runs", tmp_path / "empty")
    try:
        status, _, answer = server.request("GET", "/api/models/tiny-run/evaluation")
        assert status == 503 and "offline" in answer["error"], answer
        before = {p.name for p in site.runs.iterdir()}
        status, _, job = server.post("/api/train", TINY_SETTINGS)
        assert status == 202, job
        end = server.events(job["job"])[-1]
        assert end["state"] == "error" and "offline" in end["lines"][0] and "Traceback" not in end["lines"][0], end
        assert {p.name for p in site.runs.iterdir()} == before
    finally:
        server.close()
