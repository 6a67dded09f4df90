"""The steps of backpropagation as small Numba functions, named for what they compute.

Each is inlined into the kernels that call it (``inline="always"``: Numba specialises it for the
kernel's dtypes, so the split costs nothing at run time). The math of every activation and cost is
:mod:`mnist_nn.functions`' own, compiled here; the one-hidden-layer steps work on whole mini-batches
(rows are samples) in the layout of :mod:`mnist_nn.backends.jit.layout`.

Layer by layer over the whole mini-batch rather than sample by sample (the samples' weights are the
same until the update): each step is then m independent pieces of work that the CPU overlaps, where one
sample at a time would wait on each step's latency (measured: ~8%). No array views in the loops (each
costs reference counting).
"""

from __future__ import annotations

from numba import njit, types
from numba.extending import overload

from mnist_nn.backends.simd import (SIGMOID_LANES, add_sparse_rows, prefetch_range, sigmoid_rows_float32,
                                    subtract_sparse_outer)
from mnist_nn.functions import (QUADRATIC, SIGMOID, TANH, CrossEntropyCost, QuadraticCost, Relu, Sigmoid, Tanh,
                                log_softmax_at, softmax_row)

# fastmath lets LLVM reorder and fuse the reductions but keeps NaN and inf semantics ("nnan", "ninf"
# are left out), so a diverging run is still seen as NaN by the caller.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _step(function):
    return njit(cache=True, fastmath=FASTMATH, inline="always")(function)


_sigmoid, _tanh, _relu = (_step(cls.scalar_fn) for cls in (Sigmoid, Tanh, Relu))
_sigmoid_prime, _tanh_prime, _relu_prime = (_step(cls.scalar_prime) for cls in (Sigmoid, Tanh, Relu))
_quadratic_delta, _cross_entropy_delta = _step(QuadraticCost.delta), _step(CrossEntropyCost.delta)
_quadratic_term, _softmax_row, _log_softmax_at = _step(QuadraticCost.term), _step(softmax_row), _step(log_softmax_at)


@_step
def activate(z, code, one):
    """sigma(z) of the hidden activation with this ``code``."""
    if code == SIGMOID:
        return _sigmoid(z, one)
    if code == TANH:
        return _tanh(z, one)
    return _relu(z, one)


@_step
def times_prime(delta, a, s, n, code):
    """delta[s, :n] *= sigma'(z), with sigma'(z) written in terms of the output a[s, :n] = sigma(z)."""
    one = a.dtype.type(1)
    for j in range(n):
        # sigma' first, then the product: delta * (a (1 - a)) as the NumPy backends compute it (a
        # different order here lets fastmath's reassociation make it (delta a)(1 - a)).
        if code == SIGMOID:
            prime = _sigmoid_prime(a[s, j], one)
            delta[s, j] *= prime
        elif code == TANH:
            prime = _tanh_prime(a[s, j], one)
            delta[s, j] *= prime
        else:
            prime = _relu_prime(a[s, j], one)
            delta[s, j] *= prime


@njit(cache=True, fastmath=FASTMATH)
def _sigmoid_rows_scalar(a, first, rows, used):
    one = a.dtype.type(1)
    for r in range(first, first + rows):
        for j in range(used):
            a[r, j] = _sigmoid(a[r, j], one)


def sigmoid_rows(a, first, rows, used):
    """a[r, :used] = sigmoid(a[r, :used]) for rows first .. first+rows-1; columns past ``used`` may
    change too."""


@overload(sigmoid_rows, inline="always", jit_options={"fastmath": FASTMATH})
def _sigmoid_rows_overload(a, first, rows, used):
    # float32: whole vectors with the polynomial exp of simd.sigmoid_rows_float32, a second sigmoid
    # kept only for speed (libm's expf is one call per number: ~15% of an epoch); within a few ulp of this one.
    if a.dtype == types.float32:
        def vectorized(a, first, rows, used):
            if a.shape[1] % SIGMOID_LANES == 0:  # the one-hidden-layer layout pads its rows for this
                sigmoid_rows_float32(a, first, rows)
            else:
                _sigmoid_rows_scalar(a, first, rows, used)
        return vectorized

    def scalar(a, first, rows, used):  # float64: libm's exp, exactly as the NumPy backends
        _sigmoid_rows_scalar(a, first, rows, used)
    return scalar


