"""The jit backend: a data set changed in place is trained on as it is now, the sparse copy is shared
only by the caller's hand, its building blocks against exact references, and the kernels' forms of
the activations and costs against functions.py's array forms."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_nn import Network

from conftest import make_digits


@pytest.fixture(scope="module")
def digits():
    images, labels = make_digits(300, seed=4)
    return images.reshape(len(images), -1).astype(np.float32) / 255, labels


def trained(X, labels, backend, dtype=np.float64, epochs=1, **kw):
    net = Network((784, 20, 10), seed=3, dtype=dtype)
    net.sgd(X, labels, epochs, 7, 3.0, backend=backend, **kw)  # batch 7, learning rate 3.0 (positional)
    return net


def assert_same(a, b, rtol=0, atol=0):
    for x, y in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def continue_after_change(X, labels, backend):
    """One epoch, then X changed in place (flipped left to right), then one more epoch on the same net."""
    net = Network((784, 20, 10), seed=3, dtype=np.float64)
    net.sgd(X, labels, 1, 7, 3.0, backend=backend)
    X[:] = X.reshape(-1, 28, 28)[:, :, ::-1].reshape(len(X), -1)
    net.sgd(X, labels, 1, 7, 3.0, backend=backend)
    return net


def test_training_sees_a_data_set_changed_in_place(digits):
    """The old jit backend kept a module-wide sparse copy per id(X) and trained on the old pixels."""
    X, labels = digits
    X = X.astype(np.float64)  # the network's dtype: used as it is, not converted into a new array
    runs = {backend: continue_after_change(X.copy(), labels, backend) for backend in ("loop", "vectorized", "jit")}
    # The same two epochs with the second one on a fresh array holding the changed pixels.
    fresh = Network((784, 20, 10), seed=3, dtype=np.float64)
    fresh.sgd(X.copy(), labels, 1, 7, 3.0, backend="jit")
    fresh.sgd(np.ascontiguousarray(X.reshape(-1, 28, 28)[:, :, ::-1].reshape(len(X), -1)), labels, 1, 7, 3.0,
              backend="jit")
    assert_same(runs["jit"], fresh)
    assert_same(runs["jit"], runs["loop"], rtol=1e-9, atol=1e-12)
    assert_same(runs["vectorized"], runs["loop"], rtol=1e-9, atol=1e-12)


def test_evaluator_sees_a_data_set_changed_in_place(digits):
    X, labels = digits
    X = X.astype(np.float64)
    net = trained(X, labels, "jit")
    net.evaluator(X, labels)()
    X[:, :400] = 0
    cost, predicted = net.evaluator(X, labels)()
    assert cost == pytest.approx(net.cost(X, labels), rel=1e-12)
    np.testing.assert_array_equal(predicted, net.predict(X))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_sparse_copy_shared_by_training_and_evaluation(dtype, digits):
    from mnist_nn.backends.jit import sparse_rows

    X, labels = digits
    sparse = sparse_rows(X, dtype)
    shared = trained(X, labels, "jit", dtype, epochs=2, sparse=sparse)
    own = trained(X, labels, "jit", dtype, epochs=2)
    assert_same(shared, own)
    np.testing.assert_array_equal(sparse_rows(X, dtype).codes, sparse.codes)  # read, never changed
    with_copy, without = shared.evaluator(X, labels, sparse=sparse)(l2=1.0), shared.evaluator(X, labels)(l2=1.0)
    assert with_copy[0] == without[0]
    np.testing.assert_array_equal(with_copy[1], without[1])


def test_a_sparse_copy_of_other_data_is_refused(digits):
    from mnist_nn.backends.jit import sparse_rows

    X, labels = digits
    net = Network((784, 20, 10), seed=3)  # float32
    cases = {"fewer images": sparse_rows(X[:-1], np.float32), "other dtype": sparse_rows(X, np.float64),
             "not a copy": (1, 2, 3, 4)}
    for name, sparse in cases.items():
        with pytest.raises(ValueError, match="sparse"):
            net.sgd(X, labels, 1, sparse=sparse)
        with pytest.raises(ValueError, match="sparse"):
            net.evaluator(X, labels, sparse=sparse)


def test_old_setting_names_still_accepted(digits):
    X, labels = digits
    new = Network((784, 20, 10), seed=3)
    new.sgd(X, labels, 1, lr=0.5, l2=2.0)
    old = Network((784, 20, 10), seed=3)
    old.sgd(X, labels, 1, eta=0.5, lmbda=2.0)
    assert new.dtype == np.float32  # the default, as on the command line
    assert_same(new, old)
    with pytest.raises(TypeError, match="learning_rate"):
        old.sgd(X, labels, 1, learning_rate=0.5)
    with pytest.raises(ValueError, match="lr > 0"):
        old.sgd(X, labels, 1, lr=float("nan"))


# --------------------------------------------------------------------------- building blocks

def test_float32_sigmoid_intrinsic_is_accurate():
    from numba import njit

    from mnist_nn.backends.simd import sigmoid_rows_float32
    from mnist_nn.functions import sigmoid

    @njit
    def apply(a, first, rows):
        sigmoid_rows_float32(a, first, rows)

    z = np.linspace(-100, 100, 80_000, dtype=np.float32).reshape(-1, 32)
    out = z.copy()
    apply(out, 1, len(z) - 2)
    np.testing.assert_array_equal(out[[0, -1]], z[[0, -1]])  # only the rows asked for
    apply(out, 0, 1)
    apply(out, len(z) - 1, 1)
    exact = sigmoid(z.astype(np.float64))
    assert np.abs(out - exact).max() < 1e-7  # about one float32 ulp at 0.5
    representable = exact > 1e-37
    assert (np.abs(out - exact) / exact)[representable].max() < 4 * 2.0 ** -24  # a few ulp everywhere else


def test_kernel_forms_of_the_functions_equal_the_array_forms():
    """functions.py's scalar and row forms, compiled as the kernels compile them, against its array forms."""
    from numba import njit

    from mnist_nn.backends.jit.steps import FASTMATH
    from mnist_nn.functions import ACTIVATIONS, log_softmax, log_softmax_at, softmax, softmax_row

    z = np.concatenate([np.linspace(-800, 800, 1601), np.linspace(-5, 5, 1001)])
    for activation in ACTIVATIONS.values():
        fn, prime = (njit(fastmath=FASTMATH)(f) for f in (activation.scalar_fn, activation.scalar_prime))
        one = np.float64(1)
        values = np.array([fn(v, one) for v in z])
        np.testing.assert_allclose(values, activation.fn(z), rtol=1e-15, atol=0, err_msg=activation.name)
        a = activation.fn(z)
        # fastmath may fuse a (1 - a) into one rounding: equal to a few units of 1's last place
        np.testing.assert_allclose([prime(v, one) for v in a], activation.prime(a), rtol=1e-15, atol=1e-16,
                                   err_msg=activation.name)
    rows = np.random.default_rng(0).normal(0, 30, (20, 10))
    rows[0] = [1000, -1000] * 5
    in_place, at = njit(fastmath=FASTMATH)(softmax_row), njit(fastmath=FASTMATH)(log_softmax_at)
    expected, logs = softmax(rows), log_softmax(rows)
    for s in range(len(rows)):
        np.testing.assert_allclose([at(rows, s, j, 10) for j in range(10)], logs[s], rtol=1e-12, atol=1e-12)
        in_place(rows, s, 10)
    np.testing.assert_allclose(rows, expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_rows_hold_the_images_exactly(dtype, digits):
    from mnist_nn.backends.jit import sparse_rows

    X, _ = digits
    blurred = X * np.random.default_rng(0).uniform(0.5, 1.0, X.shape).astype(np.float32)
    for images, coded in ((X, True), (blurred, False)):
        indptr, indices, codes, table = sparse_rows(images, dtype)
        assert (codes.dtype == np.uint8) == coded and table.dtype == dtype
        if coded:
            assert len(table) == len(np.unique(images[images != 0]))  # MNIST-like: one code per grey level
        rebuilt = np.zeros(images.shape, dtype)
        rows = np.repeat(np.arange(len(images)), np.diff(indptr))
        rebuilt[rows, indices] = table[codes]
        np.testing.assert_array_equal(rebuilt, images.astype(dtype))
        assert np.all(table[codes] != 0)  # only the non-zero pixels are stored


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cost", ["quadratic", "cross-entropy"])
def test_evaluator_matches_cost_and_predict(dtype, cost, digits):
    X, labels = digits
    for sizes in ((784, 30, 10), (784, 12, 11, 10)):
        net = Network(sizes, cost=cost, seed=5, dtype=dtype)
        net.sgd(X, labels, 1, 10, 0.5)
        value, predicted = net.evaluator(X, labels)(l2=2.0)
        assert value == pytest.approx(net.cost(X, labels, l2=2.0), rel=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_array_equal(predicted, net.predict(X))


def test_compiled_kernels_are_cached_on_disk(tmp_path):
    """A second process loads the jit kernels from Numba's on-disk cache instead of compiling them."""
    import os
    import subprocess
    import sys

    probe = ("import numpy as np; from mnist_nn import Network; from mnist_nn.backends.jit import epoch; "
             "X = (np.random.default_rng(0).random((40, 784)) < 0.2).astype(np.float32); y = np.arange(40) % 10; "
             "net = Network(dtype=np.float32); net.sgd(X, y, 1); net.evaluator(X, y)(); "
             "stats = epoch.epoch_one_hidden.stats; print(sum(stats.cache_hits.values()), "
             "sum(stats.cache_misses.values()))")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    (hits1, misses1), (hits2, misses2) = (tuple(map(int, r.stdout.split())) for r in runs)
    assert (hits1, misses1) == (0, 1)  # compiled in the first process...
    assert (hits2, misses2) == (1, 0)  # ...and loaded from the cache in the second
    assert list(tmp_path.rglob("*epoch_one_hidden*.nbi"))
