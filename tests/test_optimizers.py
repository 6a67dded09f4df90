"""The update rules (momentum, RMSprop, Adam) in every backend: full-batch steps against a reference
written here from the equations (and against torch.optim where PyTorch is installed), the jit kernels
against the vectorized backend over whole epochs, the state through model files and --resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mnist_nn import Network, Settings, fitting
from mnist_nn import train as train_cli
from mnist_nn.optimizers import Optimizer

from conftest import make_digits
from trainproc import tiny_args

OPTIMIZERS = ("momentum", "rmsprop", "adam")
HYPER = dict(momentum=0.8, rho=0.85, beta1=0.8, beta2=0.95, eps=1e-6)  # not the defaults: each must reach its rule


@pytest.fixture(scope="module")
def digits():
    images, labels = make_digits(40, seed=2)
    return images.reshape(len(images), -1).astype(np.float64) / 255, labels


def reference_steps(net: Network, X, labels, name: str, steps: int, lr: float, l2: float):
    """``steps`` full-batch steps of rule ``name`` from the equations of the issue (torch.optim's), on
    the gradients of :meth:`Network.gradients` (checked against finite differences in test_network)."""
    params = [p.copy() for p in net.weights + net.biases]
    n_weights, n = len(net.weights), len(X)
    Y = np.eye(net.sizes[-1])[labels]
    a = [np.zeros_like(p) for p in params]
    b = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        probe = Network(net.sizes, net.activation.name, net.cost_function.name, dtype=np.float64)
        probe.weights, probe.biases = [p.copy() for p in params[:n_weights]], [p.copy() for p in params[n_weights:]]
        grad_w, grad_b = probe.gradients(X, Y)
        grads = [g + l2 / n * w for g, w in zip(grad_w, params)] + grad_b  # L2 on the weights only
        for i, g in enumerate(grads):
            if name == "momentum":  # v = mu v + g; w -= lr v
                a[i] = HYPER["momentum"] * a[i] + g
                params[i] = params[i] - lr * a[i]
            elif name == "rmsprop":  # s = rho s + (1 - rho) g^2; w -= lr g / (sqrt(s) + eps)
                a[i] = HYPER["rho"] * a[i] + (1 - HYPER["rho"]) * g ** 2
                params[i] = params[i] - lr * g / (np.sqrt(a[i]) + HYPER["eps"])
            else:  # Adam, bias-corrected, eps outside the square root
                b1, b2 = HYPER["beta1"], HYPER["beta2"]
                a[i] = b1 * a[i] + (1 - b1) * g
                b[i] = b2 * b[i] + (1 - b2) * g ** 2
                m_hat, v_hat = a[i] / (1 - b1 ** t), b[i] / (1 - b2 ** t)
                params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + HYPER["eps"])
    return params


def trained(sizes, backend, X, labels, name, epochs, lr, l2, batch_size, seed=1, dtype=np.float64):
    net = Network(sizes, "sigmoid", "cross-entropy", "scaled", seed=seed, dtype=dtype)
    net.sgd(X, labels, epochs, batch_size, lr, l2, backend=backend, optimizer=Optimizer(name, **HYPER))
    return net


@pytest.mark.parametrize("sizes", [(784, 20, 10), (784, 12, 11, 10)])
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("l2", [0.0, 4.0])
def test_full_batch_steps_of_every_backend_follow_the_equations(sizes, name, l2, digits):
    X, labels = digits
    start = Network(sizes, "sigmoid", "cross-entropy", "scaled", seed=1, dtype=np.float64)
    expected = reference_steps(start, X, labels, name, steps=3, lr=0.05, l2=l2)
    for backend in ("loop", "vectorized", "jit"):
        net = trained(sizes, backend, X, labels, name, epochs=3, lr=0.05, l2=l2, batch_size=len(X))
        assert net.optimizer_state.step == 3
        for got, want, before in zip(net.weights + net.biases, expected, start.weights + start.biases):
            assert np.abs(want - before).max() > 1e-4  # the steps really moved every parameter
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{backend} {name}")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_full_batch_steps_equal_torch_optim(name, digits):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch==2.13.0 (CPU) "
                                                "to compare the rules with torch.optim step by step")
    X, labels = digits
    sizes, lr, l2 = (784, 20, 10), 0.05, 4.0
    start = Network(sizes, "sigmoid", "cross-entropy", "scaled", seed=1, dtype=np.float64)
    params = [torch.tensor(p, requires_grad=True) for p in start.weights + start.biases]
    decay = l2 / len(X)
    groups = [{"params": params[:2], "weight_decay": decay}, {"params": params[2:], "weight_decay": 0.0}]
    optimizer = {"momentum": lambda: torch.optim.SGD(groups, lr=lr, momentum=HYPER["momentum"]),
                 "rmsprop": lambda: torch.optim.RMSprop(groups, lr=lr, alpha=HYPER["rho"], eps=HYPER["eps"]),
                 "adam": lambda: torch.optim.Adam(groups, lr=lr, betas=(HYPER["beta1"], HYPER["beta2"]),
                                                  eps=HYPER["eps"])}[name]()
    x, y = torch.tensor(X), torch.tensor(labels.astype(np.int64))
    for _ in range(3):
        optimizer.zero_grad()
        hidden = torch.sigmoid(x @ params[0].T + params[2])
        torch.nn.functional.cross_entropy(hidden @ params[1].T + params[3], y).backward()
        optimizer.step()
    net = trained(sizes, "jit", X, labels, name, epochs=3, lr=lr, l2=l2, batch_size=len(X))
    for got, want in zip(net.weights + net.biases, params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sizes", [(784, 20, 10), (784, 12, 11, 10)])
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("l2", [0.0, 4.0])
def test_jit_equals_vectorized_after_whole_epochs(sizes, name, l2):
    images, labels = make_digits(300, seed=4)
    X = images.reshape(len(images), -1).astype(np.float64) / 255
    runs = {b: trained(sizes, b, X, labels, name, epochs=2, lr=0.01, l2=l2, batch_size=7)
            for b in ("vectorized", "jit")}
    for a, b in zip(runs["jit"].weights + runs["jit"].biases, runs["vectorized"].weights + runs["vectorized"].biases):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    for slot in runs["jit"].optimizer.slots:
        for a, b in zip(runs["jit"].optimizer_state.slots[slot], runs["vectorized"].optimizer_state.slots[slot]):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-14)


def test_float32_jit_adam_learns(digits):
    X, labels = digits
    net = trained((784, 20, 10), "jit", X.astype(np.float32), labels, "adam", epochs=15, lr=0.01, l2=0.0,
                  batch_size=5, dtype=np.float32)
    assert net.optimizer_state.slots["exp_avg"][0].dtype == np.float32
    assert net.accuracy(X, labels) > 0.9


def test_the_state_goes_through_the_model_file_and_training_on_equals_training_through(tmp_path, digits):
    X, labels = digits
    through = trained((784, 20, 10), "jit", X, labels, "adam", epochs=4, lr=0.01, l2=1.0, batch_size=7)
    half = trained((784, 20, 10), "jit", X, labels, "adam", epochs=2, lr=0.01, l2=1.0, batch_size=7)
    half.save(tmp_path / "half.npz")
    loaded = Network.load(tmp_path / "half.npz")
    assert loaded.optimizer == half.optimizer and loaded.optimizer_state.step == half.optimizer_state.step
    loaded.sgd(X, labels, 2, 7, 0.01, 1.0, backend="jit")
    for a, b in zip(loaded.weights + loaded.biases, through.weights + through.biases):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_equals_the_uninterrupted_run(name, tiny_cache, tmp_path):
    common = ("--seed", "3", "--lr", "0.01", "--hidden", "12", "--optimizer", name, "--momentum", "0.8",
              "--cost", "cross-entropy", "--init", "scaled", "--l2", "0.5", "--quiet", "--no-plot")
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "once", "--epochs", "3", *common)) == 0
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "twice", "--epochs", "1", *common)) == 0
    assert train_cli.main(["--resume", str(tmp_path / "twice"), "--epochs", "2", "--data-dir", str(tiny_cache),
                           "--offline", "--quiet", "--no-plot"]) == 0
    once, twice = Network.load(tmp_path / "once"), Network.load(tmp_path / "twice")
    assert once.optimizer.name == name and once.optimizer.momentum == 0.8
    for a, b in zip(once.weights + once.biases, twice.weights + twice.biases):
        np.testing.assert_array_equal(a, b)
    history = json.loads((tmp_path / "once" / "history.json").read_text())
    assert history["settings"]["optimizer"] == name and history["settings"]["momentum"] == 0.8
    assert once.metadata["training"]["optimizer"] == name


def test_a_resume_may_not_change_the_rule(tiny_cache, tmp_path, capsys):
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "run", "--epochs", "1", "--hidden", "8", "--quiet",
                                    "--no-plot", "--optimizer", "adam", "--lr", "0.01")) == 0
    capsys.readouterr()
    assert train_cli.main(["--resume", str(tmp_path / "run"), "--optimizer", "sgd", "--offline",
                           "--data-dir", str(tiny_cache)]) == 2
    assert "trained with optimizer='adam'" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["--momentum", "1.0"], "--momentum must be at least 0 and below 1, got 1.0"),
    (["--beta2", "-0.1"], "--beta2 must be at least 0 and below 1"),
    (["--eps", "0"], "--eps must be positive"),
])
def test_bad_optimizer_flags_exit_2_with_one_line(args, message, tiny_cache, tmp_path, capsys):
    try:
        status = train_cli.main(tiny_args(tiny_cache, tmp_path / "run", *args))
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "run").exists()


def test_old_model_files_train_on_with_plain_sgd(tmp_path, digits):
    """A model file without an optimizer record (written before this one existed) is plain SGD."""
    X, labels = digits
    net = Network((784, 20, 10), seed=1, dtype=np.float64)
    meta = net.to_metadata()
    del meta["optimizer"]
    from mnist_nn import modelfile

    modelfile.write(tmp_path / "old.npz", meta, net.weights, net.biases)
    old = Network.load(tmp_path / "old.npz")
    assert old.optimizer.name == "sgd"
    old.sgd(X, labels, 1, 7, 1.0)
    net.sgd(X, labels, 1, 7, 1.0)
    for a, b in zip(old.weights, net.weights):
        np.testing.assert_array_equal(a, b)


def test_a_tampered_optimizer_record_is_refused(tmp_path, digits):
    from mnist_nn import ModelFileError, modelfile

    X, labels = digits
    net = trained((784, 20, 10), "vectorized", X, labels, "rmsprop", epochs=1, lr=0.01, l2=0.0, batch_size=20)
    arrays = net._state_arrays()
    for change, words in (({"slots": ["exp_avg"]}, "optimizer.slots"), ({"step": -1}, "optimizer.step"),
                          ({"name": "nesterov"}, "optimizer")):
        meta = net.to_metadata()
        meta["optimizer"] = {**meta["optimizer"], **change}
        modelfile.write(tmp_path / "bad.npz", meta, net.weights, net.biases, arrays)
        with pytest.raises(ModelFileError, match=words):
            Network.load(tmp_path / "bad.npz")
    modelfile.write(tmp_path / "short.npz", net.to_metadata(), net.weights, net.biases,
                    {k: v for k, v in arrays.items() if k != "square_avg_w1"})
    with pytest.raises(ModelFileError, match="square_avg_w1 is missing"):
        Network.load(tmp_path / "short.npz")


def test_fit_trains_with_the_settings_rule(tiny_cache):
    from mnist_nn.data import load_mnist

    data = load_mnist(tiny_cache, 100, offline=True, quiet=True)
    run = fitting.fit(Settings(epochs=2, hidden=(10,), optimizer="rmsprop", rho=0.7, lr=0.005, cost="cross-entropy"),
                      data)
    assert run.network.optimizer == Optimizer("rmsprop", rho=0.7)
    assert run.network.optimizer_state.step == 2 * math.ceil(len(data.train.labels) / 10)


def test_a_first_run_with_an_optimizer_announces_its_compile(tiny_cache, tmp_path, monkeypatch, capsys):
    """The optimizers' kernel is compiled only for a run that needs it: a cache warm for plain SGD alone
    still says so."""
    monkeypatch.setattr(train_cli, "jit_cache_is_warm", lambda pattern="*.nbi": pattern == "*.nbi")
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "run", "--epochs", "1", "--quiet", "--no-plot",
                                    "--optimizer", "adam", "--lr", "0.01")) == 0
    err = capsys.readouterr().err
    assert "compiling the jit kernels, once (about 16 s" in err and "compiled the jit kernels in" in err
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "sgd", "--epochs", "1", "--quiet", "--no-plot")) == 0
    assert "compil" not in capsys.readouterr().err
