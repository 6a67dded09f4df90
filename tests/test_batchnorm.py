"""Batch normalization: its gradients against finite differences of a reference written here from the
equations, every backend's full-batch steps against that reference (and torch's BatchNorm1d where
PyTorch is installed), the running statistics, model files and --resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_nn import Network
from mnist_nn import train as train_cli

from conftest import make_digits
from trainproc import tiny_args


@pytest.fixture(scope="module")
def digits():
    images, labels = make_digits(30, seed=5)
    return images.reshape(len(images), -1).astype(np.float64) / 255, labels


def reference_cost(params, sizes, X, labels):
    """The mean cross-entropy of the batch, sigmoid hidden layers batch-normalized with the batch's own
    statistics (biased variance, eps 1e-5): the equations of the issue, nothing from mnist_nn.
    ``params``: w0.., b0.., gamma0, beta0, gamma1, beta1, ..."""
    n = len(sizes) - 1
    weights, biases, bn = params[:n], params[n:2 * n], params[2 * n:]
    a = X
    for l in range(n - 1):
        z = a @ weights[l].T + biases[l]
        zhat = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
        a = 1 / (1 + np.exp(-(bn[2 * l] * zhat + bn[2 * l + 1])))
    z = a @ weights[-1].T + biases[-1]
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    return -log_p[np.arange(len(X)), labels].mean()


def bn_net(sizes, seed=1):
    net = Network(sizes, "sigmoid", "cross-entropy", "scaled", seed=seed, dtype=np.float64, batch_norm=True)
    rng = np.random.default_rng(seed)  # gamma and beta away from 1 and 0, so their gradients are seen working
    for g, b in zip(net.bn.gammas, net.bn.betas):
        g += rng.uniform(-0.5, 0.5, g.shape)
        b += rng.uniform(-0.5, 0.5, b.shape)
    return net


@pytest.mark.parametrize("sizes", [(784, 6, 10), (784, 5, 4, 10)])
def test_gradients_match_finite_differences_of_the_reference(sizes, digits):
    X, labels = digits
    net = bn_net(sizes)
    grad_w, grad_b, grad_bn = net.gradients(X, np.eye(10)[labels])
    params = [p.copy() for p in net.parameters()]
    rng = np.random.default_rng(0)
    for index, analytic in enumerate(grad_w + grad_b + grad_bn):
        for flat in rng.choice(params[index].size, size=min(6, params[index].size), replace=False):
            where = np.unravel_index(flat, params[index].shape)
            if index < len(grad_w) and not X[:, where[-1]].any() and len(params[index].shape) == 2 and index == 0:
                continue  # a pixel that is 0 in every image: both gradients are 0
            saved = params[index][where]
            params[index][where] = saved + 1e-6
            plus = reference_cost(params, sizes, X, labels)
            params[index][where] = saved - 1e-6
            minus = reference_cost(params, sizes, X, labels)
            params[index][where] = saved
            assert analytic[where] == pytest.approx((plus - minus) / 2e-6, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("sizes", [(784, 6, 10), (784, 5, 4, 10)])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_full_batch_steps_of_every_backend_follow_the_reference(sizes, name, digits):
    X, labels = digits
    start = bn_net(sizes)
    lr, l2, n_weights = 0.1 if name == "sgd" else 0.01, 3.0, len(sizes) - 1
    # The reference: gradients of the reference cost's equations (checked above), L2 on the weights only.
    probe = bn_net(sizes)
    m = v = None
    for t in range(1, 4):
        grads = [g for part in probe.gradients(X, np.eye(10)[labels]) for g in part]
        grads = [g + l2 / len(X) * w if i < n_weights else g for i, (g, w) in enumerate(zip(grads, probe.parameters()))]
        if name == "sgd":
            steps = [lr * g for g in grads]
        else:
            m = [0.9 * a + 0.1 * g for a, g in zip(m or [0] * len(grads), grads)]
            v = [0.999 * a + 0.001 * g * g for a, g in zip(v or [0] * len(grads), grads)]
            steps = [lr / (1 - 0.9 ** t) * a / (np.sqrt(b) / np.sqrt(1 - 0.999 ** t) + 1e-8) for a, b in zip(m, v)]
        for p, step in zip(probe.parameters(), steps):
            p -= step
    for backend in ("loop", "vectorized", "jit"):
        net = bn_net(sizes)
        net.sgd(X, labels, 3, len(X), lr, l2, backend=backend, optimizer=name)
        for i, (got, want, before) in enumerate(zip(net.parameters(), probe.parameters(), start.parameters())):
            if name == "adam" and n_weights <= i < 2 * n_weights - 1:
                # A hidden layer's b under batch norm: its gradient is 0 but for rounding, which Adam
                # scales up to whole steps of either sign; b has no effect on the output.
                continue
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-11, err_msg=f"{backend} parameter {i}")
            if i < n_weights or i >= 2 * n_weights:  # the steps moved the weights, gammas and betas
                assert np.abs(want - before).max() > 1e-5


def test_running_statistics_and_evaluation(digits):
    X, labels = digits
    net = bn_net((784, 6, 10))
    z = X @ net.weights[0].T + net.biases[0]
    net.sgd(X, labels, 1, len(X), 0.1, optimizer="sgd")
    np.testing.assert_allclose(net.bn.running_means[0], 0.1 * z.mean(0), rtol=1e-12)
    np.testing.assert_allclose(net.bn.running_vars[0], 0.9 + 0.1 * z.var(0, ddof=1), rtol=1e-12)
    # Evaluation normalizes with the running statistics: an image's output does not depend on its batch.
    np.testing.assert_allclose(net.feedforward(X[:1]), net.feedforward(X)[:1], rtol=1e-12)


@pytest.mark.parametrize("sizes", [(784, 20, 10), (784, 12, 11, 10)])
@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop"])
def test_jit_equals_vectorized_after_whole_epochs(sizes, name):
    images, labels = make_digits(298, seed=4)  # 298 = 42 batches of 7 and one of 4
    X = images.reshape(len(images), -1).astype(np.float64) / 255
    runs = {}
    for backend in ("vectorized", "jit"):
        runs[backend] = net = Network(sizes, "sigmoid", "cross-entropy", "scaled", seed=2, dtype=np.float64,
                                      batch_norm=True)
        net.sgd(X, labels, 2, 7, 0.05 if name != "rmsprop" else 0.002, 1.0, backend=backend, optimizer=name)
    jit, vectorized = runs["jit"], runs["vectorized"]
    for i, (a, b) in enumerate(zip(jit.parameters() + jit.bn.running_means + jit.bn.running_vars,
                                   vectorized.parameters() + vectorized.bn.running_means + vectorized.bn.running_vars)):
        if name == "rmsprop" and len(sizes) - 1 <= i < 2 * len(sizes) - 3:
            continue  # a hidden b under batch norm: rounding noise for a gradient, scaled up by RMSprop (see above)
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11)


def test_batch_norm_equals_torch(digits):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch==2.13.0 (CPU) "
                                                "to compare with torch.nn.BatchNorm1d")
    X, labels = digits
    net = bn_net((784, 6, 10))
    model = torch.nn.Sequential(torch.nn.Linear(784, 6), torch.nn.BatchNorm1d(6), torch.nn.Sigmoid(),
                                torch.nn.Linear(6, 10)).double()
    with torch.no_grad():
        for layer, w, b in ((model[0], net.weights[0], net.biases[0]), (model[3], net.weights[1], net.biases[1])):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
        model[1].weight.copy_(torch.tensor(net.bn.gammas[0]))
        model[1].bias.copy_(torch.tensor(net.bn.betas[0]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.tensor(X)), torch.tensor(labels.astype(np.int64))).backward()
        optimizer.step()
    net.sgd(X, labels, 3, len(X), 0.1, backend="jit", optimizer="sgd")
    theirs = [model[0].weight, model[3].weight, model[0].bias, model[3].bias, model[1].weight, model[1].bias,
              model[1].running_mean, model[1].running_var]
    for got, want in zip(net.parameters() + net.bn.running_means + net.bn.running_vars, theirs):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_model_file_keeps_batch_norm_and_training_on_equals_training_through(tmp_path, digits):
    X, labels = digits
    through, half = bn_net((784, 6, 10)), bn_net((784, 6, 10))
    through.sgd(X, labels, 4, 5, 0.01, optimizer="adam")
    half.sgd(X, labels, 2, 5, 0.01, optimizer="adam")
    half.save(tmp_path / "half.npz")
    loaded = Network.load(tmp_path / "half.npz")
    assert loaded.bn is not None and "batch_norm=True" in repr(loaded)
    np.testing.assert_array_equal(loaded.predict(X), half.predict(X))
    loaded.sgd(X, labels, 2, 5, 0.01)
    for a, b in zip(loaded.parameters() + loaded.bn.running_vars, through.parameters() + through.bn.running_vars):
        np.testing.assert_array_equal(a, b)


def test_command_line_batch_norm_resume_equals_uninterrupted(tiny_cache, tmp_path, capsys):
    common = ("--seed", "3", "--lr", "0.01", "--hidden", "12", "--optimizer", "adam", "--batch-norm", "--cost",
              "cross-entropy", "--init", "scaled", "--batch-size", "16", "--quiet", "--no-plot")
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "once", "--epochs", "3", *common)) == 0
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "twice", "--epochs", "1", *common)) == 0
    assert train_cli.main(["--resume", str(tmp_path / "twice"), "--epochs", "2", "--data-dir", str(tiny_cache),
                           "--offline", "--quiet", "--no-plot"]) == 0
    once, twice = Network.load(tmp_path / "once"), Network.load(tmp_path / "twice")
    for a, b in zip(once.parameters() + once.bn.running_means, twice.parameters() + twice.bn.running_means):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "once" / "history.json").read_text())["settings"]["batch_norm"] is True
    assert once.metadata["training"]["batch_norm"] is True
    capsys.readouterr()
    # 500 training images in batches of 7: the last batch holds one image, which batch norm cannot normalize.
    assert train_cli.main(tiny_args(tiny_cache, tmp_path / "bad", "--batch-norm", "--batch-size", "7")) == 2
    assert "--batch-size with --batch-norm must make mini-batches of at least 2" in capsys.readouterr().err
