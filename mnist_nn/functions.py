"""Activations and costs: the small pieces of math every backend shares, each written here once.

Each activation knows its value ``fn(z)`` and its derivative written in terms of its *output*
``prime(a)`` (sigmoid' = a(1 - a), tanh' = 1 - a^2, relu' = [a > 0]), so backpropagation needs
only the stored activations, not the weighted inputs z.

Each cost knows the output layer that goes with it and the output error BP1:

* quadratic, C = 1/2 ||a - y||^2 with sigmoid outputs: delta^L = (a - y) * sigma'(z^L)
* cross-entropy, C = -sum_j y_j ln a_j with softmax outputs: delta^L = a - y

The array forms work on a single vector ``(n,)`` or a batch ``(N, n)`` (last axis = units), and are
numerically stable for any finite input: no overflow warnings, no NaN from large |z|.

The jit kernels (:mod:`mnist_nn.backends.jit.steps`) compile the same definitions with Numba: the
methods that take ``one`` (1 in the arrays' dtype; a literal 1 would make Numba promote float32
arithmetic to float64) serve arrays with the default and single numbers in the kernels. Where the
array form cannot serve a kernel (it would allocate, or branch per array), the kernel form sits next to
it: ``scalar_fn`` and ``scalar_prime`` (one number), ``softmax_row`` and ``log_softmax_at`` (one row),
plain Python that Numba compiles. The integer
``code`` of each piece is how the kernels choose it.
"""

from __future__ import annotations

import numpy as np

SIGMOID, TANH, RELU = 0, 1, 2  # the activations' ``code``
QUADRATIC, CROSS_ENTROPY = 0, 1  # the costs' ``code``


def sigmoid(z):
    """1 / (1 + e^-z), written so that e^x is only taken for x <= 0 (no overflow):
    sigma(z) = e^min(z, 0) / (1 + e^-|z|), i.e. 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) below.
    (No np.where: selecting between two arrays costs more than the second exp.)"""
    return np.exp(np.minimum(z, 0)) / (1 + np.exp(-np.abs(z)))


def sigmoid_scalar(z, one):
    """sigmoid of one number, for the kernels: the same two branches, so the same numbers, with one exp
    instead of two (a branch is free on one number; on arrays it is not)."""
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


def log_softmax(z):
    """ln softmax(z) along the last axis, shifted by the max so exp never overflows."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z):
    shifted = np.exp(z - z.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def softmax_row(z, s, n):
    """z[s, :n] = softmax(z[s, :n]) in place, for the kernels (shifted by the max, as ``softmax``)."""
    top = z[s, 0]
    for j in range(1, n):
        top = max(top, z[s, j])
    total = z[s, 0] * 0
    for j in range(n):
        z[s, j] = np.exp(z[s, j] - top)
        total += z[s, j]
    for j in range(n):
        z[s, j] = z[s, j] / total


def log_softmax_at(z, s, label, n):
    """ln softmax(z[s, :n])[label], as ``log_softmax``, for the kernels; summed in float64."""
    top = z[s, 0]
    for j in range(1, n):
        top = max(top, z[s, j])
    spread = 0.0
    for j in range(n):
        spread += np.exp(z[s, j] - top)
    return (z[s, label] - top) - np.log(spread)


class Sigmoid:
    name, code = "sigmoid", SIGMOID
    fn = staticmethod(sigmoid)
    scalar_fn = staticmethod(sigmoid_scalar)

    @staticmethod
    def prime(a, one=1):
        return a * (one - a)

    scalar_prime = prime


class Tanh:
    name, code = "tanh", TANH
    fn = staticmethod(np.tanh)

    @staticmethod
    def scalar_fn(z, one):
        return np.tanh(z)

    @staticmethod
    def prime(a, one=1):
        return one - a * a

    scalar_prime = prime


class Relu:
    name, code = "relu", RELU

    @staticmethod
    def fn(z):
        return np.maximum(z, 0)

    @staticmethod
    def scalar_fn(z, one):
        return max(z, one - one)

    @staticmethod
    def prime(a):
        return (a > 0).astype(a.dtype)

    @staticmethod
    def scalar_prime(a, one):
        return one if a > 0 else one - one


class QuadraticCost:
    """C = 1/2 ||a - y||^2 on sigmoid outputs (the classic network.py setup)."""

    name, code = "quadratic", QUADRATIC
    output = staticmethod(sigmoid)

    @staticmethod
    def term(a, y):
        """One output's share of the cost, 1/2 (a - y)^2."""
        gap = a - y
        return 0.5 * gap * gap

    @staticmethod
    def fn(z, y):
        """Cost of each sample (summed over the last axis) from the output weighted inputs z."""
        return QuadraticCost.term(sigmoid(z), y).sum(axis=-1)

    @staticmethod
    def delta(a, y, one=1):
        """BP1: (a - y) * sigma'(z), with sigma'(z) = a (1 - a)."""
        return (a - y) * a * (one - a)


class CrossEntropyCost:
    """C = -sum_j y_j ln a_j on softmax outputs (log-likelihood)."""

    name, code = "cross-entropy", CROSS_ENTROPY
    output = staticmethod(softmax)

    @staticmethod
    def fn(z, y):
        return -(y * log_softmax(z)).sum(axis=-1)

    @staticmethod
    def delta(a, y, one=1):
        """BP1 for softmax with log-likelihood: the sigma' factor cancels."""
        return a - y


ACTIVATIONS = {cls.name: cls for cls in (Sigmoid, Tanh, Relu)}
COSTS = {cls.name: cls for cls in (QuadraticCost, CrossEntropyCost)}
