"""The textbook backend: backpropagation one sample at a time, as in the lecture notes.

It exists to be read next to the four equations, and to be the slow baseline the others are
measured against. Vectors are 1-D arrays; a^0 = x is the input.
"""

from __future__ import annotations

import numpy as np

from mnist_nn import batchnorm
from mnist_nn.backends import apply_step, one_hot


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


def backprop_batch_norm(net, xs, ys):
    """The summed gradients of a mini-batch with batch norm: each sample still goes through every layer
    on its own, but a hidden layer's z must wait for the whole batch's, to be normalized by their
    mean and variance (and BN1-BN3 need the whole batch's delta_y). Returns (nabla_w, nabla_b, nabla_bn)."""
    weights, biases, bn, activation, cost = net.weights, net.biases, net.bn, net.activation, net.cost_function
    last = len(weights) - 1
    activations, caches = [list(xs)], []
    for l, (w, b) in enumerate(zip(weights, biases)):
        zs = np.array([w @ a + b for a in activations[-1]])
        if l == last:
            activations.append([cost.output(z) for z in zs])
        else:
            y, *cache = batchnorm.normalize(zs, bn.gammas[l], bn.betas[l])
            caches.append(cache)
            activations.append([activation.fn(row) for row in y])
    deltas = [cost.delta(a, y) for a, y in zip(activations[-1], ys)]  # BP1
    nabla_w, nabla_b, nabla_bn = [None] * len(weights), [None] * len(weights), [None] * (2 * last)
    for l in range(last, -1, -1):
        nabla_b[l] = sum(deltas)  # BP3
        nabla_w[l] = sum(np.outer(d, a) for d, a in zip(deltas, activations[l]))  # BP4
        if l > 0:
            delta_y = np.array([(weights[l].T @ d) * activation.prime(a) for d, a in zip(deltas, activations[l])])
            zhat, inv_std, mu, var = caches[l - 1]
            deltas, nabla_bn[2 * l - 2], nabla_bn[2 * l - 1] = batchnorm.backward(delta_y, zhat, inv_std,
                                                                                 bn.gammas[l - 1])  # BN1-BN3
            batchnorm.update_running(bn.running_means[l - 1], bn.running_vars[l - 1], mu, var, len(xs))
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
            if net.bn is not None:
                nabla_w, nabla_b, nabla_bn = backprop_batch_norm(net, X[batch], Y[batch])
                apply_step(net, nabla_w, nabla_b, lr, l2, len(batch), n, nabla_bn)
                continue
            nabla_w = [np.zeros_like(w) for w in net.weights]
            nabla_b = [np.zeros_like(b) for b in net.biases]
            for i in batch:
                delta_nabla_w, delta_nabla_b = backprop(net.weights, net.biases, X[i], Y[i],
                                                        net.activation, net.cost_function)
                for nw, dnw in zip(nabla_w, delta_nabla_w):
                    nw += dnw
                for nb, dnb in zip(nabla_b, delta_nabla_b):
                    nb += dnb
            apply_step(net, nabla_w, nabla_b, lr, l2, len(batch), n)

    return run
