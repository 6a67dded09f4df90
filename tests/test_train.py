"""``python -m mnist_nn.train`` end to end: on tiny data (fast), and on the real data set (CI)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mnist_nn import Network
from mnist_nn import train as train_cli
from trainproc import run_cli, tiny_args


def test_train_writes_model_history_and_plot(tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "3", "--seed", "4", "--lr", "1.0")) == 0
    printed = capsys.readouterr().out
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("Epoch ")] == ["1/3", "2/3", "3/3"]
    history = json.loads((out / "history.json").read_text())
    assert history["seed"] == 4 and history["settings"]["lr"] == 1.0 and history["versions"]["numpy"] == np.__version__
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3]
    for record in history["epochs"]:
        assert set(record) >= {"epoch", "test_accuracy", "validation_accuracy", "train_accuracy", "train_cost",
                               "seconds"}
        assert 0 <= record["test_accuracy"] <= 1 and 0 <= record["validation_accuracy"] <= 1
    assert history["epochs"][-1]["train_cost"] < history["epochs"][0]["train_cost"]
    net = Network.load(out / "model.npz")
    assert net.epochs_trained == 3 and net.dtype == np.float32 and net.sizes == (784, 30, 10)
    assert net.metadata["test_accuracy"] == history["epochs"][-1]["test_accuracy"]
    final = f"final (epoch 3): test {100 * history['epochs'][-1]['test_accuracy']:.2f}%"
    assert final in printed and "train - validation gap" in printed
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "best.npz", "history.json", "learning_curve.png", "model.npz"]


def test_best_npz_is_the_best_validation_epoch(tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "6", "--lr", "3.0", "--quiet", "--no-plot")) == 0
    epochs = json.loads((out / "history.json").read_text())["epochs"]
    best_val = max(r["validation_accuracy"] for r in epochs)
    first_best = next(r for r in epochs if r["validation_accuracy"] == best_val)
    best = Network.load(out / "best.npz")
    assert best.epochs_trained == first_best["epoch"]
    assert best.metadata["validation_accuracy"] == best_val


def test_default_seed_is_fixed_and_random_is_recorded(tiny_cache, tmp_path, capsys):
    for name in ("a", "b"):
        assert train_cli.main(tiny_args(tiny_cache, tmp_path / name, "--epochs", "1", "--quiet", "--no-plot")) == 0
    a, b = (Network.load(tmp_path / name) for name in ("a", "b"))
    assert a.seed == b.seed == 0
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "r", "--epochs", "1", "--quiet", "--no-plot",
                                    "--seed", "random")) == 0
    seed = json.loads((tmp_path / "r" / "history.json").read_text())["seed"]
    assert isinstance(seed, int) and Network.load(tmp_path / "r").seed == seed


def test_resume_equals_uninterrupted_and_counts_the_runs_epochs(tiny_cache, tmp_path, capsys):
    common = ("--seed", "9", "--lr", "0.5", "--no-plot", "--hidden", "20")
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "once", "--epochs", "4", *common, "--quiet")) == 0
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "twice", "--epochs", "2", *common, "--quiet")) == 0
    capsys.readouterr()
    assert train_cli.main(["--resume", str(tmp_path / "twice"), "--epochs", "2", "--data-dir", str(tiny_cache),
                           "--offline", "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("Epoch ")] == ["3/4", "4/4"]
    once, twice = Network.load(tmp_path / "once" / "model.npz"), Network.load(tmp_path / "twice" / "model.npz")
    for a, b in zip(once.weights + once.biases, twice.weights + twice.biases):
        np.testing.assert_array_equal(a, b)
    first = json.loads((tmp_path / "once" / "history.json").read_text())["epochs"]
    second = json.loads((tmp_path / "twice" / "history.json").read_text())["epochs"]
    assert [r["test_accuracy"] for r in first] == [r["test_accuracy"] for r in second]
    # A resume may not change what defines the run.
    assert train_cli.main(["--resume", str(tmp_path / "twice"), "--lr", "3.0", "--offline",
                           "--data-dir", str(tiny_cache)]) == 2
    assert "trained with lr=0.5" in capsys.readouterr().err


def test_runs_latest_points_at_the_newest_run_and_resumes(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--data-dir", str(tiny_cache), "--offline", "--validation-size", "100", "--quiet", "--no-plot"]
    assert train_cli.main([*base, "--epochs", "1"]) == 0
    assert train_cli.main([*base, "--epochs", "1", "--seed", "5"]) == 0  # the same second: a -2 suffix
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.name != "latest")
    assert len(runs) == 2
    latest = (tmp_path / "runs" / "latest").resolve()
    assert Network.load(latest).seed == 5
    assert train_cli.main(["--resume", "runs/latest", "--epochs", "1", *base[:3], "--quiet", "--no-plot"]) == 0
    assert Network.load(latest).epochs_trained == 2


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs: 0 is less than 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--lr", "nan"], "'nan' is not a finite number"),
    (["--l2", "inf"], "'inf' is not a finite number"),
    (["--hidden", "0"], "--hidden: 0 is less than 1"),
    (["--hidden", "100000000"], "needs about"),
    (["--seed", "-1"], "--seed: -1 is less than 0"),
    (["--batch-size", "501"], "larger than the training set (500)"),
    (["--batch-size", "60000"], "--batch-size must be between 1 and the training set size 50000"),
    (["--backend", "gpu"], "invalid choice: 'gpu'"),
    (["--l2", "-0.1"], "--l2 must be zero or positive"),
    (["--resume", "/nonexistent/run"], "no such run folder"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tiny_cache, tmp_path):
    result = run_cli("--data-dir", str(tiny_cache), "--offline", "--out", str(tmp_path / "run"),
                     *(["--validation-size", "100"] if "60000" not in args else []), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() or not any(p for p in (tmp_path / "run").iterdir() if p.name != ".lock")


def test_unwritable_out_folder(tiny_cache, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("--data-dir", str(tiny_cache), "--offline", "--out", str(blocker / "run"))
    assert result.returncode == 2 and "cannot write there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_huge_learning_rate_is_reported_as_divergence(tiny_cache, tmp_path):
    result = run_cli(*tiny_args(tiny_cache, tmp_path / "run", "--lr", "1000", "--epochs", "3", "--seed", "0"))
    assert result.returncode == 1
    assert "diverged in epoch 1" in result.stderr and "smaller --lr" in result.stderr
    assert "Traceback" not in result.stderr


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tiny_cache, tmp_path, monkeypatch, capsys):
    """NaN appearing in epoch 3: the run stops, and epoch 2's checkpoint is what is on disk."""
    real_sgd = Network.sgd

    def poisoned_sgd(self, *args, on_epoch=None, **kwargs):
        def hook(epoch, net):
            if epoch == 3:
                net.weights[1][0, 0] = np.nan
            return on_epoch(epoch, net)
        return real_sgd(self, *args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(Network, "sgd", poisoned_sgd)
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "5", "--lr", "1.0", "--quiet")) == 1
    err = capsys.readouterr().err
    assert "diverged in epoch 3" in err and "NaN" in err and "checkpoint after epoch 2" in err
    net = Network.load(out / "model.npz")
    assert net.epochs_trained == 2 and all(np.isfinite(w).all() for w in net.weights)
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 2


