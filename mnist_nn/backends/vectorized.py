"""The vectorized backend: the textbook lines with matrices, one product per layer per mini-batch.

Rows are samples: A^l has shape (m, n_l), so z^l = a^(l-1) w^T + b for the whole mini-batch.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.backends import apply_update, one_hot


def forward(weights, biases, X, activation, cost):
    """All activations [A^0 = X, A^1, ..., A^L] for the rows of X."""
    activations = [X]
    last = len(weights) - 1
    for l, (w, b) in enumerate(zip(weights, biases)):
        Z = activations[-1] @ w.T + b
        activations.append(cost.output(Z) if l == last else activation.fn(Z))
    return activations


def backprop(weights, biases, X, Y, activation, cost):
    """Gradient of the cost *summed* over the rows of X (Y one-hot), by BP1-BP4 on matrices."""
    activations = forward(weights, biases, X, activation, cost)
    nabla_w = [None] * len(weights)
    nabla_b = [None] * len(weights)
    delta = cost.delta(activations[-1], Y)  # BP1, one row per sample
    for l in range(len(weights) - 1, -1, -1):
        nabla_b[l] = delta.sum(axis=0)  # BP3 summed over the batch
        nabla_w[l] = delta.T @ activations[l]  # BP4 summed over the batch
        if l > 0:
            delta = (delta @ weights[l]) * activation.prime(activations[l])  # BP2
    return nabla_w, nabla_b


def prepare(net, X, labels, batch_size):
    X = np.ascontiguousarray(X, dtype=net.dtype)
    Y = one_hot(labels, net.sizes[-1], net.dtype)
    n = len(X)

    def run(perm, eta, lmbda, first_batch=0, last_batch=None):
        last_batch = -(-n // batch_size) if last_batch is None else last_batch
        for k in range(first_batch, last_batch):
            batch = perm[k * batch_size:(k + 1) * batch_size]
            nabla_w, nabla_b = backprop(net.weights, net.biases, X[batch], Y[batch],
                                        net.activation, net.cost_function)
            apply_update(net.weights, net.biases, nabla_w, nabla_b, eta, lmbda, len(batch), n)

    return run
