"""The training kernels: a range of one epoch's mini-batches per call, BP1-BP4 step by step.

* ``epoch_one_hidden``: the common n_in-H-n_out network, made fast: sparse input (the zero pixels are
  skipped, exactly), transposed and padded weights, SIMD row helpers (see layout.py and simd.py).
* ``epoch_one_hidden_adaptive``: the same network with momentum, RMSprop or Adam: the gradients are
  summed into buffers (the first layer's still over the non-zero pixels only), then the rule steps.
* ``epoch_general``: any number of layers, dense, the same equations as the vectorized backend, any rule.

Both do the arithmetic of the other backends; with float64 they agree with them to rounding (float32
uses a polynomial exp for the sigmoids, within a few ulp of libm's). They release the GIL.
"""

from __future__ import annotations

import math

from numba import njit

from mnist_nn.backends.jit.steps import (FASTMATH, activate, activate_hidden, bias_sums, forward, hidden_error,
                                         hidden_weighted_input, output_error, output_weighted_input, times_prime,
                                         update_biases, update_weights)
from mnist_nn.backends.jit.updates import normalize_backward, normalize_rows, optimizer_rule, step_rows, weight_sums
from mnist_nn.optimizers import SGD
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
def step_factors(lr, m, t, hyper, dtype):
    """(lr, 1/m, Adam's lr / (1 - beta1^t), Adam's sqrt(1 - beta2^t)) in ``dtype``, for step t."""
    step_size = lr / (1 - hyper.beta1_64 ** t)
    correction = math.sqrt(1 - hyper.beta2_64 ** t)
    return dtype(lr), dtype(1 / m), dtype(step_size), dtype(correction)


# error_model="numpy": a float division by zero gives inf instead of a check that raises, so that the
# update loops (a division per number) vectorize; nothing divides by zero here but a diverged run.
@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def epoch_one_hidden_adaptive(weights, slots, grads, images, buffers, batches, lr, l2, rule, bn):
    """``epoch_one_hidden`` with the optimizer ``rule`` = (code, hyper, step, act_code, cost_code):
    ``slots`` are its two state slots in the kernel's layout (KernelWeights each; the second is unused
    but for Adam), ``grads`` the gradient sums (KernelWeights of buffers, zero on entry and on exit).
    ``bn``: KernelBatchNorm; when used, z^1 is normalized before the activation, BN1-BN3 follow BP2,
    and gamma and beta step with the rule (plain SGD included). Returns the step count after the last batch.

    The gradient sums skip the zero pixels as SGD's update does, but every weight steps every batch:
    a row whose pixels were all 0 still moves on its momentum or moments. (Momentum and RMSprop without
    L2 have a closed form for a run of zero-gradient steps, so rows could be caught up only when a pixel
    of theirs is non-zero; measured on 784-30-10, batch 10, that bookkeeping made the epoch 1.6-1.8x
    slower than stepping all 784 rows as one vectorized loop, so it is not done. Adam has no such form:
    eps sits inside the sum of the skipped steps.)
    """
    code, hyper, t, act_code, cost_code = rule
    slot_a, slot_b = slots
    n = images.targets.shape[0]
    dtype = weights.w2p.dtype.type
    wd, zero = dtype(l2 / n), dtype(0)
    hidden, padded, n_out, n_in = weights.b1.shape[0], weights.w1t.shape[1], weights.b2.shape[0], weights.w1t.shape[0]
    # The biases as one-row matrices, so that one row helper steps every parameter.
    b1, b2 = weights.b1.reshape((1, hidden)), weights.b2.reshape((1, n_out))
    a_b1, a_b2 = slot_a.b1.reshape((1, hidden)), slot_a.b2.reshape((1, n_out))
    b_b1, b_b2 = slot_b.b1.reshape((1, hidden)), slot_b.b2.reshape((1, n_out))
    g_b1, g_b2 = buffers.grad_b1.reshape((1, buffers.grad_b1.shape[0])), buffers.grad_b2.reshape((1, buffers.grad_b2.shape[0]))
    caller_fp_control = read_fp_control()
    write_fp_control(caller_fp_control | FLUSH_DENORMALS)  # see simd.write_fp_control
    for k in range(batches.first, batches.last):
        start = k * batches.size
        m = min(batches.size, n - start)
        t += 1
        factors = step_factors(lr, m, t, hyper, dtype)
        if bn.used:
            hidden_weighted_input(weights, images, start, m, buffers.a1, PREFETCH_AHEAD)
            normalize_rows(buffers.a1, m, hidden, bn, 0)
            activate_hidden(buffers.a1, m, hidden, act_code)
            output_weighted_input(weights, buffers.a1, m, buffers.a2)
        else:
            forward(weights, images, start, m, buffers.a1, buffers.a2, act_code, PREFETCH_AHEAD)
        output_error(buffers.a2, buffers.d2, 0, m, images.targets, start, cost_code, n_out)  # BP1
        hidden_error(weights, buffers, m, act_code)  # BP2 (dC/dy with batch norm)
        if bn.used:
            normalize_backward(buffers.d1, m, hidden, bn, 0)  # BN1-BN3: to dC/dz
            step_rows(code, bn.gammas[0], bn.slot_a[0], bn.slot_b[0], bn.grads[0], 0, 1, hidden, factors, hyper, zero)
            step_rows(code, bn.betas[0], bn.slot_a[1], bn.slot_b[1], bn.grads[1], 0, 1, hidden, factors, hyper, zero)
        bias_sums(buffers, m)  # BP3
        weight_sums(grads, buffers, images, start, m)  # BP4
        step_rows(code, b1, a_b1, b_b1, g_b1, 0, 1, hidden, factors, hyper, zero)
        step_rows(code, b2, a_b2, b_b2, g_b2, 0, 1, n_out, factors, hyper, zero)
        step_rows(code, weights.w2p, slot_a.w2p, slot_b.w2p, grads.w2p, 0, n_out, padded, factors, hyper, wd)
        step_rows(code, weights.w1t, slot_a.w1t, slot_b.w1t, grads.w1t, 0, n_in, padded, factors, hyper, wd)
    write_fp_control(caller_fp_control)
    return t


