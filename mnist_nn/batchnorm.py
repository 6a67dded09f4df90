"""Batch normalization of the hidden layers (Ioffe and Szegedy 2015), as ``torch.nn.BatchNorm1d`` does it.

In training, each hidden layer's weighted input z (rows: the m samples of a mini-batch) is normalized
per unit over the mini-batch, then scaled and shifted by the learned gamma and beta, before the
activation::

    mu = (1/m) sum_i z_i        var = (1/m) sum_i (z_i - mu)^2        (biased)
    zhat_i = (z_i - mu) / sqrt(var + eps)                              (eps = 1e-5)
    y_i = gamma zhat_i + beta          a_i = sigma(y_i)

and the running statistics move on: mean <- 0.9 mean + 0.1 mu, var <- 0.9 var + 0.1 var m/(m-1)
(unbiased). Evaluation and prediction use them instead of the batch's: y = gamma (z - mean) /
sqrt(var + eps) + beta.

Backpropagation through it, beside BP1-BP4 (delta_y = dC/dy, what BP2 gives for this layer, sigma'
taken at y; every sum is over the mini-batch):

    BN1  dC/dbeta  = sum_i delta_y_i
    BN2  dC/dgamma = sum_i delta_y_i zhat_i
    BN3  delta_i = dC/dz_i = (gamma / sqrt(var + eps)) (delta_y_i - (1/m) sum_j delta_y_j
                                                         - zhat_i (1/m) sum_j delta_y_j zhat_j)

delta (BN3) then plays BP3's and BP4's part for the layer's w and b, and goes on down through BP2.
(b is kept, as in torch.nn.Linear before BatchNorm1d; its gradient, sum_i delta_i, is zero but for
rounding.) The sums make delta_i depend on the whole batch: the gradient of the mean cost is taken
over the batch at once, never one sample alone.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5
MOMENTUM = 0.1  # of the running statistics, torch's default


def normalize(z, gamma, beta):
    """Training: (y, zhat, inv_std, mu, var) for the rows of z (m, n)."""
    mu = z.mean(axis=0)
    var = ((z - mu) ** 2).mean(axis=0)
    inv_std = 1 / np.sqrt(var + z.dtype.type(EPS))
    zhat = (z - mu) * inv_std
    return gamma * zhat + beta, zhat, inv_std, mu, var


def normalize_for_evaluation(z, gamma, beta, running_mean, running_var):
    """Evaluation and prediction: with the running statistics, the same for any batch."""
    return gamma * ((z - running_mean) / np.sqrt(running_var + z.dtype.type(EPS))) + beta


def update_running(running_mean, running_var, mu, var, m: int) -> None:
    """The running statistics after a training batch of m samples (in place)."""
    t = running_mean.dtype.type
    running_mean[...] = t(1 - MOMENTUM) * running_mean + t(MOMENTUM) * mu
    running_var[...] = t(1 - MOMENTUM) * running_var + t(MOMENTUM) * (var * t(m / (m - 1)))


def backward(delta_y, zhat, inv_std, gamma):
    """BN1-BN3 from delta_y (m, n), the gradient of the *summed* cost with respect to y: returns
    (delta, dC/dgamma, dC/dbeta), delta = dC/dz, all for the summed cost (divided by m at the step)."""
    m = delta_y.shape[0]
    grad_beta = delta_y.sum(axis=0)  # BN1
    grad_gamma = (delta_y * zhat).sum(axis=0)  # BN2
    delta = (gamma * inv_std) * (delta_y - grad_beta / m - zhat * (grad_gamma / m))  # BN3
    return delta, grad_gamma, grad_beta


class BatchNorm:
    """The batch norm parameters and statistics of a network's hidden layers: lists, one array (n_l,)
    per hidden layer: ``gammas`` (init 1), ``betas`` (0), ``running_means`` (0), ``running_vars`` (1)."""

    def __init__(self, hidden_sizes, dtype):
        self.gammas = [np.ones(n, dtype) for n in hidden_sizes]
        self.betas = [np.zeros(n, dtype) for n in hidden_sizes]
        self.running_means = [np.zeros(n, dtype) for n in hidden_sizes]
        self.running_vars = [np.ones(n, dtype) for n in hidden_sizes]

    def parameters(self) -> list[np.ndarray]:
        """gamma0, beta0, gamma1, beta1, ...: the optimizer's order (optimizers.param_names)."""
        return [p for pair in zip(self.gammas, self.betas) for p in pair]

    def arrays(self) -> dict:
        """Everything the model file stores, by member name."""
        named = {}
        for l in range(len(self.gammas)):
            named.update({f"gamma{l}": self.gammas[l], f"beta{l}": self.betas[l],
                          f"running_mean{l}": self.running_means[l], f"running_var{l}": self.running_vars[l]})
        return named
