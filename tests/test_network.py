"""The network: backpropagation against finite differences and a worked example, the three backends
against each other, numerical stability, and model files (the jit backend's own parts: test_jit.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mnist_nn import ModelFileError, Network
from mnist_nn.functions import CrossEntropyCost, QuadraticCost, log_softmax, sigmoid, softmax

from conftest import make_digits


def one_hot(labels, n):
    return np.eye(n)[labels]


def numerical_gradients(net, X, Y, eps=1e-6):
    """Central differences of the mean cost with respect to every weight and bias."""
    grads = []
    for params in (net.weights, net.biases):
        layer_grads = []
        for p in params:
            g = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                saved = p[idx]
                p[idx] = saved + eps
                plus = net.cost(X, Y)
                p[idx] = saved - eps
                minus = net.cost(X, Y)
                p[idx] = saved
                g[idx] = (plus - minus) / (2 * eps)
            layer_grads.append(g)
        grads.append(layer_grads)
    return grads


@pytest.mark.parametrize("sizes", [(6, 5, 4), (6, 5, 4, 3)])
@pytest.mark.parametrize("cost", ["quadratic", "cross-entropy"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_gradients_match_finite_differences(sizes, cost, activation):
    rng = np.random.default_rng(7)
    net = Network(sizes, activation, cost, init="scaled", seed=11, dtype=np.float64)  # finite differences
    X = rng.standard_normal((5, sizes[0]))
    Y = one_hot(rng.integers(0, sizes[-1], 5), sizes[-1])
    grad_w, grad_b = net.gradients(X, Y)
    num_w, num_b = numerical_gradients(net, X, Y)
    analytic = np.concatenate([g.ravel() for g in grad_w + grad_b])
    numeric = np.concatenate([g.ravel() for g in num_w + num_b])
    relative = np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) + np.linalg.norm(numeric))
    assert relative < 1e-6
    assert np.linalg.norm(analytic) > 1e-4  # a real gradient, not a vanishing one


def test_worked_example_from_the_lecture_notes():
    """2-2-1, tanh hidden, sigmoid output, quadratic cost, zero biases, x = (1.1, 0.4), y = 1."""
    net = Network((2, 2, 1), activation="tanh", cost="quadratic", dtype=np.float64)
    net.weights = [np.array([[0.3, -0.4], [-0.3, 0.6]]), np.array([[0.9, 0.3]])]
    net.biases = [np.zeros(2), np.zeros(1)]
    x, y = np.array([[1.1, 0.4]]), np.array([[1.0]])

    z1 = net.weights[0] @ x[0]
    a1 = np.tanh(z1)
    np.testing.assert_allclose(z1, [0.17, -0.09], rtol=1e-3)
    np.testing.assert_allclose(a1, [0.1684, -0.0898], rtol=1e-3)
    output = net.feedforward(x)[0, 0]
    np.testing.assert_allclose(net.weights[1] @ a1, [0.1246], rtol=1e-3)
    np.testing.assert_allclose(output, 0.5311, rtol=1e-3)

    grad_w, grad_b = net.gradients(x, y)
    dC_da = output - 1.0
    delta_out = dC_da * output * (1 - output)
    np.testing.assert_allclose(dC_da, -0.4689, rtol=1e-3)
    np.testing.assert_allclose(delta_out, -0.1168, rtol=1e-3)
    np.testing.assert_allclose(grad_w[1][0], [-0.01966, 0.01048], rtol=1e-3)
    np.testing.assert_allclose(grad_b[1], [delta_out], rtol=1e-9)
    # First layer by the same chain rule: delta_hidden = w2^T delta_out * tanh'(z1), dC/dw1 = delta_hidden x^T.
    delta_hidden = net.weights[1][0] * delta_out * (1 - a1 ** 2)
    np.testing.assert_allclose(grad_w[0], np.outer(delta_hidden, x[0]), rtol=1e-9)
    # By hand: delta_h1 = 0.9 * -0.1168 * (1 - 0.1684^2) = -0.1021, delta_h2 = 0.3 * -0.1168 * (1 - 0.0898^2) = -0.03476
    np.testing.assert_allclose(grad_w[0], [[-0.1123, -0.04086], [-0.03823, -0.01390]], rtol=2e-3)
    np.testing.assert_allclose(grad_b[0], delta_hidden, rtol=1e-9)


# --------------------------------------------------------------------------- backends

@pytest.fixture(scope="module")
def digits():
    images, labels = make_digits(500, seed=3)
    return images.reshape(len(images), -1).astype(np.float32) / 255, labels


def train_copy(sizes, backend, digits, dtype=np.float64, epochs=1, **kw):
    X, labels = digits
    net = Network(sizes, kw.pop("activation", "sigmoid"), kw.pop("cost", "quadratic"), seed=5, dtype=dtype)
    net.sgd(X, labels, epochs, backend=backend, **{"batch_size": 10, "lr": 3.0, **kw})
    return net


def assert_same_parameters(a, b, rtol, atol):
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("sizes", [(784, 30, 10), (784, 16, 12, 10)])
@pytest.mark.parametrize("activation,cost,l2", [("sigmoid", "quadratic", 0.0), ("tanh", "cross-entropy", 2.0),
                                                   ("relu", "cross-entropy", 0.0)])
def test_backends_agree_in_float64(sizes, activation, cost, l2, digits):
    lr = 3.0 if activation == "sigmoid" else 0.1
    runs = {b: train_copy(sizes, b, digits, activation=activation, cost=cost, l2=l2, lr=lr, batch_size=7)
            for b in ("loop", "vectorized", "jit")}
    start = Network(sizes, activation, cost, seed=5, dtype=np.float64)
    moved = max(np.abs(w - w0).max() for w, w0 in zip(runs["loop"].weights, start.weights))
    assert moved > 1e-3  # the epoch really trained
    assert_same_parameters(runs["vectorized"], runs["loop"], rtol=1e-9, atol=1e-12)
    assert_same_parameters(runs["jit"], runs["loop"], rtol=1e-9, atol=1e-12)


def test_jit_agrees_on_pixels_with_many_distinct_values(digits):
    """More than 256 distinct pixel values: the jit layout indexes the values directly instead of by
    one-byte codes, and must train exactly as before."""
    X, labels = digits
    blurred = X * np.random.default_rng(0).uniform(0.5, 1.0, X.shape).astype(np.float32)  # zeros stay zero
    runs = {b: train_copy((784, 30, 10), b, (blurred, labels), batch_size=7) for b in ("vectorized", "jit")}
    assert_same_parameters(runs["jit"], runs["vectorized"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sizes", [(784, 30, 10), (784, 16, 12, 10)])
def test_jit_float32_close_to_float64(sizes, digits):
    single = train_copy(sizes, "jit", digits, dtype=np.float32)
    double = train_copy(sizes, "jit", digits, dtype=np.float64)
    assert single.weights[0].dtype == np.float32
    assert_same_parameters(single, double, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["loop", "vectorized", "jit"])
def test_training_lowers_cost_and_raises_accuracy(backend, digits):
    X, labels = digits
    net = Network((784, 30, 10), seed=1)
    before_cost, before_acc = net.cost(X, labels), net.accuracy(X, labels)
    seen = []
    net.sgd(X, labels, 3, batch_size=10, lr=3.0, backend=backend, on_epoch=lambda e, n: seen.append(e))
    assert seen == [1, 2, 3] and net.epochs_trained == 3
    assert net.cost(X, labels) < 0.5 * before_cost
    assert net.accuracy(X, labels) > max(0.85, before_acc + 0.5)


def test_hook_can_stop_training_and_progress_is_reported(digits):
    X, labels = digits
    net = Network((784, 8, 10), seed=1)
    batches, events = [], []

    class Progress:
        def start(self):
            events.append("start")

        def batches(self, k):
            batches.append(k)

    net.sgd(X, labels, 5, batch_size=10, on_epoch=lambda e, n: events.append(e) or e < 2, progress=Progress())
    assert net.epochs_trained == 2
    assert sum(batches) == 2 * 50  # every mini-batch of both epochs reported
    assert events == ["start", 1, 2]  # told once, before the first epoch


@pytest.mark.parametrize("backend", ["vectorized", "jit"])
def test_a_big_network_trains_in_slices_with_the_same_arithmetic(backend, digits, monkeypatch):
    """Signals are handled only between slices of an epoch; a big network's epoch is cut into many
    (here forced by a tiny SLICE_WORK), and that changes nothing in the numbers."""
    from mnist_nn import backends, network

    X, labels = digits
    whole = train_copy((784, 16, 10), backend, digits, epochs=2)
    calls = []
    real = backends.get_backend

    def counting(name):
        chosen = real(name)

        class Counted:
            @staticmethod
            def prepare(*args, **kwargs):
                run = chosen.prepare(*args, **kwargs)
                return lambda *a: calls.append(a[3:]) or run(*a)

        return Counted

    monkeypatch.setattr(network, "get_backend", counting)
    monkeypatch.setattr(network, "SLICE_WORK", len(X) * (784 * 16 + 16 * 10) // 6)  # 6 slices, and a bit
    sliced = train_copy((784, 16, 10), backend, digits, epochs=2)
    assert len(calls) == 2 * 7  # 7 slices in each epoch of 50 mini-batches
    epoch = calls[:7]  # every mini-batch once, in order
    assert epoch[0][0] == 0 and epoch[-1][1] == 50 and all(a[1] == b[0] for a, b in zip(epoch, epoch[1:]))
    assert_same_parameters(sliced, whole, rtol=1e-12, atol=0)


def test_same_seed_same_run(digits):
    a = train_copy((784, 30, 10), "jit", digits, epochs=2)
    b = train_copy((784, 30, 10), "jit", digits, epochs=2)
    assert_same_parameters(a, b, rtol=0, atol=0)


def test_bad_training_arguments(digits):
    X, labels = digits
    net = Network((784, 8, 10))
    with pytest.raises(ValueError, match="batch_size"):
        net.sgd(X, labels, 1, batch_size=len(X) + 1)
    with pytest.raises(ValueError, match="unknown backend"):
        net.sgd(X, labels, 1, backend="gpu")
    with pytest.raises(ValueError, match="unknown activation"):
        Network((4, 2), activation="swish")


# --------------------------------------------------------------------------- numerical stability

def test_functions_are_stable_for_large_inputs():
    z = np.array([[-1e4, -800.0, -30.0, 0.0, 30.0, 800.0, 1e4]])
    y = np.eye(7)[[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            s = sigmoid(z)
            assert np.all(np.isfinite(s)) and s[0, 0] == 0.0 and s[0, -1] == 1.0
            np.testing.assert_allclose(sigmoid(np.array([-30.0])), np.exp(-30.0) / (1 + np.exp(-30.0)), rtol=1e-12)
            p = softmax(z)
            assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-12
            ce = CrossEntropyCost.fn(z, y)
            assert np.isfinite(ce).all() and ce[0] == pytest.approx(2e4)  # -ln softmax at the lowest of them
            assert np.isfinite(log_softmax(z)).all()
            assert np.isfinite(QuadraticCost.fn(z, y)).all()


def test_network_forward_is_stable_for_huge_weights():
    net = Network((4, 3, 2), activation="sigmoid", cost="cross-entropy", seed=0)
    net.weights = [w * 1e6 for w in net.weights]
    X = np.ones((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(net.feedforward(X)).all()
        assert np.isfinite(net.cost(X, np.array([0, 1])))


# --------------------------------------------------------------------------- model files

def test_save_load_round_trip(tmp_path, digits):
    X, labels = digits
    net = train_copy((784, 16, 10), "jit", digits, dtype=np.float32, cost="cross-entropy")
    net.metadata = {"test_accuracy": 0.5}
    path = net.save(tmp_path / "model.npz")
    loaded = Network.load(path)
    assert loaded.sizes == net.sizes and loaded.dtype == np.float32 and loaded.cost_function.name == "cross-entropy"
    np.testing.assert_array_equal(loaded.feedforward(X), net.feedforward(X))
    assert loaded.metadata["test_accuracy"] == 0.5 and loaded.epochs_trained == 1
    # The random state travels with the model: both continue with the same shuffles.
    assert loaded.rng.permutation(10).tolist() == net.rng.permutation(10).tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_broken_model_files(tmp_path):
    good = Network((4, 3, 2), seed=0)
    meta = good.to_metadata()
    cases = {
        "missing": (tmp_path / "nope.npz", "no such model file"),
        "garbage": (tmp_path / "garbage.npz", "not an mnist_nn model"),
        "no metadata": (_write_npz(tmp_path / "plain.npz", w0=np.zeros((3, 4))), "no mnist_nn metadata"),
        "other format": (_write_npz(tmp_path / "other.npz", metadata=np.array(json.dumps({"format": "x"}))),
                         "no mnist_nn metadata"),
        "newer version": (_write_npz(tmp_path / "newer.npz",
                                     metadata=np.array(json.dumps({**meta, "format_version": 99}))),
                          "newer than this mnist_nn"),
        "shape mismatch": (_write_npz(tmp_path / "shape.npz", metadata=np.array(json.dumps(meta)),
                                      w0=np.zeros((3, 5)), w1=np.zeros((2, 3)), b0=np.zeros(3), b1=np.zeros(2)),
                           r"w0 is \(3, 5\).*need \(3, 4\)"),
        "pickled": (_write_npz(tmp_path / "pickled.npz", metadata=np.array([{"format": 1}], dtype=object)),
                    "not an mnist_nn model"),
    }
    (tmp_path / "garbage.npz").write_bytes(b"this is not a zip file")
    for name, (path, message) in cases.items():
        with pytest.raises(ModelFileError, match=message) as info:
            Network.load(path)
        assert str(path) in str(info.value), name
