"""The textbook backend: backpropagation one sample at a time, as in the lecture notes.

It exists to be read next to the four equations, and to be the slow baseline the others are
measured against. Vectors are 1-D arrays; a^0 = x is the input.
"""

from __future__ import annotations

import numpy as np

from mnist_nn.backends import apply_update, one_hot


def backprop(weights, biases, x, y, activation, cost):
    """Gradient of the cost of one sample (x, y): lists shaped like ``weights`` and ``biases``."""
    # Forward pass: z^l = w^l a^(l-1) + b^l and a^l = sigma(z^l), keeping every a^l.
    activations = [x]
    last = len(weights) - 1
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = w @ activations[-1] + b
        activations.append(cost.output(z) if l == last else activation.fn(z))

    nabla_w = [None] * len(weights)
    nabla_b = [None] * len(weights)
    delta = cost.delta(activations[-1], y)  # BP1: output error
    for l in range(last, -1, -1):
        nabla_b[l] = delta  # BP3: dC/db^l = delta^l
        nabla_w[l] = np.outer(delta, activations[l])  # BP4: dC/dw^l_jk = a^(l-1)_k delta^l_j
        if l > 0:
            # BP2: delta^(l-1) = ((w^l)^T delta^l) * sigma'(z^(l-1))
            delta = (weights[l].T @ delta) * activation.prime(activations[l])
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
            nabla_w = [np.zeros_like(w) for w in net.weights]
            nabla_b = [np.zeros_like(b) for b in net.biases]
            for i in batch:
                delta_nabla_w, delta_nabla_b = backprop(net.weights, net.biases, X[i], Y[i],
                                                        net.activation, net.cost_function)
                for nw, dnw in zip(nabla_w, delta_nabla_w):
                    nw += dnw
                for nb, dnb in zip(nabla_b, delta_nabla_b):
                    nb += dnb
            apply_update(net.weights, net.biases, nabla_w, nabla_b, lr, l2, len(batch), n)

    return run
