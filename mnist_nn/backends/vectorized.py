"""The vectorized backend: the textbook lines with matrices, one product per layer per mini-batch.

Rows are samples: A^l has shape (m, n_l), so z^l = a^(l-1) w^T + b for the whole mini-batch.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.backends import apply_update, one_hot


def forward(weights, biases, X, activation, cost):
    """All activations [A^0 = X, A^1, ..., A^L] for the rows of X."""
    activations = hidden_forward(weights, biases, X, activation)
    activations.append(cost.output(output_z(weights, biases, activations[-1])))
    return activations


def hidden_forward(weights, biases, X, activation):
    """[A^0 = X, A^1, ..., A^(L-1)]: the input and every hidden layer's activations."""
    activations = [X]
    for w, b in zip(weights[:-1], biases[:-1]):
        activations.append(activation.fn(activations[-1] @ w.T + b))
    return activations


def output_z(weights, biases, last_hidden):
    """z^L = A^(L-1) w^T + b, the output layer's weighted input (costs are computed from it stably)."""
    return last_hidden @ weights[-1].T + biases[-1]


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


def prepare(net, X, labels, batch_size, sparse=None):
    """Once per data set; ``sparse`` (the jit backend's copy of X) is not needed here."""
    X = np.ascontiguousarray(X, dtype=net.dtype)
    Y = one_hot(labels, net.sizes[-1], net.dtype)
    n = len(X)

    def run(perm, lr, l2, first_batch=0, last_batch=None):
        last_batch = -(-n // batch_size) if last_batch is None else last_batch
        for k in range(first_batch, last_batch):
            batch = perm[k * batch_size:(k + 1) * batch_size]
            nabla_w, nabla_b = backprop(net.weights, net.biases, X[batch], Y[batch],
                                        net.activation, net.cost_function)
            apply_update(net.weights, net.biases, nabla_w, nabla_b, lr, l2, len(batch), n)

    return run
