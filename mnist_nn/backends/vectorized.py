"""The vectorized backend: the textbook lines with matrices, one product per layer per mini-batch.

Rows are samples: A^l has shape (m, n_l), so z^l = a^(l-1) w^T + b for the whole mini-batch.
With batch norm (``bn``, a :class:`mnist_nn.batchnorm.BatchNorm`), each hidden z is normalized before
the activation: over the mini-batch in training, with the running statistics otherwise.
"""

from __future__ import annotations

import numpy as np

from mnist_nn import batchnorm
from mnist_nn.backends import apply_step, one_hot


def forward(weights, biases, X, activation, cost, bn=None, caches=None):
    """All activations [A^0 = X, A^1, ..., A^L] for the rows of X. ``caches``: a list to collect each
    batch-normalized layer's (zhat, inv_std, mu, var) in, for training; None evaluates."""
    activations = hidden_forward(weights, biases, X, activation, bn, caches)
    activations.append(cost.output(output_z(weights, biases, activations[-1])))
    return activations


def hidden_forward(weights, biases, X, activation, bn=None, caches=None):
    """[A^0 = X, A^1, ..., A^(L-1)]: the input and every hidden layer's activations."""
    activations = [X]
    for l, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
        z = activations[-1] @ w.T + b
        if bn is not None and caches is not None:
            z, *cache = batchnorm.normalize(z, bn.gammas[l], bn.betas[l])
            caches.append(cache)
        elif bn is not None:
            z = batchnorm.normalize_for_evaluation(z, bn.gammas[l], bn.betas[l], bn.running_means[l],
                                                   bn.running_vars[l])
        activations.append(activation.fn(z))
    return activations


def output_z(weights, biases, last_hidden):
    """z^L = A^(L-1) w^T + b, the output layer's weighted input (costs are computed from it stably)."""
    return last_hidden @ weights[-1].T + biases[-1]


def backprop(weights, biases, X, Y, activation, cost, bn=None, update_running=True):
    """Gradient of the cost *summed* over the rows of X (Y one-hot), by BP1-BP4 on matrices.

    Returns (nabla_w, nabla_b, nabla_bn): nabla_bn is [dgamma0, dbeta0, ...] with batch norm (the
    batch statistics then also move the running ones), [] without."""
    caches = [] if bn is not None else None
    activations = forward(weights, biases, X, activation, cost, bn, caches)
    nabla_w = [None] * len(weights)
    nabla_b = [None] * len(weights)
    nabla_bn = [None] * (2 * len(caches or ()))
    delta = cost.delta(activations[-1], Y)  # BP1, one row per sample
    for l in range(len(weights) - 1, -1, -1):
        nabla_b[l] = delta.sum(axis=0)  # BP3 summed over the batch
        nabla_w[l] = delta.T @ activations[l]  # BP4 summed over the batch
        if l > 0:
            delta = (delta @ weights[l]) * activation.prime(activations[l])  # BP2 (to dC/dy with batch norm)
            if bn is not None:  # BN1-BN3: on through the normalization to dC/dz
                zhat, inv_std, mu, var = caches[l - 1]
                delta, nabla_bn[2 * l - 2], nabla_bn[2 * l - 1] = batchnorm.backward(delta, zhat, inv_std,
                                                                                     bn.gammas[l - 1])
                if update_running:
                    batchnorm.update_running(bn.running_means[l - 1], bn.running_vars[l - 1], mu, var,
                                             len(X))
    return nabla_w, nabla_b, nabla_bn


def prepare(net, X, labels, batch_size, sparse=None):
    """Once per data set; ``sparse`` (the jit backend's copy of X) is not needed here."""
    X = np.ascontiguousarray(X, dtype=net.dtype)
    Y = one_hot(labels, net.sizes[-1], net.dtype)
    n = len(X)

    def run(perm, lr, l2, first_batch=0, last_batch=None):
        last_batch = -(-n // batch_size) if last_batch is None else last_batch
        for k in range(first_batch, last_batch):
            batch = perm[k * batch_size:(k + 1) * batch_size]
            nabla_w, nabla_b, nabla_bn = backprop(net.weights, net.biases, X[batch], Y[batch],
                                                  net.activation, net.cost_function, net.bn)
            apply_step(net, nabla_w, nabla_b, lr, l2, len(batch), n, nabla_bn)

    return run