@_step
def activate_hidden(a, rows, hidden, code):
    """a^1 = sigma(z^1) in rows 0 .. rows-1 of ``a``; the padded columns past ``hidden`` stay 0.

    A whole mini-batch at a time: the exp of one row is a chain of dependent operations, and rows of
    different samples are independent work for the CPU to overlap.
    """
    if code == SIGMOID:
        sigmoid_rows(a, 0, rows, hidden)
        for s in range(rows):
            for j in range(hidden, a.shape[1]):
                a[s, j] = 0
    else:
        one = a.dtype.type(1)
        for s in range(rows):
            for j in range(hidden):
                a[s, j] = activate(a[s, j], code, one)


@_step
def output_error(z, delta, first, rows, labels, labels_start, cost_code, n_out):
    """The output layer and BP1 for samples first .. first+rows-1: a^L from z^L in place in their rows
    of ``z``, delta^L into their rows of ``delta``. Row first+r has label ``labels[labels_start + r]``.

    Only the first ``n_out`` columns are outputs; the rows may be padded past them."""
    one, zero = z.dtype.type(1), z.dtype.type(0)
    if cost_code == QUADRATIC:  # sigmoid outputs
        sigmoid_rows(z, first, rows, n_out)
        for r in range(rows):
            s, label = first + r, labels[labels_start + r]
            for j in range(n_out):
                delta[s, j] = _quadratic_delta(z[s, j], one if j == label else zero, one)
    else:  # softmax outputs
        for r in range(rows):
            s, label = first + r, labels[labels_start + r]
            _softmax_row(z, s, n_out)
            for j in range(n_out):
                delta[s, j] = _cross_entropy_delta(z[s, j], one if j == label else zero, one)


# --------------------------------------------------------------------------- one hidden layer, sparse input

@_step
def hidden_weighted_input(weights, images, first, rows, a1, ahead):
    """z^1 = w^1 x + b^1 of samples first .. first+rows-1 of ``images`` into rows 0 .. rows-1 of ``a1``,
    summed over the non-zero pixels of x only.

    ``ahead`` > 0: prefetch the pixels of the image that many samples ahead, for a shuffled order (in
    the images' own order, as evaluation reads them, the CPU's own prefetcher sees the pattern)."""
    n = images.targets.shape[0]
    padded, hidden = weights.w1t.shape[1], weights.b1.shape[0]
    for s in range(rows):
        t = first + s
        if ahead > 0 and t + ahead < n:  # a coming image's pixels are a cache miss: load them now
            prefetch_range(images.codes, images.starts[t + ahead], images.ends[t + ahead])
            prefetch_range(images.indices, images.starts[t + ahead], images.ends[t + ahead])
        for j in range(hidden):
            a1[s, j] = weights.b1[j]
        for j in range(hidden, padded):
            a1[s, j] = 0
        add_sparse_rows(a1, s, weights.w1t, images.indices, images.codes, images.starts[t], images.ends[t],
                        images.table)


@_step
def hidden_forward(weights, images, first, rows, a1, act_code, ahead):
    """z^1 and a^1 = sigma(z^1) of samples first .. first+rows-1 into rows 0 .. rows-1 of ``a1``."""
    hidden_weighted_input(weights, images, first, rows, a1, ahead)
    activate_hidden(a1, rows, weights.b1.shape[0], act_code)


@_step
def output_weighted_input(weights, a1, rows, z2):
    """z^2 = w^2 a^1 + b^2 for rows 0 .. rows-1."""
    padded, n_out = weights.w2p.shape[1], weights.b2.shape[0]
    for s in range(rows):
        for o in range(n_out):
            z = weights.b2[o]
            for j in range(padded):
                z += weights.w2p[o, j] * a1[s, j]
            z2[s, o] = z


@_step
def forward(weights, images, first, rows, a1, z2, act_code, ahead):
    """The forward pass that training and evaluation share: a^1 into ``a1``, z^2 into ``z2``."""
    hidden_forward(weights, images, first, rows, a1, act_code, ahead)
    output_weighted_input(weights, a1, rows, z2)


