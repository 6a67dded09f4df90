"""Activations and costs: the small pieces of math every backend shares.

Each activation knows its value ``fn(z)`` and its derivative written in terms of its *output*
``prime(a)`` (sigmoid' = a(1 - a), tanh' = 1 - a^2, relu' = [a > 0]), so backpropagation needs
only the stored activations, not the weighted inputs z.

Each cost knows the output layer that goes with it and the output error BP1:

* quadratic, C = 1/2 ||a - y||^2 with sigmoid outputs: delta^L = (a - y) * sigma'(z^L)
* cross-entropy, C = -sum_j y_j ln a_j with softmax outputs: delta^L = a - y

Everything works on a single vector ``(n,)`` or a batch ``(N, n)`` (last axis = units), and is
numerically stable for any finite input: no overflow warnings, no NaN from large |z|.
The integer ``code`` of each piece is how the Numba kernels choose it.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    """1 / (1 + e^-z), written so that e^x is only taken for x <= 0 (no overflow):
    sigma(z) = e^min(z, 0) / (1 + e^-|z|), i.e. 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) below.
    (No np.where: selecting between two arrays costs more than the second exp.)"""
    return np.exp(np.minimum(z, 0)) / (1 + np.exp(-np.abs(z)))


def log_softmax(z):
    """ln softmax(z) along the last axis, shifted by the max so exp never overflows."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z):
    shifted = np.exp(z - z.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Sigmoid:
    name, code = "sigmoid", 0
    fn = staticmethod(sigmoid)

    @staticmethod
    def prime(a):
        return a * (1 - a)


class Tanh:
    name, code = "tanh", 1
    fn = staticmethod(np.tanh)

    @staticmethod
    def prime(a):
        return 1 - a * a


class Relu:
    name, code = "relu", 2

    @staticmethod
    def fn(z):
        return np.maximum(z, 0)

    @staticmethod
    def prime(a):
        return (a > 0).astype(a.dtype)


class QuadraticCost:
    """C = 1/2 ||a - y||^2 on sigmoid outputs (the classic network.py setup)."""

    name, code = "quadratic", 0
    output = staticmethod(sigmoid)

    @staticmethod
    def fn(z, y):
        """Cost of each sample (summed over the last axis) from the output weighted inputs z."""
        return 0.5 * ((sigmoid(z) - y) ** 2).sum(axis=-1)

    @staticmethod
    def delta(a, y):
        """BP1: (a - y) * sigma'(z), with sigma'(z) = a (1 - a)."""
        return (a - y) * a * (1 - a)


class CrossEntropyCost:
    """C = -sum_j y_j ln a_j on softmax outputs (log-likelihood)."""

    name, code = "cross-entropy", 1
    output = staticmethod(softmax)

    @staticmethod
    def fn(z, y):
        return -(y * log_softmax(z)).sum(axis=-1)

    @staticmethod
    def delta(a, y):
        """BP1 for softmax with log-likelihood: the sigma' factor cancels."""
        return a - y


ACTIVATIONS = {cls.name: cls for cls in (Sigmoid, Tanh, Relu)}
COSTS = {cls.name: cls for cls in (QuadraticCost, CrossEntropyCost)}
