"""Learning-rate schedules, early stopping (--patience) and the amount of training data (--train-size):
each against the same training done by hand, through fit() and the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mnist_nn import Network, Settings, fitting
from mnist_nn import train as train_cli
from mnist_nn.data import Split, load_mnist

from trainproc import tiny_args


@pytest.fixture
def data(tiny_cache):
    return load_mnist(tiny_cache, 100, offline=True, quiet=True)


def same_weights(a: Network, b: Network) -> None:
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(x, y)


def test_schedules_are_torchs_step_and_cosine():
    step = Settings(lr=0.8, lr_schedule="step", lr_step=3, lr_gamma=0.5, epochs=10)
    assert [step.lr_at(e) for e in range(7)] == [0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2]
    cosine = Settings(lr=0.8, lr_schedule="cosine", epochs=4)
    expected = [0.8 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [cosine.lr_at(e) for e in range(4)] == pytest.approx(expected, rel=1e-15) and expected[2] == pytest.approx(0.4)
    assert Settings(lr=0.8).lr_at(25) == 0.8


def test_a_scheduled_run_equals_epochs_trained_by_hand_at_those_rates(data):
    settings = Settings(epochs=3, hidden=(12,), lr=1.0, lr_schedule="step", lr_step=1, lr_gamma=0.5, seed=2)
    run = fitting.fit(settings, data)
    assert [r["lr"] for r in run.records] == [1.0, 0.5, 0.25]
    by_hand = Network(settings.sizes, seed=2)
    for lr in (1.0, 0.5, 0.25):
        by_hand.sgd(*data.train, 1, 10, lr)
    same_weights(run.network, by_hand)


def test_patience_stops_keeps_the_best_epoch_and_says_so(data, tmp_path):
    # A learning rate so small that no prediction changes: validation accuracy never improves after epoch 1.
    settings = Settings(epochs=10, hidden=(12,), lr=1e-9, patience=2)
    run = fitting.fit(settings, data, out=tmp_path / "run")
    assert [r["epoch"] for r in run.records] == [1, 2, 3]
    assert run.stopped_early == {"epoch": 3, "best_epoch": 1, "patience": 2} and run.epochs_this_call == 3
    same_weights(run.network, Network.load(tmp_path / "run" / "best.npz"))
    assert Network.load(tmp_path / "run" / "best.npz").epochs_trained == 1
    assert Network.load(tmp_path / "run" / "model.npz").epochs_trained == 3  # the checkpoint to resume
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["stopped_early"] == run.stopped_early and len(history["epochs"]) == 3


def test_patience_on_the_command_line(tiny_cache, tmp_path, capsys):
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "run", "--epochs", "10", "--lr", "1e-9", "--patience", "2",
                                    "--hidden", "8", "--no-plot")) == 0
    out = capsys.readouterr().out
    assert "stopped early after epoch 3: no better validation accuracy for 2 epochs; best.npz" in out
    assert "trained 3 epochs" in out and "Epoch 4/10" not in out


def test_patience_needs_a_validation_set(tiny_cache, tmp_path, capsys):
    args = tiny_args(tiny_cache, tmp_path / "run", "--patience", "3")
    args[args.index("--validation-size") + 1] = "0"
    assert train_cli.main(args) == 2
    assert "--patience needs a validation set" in capsys.readouterr().err


def test_train_size_trains_on_the_first_n_images(data, tiny_cache, tmp_path, capsys):
    settings = Settings(epochs=2, hidden=(12,), lr=1.0, train_size=200)
    run = fitting.fit(settings, data)
    cut = data._replace(train=Split(data.train.images[:200], data.train.labels[:200]))
    same_weights(run.network, fitting.fit(settings.replace(train_size=0), cut).network)
    assert run.records[-1]["validation_accuracy"] is not None
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "run", "--epochs", "1", "--train-size", "200",
                                    "--no-plot")) == 0
    assert "200 training images" in capsys.readouterr().out
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "big", "--train-size", "59950")) == 2
    assert "--train-size must be between 1 and 59900" in capsys.readouterr().err


def test_the_learning_curve_and_the_size_plot_are_drawn(tmp_path):
    from mnist_nn.plots import accuracy_by_size, learning_curves

    records = [{"epoch": e, "test_accuracy": 0.8 + e / 100, "validation_accuracy": 0.8, "train_accuracy": 0.9,
                "train_cost": 1 / e} for e in (1, 2, 3)]
    assert learning_curves([records], ["run"], tmp_path / "curve.png").stat().st_size > 10_000
    drawn = accuracy_by_size([1000, 5000], [[90.1, 90.3], [94.0, 94.2]], [[99.9, 100.0], [98.0, 98.1]],
                             tmp_path / "sizes.png")
    assert drawn.read_bytes()[:4] == b"\x89PNG"
