"""The kernels' layout: the weights, data and buffers they take, grouped as NamedTuples, and how they
are allocated.

The one-hidden-layer kernels keep the first-layer weights transposed, ``w1t[k, :]`` being the H weights
leaving pixel k, so that both z^1 += x_k w1t[k, :] and the update w1t[k, :] -= (lr/m) x_k delta^1 are
contiguous rows (see :mod:`mnist_nn.backends.simd`). The hidden axis of ``w1t`` and ``w2p`` is padded
with zero columns to a multiple of ``CHUNK_ELEMENTS``, so every loop over hidden units runs whole SIMD
vectors; the padded units have zero weights into and out of them and never change. Output rows are
padded to whole float32 vectors for the vector sigmoid.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mnist_nn.backends.simd import CHUNK_ELEMENTS, SIGMOID_LANES


class Batches(NamedTuple):
    """Mini-batches ``first`` .. ``last - 1`` of ``size`` samples (the last one of the epoch may be shorter)."""
    size: int
    first: int
    last: int


class KernelWeights(NamedTuple):
    """A one-hidden-layer network in the kernel's layout: ``w1t`` (n_in, Hp) is w^1 transposed, ``w2p``
    (n_out, Hp) is w^2, both padded; ``b1`` (H) and ``b2`` (n_out) are the network's own arrays."""
    w1t: np.ndarray
    b1: np.ndarray
    w2p: np.ndarray
    b2: np.ndarray


class SparseEpoch(NamedTuple):
    """Images in the order the kernel visits them: sample t's non-zero pixels are
    ``table[codes[starts[t]:ends[t]]]`` at columns ``indices[...]``, its label ``targets[t]``.

    For training, the caller lays ``starts``, ``ends`` and ``targets`` out in the epoch's shuffled order,
    so they are read front to back; for evaluation they are the images' own order.
    """
    starts: np.ndarray
    ends: np.ndarray
    indices: np.ndarray
    codes: np.ndarray
    table: np.ndarray
    targets: np.ndarray


class Buffers(NamedTuple):
    """Work space of the one-hidden-layer training kernel, allocated once per data set.

    a1, d1 (batch, Hp): a^1 and delta^1 of each sample of the mini-batch; a2, d2 (batch, n_out padded):
    z^2 then a^2, and delta^2 (``d2_flat`` is d2 as one row). ``output_units`` is 0..padded-1 repeated
    batch times, so that layer 2 can use the same row helpers as layer 1 (d2_flat[p] is delta^2 of
    output ``output_units[p]``); ``samples`` is 0..batch-1, for the update of layer 2 (a1's rows are the
    samples). grad_b1, grad_b2 and steps hold BP3's sums and BP4's per-sample factors.
    """
    a1: np.ndarray
    d1: np.ndarray
    a2: np.ndarray
    d2: np.ndarray
    d2_flat: np.ndarray
    output_units: np.ndarray
    samples: np.ndarray
    grad_b1: np.ndarray
    grad_b2: np.ndarray
    steps: np.ndarray


class DenseLayers(NamedTuple):
    """Any number of dense layers: tuples of the network's own ``weights`` and ``biases``."""
    weights: tuple
    biases: tuple


class DenseEpoch(NamedTuple):
    """Dense images ``X`` (N, n_in), their ``labels`` and the epoch's permutation."""
    X: np.ndarray
    labels: np.ndarray
    perm: np.ndarray


class DenseBuffers(NamedTuple):
    """``acts[l]`` (batch, n_l) holds a^l of each sample of a mini-batch, ``deltas[l]`` delta^(l+1)."""
    acts: tuple
    deltas: tuple


def aligned_zeros(shape, dtype, alignment: int = 64) -> np.ndarray:
    """Zeros whose first element starts a cache line, so no SIMD row load or store straddles two lines."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    raw = np.zeros(size + alignment // dtype.itemsize, dtype)
    skip = (-raw.ctypes.data % alignment) // dtype.itemsize
    return raw[skip:skip + size].reshape(shape)


def padded_outputs(n_out: int) -> int:
    """Output rows padded to whole vectors for the float32 output sigmoid."""
    return -(-n_out // SIGMOID_LANES) * SIGMOID_LANES


def kernel_weights(net) -> KernelWeights:
    """Zeroed, cache-line aligned w1t and w2p for a one-hidden-layer ``net``, with its biases."""
    padded = -(-net.sizes[1] // CHUNK_ELEMENTS) * CHUNK_ELEMENTS
    return KernelWeights(aligned_zeros((net.sizes[0], padded), net.dtype), net.biases[0],
                         aligned_zeros((net.sizes[2], padded), net.dtype), net.biases[1])


def copy_in(net, weights: KernelWeights) -> KernelWeights:
    """``net``'s weights into the kernel layout (24,000 numbers for 784-30-10: microseconds); the
    biases are net's own arrays."""
    return arrays_in(net.weights + net.biases, weights)


