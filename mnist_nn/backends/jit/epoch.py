"""The training kernels: a range of one epoch's mini-batches per call, BP1-BP4 step by step.

* ``epoch_one_hidden``: the common n_in-H-n_out network, made fast: sparse input (the zero pixels are
  skipped, exactly), transposed and padded weights, SIMD row helpers (see layout.py and simd.py).
* ``epoch_general``: any number of layers, dense, the same equations as the vectorized backend.

Both do the arithmetic of the other backends; with float64 they agree with them to rounding (float32
uses a polynomial exp for the sigmoids, within a few ulp of libm's). They release the GIL.
"""

from __future__ import annotations

from numba import njit

from mnist_nn.backends.jit.steps import (FASTMATH, activate, forward, hidden_error, output_error, times_prime,
                                         update_biases, update_weights)
from mnist_nn.backends.simd import FLUSH_DENORMALS, read_fp_control, write_fp_control

PREFETCH_AHEAD = 4  # images; measured: 1 ahead gains ~20% per epoch, 4 ahead a little more


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def epoch_one_hidden(weights, images, buffers, batches, lr, l2, act_code, cost_code):
    """Train mini-batches ``batches.first`` .. ``batches.last - 1`` of one epoch, in place.

    ``weights``: KernelWeights; ``images``: SparseEpoch in the epoch's order; ``buffers``: Buffers.
    """
    n = images.targets.shape[0]
    dtype = weights.w2p.dtype.type
    decay = dtype(1 - lr * l2 / n)
    caller_fp_control = read_fp_control()
    write_fp_control(caller_fp_control | FLUSH_DENORMALS)  # see simd.write_fp_control
    for k in range(batches.first, batches.last):
        start = k * batches.size
        m = min(batches.size, n - start)
        forward(weights, images, start, m, buffers.a1, buffers.a2, act_code, PREFETCH_AHEAD)
        output_error(buffers.a2, buffers.d2, 0, m, images.targets, start, cost_code, weights.b2.shape[0])  # BP1
        hidden_error(weights, buffers, m, act_code)  # BP2
        scale = dtype(lr / m)
        update_biases(weights, buffers, m, scale)  # BP3
        update_weights(weights, buffers, images, start, m, scale, decay)  # BP4
    write_fp_control(caller_fp_control)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def epoch_general(layers, data, buffers, batches, lr, l2, act_code, cost_code):
    """Train mini-batches ``batches.first`` .. ``batches.last - 1`` of any number of dense layers.

    ``layers``: DenseLayers (the network's arrays, updated in place); ``data``: DenseEpoch;
    ``buffers``: DenseBuffers. One sample at a time through the forward pass and BP1-BP2, then BP3-BP4
    for the whole mini-batch.
    """
    weights, biases, acts, deltas = layers.weights, layers.biases, buffers.acts, buffers.deltas
    n = data.X.shape[0]
    n_layers = len(weights)
    dtype = data.X.dtype.type
    one = dtype(1)
    decay = dtype(1 - lr * l2 / n)
    caller_fp_control = read_fp_control()
    write_fp_control(caller_fp_control | FLUSH_DENORMALS)  # see simd.write_fp_control
    for k in range(batches.first, batches.last):
        start = k * batches.size
        m = min(batches.size, n - start)
        for s in range(m):
            i = data.perm[start + s]
            acts[0][s, :] = data.X[i]
            for l in range(n_layers):  # forward: z = w a + b, a = sigma(z) on the hidden layers
                w, b, a_in, a_out = weights[l], biases[l], acts[l], acts[l + 1]
                for j in range(w.shape[0]):
                    z = b[j]
                    for q in range(w.shape[1]):
                        z += w[j, q] * a_in[s, q]
                    a_out[s, j] = activate(z, act_code, one) if l < n_layers - 1 else z
            output_error(acts[n_layers], deltas[n_layers - 1], s, 1, data.labels, i, cost_code,  # BP1
                         acts[n_layers].shape[1])
            for l in range(n_layers - 1, 0, -1):  # BP2
                w, d_out, d_in = weights[l], deltas[l], deltas[l - 1]
                d_in[s, :] = 0
                for j in range(w.shape[0]):
                    d_j = d_out[s, j]
                    for q in range(w.shape[1]):
                        d_in[s, q] += w[j, q] * d_j
                times_prime(d_in, acts[l], s, d_in.shape[1], act_code)
        scale = dtype(lr / m)
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
