"""python -m mnist_nn.sweep: the plan from flags and files, the LocalCluster path, resume, failed runs,
Ctrl-C, and the summary's numbers against the results file."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time

import pytest

from conftest import TinyMnist
from mnist_nn import runfolder
from mnist_nn.settings import Settings
from mnist_nn.sweep import grid, summary
from sweephelp import procs, read_results, require_dask, run_sweep, write_trusted_cache  # noqa: F401  (procs: a fixture)

TINY = ["--offline", "--validation-size", "100", "--hidden", "12"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_trusted_cache(tmp_path_factory.mktemp("sweep-data"), TinyMnist())


def one_line(result, status):
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# --------------------------------------------------------------------------- the plan

def test_every_training_flag_of_train_is_a_sweep_flag():
    from mnist_nn.train import build_parser

    fields = set(Settings.__dataclass_fields__)
    in_train = {a.dest for a in build_parser()._actions if a.dest in fields and a.option_strings} - {"seed"}
    assert {f.dest for f in grid.training_flags()} == in_train


def test_the_plan_is_the_grid_times_the_seeds_and_a_file_gives_the_same(tmp_path):
    from mnist_nn.sweep.__main__ import build_parser, make_plan

    flags = grid.training_flags()
    args = build_parser(flags).parse_args(["--seeds", "0-1,5", "--hidden", "30", "100,30", "--lr", "0.5", "3",
                                           "--cost", "cross-entropy"])
    planned, swept = make_plan(args, flags)
    assert swept == ["lr", "hidden"] and len(planned) == 3 * 2 * 2
    assert {p.settings.hidden for p in planned} == {(30,), (100, 30)}
    assert {p.settings.seed for p in planned} == {0, 1, 5} and {p.settings.cost for p in planned} == {"cross-entropy"}
    assert len({p.run_id for p in planned}) == len({p.key for p in planned}) == 12
    toml = tmp_path / "grid.toml"
    toml.write_text('seeds = "0-1,5"\nhidden = [30, [100, 30]]\nlr = [0.5, 3]\ncost = ["cross-entropy"]\n')
    json_file = tmp_path / "grid.json"
    json_file.write_text(json.dumps({"seeds": [0, 1, 5], "hidden": [30, [100, 30]], "--lr": [0.5, 3.0],
                                     "cost": "cross-entropy"}))
    for file in (toml, json_file):
        from_file, _ = make_plan(build_parser(flags).parse_args(["--grid", str(file)]), flags)
        assert [p.key for p in from_file] == [p.key for p in planned]
    flag_wins, _ = make_plan(build_parser(flags).parse_args(["--grid", str(toml), "--lr", "1"]), flags)
    assert {p.settings.lr for p in flag_wins} == {1.0} and len(flag_wins) == 6


def test_dry_run_prints_the_runs_and_their_count():
    result = run_sweep("--seeds", "0-2", "--lr", "0.5", "3", "--lr", "1", "--dry-run")  # the last --lr wins
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "3 runs" and all(line.startswith("to do") for line in lines[:-1])


@pytest.mark.parametrize("args,message", [
    (["--seeds", "3-1"], "'3-1' runs backwards"),
    (["--hidden", "30,x"], "'x' is not a whole number"),
    (["--cost", "cubic"], "'cubic' is not one of quadratic, cross-entropy"),
    (["--scheduler", "localhost"], "is not a scheduler address"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"], "drop --workers"),
    (["--lr", "1"], "--out is required"),
    (["--seeds", "0-20000", "--dry-run"], "more than 10000 seeds"),
    (["--grid", "/nonexistent.toml"], "cannot read it"),
])
def test_bad_flags_are_one_line_and_status_2(args, message):
    result = run_sweep(*args)
    one_line(result, 2)
    assert message in result.stderr


@pytest.mark.parametrize("text,message", [
    ('colour = ["red"]', "'colour' is not a training flag"),
    ('lr = [0.5, "fast"]', "lr: 'fast' is not a number"),
    ('hidden = [[30, true]]', "is not a number or a list of numbers"),
    ('seeds = [0, -1]', "seeds: '0,-1' is not a list of seeds"),
    ('lr = [0.5', "not readable TOML or JSON"),
])
def test_bad_grid_files_are_one_line(tmp_path, text, message):
    file = tmp_path / "grid.toml"
    file.write_text(text)
    result = run_sweep("--grid", str(file), "--dry-run")
    one_line(result, 2)
    assert message in result.stderr


def test_the_summary_chooses_by_validation_and_reports_test_beside_it(tmp_path):
    def result(lr, seed, val, test, stuck=()):
        return {"run_id": f"{lr}-{seed}", "status": "ok", "seed": seed,
                "settings": Settings(lr=lr, seed=seed).to_dict(), "final_validation_accuracy": val,
                "final_test_accuracy": test, "best_validation_accuracy": val, "stuck_digits": list(stuck)}

    results = [result(0.5, 0, 0.90, 0.99), result(0.5, 1, 0.91, 0.99), result(0.5, 2, 0.50, 0.98),
               result(3.0, 0, 0.95, 0.80), result(3.0, 1, 0.96, 0.81, stuck=[4]),
               {"run_id": "x", "status": "failed", "seed": 2, "settings": Settings(lr=3.0, seed=2).to_dict(),
                "error": "diverged"}]
    s = summary.summarize(results)
    assert s["swept"] == ["lr"] and s["best"] == "lr 3.0"  # the test set (0.99) never chooses
    low, high = s["settings"]
    assert low["final_validation_accuracy"] == {"median": 0.90, "min": 0.50, "max": 0.91}
    assert high["final_test_accuracy"]["median"] == pytest.approx(0.805)
    assert (high["ok"], high["failed"], high["stuck"]) == (2, 1, 1)
    assert "validation 95.50%, test 80.50%" in summary.best_line(s)
    assert summary.write(tmp_path, s) == ["summary.md", "summary.json", "summary.png"]
    assert "| lr 3.0 **(best)** | 0-2 | 80.50% (80.00-81.00) | 95.50% (95.00-96.00) |" in (tmp_path / "summary.md").read_text()
    no_validation = [{**r, "final_validation_accuracy": None, "best_validation_accuracy": None} for r in results]
    s = summary.summarize(no_validation)
    assert s["best"] is None and "the test set never chooses" in summary.best_line(s)
    summary.write(tmp_path, s)  # plotted by test accuracy instead
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- real sweeps on a LocalCluster

def test_local_cluster_sweep_resume_and_a_wider_grid(cache, tmp_path):
    require_dask()
    out = tmp_path / "sweep"
    args = ["--data-dir", str(cache), *TINY, "--epochs", "3", "--lr", "0.5", "3", "--seeds", "0-2", "--workers", "2",
            "--out", str(out)]
    first = run_sweep(*args)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    results = read_results(out)
    assert len(results) == 6 and len({r["run_id"] for r in results}) == 6
    assert len({r["worker"] for r in results}) == 2  # both worker processes trained
    for r in results:  # each run folder is a run folder of mnist_nn.train, its numbers the line's
        saved = runfolder.load(out / "runs" / r["run_id"])
        assert saved.settings.to_dict() == r["settings"] and len(saved.records) == r["epochs"] == 3
        assert saved.records[-1]["test_accuracy"] == r["final_test_accuracy"]
        assert saved.records[-1]["validation_accuracy"] == r["final_validation_accuracy"]
        best = max(saved.records, key=lambda e: e["validation_accuracy"])
        assert (best["epoch"], best["validation_accuracy"]) == (r["best_epoch"], r["best_validation_accuracy"])
        assert (out / "runs" / r["run_id"] / "best.npz").is_file()
    written = json.loads((out / "summary.json").read_text())
    for group in written["settings"]:  # the summary's numbers, from the results file
        mine = [r for r in results if r["settings"]["lr"] == group["settings"]["lr"]]
        for stat in ("final_test_accuracy", "final_validation_accuracy"):
            values = [r[stat] for r in mine]
            assert group[stat] == {"median": statistics.median(values), "min": min(values), "max": max(values)}
    by_lr = {g["settings"]["lr"]: g["final_validation_accuracy"]["median"] for g in written["settings"]}
    assert written["best"] == f"lr {max(by_lr, key=by_lr.get)}"
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG" and "(best)" in (out / "summary.md").read_text()

    again = run_sweep(*args)  # the same command: nothing to do
    assert again.returncode == 0 and again.stdout.startswith("0 runs to do"), again.stdout
    assert read_results(out) == results
    wider = run_sweep(*args[:-4], "--lr", "0.5", "1", "--seeds", "0-3", "--workers", "2", "--out", str(out))
    assert wider.returncode == 0, wider.stderr
    assert wider.stdout.startswith("5 runs to do (6 results already in the folder)")  # 8, 3 of them done
    everything = read_results(out)
    assert len(everything) == 11 and len({r["run_id"] for r in everything}) == 11
    assert everything[:6] == results
    assert json.loads((out / "summary.json").read_text())["runs"] == 11  # the summary covers the whole folder


def test_runs_that_fail_by_themselves_are_recorded_and_the_others_go_on(cache, tmp_path):
    require_dask()
    out = tmp_path / "sweep"
    # 500 training images: batch 1000 fails on the worker; lr -1 is refused before any worker sees it.
    result = run_sweep("--data-dir", str(cache), *TINY, "--epochs", "2", "--batch-size", "10", "1000",
                       "--lr", "-1", "3", "--workers", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    results = {(r["settings"]["batch_size"], r["settings"]["lr"]): r for r in read_results(out)}
    assert len(results) == 4 and results[10, 3.0]["status"] == "ok"
    assert results[1000, 3.0]["status"] == "failed" and "larger than the training set" in results[1000, 3.0]["error"]
    assert all(results[b, -1.0]["status"] == "failed" and "--lr must be positive" in results[b, -1.0]["error"]
               for b in (10, 1000))
    assert sorted(p.name for p in (out / "runs").iterdir()) == [results[10, 3.0]["run_id"]]
    assert "3 failed" in result.stdout
    again = run_sweep("--data-dir", str(cache), *TINY, "--epochs", "2", "--batch-size", "10", "1000",
                      "--lr", "-1", "3", "--workers", "1", "--out", str(out))
    assert again.stdout.startswith("0 runs to do"), again.stdout  # a failed run is not done again


def test_workers_without_the_data_stop_the_sweep_in_one_line_and_leave_nothing(tmp_path):
    require_dask()
    out = tmp_path / "sweep"
    result = run_sweep("--data-dir", str(tmp_path / "empty"), *TINY, "--epochs", "2", "--workers", "1",
                       "--out", str(out))
    one_line(result, 1)
    assert "could not load MNIST" in result.stderr and "run the same command again" in result.stderr
    assert not out.exists()


def test_ctrl_c_keeps_every_finished_run_and_the_same_command_continues(cache, tmp_path, procs):
    require_dask()
    out = tmp_path / "sweep"
    args = ["--data-dir", str(cache), *TINY, "--epochs", "40", "--seeds", "0-9", "--workers", "1", "--out", str(out)]
    sweep = procs.sweep(*args)
    while len(read_results(out)) < 2:
        assert sweep.poll() is None, sweep.communicate()
        time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the sweep and its worker processes
    stdout, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, stderr
    assert "Traceback" not in stderr
    kept = read_results(out)
    assert 2 <= len(kept) < 10 and f"{len(kept)} of 10 runs are done" in stderr
    assert "continue with `python -m mnist_nn.sweep" in stderr and "--seeds 0-9" in stderr
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r["run_id"] for r in kept)
    assert json.loads((out / "summary.json").read_text())["runs"] == len(kept)
    rest = run_sweep(*args)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.startswith(f"{10 - len(kept)} runs to do")
    everything = read_results(out)
    assert len(everything) == 10 and len({r["run_id"] for r in everything}) == 10 and everything[:len(kept)] == kept


def test_another_sweep_into_a_folder_in_use_is_refused(cache, tmp_path):
    from mnist_nn.sweep import results

    held = results.take(tmp_path / "sweep")
    try:
        result = run_sweep("--data-dir", str(cache), *TINY, "--out", str(tmp_path / "sweep"))
    finally:
        held.release()
    one_line(result, 2)
    assert "another sweep is writing to this folder" in result.stderr
