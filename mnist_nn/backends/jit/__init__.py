"""The jit backend: Numba kernels that run a whole epoch (or a range of its mini-batches) per call.

Where things are:

* ``sparse.py``: the images as CSR rows with one-byte value codes (``sparse_rows``), made once per data set.
* ``layout.py``: the NamedTuples the kernels take (weights in the kernel's layout, the sparse epoch,
  the buffers) and their allocation.
* ``steps.py``: BP1-BP4 as small functions named for what they compute, inlined into the kernels.
* ``epoch.py``: the training kernels, the fast one-hidden-layer one and the general dense one.
* ``evaluate.py``: the evaluation kernel (the training forward pass over a data set).
* ``mnist_nn.backends.simd``: the intrinsics (LLVM IR) for the sparse rows, the float32 sigmoid,
  prefetching and denormals.

This module is the glue: ``prepare`` (the backend entry point), ``prepare_evaluation``, ``warm_up``.
Nothing here keeps state between calls: a data set's sparse copy is made by whoever owns the data set
and passed in (``sparse=``); without it each call makes its own.

For whoever edits the kernels: Numba's on-disk cache (``cache=True``) checks only the file that defines
a kernel (epoch.py, evaluate.py, sparse.py), not the files inlined into it (steps.py, functions.py,
simd.py): after changing one of those, delete the ``*.nbi``/``*.nbc`` files in mnist_nn's
``__pycache__`` folders (or touch epoch.py and evaluate.py), or the old compiled code keeps running.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.backends.jit.epoch import epoch_general, epoch_one_hidden, epoch_one_hidden_adaptive
from mnist_nn.backends.jit.evaluate import evaluate_one_hidden
from mnist_nn.backends.jit.layout import (Batches, DenseEpoch, DenseLayers, SparseEpoch, aligned_zeros, arrays_in,
                                          arrays_out, copy_in, copy_out, dense_buffers, hyper, kernel_batch_norm,
                                          kernel_weights, one_hidden_buffers, padded_outputs)
from mnist_nn.backends.jit.sparse import SparseImages, check_sparse, sparse_rows

__all__ = ["prepare", "prepare_evaluation", "warm_up", "sparse_rows", "SparseImages"]

EVALUATION_BLOCK = 16  # images evaluated together, layer by layer


def warm_up(dtype, deep: bool = False, adaptive: bool = False) -> None:
    """Compile (the first time; load from Numba's disk cache after that) every kernel a run uses, on a
    network of four inputs, so that it happens before the first epoch: e.g. on another thread while the
    data load. The kernels are compiled for types, not sizes or codes, so any network of the same
    dtype then runs without compiling. ``deep``: also the kernel for more than one hidden layer;
    ``adaptive``: also the kernels of the optimizers other than SGD and of batch norm (one kernel serves
    them all)."""
    from mnist_nn.network import Network  # here: network.py imports the backends

    X = np.eye(4, dtype=dtype)
    labels = np.arange(4) % 2
    for sizes in [(4, 3, 2)] + ([(4, 3, 3, 2)] if deep else []):
        for optimizer in ("sgd", "adam") if adaptive else ("sgd",):
            net = Network(sizes, dtype=dtype, seed=0, batch_norm=optimizer == "adam")
            net.use_optimizer(optimizer)
            prepare(net, X, labels, batch_size=2)(np.arange(4), 0.1, 0.0)
        if len(sizes) == 3:
            prepare_evaluation(net, X, labels)(net)


def _sparse_for(net, X, sparse) -> SparseImages:
    if sparse is None:
        return sparse_rows(X, net.dtype)
    return check_sparse(sparse, len(X), net.sizes[0], net.dtype)


def prepare_evaluation(net, X, labels, sparse: SparseImages | None = None):
    """For a one-hidden-layer ``net`` and a fixed data set: ``evaluate(net) -> (summed cost,
    predictions)`` with the weights ``net`` (this network or a copy) has now.

    ``sparse``: ``sparse_rows(X, net.dtype)`` if the caller has it already; made here otherwise."""
    images = _sparse_for(net, X, sparse)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    in_order = SparseEpoch(images.indptr[:-1], images.indptr[1:], images.indices, images.codes, images.table,
                           labels)
    weights = kernel_weights(net)
    a1 = aligned_zeros((EVALUATION_BLOCK, weights.w1t.shape[1]), net.dtype)
    z2 = aligned_zeros((EVALUATION_BLOCK, padded_outputs(net.sizes[2])), net.dtype)
    predicted = np.empty(len(labels), np.int64)

    def evaluate(current):
        total = evaluate_one_hidden(copy_in(current, weights), in_order, current.activation.code,
                                    current.cost_function.code, a1, z2, predicted)
        return total, predicted.copy()

    return evaluate


def prepare(net, X, labels, batch_size, sparse: SparseImages | None = None):
    """Convert the data and allocate the buffers once; return ``run(perm, lr, l2, first_batch=0,
    last_batch=None)`` for ranges of mini-batches (see :mod:`mnist_nn.backends`).

    ``sparse``: for a one-hidden-layer ``net``, ``sparse_rows(X, net.dtype)`` if the caller has it
    already (it is read, never changed); made here otherwise. Deeper networks train on X itself."""
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    n = len(labels)
    n_batches = -(-n // batch_size)
    net.use_optimizer(None)  # the state the kernels step (made here for a network never trained)
    act_code, cost_code = net.activation.code, net.cost_function.code

    if len(net.weights) == 2:
        images = _sparse_for(net, X, sparse)
        weights = kernel_weights(net)
        buffers = one_hidden_buffers(weights.w1t.shape[1], net.sizes[2], batch_size, net.dtype)
        epoch = SparseEpoch(np.empty(n, np.int64), np.empty(n, np.int64), images.indices, images.codes,
                            images.table, np.empty(n, np.int64))
        laid_out = [None]  # the permutation that epoch's starts, ends and targets follow
        adaptive = _adaptive_one_hidden(net, batch_size)

        def run(perm, lr, l2, first_batch=0, last_batch=None):
            if laid_out[0] is not perm:  # once per epoch, even when the epoch runs in slices
                np.take(images.indptr[:-1], perm, out=epoch.starts)
                np.take(images.indptr[1:], perm, out=epoch.ends)
                np.take(labels, perm, out=epoch.targets)
                laid_out[0] = perm
            current = copy_in(net, weights)  # the kernel's layout, copied in and back out
            batches = Batches(batch_size, first_batch, n_batches if last_batch is None else last_batch)
            if adaptive is None:
                epoch_one_hidden(current, epoch, buffers, batches, float(lr), float(l2), act_code, cost_code)
            else:
                adaptive(current, epoch, buffers, batches, float(lr), float(l2))
            copy_out(current, net)

        run(np.arange(n), 1.0, 0.0, 0, 0)  # no batches: loads the compiled kernel now, not in epoch 1
        return run

    X = np.ascontiguousarray(X, dtype=net.dtype)
    buffers = dense_buffers(net.sizes, batch_size, net.dtype)
    rule_hyper = hyper(net.optimizer, net.dtype)

    def run(perm, lr, l2, first_batch=0, last_batch=None):
        layers = DenseLayers(tuple(net.weights), tuple(net.biases))
        state, n_layers = net.optimizer_state, len(net.weights)
        slots = [DenseLayers(tuple(arrays[:n_layers]), tuple(arrays[n_layers:])) for arrays in state.slots.values()]
        slots = (slots * 2)[:2] if slots else [layers, layers]  # one slot: twice; SGD: stand-ins, never read
        state.step = int(epoch_general(layers, DenseEpoch(X, labels, np.asarray(perm, np.int64)), buffers,
                                       Batches(batch_size, first_batch, n_batches if last_batch is None else last_batch),
                                       float(lr), float(l2), act_code, cost_code,
                                       (net.optimizer.code, rule_hyper, state.step), tuple(slots),
                                       kernel_batch_norm(net, batch_size, net.sizes[1:-1])))

    return run


def _adaptive_one_hidden(net, batch_size):
    """For momentum, RMSprop or Adam (or batch norm) on a one-hidden-layer ``net``: ``step(weights,
    epoch, buffers, batches, lr, l2)``, the adaptive kernel with the optimizer's state copied into the
    kernel's layout and back; None for plain SGD without batch norm (the kernel of its own)."""
    optimizer = net.optimizer
    if optimizer.name == "sgd" and net.bn is None:
        return None
    layouts = [kernel_weights(net) for _ in optimizer.slots]
    if not layouts:  # plain SGD with batch norm keeps no state: a stand-in, written but never read
        layouts = [kernel_weights(net)._replace(b1=np.zeros_like(net.biases[0]), b2=np.zeros_like(net.biases[1]))]
    grads = kernel_weights(net)  # the biases' sums are in the buffers
    rule_hyper, codes = hyper(optimizer, net.dtype), (net.activation.code, net.cost_function.code)

    def step(weights, epoch, buffers, batches, lr, l2):
        state = net.optimizer_state
        arrays = [state.slots[slot][:4] for slot in optimizer.slots]
        slots = [arrays_in(a, layout) for a, layout in zip(arrays, layouts)] or layouts
        t = epoch_one_hidden_adaptive(weights, (slots[0], slots[-1]), grads, epoch, buffers, batches, lr, l2,
                                      (optimizer.code, rule_hyper, state.step, *codes),
                                      kernel_batch_norm(net, batch_size, [weights.w1t.shape[1]]))
        state.step = int(t)
        for a, slot in zip(arrays, slots):
            arrays_out(slot, a)

    return step
