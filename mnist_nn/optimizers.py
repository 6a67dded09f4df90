"""The update rules: plain SGD, SGD with momentum, RMSprop and Adam, exactly as torch.optim has them.

For a parameter w with gradient g of the mean mini-batch cost (weights get the L2 term first,
g += (l2/n) w, as ``weight_decay=l2/n`` does in PyTorch; biases and batch norm's gamma and beta do not)::

    sgd       w <- w - lr g                                          torch.optim.SGD(lr)
    momentum  v <- mu v + g;  w <- w - lr v                          torch.optim.SGD(lr, momentum=mu)
    rmsprop   s <- rho s + (1 - rho) g^2;  w <- w - lr g / (sqrt(s) + eps)
                                                                     torch.optim.RMSprop(lr, alpha=rho, eps=eps)
    adam      t <- t + 1;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
              w <- w - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
                                                                     torch.optim.Adam(lr, betas=(b1, b2), eps=eps)

The state starts at zero (PyTorch's first momentum step, v = g, is the same number). Plain SGD keeps
the classic arithmetic of network2.py, w <- (1 - lr l2/n) w - (lr/m) sum g, the same update.

Each rule is one small function over numbers or arrays (the NumPy backends call it on whole arrays,
the jit kernels compile it for one number at a time), so the math is written once. The state is an
:class:`OptimizerState` the network owns (torch.optim's slot names), saved in its model file, so a
resumed run steps on exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

OPTIMIZER_NAMES = ("sgd", "momentum", "rmsprop", "adam")
SGD, MOMENTUM, RMSPROP, ADAM = range(4)  # the rules' ``code`` in the jit kernels
SLOTS = {"sgd": (), "momentum": ("momentum_buffer",), "rmsprop": ("square_avg",), "adam": ("exp_avg", "exp_avg_sq")}
ALL_SLOTS = ("momentum_buffer", "square_avg", "exp_avg", "exp_avg_sq")


# --------------------------------------------------------------------------- the rules

def sqrt(x):
    """np.sqrt; the jit kernels compile it as LLVM's own square root, which vectorizes (see
    mnist_nn.backends.jit.steps)."""
    return np.sqrt(x)


def momentum_rule(w, g, v, lr, mu):
    """v <- mu v + g; w <- w - lr v. Returns (w, v)."""
    v = mu * v + g
    return w - lr * v, v


def rmsprop_rule(w, g, s, lr, rho, one_minus_rho, eps):
    """s <- rho s + (1 - rho) g^2; w <- w - lr g / (sqrt(s) + eps). Returns (w, s)."""
    s = rho * s + one_minus_rho * (g * g)
    return w - lr * g / (sqrt(s) + eps), s


def adam_rule(w, g, m, v, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_correction2, eps):
    """m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; w <- w - step_size m / (sqrt(v)/sqrt_correction2 + eps),
    with step_size = lr / (1 - b1^t) and sqrt_correction2 = sqrt(1 - b2^t) (PyTorch's order). Returns (w, m, v)."""
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * (g * g)
    return w - step_size * m / (sqrt(v) / sqrt_correction2 + eps), m, v


def adam_step_factors(lr: float, beta1: float, beta2: float, t: int) -> tuple[float, float]:
    """Adam's bias corrections at step t (from 1): (lr / (1 - b1^t), sqrt(1 - b2^t))."""
    return lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t)


# --------------------------------------------------------------------------- the state and the object

@dataclass
class OptimizerState:
    """What an optimizer remembers: ``step`` (mini-batches taken) and, per slot, one array per parameter,
    in the network's order (``param_names``: w0, w1, ..., b0, b1, ..., then batch norm's gamma0, beta0, ...)."""

    step: int = 0
    slots: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Optimizer:
    """An update rule and its hyperparameters (the names of the command line and of ``Settings``)."""

    name: str = "sgd"
    momentum: float = 0.9
    rho: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")

    @property
    def code(self) -> int:
        return OPTIMIZER_NAMES.index(self.name)

    @property
    def slots(self) -> tuple[str, ...]:
        return SLOTS[self.name]

    def to_dict(self) -> dict:
        return {"name": self.name, "momentum": self.momentum, "rho": self.rho, "beta1": self.beta1,
                "beta2": self.beta2, "eps": self.eps}

    def new_state(self, params) -> OptimizerState:
        return OptimizerState(0, {slot: [np.zeros_like(p) for p in params] for slot in self.slots})

    def fits(self, state: OptimizerState | None, params) -> bool:
        """Whether ``state`` is this rule's state for parameters shaped like ``params``."""
        return (state is not None and set(state.slots) == set(self.slots)
                and all(len(a) == len(params) and all(x.shape == p.shape and x.dtype == p.dtype
                                                      for x, p in zip(a, params)) for a in state.slots.values()))

    def step(self, params, grads, state: OptimizerState, lr: float) -> None:
        """One step of every parameter, in place: ``grads`` are the mean gradients, the L2 term included."""
        state.step += 1
        dtype = params[0].dtype.type
        if self.name == "sgd":
            for p, g in zip(params, grads):
                p -= dtype(lr) * g
        elif self.name == "momentum":
            for p, g, v in zip(params, grads, state.slots["momentum_buffer"]):
                p[...], v[...] = momentum_rule(p, g, v, dtype(lr), dtype(self.momentum))
        elif self.name == "rmsprop":
            for p, g, s in zip(params, grads, state.slots["square_avg"]):
                p[...], s[...] = rmsprop_rule(p, g, s, dtype(lr), dtype(self.rho), dtype(1 - self.rho),
                                              dtype(self.eps))
        else:
            step_size, correction = adam_step_factors(lr, self.beta1, self.beta2, state.step)
            for p, g, m, v in zip(params, grads, state.slots["exp_avg"], state.slots["exp_avg_sq"]):
                p[...], m[...], v[...] = adam_rule(p, g, m, v, dtype(step_size), dtype(self.beta1),
                                                   dtype(1 - self.beta1), dtype(self.beta2), dtype(1 - self.beta2),
                                                   dtype(correction), dtype(self.eps))


def param_names(n_layers: int, batch_norm_layers: int = 0) -> list[str]:
    """The names of a network's parameters in optimizer order (and in its model file)."""
    return ([f"w{l}" for l in range(n_layers)] + [f"b{l}" for l in range(n_layers)]
            + [f"{kind}{l}" for l in range(batch_norm_layers) for kind in ("gamma", "beta")])
