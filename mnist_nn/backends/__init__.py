"""Three interchangeable implementations of one SGD epoch: ``loop``, ``vectorized`` and ``jit``.

Every backend module has one entry point::

    run = prepare(net, X, labels, batch_size, sparse=None)   # once per data set: conversions, buffers
    run(perm, lr, l2, first_batch, last_batch)

``run`` trains ``net`` in place on mini-batches ``first_batch`` to ``last_batch - 1`` of the
permutation ``perm`` (mini-batch k is ``perm[k*batch_size:(k+1)*batch_size]``, the last one may be
shorter), with the update of network2.py for each mini-batch of m samples out of n (learning rate
``lr``, L2 weight decay ``l2``; eta and lambda in the lecture notes)::

    w <- (1 - lr*l2/n) w - (lr/m) sum_x dC_x/dw        b <- b - (lr/m) sum_x dC_x/db

With another optimizer than plain SGD (``net.optimizer``, see :mod:`mnist_nn.optimizers`), the mean
gradient g = (1/m) sum_x dC_x/dw, plus (l2/n) w for the weights, goes to its rule instead, and the
rule's state (``net.optimizer_state``) moves on with it.

All three do the same arithmetic on the same mini-batch order, so they agree to rounding. ``sparse``
is the jit backend's copy of X (``jit.sparse_rows``), made by the caller once to share it between
training and evaluation; the loop and vectorized backends read X itself and ignore it. No backend
keeps anything between ``prepare`` calls: a data set changed in place is read afresh by the next one.
"""

from __future__ import annotations

import importlib

import numpy as np

BACKENDS = ("loop", "vectorized", "jit")


def get_backend(name: str):
    """The backend module called ``name`` (imported on first use: jit pulls in Numba)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"mnist_nn.backends.{name}")


def one_hot(labels: np.ndarray, n_classes: int, dtype) -> np.ndarray:
    """Rows of the identity: the target vector y for each label."""
    return np.eye(n_classes, dtype=dtype)[labels]


def apply_update(weights, biases, nabla_w, nabla_b, lr: float, l2: float, m: int, n: int) -> None:
    """One SGD step with L2 weight decay (weights only), from gradients summed over m samples."""
    decay = 1 - lr * l2 / n
    for w, b, nw, nb in zip(weights, biases, nabla_w, nabla_b):
        if l2:
            w *= decay
        w -= (lr / m) * nw
        b -= (lr / m) * nb


def apply_step(net, nabla_w, nabla_b, lr: float, l2: float, m: int, n: int, nabla_bn=None) -> None:
    """One step of ``net.optimizer`` from gradients summed over m samples (of n in the epoch): plain SGD
    as :func:`apply_update`; the others (and every rule with batch norm: ``nabla_bn``, the gammas' and
    betas' gradients) get the mean gradients with the L2 term on the weights added."""
    optimizer = net.optimizer
    if optimizer.name == "sgd" and net.bn is None:
        apply_update(net.weights, net.biases, nabla_w, nabla_b, lr, l2, m, n)
        return
    dtype = net.dtype.type
    grads_w = [nw / dtype(m) + dtype(l2 / n) * w if l2 else nw / dtype(m) for w, nw in zip(net.weights, nabla_w)]
    grads_b = [nb / dtype(m) for nb in (*nabla_b, *(nabla_bn or ()))]
    optimizer.step(net.parameters(), grads_w + grads_b, net.optimizer_state, lr)
