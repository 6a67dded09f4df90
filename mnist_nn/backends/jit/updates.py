"""The steps past BP1-BP4 as small inlined Numba functions: the gradient sums, the optimizers' update of
a parameter from its summed gradient, and batch normalization's forward pass and BN1-BN3 (the math of
:mod:`mnist_nn.optimizers` and :mod:`mnist_nn.batchnorm`, compiled for the kernels).

As in :mod:`mnist_nn.backends.jit.steps`, each is inlined into the kernel that calls it; after editing
this file, clear Numba's cache (``find mnist_nn -name '*.nb[ic]' -delete``).
"""

from __future__ import annotations

from numba.extending import overload

from mnist_nn import optimizers
from mnist_nn.backends.jit.steps import FASTMATH, _step
from mnist_nn.backends.simd import add_sparse_rows, square_root, subtract_sparse_outer
from mnist_nn.batchnorm import EPS, MOMENTUM
from mnist_nn.optimizers import MOMENTUM as MOMENTUM_RULE
from mnist_nn.optimizers import RMSPROP, SGD, adam_rule, momentum_rule, rmsprop_rule


@_step
def weight_sums(grads, buffers, images, start, rows):
    """BP4 summed over the batch, for an optimizer other than SGD: grads.w2p[o, :] = sum over s of
    delta^2_so a^1_s; grads.w1t[k, :] += x_k delta^1 over the non-zero pixels k (the rows of the other
    pixels stay 0, as the last step left them)."""
    g2p, d2, steps = grads.w2p, buffers.d2, buffers.steps
    minus_one = g2p.dtype.type(-1)
    for o in range(g2p.shape[0]):
        for j in range(g2p.shape[1]):
            g2p[o, j] = 0
        for s in range(rows):
            steps[s] = d2[s, o]
        add_sparse_rows(g2p, o, buffers.a1, buffers.samples, steps, 0, rows, None)
    for s in range(rows):
        subtract_sparse_outer(grads.w1t, buffers.d1, s, images.indices, images.codes, images.starts[start + s],
                              images.ends[start + s], minus_one, images.table)


@overload(optimizers.sqrt, inline="always", jit_options={"fastmath": FASTMATH})
def _sqrt_overload(x):
    return lambda x: square_root(x)  # the rules' sqrt, as LLVM's: vectorized in the loops over a row


_momentum, _rmsprop, _adam = _step(momentum_rule), _step(rmsprop_rule), _step(adam_rule)


@_step
def optimizer_rule(code, w, g, a, b, factors, hyper):
    """One number of a parameter through the rule with this ``code`` (mnist_nn.optimizers' own rules):
    returns (w, a, b), a and b the rule's state slots (b only for Adam). ``factors``: (lr, 1/m, Adam's
    step size, Adam's sqrt(1 - beta2^t)) for this step."""
    lr, _, step_size, correction = factors
    if code == SGD:  # with batch norm, plain SGD steps here too
        w = w - lr * g
    elif code == MOMENTUM_RULE:  # b is a again (one slot): returned as the new a, in case it is a's own array
        w, a = _momentum(w, g, a, lr, hyper.mu)
        b = a
    elif code == RMSPROP:
        w, a = _rmsprop(w, g, a, lr, hyper.rho, hyper.one_minus_rho, hyper.eps)
        b = a
    else:
        w, a, b = _adam(w, g, a, b, step_size, hyper.beta1, hyper.one_minus_beta1, hyper.beta2, hyper.one_minus_beta2,
                        correction, hyper.eps)
    return w, a, b


