"""The evaluation kernel: the training kernel's forward pass over a whole data set, for the after-epoch
report (a fraction of the dense NumPy time)."""

from __future__ import annotations

from numba import njit

from mnist_nn.backends.jit.steps import FASTMATH, forward, predict_rows, summed_cost


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def evaluate_one_hidden(weights, images, act_code, cost_code, a1, z2, predicted):
    """Forward pass of every image of ``images`` (a SparseEpoch in the images' own order, with
    ``targets`` the labels): writes each predicted label into ``predicted`` and returns the summed cost.

    ``a1`` (block, Hp) and ``z2`` (block, n_out padded) are buffers: the images go through a block at a
    time, layer by layer, as the mini-batches do in training.
    """
    block, n, n_out = a1.shape[0], images.targets.shape[0], weights.b2.shape[0]
    total = 0.0
    for first in range(0, n, block):
        rows = min(block, n - first)
        forward(weights, images, first, rows, a1, z2, act_code, 0)
        predict_rows(z2, rows, predicted, first, n_out)
        total += summed_cost(z2, rows, images.targets, first, cost_code, n_out)
    return total
