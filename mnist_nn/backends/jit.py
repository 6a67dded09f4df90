"""The jit backend: Numba kernels that run a whole epoch (or a range of its mini-batches) per call.

Plain functions over NumPy arrays that write into buffers the caller allocated once per data set:

* ``_epoch_one_hidden``: the common n_in-H-n_out network, made fast. The first layer skips the zero
  pixels of each image (about 80% of MNIST): the images are stored once as CSR rows (see
  ``sparse_rows``) and the first-layer weights are kept transposed, ``w1t[k, :]`` being the
  H weights leaving pixel k, so both z^1 += x_k w1t[k, :] and the update
  w1t[k, :] -= (eta/m) x_k delta^1 are contiguous H-wide rows, done by the SIMD helpers of
  :mod:`mnist_nn.backends.simd`. Skipping x_k = 0 is exact: those terms add 0 to z^1 and the gradient.
* ``_evaluate_one_hidden``: the same forward pass over a whole data set, for the after-epoch report.
* ``_epoch_general``: any number of layers, dense, the same equations as the vectorized backend.

All use the same BP1-BP4 arithmetic as the other backends; with float64 they agree with them to
rounding (float32 uses a polynomial exp for the sigmoids, within a few ulp of libm's).
``fastmath`` lets LLVM reorder and fuse the reductions but keeps NaN and inf semantics, so a diverging
run is still seen as NaN by the caller. The kernels release the GIL (``nogil``).
"""

from __future__ import annotations

import threading
import weakref
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from mnist_nn.backends.simd import (CHUNK_ELEMENTS, FLUSH_DENORMALS, SIGMOID_LANES, add_sparse_rows,
                                    prefetch_range, read_fp_control, sigmoid_rows_float32,
                                    subtract_sparse_outer, write_fp_control)

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
SIGMOID, TANH, RELU = 0, 1, 2  # the activations' ``code`` in mnist_nn.functions
QUADRATIC, CROSS_ENTROPY = 0, 1  # the costs' ``code``
EVALUATION_BLOCK = 16  # images evaluated together, layer by layer
PREFETCH_AHEAD = 4  # images; measured: 1 ahead gains ~20% per epoch, 4 ahead a little more


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _sigmoid(z, one):
    # The same stable form as functions.sigmoid: exp of a non-positive number only.
    # ``one`` is 1 in the array's dtype: a literal 1 would promote float32 arithmetic to float64.
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _activate_row(row, code):
    """a = sigma(z) in place on one row of hidden units."""
    one, zero = row.dtype.type(1), row.dtype.type(0)
    for j in range(row.shape[0]):
        if code == SIGMOID:
            row[j] = _sigmoid(row[j], one)
        elif code == TANH:
            row[j] = np.tanh(row[j])
        else:
            row[j] = max(row[j], zero)


@njit(cache=True, fastmath=FASTMATH)
def _sigmoid_rows_scalar(a, first, rows, used):
    one = a.dtype.type(1)
    for r in range(first, first + rows):
        for j in range(used):
            a[r, j] = _sigmoid(a[r, j], one)


def _sigmoid_rows(a, first, rows, used):
    """a[r, :used] = sigmoid(a[r, :used]) for rows first .. first+rows-1; columns past ``used`` may
    change too."""