@_step
def step_rows(code, w, a, b, g, first, last, n, factors, hyper, wd):
    """Rows first .. last-1, columns 0 .. n-1 of a parameter w (2-D) through the rule, from the summed
    gradient g: the mean gradient g/m + wd w (wd = l2/n for weights, 0 otherwise); g is zeroed for
    the next batch. One loop per rule, so that the loops over a row have no branch and vectorize."""
    inv_m = factors[1]
    if code == SGD:  # (with batch norm: its own kernel otherwise)
        for r in range(first, last):
            for j in range(n):
                grad = g[r, j] * inv_m + wd * w[r, j]
                w[r, j], _, _ = optimizer_rule(SGD, w[r, j], grad, w[r, j], w[r, j], factors, hyper)
                g[r, j] = 0
    elif code == MOMENTUM_RULE:
        for r in range(first, last):
            for j in range(n):
                grad = g[r, j] * inv_m + wd * w[r, j]
                w[r, j], a[r, j], _ = optimizer_rule(MOMENTUM_RULE, w[r, j], grad, a[r, j], a[r, j], factors, hyper)
                g[r, j] = 0
    elif code == RMSPROP:
        for r in range(first, last):
            for j in range(n):
                grad = g[r, j] * inv_m + wd * w[r, j]
                w[r, j], a[r, j], _ = optimizer_rule(RMSPROP, w[r, j], grad, a[r, j], a[r, j], factors, hyper)
                g[r, j] = 0
    else:
        for r in range(first, last):
            for j in range(n):
                grad = g[r, j] * inv_m + wd * w[r, j]
                w[r, j], a[r, j], b[r, j] = optimizer_rule(code, w[r, j], grad, a[r, j], b[r, j], factors, hyper)
                g[r, j] = 0


# --------------------------------------------------------------------------- batch norm (see mnist_nn.batchnorm)

@_step
def normalize_rows(z, rows, n, bn, layer):
    """Training: z[:rows, :n] (the weighted inputs of a batch) normalized per unit over the rows, scaled
    and shifted: y = gamma zhat + beta in place; zhat and 1/sqrt(var + eps) kept in ``bn`` for BN1-BN3,
    and the running statistics moved on (momentum 0.1, unbiased variance), as batchnorm.normalize."""
    gamma, beta, zhat, inv_std = bn.gammas[layer], bn.betas[layer], bn.zhats[layer], bn.inv_stds[layer]
    mean, var = bn.running_means[layer], bn.running_vars[layer]
    t = z.dtype.type
    for j in range(n):
        mu = z[0, j] * 0
        for s in range(rows):
            mu += z[s, j]
        mu = mu / t(rows)
        spread = z[0, j] * 0
        for s in range(rows):
            spread += (z[s, j] - mu) * (z[s, j] - mu)
        batch_var = spread / t(rows)
        inv_std[0, j] = t(1) / square_root(batch_var + t(EPS))
        for s in range(rows):
            zhat[s, j] = (z[s, j] - mu) * inv_std[0, j]
            z[s, j] = gamma[0, j] * zhat[s, j] + beta[0, j]
        mean[0, j] = t(1 - MOMENTUM) * mean[0, j] + t(MOMENTUM) * mu
        var[0, j] = t(1 - MOMENTUM) * var[0, j] + t(MOMENTUM) * (batch_var * t(rows / (rows - 1)))


@_step
def normalize_backward(delta, rows, n, bn, layer):
    """BN1-BN3: delta[:rows, :n] from dC/dy to dC/dz in place; dC/dgamma and dC/dbeta into ``bn``'s
    gradient rows (sums over the batch, as the other gradients)."""
    gamma, zhat, inv_std = bn.gammas[layer], bn.zhats[layer], bn.inv_stds[layer]
    grad_gamma, grad_beta = bn.grads[2 * layer], bn.grads[2 * layer + 1]
    t = delta.dtype.type
    for j in range(n):
        sum_dy = delta[0, j] * 0
        sum_dy_zhat = delta[0, j] * 0
        for s in range(rows):
            sum_dy += delta[s, j]
            sum_dy_zhat += delta[s, j] * zhat[s, j]
        grad_beta[0, j], grad_gamma[0, j] = sum_dy, sum_dy_zhat  # BN1, BN2
        factor = gamma[0, j] * inv_std[0, j]
        for s in range(rows):  # BN3
            delta[s, j] = factor * (delta[s, j] - sum_dy / t(rows) - zhat[s, j] * (sum_dy_zhat / t(rows)))