def copy_out(weights: KernelWeights, net) -> None:
    arrays_out(weights, net.weights + net.biases)


def arrays_in(arrays, weights: KernelWeights) -> KernelWeights:
    """[w0, w1, b0, b1] (the network's parameters, or an optimizer slot shaped like them) into the
    kernel layout ``weights`` (made by :func:`kernel_weights`); the 1-D ones are used as they are."""
    w0, w1, b0, b1 = arrays
    hidden = w0.shape[0]
    weights.w1t[:, :hidden] = w0.T
    weights.w2p[:, :hidden] = w1
    return weights._replace(b1=b0, b2=b1)


def arrays_out(weights: KernelWeights, arrays) -> None:
    w0, w1 = arrays[:2]
    hidden = w0.shape[0]
    w0[...] = weights.w1t[:, :hidden].T
    w1[...] = weights.w2p[:, :hidden]


class Hyper(NamedTuple):
    """An optimizer's hyperparameters in the parameters' dtype, and the two Adam needs in float64 for
    its bias corrections (1 - beta^t, computed once per step)."""
    mu: object
    rho: object
    one_minus_rho: object
    beta1: object
    one_minus_beta1: object
    beta2: object
    one_minus_beta2: object
    eps: object
    beta1_64: float
    beta2_64: float


def hyper(optimizer, dtype) -> Hyper:
    t = np.dtype(dtype).type
    o = optimizer
    return Hyper(t(o.momentum), t(o.rho), t(1 - o.rho), t(o.beta1), t(1 - o.beta1), t(o.beta2), t(1 - o.beta2),
                 t(o.eps), float(o.beta1), float(o.beta2))


def one_hidden_buffers(padded: int, n_out: int, batch_size: int, dtype) -> Buffers:
    out_padded = padded_outputs(n_out)

    def rows(width):
        return aligned_zeros((batch_size, width), dtype)

    d2 = rows(out_padded)
    return Buffers(rows(padded), rows(padded), rows(out_padded), d2, d2.reshape(-1),
                   np.tile(np.arange(out_padded, dtype=np.uint16 if out_padded < 2**16 else np.int32), batch_size),
                   np.arange(batch_size, dtype=np.uint16 if batch_size < 2**16 else np.int32),
                   aligned_zeros(padded, dtype), aligned_zeros(out_padded, dtype), np.empty(batch_size, dtype))


def dense_buffers(sizes, batch_size: int, dtype) -> DenseBuffers:
    return DenseBuffers(tuple(np.zeros((batch_size, size), dtype) for size in sizes),
                        tuple(np.zeros((batch_size, size), dtype) for size in sizes[1:]))


class KernelBatchNorm(NamedTuple):
    """Batch norm in the kernels' form: per hidden layer, one-row (1, n) views of the network's
    ``gammas``, ``betas``, ``running_means``, ``running_vars`` and of the optimizer's slots for gamma
    and beta (``slot_a``, ``slot_b``: gamma0, beta0, gamma1, ...), and buffers: ``zhats`` (batch, width),
    ``inv_stds`` (1, n) and the gradient sums ``grads`` (1, n each: gamma0, beta0, ...). A network
    without batch norm gets stand-ins of the same types that are never read (``used`` is False)."""
    used: bool
    gammas: tuple
    betas: tuple
    running_means: tuple
    running_vars: tuple
    zhats: tuple
    inv_stds: tuple
    grads: tuple
    slot_a: tuple
    slot_b: tuple


def kernel_batch_norm(net, batch_size: int, widths) -> KernelBatchNorm:
    """For ``net``'s hidden layers; ``widths``: the row width of each layer's buffers (padded or not)."""
    hidden = net.sizes[1:-1]
    bn = net.bn
    rows = lambda arrays: tuple(a.reshape(1, -1) for a in arrays)  # noqa: E731
    zeros = lambda: tuple(np.zeros((1, n), net.dtype) for n in hidden)  # noqa: E731
    if bn is None:
        gammas, betas, means, variances = zeros(), zeros(), zeros(), zeros()
        slot_a = slot_b = tuple(np.zeros((1, n), net.dtype) for n in hidden for _ in range(2))
    else:
        gammas, betas, means, variances = rows(bn.gammas), rows(bn.betas), rows(bn.running_means), rows(bn.running_vars)
        state, n_params = net.optimizer_state, 2 * len(net.weights)
        slots = [rows(arrays[n_params:]) for arrays in state.slots.values()]
        scratch = tuple(np.zeros((1, n), net.dtype) for n in hidden for _ in range(2))
        slot_a, slot_b = (slots + slots)[:2] if slots else (scratch, scratch)
    return KernelBatchNorm(bn is not None, gammas, betas, means, variances,
                           tuple(aligned_zeros((batch_size, w), net.dtype) for w in widths), zeros(),
                           tuple(np.zeros((1, n), net.dtype) for n in hidden for _ in range(2)), slot_a, slot_b)
