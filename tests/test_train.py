"""``python -m mnist_nn.train`` end to end: on tiny data (fast), and on the real data set (CI)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_nn import Network
from mnist_nn import train as train_cli


def tiny_args(cache, out, *extra):
    return ["--data-dir", str(cache), "--offline", "--validation-size", "100", "--out", str(out), *extra]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mnist_nn.train", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_train_writes_model_history_and_plot(tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(tiny_args(tiny_cache, out, "--epochs", "3", "--seed", "4", "--lr", "1.0")) == 0
    printed = capsys.readouterr().out
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("Epoch ")] == ["1/3", "2/3", "3/3"]
    history = json.loads((out / "history.json").read_text())
    assert history["seed"] == 4 and history["settings"]["lr"] == 1.0 and history["versions"]["numpy"] == np.__version__
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3]
    for record in history["epochs"]:
        assert set(record) >= {"epoch", "test_accuracy", "validation_accuracy", "train_cost", "seconds"}
        assert 0 <= record["test_accuracy"] <= 1 and 0 <= record["validation_accuracy"] <= 1
    assert history["epochs"][-1]["train_cost"] < history["epochs"][0]["train_cost"]
    net = Network.load(out / "model.npz")
    assert net.epochs_trained == 3 and net.dtype == np.float32 and net.sizes == (784, 30, 10)
    assert net.metadata["test_accuracy"] == history["epochs"][-1]["test_accuracy"]
    final = f"final (epoch 3): test {100 * history['epochs'][-1]['test_accuracy']:.2f}%"
    assert final in printed
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "learning_curve.png", "model.npz"]


def test_resume_equals_uninterrupted(tiny_cache, tmp_path, capsys):
    common = ("--seed", "9", "--lr", "0.5", "--quiet", "--no-plot", "--hidden", "20")
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "once", "--epochs", "4", *common)) == 0
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "twice", "--epochs", "2", *common)) == 0
    assert train_cli.main(["--resume", str(tmp_path / "twice"), "--epochs", "2", "--data-dir", str(tiny_cache),
                           "--offline", "--quiet", "--no-plot"]) == 0
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


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--hidden", "0"], "--hidden sizes must be at least 1"),
    (["--batch-size", "501"], "larger than the training set (500)"),
    (["--batch-size", "60000"], "--batch-size must be between 1 and the training set size 50000"),
    (["--backend", "gpu"], "invalid choice: 'gpu'"),
    (["--l2", "-0.1"], "--l2 must be zero or positive"),
    (["--resume", "/nonexistent/run"], "no readable history.json"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tiny_cache, tmp_path):
    result = run_cli("--data-dir", str(tiny_cache), "--offline", "--out", str(tmp_path / "run"),
                     *(["--validation-size", "100"] if "60000" not in args else []), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


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


def test_ctrl_c_keeps_a_loadable_checkpoint_and_resumes(tiny_cache, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mnist_nn.train",
                             *tiny_args(tiny_cache, out, "--epochs", "100000", "--backend", "loop", "--no-plot")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "history.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the middle of a later epoch
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    net = Network.load(out / "model.npz")
    done = len(json.loads((out / "history.json").read_text())["epochs"])
    assert done >= 1 and net.epochs_trained == done
    assert f"Epoch {done}/100000" in stdout
    resumed = run_cli("--resume", str(out), "--epochs", "1", "--data-dir", str(tiny_cache), "--offline",
                      "--no-plot", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert Network.load(out / "model.npz").epochs_trained == done + 1


# --------------------------------------------------------------------------- the real data set

@pytest.mark.realdata
def test_default_run_reaches_the_accuracy_bound(real_mirror, tmp_path, capsys):
    """The classic defaults, seed 0, 30 epochs, downloaded through the mirror: final >= 94.8%, best >= 95.0%."""
    out = tmp_path / "run"
    code = train_cli.main(["--seed", "0", "--data-dir", str(tmp_path / "data"), "--mirror", real_mirror,
                           "--out", str(out), "--quiet"])
    assert code == 0
    epochs = json.loads((out / "history.json").read_text())["epochs"]
    assert len(epochs) == 30
    final, best = epochs[-1]["test_accuracy"], max(r["test_accuracy"] for r in epochs)
    print(f"default run, seed 0: final {final:.4f}, best {best:.4f}")
    assert final >= 0.948 and best >= 0.950