@_step
def hidden_error(weights, buffers, rows, act_code):
    """BP2: delta^1 = (w^2)^T delta^2 * sigma'(z^1), as rows: sum over o of delta^2_o w2p[o, :]."""
    d1, hidden, n_out = buffers.d1, weights.b1.shape[0], weights.b2.shape[0]
    out_padded = buffers.d2.shape[1]
    for s in range(rows):
        for j in range(d1.shape[1]):
            d1[s, j] = 0
        add_sparse_rows(d1, s, weights.w2p, buffers.output_units, buffers.d2_flat, s * out_padded,
                        s * out_padded + n_out, None)
        times_prime(d1, buffers.a1, s, hidden, act_code)


@_step
def bias_sums(buffers, rows):
    """BP3 for both layers: grad_b = sum over the batch of delta, summed in sample order, whole rows at
    a time (a loop over samples inside one over units would not vectorize)."""
    d1, d2, grad_b1, grad_b2 = buffers.d1, buffers.d2, buffers.grad_b1, buffers.grad_b2
    for j in range(grad_b1.shape[0]):
        grad_b1[j] = d1[0, j]
    for o in range(grad_b2.shape[0]):
        grad_b2[o] = d2[0, o]
    for s in range(1, rows):
        for j in range(grad_b1.shape[0]):
            grad_b1[j] += d1[s, j]
        for o in range(grad_b2.shape[0]):
            grad_b2[o] += d2[s, o]


@_step
def update_biases(weights, buffers, rows, scale):
    """BP3 and the SGD step for both layers: b -= (lr/m) sum over the batch of delta."""
    bias_sums(buffers, rows)
    grad_b1, grad_b2 = buffers.grad_b1, buffers.grad_b2
    for j in range(weights.b1.shape[0]):
        weights.b1[j] -= scale * grad_b1[j]
    for o in range(weights.b2.shape[0]):
        weights.b2[o] -= scale * grad_b2[o]


@_step
def update_weights(weights, buffers, images, start, rows, scale, decay):
    """BP4 and the step: w <- decay w - (lr/m) sum over the batch of delta a^T, for both layers.

    Weight decay touches every weight; the first layer's gradient only the rows of the non-zero pixels.
    Layer 2 a row at a time, w2p[o, :] += sum over s of (-lr/m delta^2_so) a^1_s: each row is read and
    written once per batch instead of once per sample. Layer 1 sample by sample,
    w1t[k, :] -= (lr/m) x_k delta^1 (the same sum, in another order).
    """
    w1t, w2p, d2, steps = weights.w1t, weights.w2p, buffers.d2, buffers.steps
    if decay != 1:
        for o in range(w2p.shape[0]):
            for j in range(w2p.shape[1]):
                w2p[o, j] *= decay
        for q in range(w1t.shape[0]):
            for j in range(w1t.shape[1]):
                w1t[q, j] *= decay
    for o in range(w2p.shape[0]):
        for s in range(rows):
            steps[s] = -scale * d2[s, o]
        add_sparse_rows(w2p, o, buffers.a1, buffers.samples, steps, 0, rows, None)
    for s in range(rows):
        subtract_sparse_outer(w1t, buffers.d1, s, images.indices, images.codes, images.starts[start + s],
                              images.ends[start + s], scale, images.table)


# --------------------------------------------------------------------------- evaluation

@_step
def predict_rows(z, rows, predicted, first, n_out):
    """predicted[first + r] = the output with the largest z (first on ties, as Network.predict)."""
    for r in range(rows):
        best, top = 0, z[r, 0]
        for o in range(1, n_out):
            if z[r, o] > top:
                best, top = o, z[r, o]
        predicted[first + r] = best


@_step
def summed_cost(z, rows, labels, first, cost_code, n_out):
    """The cost of rows 0 .. rows-1 from their z^L (in place: becomes sigma(z) for quadratic), summed
    in float64; row r has label labels[first + r]."""
    one, zero = z.dtype.type(1), z.dtype.type(0)
    total = 0.0
    if cost_code == QUADRATIC:  # 1/2 ||sigma(z) - y||^2
        sigmoid_rows(z, 0, rows, n_out)
        for r in range(rows):
            label = labels[first + r]
            for o in range(n_out):
                total += _quadratic_term(z[r, o], one if o == label else zero)
    else:  # -ln softmax(z)_label
        for r in range(rows):
            total -= _log_softmax_at(z, r, labels[first + r], n_out)
    return total