@overload(_sigmoid_rows, inline="always", jit_options={"fastmath": FASTMATH})
def _sigmoid_rows_overload(a, first, rows, used):
    if a.dtype == types.float32:  # whole vectors with the polynomial exp (see simd.sigmoid_rows_float32)
        def vectorized(a, first, rows, used):
            if a.shape[1] % SIGMOID_LANES == 0:  # the one-hidden-layer kernel pads its rows for this
                sigmoid_rows_float32(a, first, rows)
            else:
                _sigmoid_rows_scalar(a, first, rows, used)
        return vectorized

    def scalar(a, first, rows, used):  # float64: libm's exp, exactly as the NumPy backends
        _sigmoid_rows_scalar(a, first, rows, used)
    return scalar


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _activate_hidden(a, rows, hidden, code):
    """a^1 = sigma(z^1) in rows 0 .. rows-1 of ``a``; the padded columns past ``hidden`` are left 0.

    A whole mini-batch at a time: the exp of one row is a chain of dependent operations, and rows of
    different samples are independent work for the CPU to overlap (measured with the next: ~8%).
    """
    if code == SIGMOID:
        _sigmoid_rows(a, 0, rows, hidden)
        for s in range(rows):
            for j in range(hidden, a.shape[1]):
                a[s, j] = 0
    else:
        for s in range(rows):
            _activate_row(a[s, :hidden], code)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _times_prime_row(delta_row, a_row, code):
    """delta *= sigma'(z), with sigma'(z) written in terms of the output a = sigma(z)."""
    one, zero = a_row.dtype.type(1), a_row.dtype.type(0)
    for j in range(a_row.shape[0]):
        a = a_row[j]
        if code == SIGMOID:
            delta_row[j] *= a * (one - a)
        elif code == TANH:
            delta_row[j] *= one - a * a
        elif a <= zero:
            delta_row[j] = zero


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _output_and_delta(z, delta, first, rows, labels, labels_start, cost_code, n_out):
    """Output layer of samples first .. first+rows-1: a^L from z^L in place in their rows of ``z``, and
    BP1 into their rows of ``delta``. Row first+r has label ``labels[labels_start + r]``.

    Only the first ``n_out`` columns are outputs; the rows may be padded past them."""
    one, zero = z.dtype.type(1), z.dtype.type(0)
    if cost_code == QUADRATIC:  # sigmoid outputs, delta = (a - y) * a (1 - a)
        _sigmoid_rows(z, first, rows, n_out)
        for r in range(rows):
            s, label = first + r, labels[labels_start + r]
            for j in range(n_out):
                a = z[s, j]
                y = one if j == label else zero
                delta[s, j] = (a - y) * a * (one - a)
    else:  # softmax outputs, delta = a - y
        for r in range(rows):
            s, label = first + r, labels[labels_start + r]
            top = z[s, 0]
            for j in range(1, n_out):
                top = max(top, z[s, j])
            total = zero
            for j in range(n_out):
                z[s, j] = np.exp(z[s, j] - top)
                total += z[s, j]
            for j in range(n_out):
                z[s, j] = z[s, j] / total
                delta[s, j] = z[s, j] - (one if j == label else zero)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _epoch_one_hidden(w1t, b1, w2p, b2, starts, ends, indices, codes, table, targets, batch_size, first_batch,
                      last_batch, eta, lmbda, act_code, cost_code, a1, d1, a2, d2, output_units, samples):
    """Mini-batches ``first_batch`` .. ``last_batch - 1`` of one epoch of a one-hidden-layer network.

    ``w1t`` (n_in, Hp) is w^1 transposed and ``w2p`` (n_out, Hp) is w^2, both with the hidden axis
    padded with zero columns to a multiple of ``CHUNK_ELEMENTS``, so every loop over hidden units runs
    whole SIMD vectors; the padded units have zero weights into and out of them and never change.
    ``b1`` (H) and ``b2`` are the network's own arrays. Buffers: a1, d1 (batch_size, Hp) hold a^1 and
    delta^1 of each sample of the batch, a2, d2 (batch_size, n_out padded to whole float32 vectors) a^2
    and delta^2; ``output_units`` is 0..padded-1 repeated batch_size times, so that layer 2 can use the
    same row helpers as layer 1 (d2_flat[p] is delta^2 of output ``output_units[p]``), and ``samples`` is
    0..batch_size-1, for the update of layer 2 (a1's rows are the samples).
    Sample t of the epoch is the image whose non-zeros are ``table[codes[starts[t]:ends[t]]]`` (at
    columns ``indices[...]``), with label ``targets[t]``: the caller lays these out in the epoch's
    shuffled order, so they are read front to back. No array views in the loops (each costs reference counting).
    """
    n = targets.shape[0]
    padded, hidden, n_out = w1t.shape[1], b1.shape[0], b2.shape[0]
    dtype = w2p.dtype.type
    decay = dtype(1 - eta * lmbda / n)
    out_padded = d2.shape[1]
    d2_flat = d2.reshape(-1)  # delta^2 of sample s is d2_flat[s*out_padded:s*out_padded+n_out], at output_units
    grad_b1, grad_b2 = np.empty(padded, dtype), np.empty(out_padded, dtype)
    steps = np.empty(batch_size, dtype)
    caller_fp_control = read_fp_control()
    write_fp_control(caller_fp_control | FLUSH_DENORMALS)  # see simd.write_fp_control
    for k in range(first_batch, last_batch):
        start = k * batch_size
        m = min(batch_size, n - start)
        # The forward and backward passes go layer by layer over the whole mini-batch (the samples'
        # weights are the same until the update): each step is then m independent pieces of work that
        # the CPU overlaps, where one sample at a time would wait on each step's latency (~8%).
        for s in range(m):
            t = start + s
            if t + PREFETCH_AHEAD < n:  # a coming image's pixels are a cache miss: load them now
                prefetch_range(codes, starts[t + PREFETCH_AHEAD], ends[t + PREFETCH_AHEAD])
                prefetch_range(indices, starts[t + PREFETCH_AHEAD], ends[t + PREFETCH_AHEAD])
            # z^1 = w^1 x + b^1, summed over the non-zero pixels of x only.
            for j in range(hidden):
                a1[s, j] = b1[j]
            for j in range(hidden, padded):
                a1[s, j] = 0
            add_sparse_rows(a1, s, w1t, indices, codes, starts[t], ends[t], table)
        _activate_hidden(a1, m, hidden, act_code)
        # z^2 = w^2 a^1 + b^2, then a^2 and BP1.
        for s in range(m):
            for o in range(n_out):
                z = b2[o]
                for j in range(padded):
                    z += w2p[o, j] * a1[s, j]
                a2[s, o] = z
        _output_and_delta(a2, d2, 0, m, targets, start, cost_code, n_out)
        # BP2: delta^1 = (w^2)^T delta^2 * sigma'(z^1), as rows: sum_o delta^2_o w2p[o, :].
        for s in range(m):
            for j in range(padded):
                d1[s, j] = 0
            add_sparse_rows(d1, s, w2p, output_units, d2_flat, s * out_padded, s * out_padded + n_out, None)
            _times_prime_row(d1[s, :hidden], a1[s, :hidden], act_code)

        scale = dtype(eta / m)
        # BP3 for both layers: the biases, with the gradient summed over the batch in sample order,
        # whole rows at a time (a loop over samples inside one over units would not vectorize).
        for j in range(padded):
            grad_b1[j] = d1[0, j]
        for o in range(out_padded):
            grad_b2[o] = d2[0, o]
        for s in range(1, m):
            for j in range(padded):
                grad_b1[j] += d1[s, j]
            for o in range(out_padded):
                grad_b2[o] += d2[s, o]
        for j in range(hidden):
            b1[j] -= scale * grad_b1[j]
        for o in range(n_out):
            b2[o] -= scale * grad_b2[o]
        # BP4 and the step for the weights: w2p[o, :] -= (eta/m) delta^2_o a^1 and
        # w1t[k, :] -= (eta/m) x_k delta^1, sample by sample (the same sum, in another order); the
        # first layer only at the rows of non-zero pixels. Weight decay first, on every weight.
        if lmbda != 0:
            for o in range(n_out):
                for j in range(padded):
                    w2p[o, j] *= decay
        # Layer 1: weight decay touches every weight, the gradient only the rows of non-zero pixels
        # (sample by sample: the same sum, in a different order).
        if lmbda != 0:
            for q in range(w1t.shape[0]):
                for j in range(padded):
                    w1t[q, j] *= decay
        # Layer 2 a row at a time, w2p[o, :] += sum over s of (-eta/m delta^2_so) a^1_s: each row is
        # read and written once per batch instead of once per sample.
        for o in range(n_out):
            for s in range(m):
                steps[s] = -scale * d2[s, o]
            add_sparse_rows(w2p, o, a1, samples, steps, 0, m, None)
        for s in range(m):
            subtract_sparse_outer(w1t, d1, s, indices, codes, starts[start + s], ends[start + s], scale, table)
    write_fp_control(caller_fp_control)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _evaluate_one_hidden(w1t, b1, w2p, b2, indptr, indices, codes, table, labels, act_code, cost_code, a1, z2,
                         predicted):
    """Forward pass of every image (same layout as ``_epoch_one_hidden``): writes each predicted label
    (the largest output z, first on ties, as ``Network.predict``) and returns the summed cost.

    ``a1`` (block, Hp) and ``z2`` (block, n_out padded as in the training kernel) are buffers: the
    images go through a block at a time, layer by layer, as the mini-batches do in training.
    """
    padded, hidden, n_out = w1t.shape[1], b1.shape[0], b2.shape[0]
    block = a1.shape[0]
    one = w2p.dtype.type(1)
    total = 0.0
    for first in range(0, labels.shape[0], block):
        rows = min(block, labels.shape[0] - first)
        for r in range(rows):
            for j in range(hidden):
                a1[r, j] = b1[j]
            for j in range(hidden, padded):
                a1[r, j] = 0
            add_sparse_rows(a1, r, w1t, indices, codes, indptr[first + r], indptr[first + r + 1], table)
        _activate_hidden(a1, rows, hidden, act_code)
        for r in range(rows):
            best = 0
            for o in range(n_out):
                z = b2[o]
                for j in range(padded):
                    z += w2p[o, j] * a1[r, j]
                z2[r, o] = z
                if z > z2[r, best]:
                    best = o
            predicted[first + r] = best
        if cost_code == QUADRATIC:  # 1/2 ||sigma(z) - y||^2
            _sigmoid_rows(z2, 0, rows, n_out)
            for r in range(rows):
                label = labels[first + r]
                for o in range(n_out):
                    gap = z2[r, o] - (one if o == label else 0 * one)
                    total += 0.5 * gap * gap
        else:  # -ln softmax(z)_label, shifted by the max as in functions.log_softmax
            for r in range(rows):
                label, best = labels[first + r], predicted[first + r]
                top, spread = z2[r, best], 0.0
                for o in range(n_out):
                    spread += np.exp(z2[r, o] - top)
                total += np.log(spread) - (z2[r, label] - top)
    return total


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _epoch_general(weights, biases, X, labels, perm, batch_size, first_batch, last_batch, eta, lmbda,
                   act_code, cost_code, acts, deltas):
    """Any number of layers. ``weights``/``biases`` are tuples of the network's arrays (updated in
    place); ``acts[l]`` (batch_size, n_l) holds a^l of each sample, ``deltas[l]`` delta^(l+1)."""
    n = X.shape[0]
    n_layers = len(weights)
    dtype = X.dtype.type
    decay = dtype(1 - eta * lmbda / n)
    caller_fp_control = read_fp_control()
    write_fp_control(caller_fp_control | FLUSH_DENORMALS)  # see simd.write_fp_control
    for k in range(first_batch, last_batch):
        start = k * batch_size
        m = min(batch_size, n - start)
        for s in range(m):
            i = perm[start + s]
            acts[0][s, :] = X[i]
            for l in range(n_layers):  # forward: z = w a + b
                w, b, a_in, a_out = weights[l], biases[l], acts[l], acts[l + 1]
                for j in range(w.shape[0]):
                    z = b[j]
                    for q in range(w.shape[1]):
                        z += w[j, q] * a_in[s, q]
                    a_out[s, j] = z
                if l < n_layers - 1:
                    _activate_row(a_out[s], act_code)
            _output_and_delta(acts[n_layers], deltas[n_layers - 1], s, 1, labels, i, cost_code,  # BP1
                              acts[n_layers].shape[1])
            for l in range(n_layers - 1, 0, -1):  # BP2
                w, d_out, d_in, a = weights[l], deltas[l], deltas[l - 1], acts[l]
                d_in[s, :] = 0
                for j in range(w.shape[0]):
                    d_j = d_out[s, j]
                    for q in range(w.shape[1]):
                        d_in[s, q] += w[j, q] * d_j
                _times_prime_row(d_in[s], a[s], act_code)
        scale = dtype(eta / m)
        for l in range(n_layers):  # BP3, BP4 and the step
            w, b, d, a = weights[l], biases[l], deltas[l], acts[l]
            for j in range(w.shape[0]):
                grad_b = d[0, j] * 0
                for s in range(m):
                    grad_b += d[s, j]
                b[j] -= scale * grad_b
                for q in range(w.shape[1]):
                    grad = d[0, j] * 0
                    for s in range(m):
                        grad += d[s, j] * a[s, q]
                    w[j, q] = decay * w[j, q] - scale * grad
    write_fp_control(caller_fp_control)