@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def batch_norm_passes(weights, biases, acts, deltas, data, start, m, act_code, cost_code, bn):
    """The forward pass, BP1 and BP2 of a batch with batch norm, for ``epoch_general``: layer by layer
    over the whole batch, as a hidden layer's z must be normalized by the batch's statistics (and
    BN1-BN3 need the whole batch's delta)."""
    n_layers = len(weights)
    one = acts[0].dtype.type(1)
    for s in range(m):
        acts[0][s, :] = data.X[data.perm[start + s]]
    for l in range(n_layers):  # z = w a + b, normalized, a = sigma(y) on the hidden layers
        w, b, a_in, a_out = weights[l], biases[l], acts[l], acts[l + 1]
        for s in range(m):
            for j in range(w.shape[0]):
                z = b[j]
                for q in range(w.shape[1]):
                    z += w[j, q] * a_in[s, q]
                a_out[s, j] = z
        if l < n_layers - 1:
            normalize_rows(a_out, m, w.shape[0], bn, l)
            for s in range(m):
                for j in range(w.shape[0]):
                    a_out[s, j] = activate(a_out[s, j], act_code, one)
    for s in range(m):  # BP1
        output_error(acts[n_layers], deltas[n_layers - 1], s, 1, data.labels, data.perm[start + s], cost_code,
                     acts[n_layers].shape[1])
    for l in range(n_layers - 1, 0, -1):  # BP2 to dC/dy, then BN1-BN3 to dC/dz
        w, d_out, d_in = weights[l], deltas[l], deltas[l - 1]
        for s in range(m):
            d_in[s, :] = 0
            for j in range(w.shape[0]):
                d_j = d_out[s, j]
                for q in range(w.shape[1]):
                    d_in[s, q] += w[j, q] * d_j
            times_prime(d_in, acts[l], s, d_in.shape[1], act_code)
        normalize_backward(d_in, m, d_in.shape[1], bn, l - 1)


@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def epoch_general(layers, data, buffers, batches, lr, l2, act_code, cost_code, rule, slots, bn):
    """Train mini-batches ``batches.first`` .. ``batches.last - 1`` of any number of dense layers.

    ``layers``: DenseLayers (the network's arrays, updated in place); ``data``: DenseEpoch;
    ``buffers``: DenseBuffers. One sample at a time through the forward pass and BP1-BP2, then BP3-BP4
    for the whole mini-batch. ``rule``: (optimizer code, Hyper, step); ``slots``: the optimizer's two
    state slots, DenseLayers each (for SGD, any arrays of the right types: they are not read).
    ``bn``: KernelBatchNorm; when used, the forward pass and BP2 go layer by layer over the whole batch
    (each hidden z is normalized over it before the activation; BN1-BN3 follow BP2). Returns the step
    count after the last batch.
    """
    code, hyper, t = rule
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
        if bn.used:
            batch_norm_passes(weights, biases, acts, deltas, data, start, m, act_code, cost_code, bn)
        for s in range(m if not bn.used else 0):
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
        t += 1
        factors = step_factors(lr, m, t, hyper, dtype)
        inv_m, wd = factors[1], dtype(l2 / n)
        for l in range(n_layers):  # BP3, BP4 and the step
            w, b, d, a = weights[l], biases[l], deltas[l], acts[l]
            a_w, b_w, a_b, b_b = slots[0].weights[l], slots[1].weights[l], slots[0].biases[l], slots[1].biases[l]
            for j in range(w.shape[0]):
                grad_b = d[0, j] * 0
                for s in range(m):
                    grad_b += d[s, j]
                if code == SGD:
                    b[j] -= scale * grad_b
                else:
                    b[j], a_b[j], b_b[j] = optimizer_rule(code, b[j], grad_b * inv_m, a_b[j], b_b[j], factors, hyper)
                for q in range(w.shape[1]):
                    grad = d[0, j] * 0
                    for s in range(m):
                        grad += d[s, j] * a[s, q]
                    if code == SGD:
                        w[j, q] = decay * w[j, q] - scale * grad
                    else:
                        w[j, q], a_w[j, q], b_w[j, q] = optimizer_rule(code, w[j, q], grad * inv_m + wd * w[j, q],
                                                                       a_w[j, q], b_w[j, q], factors, hyper)
        for l in range(n_layers - 1 if bn.used else 0):  # gamma and beta, by the rule (no L2)
            n_l = weights[l].shape[0]
            step_rows(code, bn.gammas[l], bn.slot_a[2 * l], bn.slot_b[2 * l], bn.grads[2 * l], 0, 1, n_l, factors,
                      hyper, dtype(0))
            step_rows(code, bn.betas[l], bn.slot_a[2 * l + 1], bn.slot_b[2 * l + 1], bn.grads[2 * l + 1], 0, 1, n_l,
                      factors, hyper, dtype(0))
    write_fp_control(caller_fp_control)
    return t
