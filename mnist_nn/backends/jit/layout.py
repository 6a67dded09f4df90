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
    hidden = net.sizes[1]
    weights.w1t[:, :hidden] = net.weights[0].T
    weights.w2p[:, :hidden] = net.weights[1]
    return weights._replace(b1=net.biases[0], b2=net.biases[1])


def copy_out(weights: KernelWeights, net) -> None:
    hidden = net.sizes[1]
    net.weights[0][...] = weights.w1t[:, :hidden].T
    net.weights[1][...] = weights.w2p[:, :hidden]


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