def aligned_zeros(shape, dtype, alignment: int = 64) -> np.ndarray:
    """Zeros whose first element starts a cache line, so no SIMD row load or store straddles two lines."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    raw = np.zeros(size + alignment // dtype.itemsize, dtype)
    skip = (-raw.ctypes.data % alignment) // dtype.itemsize
    return raw[skip:skip + size].reshape(shape)


@njit(cache=True, nogil=True)  # nogil: the measuring thread prepares its data sets alongside
def _count_nonzero_rows(X, counts):
    for i in range(X.shape[0]):
        c = 0
        for k in range(X.shape[1]):
            if X[i, k] != 0:
                c += 1
        counts[i] = c


@njit(cache=True, nogil=True)  # nogil: the measuring thread prepares its data sets alongside
def _fill_rows(X, indptr, indices, values):
    for i in range(X.shape[0]):
        p = indptr[i]
        for k in range(X.shape[1]):
            if X[i, k] != 0:
                indices[p] = k
                values[p] = X[i, k]
                p += 1


@njit(cache=True, nogil=True)  # nogil: the measuring thread prepares its data sets alongside
def _value_codes(bits, codes, table_bits):
    """codes[p] with table_bits[codes[p]] == bits[p], for at most len(table_bits) distinct values.

    ``bits`` are the values' bit patterns (so equal means identical). Returns the number of distinct
    values, or -1 if there are more than the table holds. An open-addressing hash of the patterns.
    """
    slots = np.full(4 * table_bits.shape[0], -1, np.int64)  # hash slot -> code; a quarter full at most
    mask = slots.shape[0] - 1
    distinct = 0
    for p in range(bits.shape[0]):
        pattern = bits[p]
        slot = (np.uint64(pattern) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)  # Fibonacci hashing
        slot = np.int64(slot) & mask
        while slots[slot] >= 0 and table_bits[slots[slot]] != pattern:
            slot = (slot + 1) & mask
        if slots[slot] < 0:
            if distinct == table_bits.shape[0]:
                return -1
            table_bits[distinct] = pattern
            slots[slot] = distinct
            distinct += 1
        codes[p] = slots[slot]
    return distinct


class SparseImages(NamedTuple):
    """Images as CSR rows: image i's non-zero pixels are at columns ``indices[indptr[i]:indptr[i+1]]``
    with values ``table[codes[...]]``.

    Pixel values are stored as one-byte codes into a table of the distinct values when there are at
    most 256 of them (MNIST's are 255 multiples of 1/255): a third of the bytes per pixel to stream
    from memory each epoch (the images are visited in random order, so every image is a cache miss).
    Otherwise ``codes`` is simply 0, 1, 2, ... and ``table`` the values themselves. Exact either way.
    """
    indptr: np.ndarray
    indices: np.ndarray
    codes: np.ndarray
    table: np.ndarray


_sparse_copies: dict = {}  # id(X) -> (weak reference to X, dtype, SparseImages); see sparse_rows
_sparse_lock = threading.Lock()


def sparse_rows(X: np.ndarray, dtype) -> SparseImages:
    """The CSR form of X with values in ``dtype`` (see SparseImages).

    Made in Numba (count, fill, code the values). A data set is treated as immutable: the copy of an
    array is made once and shared while the array lives (the training epochs and the after-epoch
    evaluation of the same 50,000 images would otherwise each pay ~0.2 s for it). Train on a new
    array, not on one changed in place.
    """
    key = id(X)
    with _sparse_lock:  # the training thread and the measuring thread may ask for the same copy at once
        if key in _sparse_copies:
            ref, cached_dtype, csr = _sparse_copies[key]
            if ref() is X and cached_dtype == np.dtype(dtype):
                return csr
        csr = _sparse_rows(np.ascontiguousarray(X), dtype)
        try:
            _sparse_copies[key] = (weakref.ref(X, lambda _, key=key: _sparse_copies.pop(key, None)), np.dtype(dtype),
                                   csr)
        except TypeError:  # not weak-referenceable (a view of a view is fine; a memoryview is not)
            pass
        return csr


def _sparse_rows(X: np.ndarray, dtype) -> SparseImages:
    indptr = np.zeros(len(X) + 1, dtype=np.int64)
    _count_nonzero_rows(X, indptr[1:])
    np.cumsum(indptr, out=indptr)
    # Column numbers as uint16 when they fit (MNIST's 784 do): a quarter less memory to stream per epoch.
    index_type = np.uint16 if X.shape[1] <= np.iinfo(np.uint16).max else np.int32
    indices, values = np.empty(indptr[-1], index_type), np.empty(indptr[-1], dtype)
    _fill_rows(X, indptr, indices, values)
    bits_type = np.uint32 if values.dtype.itemsize == 4 else np.uint64
    codes, table_bits = np.empty(len(values), np.uint8), np.zeros(256, bits_type)
    distinct = _value_codes(values.view(bits_type), codes, table_bits)
    if distinct < 0:  # too many distinct values for one-byte codes: index the values directly
        return SparseImages(indptr, indices, np.arange(len(values), dtype=np.uint32 if len(values) < 2**32
                                                       else np.uint64), values)
    return SparseImages(indptr, indices, codes, table_bits[:max(distinct, 1)].view(values.dtype).copy())


def warm_up(dtype) -> None:
    """Get Numba's one-time start-up (about 0.4 s the first time anything compiled is called in a
    process) and the data preparation kernels out of the way, e.g. on another thread while the data load."""
    sparse_rows(np.ones((1, 1), dtype), dtype)


def _padded_outputs(n_out: int) -> int:
    """Output rows padded to whole vectors for the float32 output sigmoid."""
    return -(-n_out // SIGMOID_LANES) * SIGMOID_LANES


def _padded_layout(net, dtype):
    """Zeroed, cache-line aligned w1t (n_in, Hp) and w2p (n_out, Hp) for a one-hidden-layer net."""
    padded = -(-net.sizes[1] // CHUNK_ELEMENTS) * CHUNK_ELEMENTS
    return aligned_zeros((net.sizes[0], padded), dtype), aligned_zeros((net.sizes[2], padded), dtype)


def prepare_evaluation(net, X, labels):
    """For a one-hidden-layer ``net`` and a fixed data set: ``evaluate(net) -> (summed cost,
    predictions)`` with the weights ``net`` (this network or a copy) has now. The sparse copy of X
    is made once, here."""
    dtype = net.dtype
    images = sparse_rows(X, dtype)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    hidden = net.sizes[1]
    w1t, w2p = _padded_layout(net, dtype)
    a1 = aligned_zeros((EVALUATION_BLOCK, w1t.shape[1]), dtype)
    z2 = aligned_zeros((EVALUATION_BLOCK, _padded_outputs(net.sizes[2])), dtype)
    predicted = np.empty(len(labels), np.int64)

    def evaluate(current):
        w1t[:, :hidden] = current.weights[0].T
        w2p[:, :hidden] = current.weights[1]
        total = _evaluate_one_hidden(w1t, current.biases[0], w2p, current.biases[1], *images, labels,
                                     current.activation.code, current.cost_function.code, a1, z2, predicted)
        return total, predicted.copy()

    return evaluate


def prepare(net, X, labels, batch_size):
    """Convert the data and allocate the buffers once; return ``run`` for ranges of mini-batches."""
    dtype = net.dtype
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    n = len(labels)
    n_batches = -(-n // batch_size)
    act_code, cost_code = net.activation.code, net.cost_function.code

    if len(net.weights) == 2:
        indptr, indices, codes, table = sparse_rows(X, dtype)
        hidden, n_out = net.sizes[1], net.sizes[2]
        w1t, w2p = _padded_layout(net, dtype)
        padded = w1t.shape[1]
        a1, d1 = aligned_zeros((batch_size, padded), dtype), aligned_zeros((batch_size, padded), dtype)
        out_padded = _padded_outputs(n_out)
        a2, d2 = aligned_zeros((batch_size, out_padded), dtype), aligned_zeros((batch_size, out_padded), dtype)
        output_units = np.tile(np.arange(out_padded, dtype=np.uint16 if out_padded < 2**16 else np.int32), batch_size)
        samples = np.arange(batch_size, dtype=np.uint16 if batch_size < 2**16 else np.int32)
        starts, ends, targets = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        laid_out = [None]  # the permutation the three arrays above follow

        def run(perm, eta, lmbda, first_batch=0, last_batch=None):
            if laid_out[0] is not perm:  # once per epoch, even when the epoch runs in slices
                np.take(indptr[:-1], perm, out=starts)
                np.take(indptr[1:], perm, out=ends)
                np.take(labels, perm, out=targets)
                laid_out[0] = perm
            w1, b1, w2, b2 = net.weights[0], net.biases[0], net.weights[1], net.biases[1]
            # The kernel's layout, copied in and back out (24,000 numbers: microseconds).
            w1t[:, :hidden] = w1.T
            w2p[:, :hidden] = w2
            _epoch_one_hidden(w1t, b1, w2p, b2, starts, ends, indices, codes, table, targets,
                              batch_size, first_batch, n_batches if last_batch is None else last_batch,
                              float(eta), float(lmbda), act_code, cost_code, a1, d1, a2, d2, output_units, samples)
            w1[...] = w1t[:, :hidden].T
            w2[...] = w2p[:, :hidden]

        run(np.arange(n), 1.0, 0.0, 0, 0)  # no batches: loads the compiled kernel now, not in epoch 1
        return run

    X = np.ascontiguousarray(X, dtype=dtype)
    acts = tuple(np.zeros((batch_size, size), dtype) for size in net.sizes)
    deltas = tuple(np.zeros((batch_size, size), dtype) for size in net.sizes[1:])

    def run(perm, eta, lmbda, first_batch=0, last_batch=None):
        _epoch_general(tuple(net.weights), tuple(net.biases), X, labels, np.asarray(perm, np.int64), batch_size,
                       first_batch, n_batches if last_batch is None else last_batch, float(eta), float(lmbda),
                       act_code, cost_code, acts, deltas)

    return run