# --------------------------------------------------------------------------- the real data set

@pytest.mark.realdata
def test_default_run_reaches_the_accuracy_bound(real_data_dir, tmp_path, capsys):
    """The classic defaults, seed 0, 30 epochs: final >= 94.8%, best >= 95.0%."""
    out = tmp_path / "run"
    code = train_cli.main(["--data-dir", str(real_data_dir), "--offline", "--out", str(out), "--quiet"])
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    epochs = history["epochs"]
    assert len(epochs) == 30 and history["seed"] == 0
    final, best = epochs[-1]["test_accuracy"], max(r["test_accuracy"] for r in epochs)
    print(f"default run, seed 0: final {final:.4f}, best {best:.4f}")
    assert final >= 0.948 and best >= 0.950


def test_a_cold_numba_cache_is_announced_with_its_time(tiny_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_cli, "jit_cache_is_warm", lambda: False)
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "run", "--epochs", "1", "--quiet", "--no-plot")) == 0
    err = capsys.readouterr().err
    assert "compiling the jit kernels, once (about 6 s" in err
    assert re.search(r"compiled the jit kernels in \d+\.\d s", err)
    monkeypatch.setattr(train_cli, "jit_cache_is_warm", lambda: True)
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "again", "--epochs", "1", "--quiet", "--no-plot")) == 0
    assert "compil" not in capsys.readouterr().err


def test_a_folder_name_that_is_not_utf8_on_a_strict_terminal(tiny_cache, tmp_path):
    import os
    import subprocess
    import sys

    out = os.fsencode(tmp_path) + b"/caf\xe9-run"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    result = subprocess.run([sys.executable, "-m", "mnist_nn.train", "--data-dir", str(tiny_cache), "--offline",
                             "--validation-size", "100", "--epochs", "1", "--no-plot", "--out", out],
                            capture_output=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr and b"caf\\udce9-run" in result.stdout
    assert os.path.isfile(out + b"/model.npz")


def test_the_jit_warm_up_compiles_every_kernel_a_run_uses():
    """So that "compiled the jit kernels in N s" is the whole compile, not only the first kernel's."""
    import subprocess
    import sys

    code = ("from mnist_nn.backends import jit\n"
            "from mnist_nn.backends.jit.epoch import epoch_general, epoch_one_hidden\n"
            "from mnist_nn.backends.jit.evaluate import evaluate_one_hidden\n"
            "def compiled(): return [len(k.signatures) > 0 for k in (epoch_one_hidden, evaluate_one_hidden, epoch_general)]\n"
            "before = compiled(); jit.warm_up('float32'); one = compiled(); jit.warm_up('float32', deep=True)\n"
            "print(before, one, compiled())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("] [") == ["[False, False, False", "True, True, False", "True, True, True]\n"]
