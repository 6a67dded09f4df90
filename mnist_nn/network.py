"""The network: a stack of fully connected layers trained by mini-batch SGD and backpropagation.

Layer l maps a^(l-1) to a^l = sigma(w^l a^(l-1) + b^l); ``weights[l]`` has shape (n_out, n_in) and
``biases[l]`` shape (n_out,). The hidden activation and the cost (which fixes the output layer:
sigmoid for quadratic, softmax for cross-entropy) are small objects from :mod:`mnist_nn.functions`.

Models are saved as one ``.npz`` file (arrays ``w0, w1, ..., b0, b1, ...`` plus a JSON string
``metadata``), written atomically and read back with bounded memory by :mod:`mnist_nn.modelfile`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np

from mnist_nn import modelfile
from mnist_nn.batchnorm import BatchNorm
from mnist_nn.backends import get_backend, one_hot
from mnist_nn.backends import vectorized as _vectorized
from mnist_nn.errors import ModelFileError  # noqa: F401  (mnist_nn.network.ModelFileError, as before)
from mnist_nn.functions import ACTIVATIONS, COSTS, softmax
from mnist_nn.modelfile import FORMAT_VERSION, MODEL_FORMAT
from mnist_nn.optimizers import Optimizer, OptimizerState, param_names

INITS = ("normal", "scaled")
DTYPES = ("float32", "float64")
SLICE_WORK = 2 * 10**9  # multiply-adds of the forward pass per slice of an epoch (see sgd)


def _accepting_old_names(sgd):
    """``eta=`` and ``lmbda=``, the lecture notes' names of ``lr`` and ``l2``, still accepted by ``sgd``;
    and ``optimizer=``, handed to :meth:`Network.use_optimizer` first (so ``sgd`` keeps 10 parameters)."""

    @functools.wraps(sgd)
    def with_old_names(self, *args, optimizer=None, **kwargs):
        for old, new in (("eta", "lr"), ("lmbda", "l2")):
            if old in kwargs:
                kwargs[new] = kwargs.pop(old)
        self.use_optimizer(optimizer)
        return sgd(self, *args, **kwargs)

    return with_old_names


class Network:
    """A fully connected network, e.g. ``Network((784, 30, 10))`` for the classic MNIST setup.

    Parameters
    ----------
    sizes: units per layer, input first. Any number of layers (at least two).
    activation: hidden activation, ``"sigmoid"``, ``"tanh"`` or ``"relu"``.
    cost: ``"quadratic"`` (sigmoid outputs) or ``"cross-entropy"`` (softmax outputs).
    init: ``"normal"``, weights and biases N(0, 1); ``"scaled"``, weights N(0, 1/n_in), biases N(0, 1).
    seed: seeds the one random generator that drives initialisation and every epoch's shuffle.
    dtype: float32 (the default, as on the command line: the fast one) or float64, for the parameters
        and the arithmetic of every backend.
    batch_norm: normalize every hidden layer's weighted input over the mini-batch, then scale and shift
        it by learned gamma and beta (see :mod:`mnist_nn.batchnorm`); ``bn`` holds them, or is None.
    """

    def __init__(self, sizes=(784, 30, 10), activation="sigmoid", cost="quadratic", init="normal", seed=None,
                 dtype=np.float32, batch_norm=False):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be at least two positive layer sizes, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if cost not in COSTS:
            raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.sizes = sizes
        self.activation = ACTIVATIONS[activation]
        self.cost_function = COSTS[cost]
        self.init = init
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.epochs_trained = 0
        self.metadata: dict = {}  # training hyperparameters and results, saved with the model
        # The update rule of the last training and its state (velocities, moments, step count), saved with
        # the model so that training it on steps on as if it had never stopped.
        self.optimizer = Optimizer()
        self.optimizer_state: OptimizerState | None = None
        self.weights, self.biases = [], []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            scale = 1.0 if init == "normal" else 1.0 / np.sqrt(n_in)
            self.weights.append((self.rng.standard_normal((n_out, n_in)) * scale).astype(self.dtype))
            self.biases.append(self.rng.standard_normal(n_out).astype(self.dtype))
        self.bn = BatchNorm(sizes[1:-1], self.dtype) if batch_norm else None

    def __repr__(self):
        return (f"Network(sizes={self.sizes}, activation={self.activation.name!r}, "
                f"cost={self.cost_function.name!r}, init={self.init!r}, dtype={self.dtype.name}"
                + (", batch_norm=True)" if self.bn else ")"))

    # ------------------------------------------------------------------ using the network

    def _as_input(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(f"expected inputs of shape (N, {self.sizes[0]}), got {X.shape}")
        return X

    def feedforward(self, X) -> np.ndarray:
        """Output activations ``(N, n_last)`` for the rows of ``X`` ``(N, n_in)``."""
        return _vectorized.forward(self.weights, self.biases, self._as_input(X), self.activation,
                                   self.cost_function, self.bn)[-1]

    def output_z(self, X) -> np.ndarray:
        """The output layer's weighted inputs z^L ``(N, n_last)``: what predictions, probabilities and
        costs are computed from (stably, before any squashing)."""
        X = self._as_input(X)
        last_hidden = _vectorized.hidden_forward(self.weights, self.biases, X, self.activation, self.bn)[-1]
        return _vectorized.output_z(self.weights, self.biases, last_hidden)

    def predict(self, X) -> np.ndarray:
        """The predicted class labels: the output unit with the largest weighted input z^L.

        The output activation is monotonic, so this is the most activated unit, without the ties a
        saturated float32 sigmoid (exactly 1.0 for z > 17) would create.
        """
        return self.output_z(X).argmax(axis=1)

    def probabilities(self, X) -> np.ndarray:
        """Class probabilities ``(N, n_last)``: the softmax of the output layer's weighted inputs z^L.

        For a cross-entropy model that *is* its output layer. A quadratic model has sigmoid outputs
        that need not sum to one, so its scores are put through the same softmax to read as
        probabilities; the predicted class is the same either way.
        """
        return softmax(self.output_z(X))

    def accuracy(self, X, labels) -> float:
        """Fraction of rows whose predicted label equals ``labels``."""
        return float(np.mean(self.predict(X) == np.asarray(labels)))

    def cost(self, X, Y, l2: float = 0.0) -> float:
        """Mean cost over the rows of X (Y one-hot, or labels), plus the L2 term l2/2n sum w^2."""
        X = self._as_input(X)
        Y = np.asarray(Y)
        if Y.ndim == 1:
            Y = one_hot(Y, self.sizes[-1], self.dtype)
        return float(np.mean(self.cost_function.fn(self.output_z(X), Y))) + self.l2_term(l2, len(X))

    def evaluator(self, X, labels, sparse=None) -> Callable[..., tuple[float, np.ndarray]]:
        """For a fixed data set, a function ``evaluate(l2=0.0, net=None) -> (mean cost, predicted
        labels)`` with the weights the network (or ``net``, a copy of it) has at the time of the call:
        cheap to call after every epoch. X and labels must not change while it is in use.

        A one-hidden-layer network is evaluated by the jit backend's kernel on a sparse copy of X (a
        fraction of the dense NumPy time): ``sparse``, the ``mnist_nn.backends.jit.sparse_rows(X,
        self.dtype)`` the caller already made for training on the same X, or one made here. Deeper
        networks use :meth:`cost` and :meth:`predict`, and ignore ``sparse``.
        """
        X = self._as_input(X)
        labels = np.asarray(labels)
        if len(self.weights) == 2 and self.bn is None:
            from mnist_nn.backends import jit

            summed = jit.prepare_evaluation(self, X, labels, sparse)

            def evaluate(l2: float = 0.0, net: "Network | None" = None):
                net = net or self
                total, predicted = summed(net)
                return total / len(X) + net.l2_term(l2, len(X)), predicted
        else:
            def evaluate(l2: float = 0.0, net: "Network | None" = None):
                net = net or self
                return net.cost(X, labels, l2), net.predict(X)
        return evaluate

    def l2_term(self, l2: float, n: int) -> float:
        """The weight decay part of the cost, l2/2n sum w^2."""
        if not l2:
            return 0.0
        return 0.5 * l2 / n * sum(float(np.sum(w.astype(np.float64) ** 2)) for w in self.weights)

    def gradients(self, X, Y):
        """Gradient of the mean cost over the rows of X (Y one-hot) by backpropagation.

        Returns ``(grad_w, grad_b)``, lists shaped like ``weights`` and ``biases``; with batch norm
        ``(grad_w, grad_b, grad_bn)``, grad_bn [dgamma0, dbeta0, ...], the batch's own statistics used
        (training mode; the running ones are left as they are).
        """
        X = self._as_input(X)
        Y = np.asarray(Y, dtype=self.dtype)
        nabla_w, nabla_b, nabla_bn = _vectorized.backprop(self.weights, self.biases, X, Y, self.activation,
                                                          self.cost_function, self.bn, update_running=False)
        mean = [[g / len(X) for g in nabla] for nabla in (nabla_w, nabla_b, nabla_bn)]
        return tuple(mean) if self.bn else tuple(mean[:2])

    # ------------------------------------------------------------------ training

    @_accepting_old_names
    def sgd(self, X, labels, epochs: int, batch_size: int = 10, lr: "float | Callable[[int], float]" = 3.0,
            l2: float = 0.0, backend: str = "jit", on_epoch: Callable | None = None, *, progress=None,
            sparse=None) -> None:
        """Train by mini-batch SGD for ``epochs`` epochs on images ``X`` (N, n_in) and integer ``labels``.

        Every epoch shuffles with ``self.rng`` and visits the mini-batches of ``batch_size`` in that
        order, with learning rate ``lr`` and L2 weight decay ``l2`` (w <- (1 - lr*l2/n) w - lr*grad);
        ``eta=`` and ``lmbda=``, the names of the lecture notes, are accepted for them.
        ``on_epoch(epoch, net)`` is called after every epoch (epoch counts from 1 over the network's
        life); if it returns False, training stops. ``progress``: an object whose ``start()`` is called
        once the backend has prepared the data, just before the first epoch, and whose ``batches(k)``,
        if it has one, is told that k more mini-batches are done (the epoch then runs in a few dozen
        slices so a progress bar can move).
        ``sparse``: for the jit backend, ``mnist_nn.backends.jit.sparse_rows(X, self.dtype)`` made
        once by the caller, who can hand the same copy to :meth:`evaluator`; without it the jit
        backend makes its own from X as it is now (the other backends read X and ignore it).
        ``optimizer``: ``"sgd"``, ``"momentum"``, ``"rmsprop"``, ``"adam"`` (their defaults) or an
        :class:`~mnist_nn.optimizers.Optimizer`; None keeps the network's (plain SGD for a new one). Its
        state is kept on the network (``optimizer_state``) from call to call and in the model file,
        and starts from zero when the rule changes.
        ``lr`` may also be a schedule, ``lr(epoch)`` the learning rate of the epoch that starts after
        ``epoch`` epochs of the network's life (0 for the first).
        """
        X = self._as_input(X)
        labels = np.asarray(labels)
        if labels.shape != (len(X),):
            raise ValueError(f"expected {len(X)} labels, got shape {labels.shape}")
        if not 1 <= batch_size <= len(X):
            raise ValueError(f"batch_size must be between 1 and the number of samples ({len(X)}), got {batch_size}")
        if self.bn is not None and (batch_size < 2 or len(X) % batch_size == 1):
            raise ValueError(f"batch norm needs mini-batches of at least 2 samples, the last one too ({len(X)} "
                             f"samples in batches of {batch_size})")
        schedule = lr if callable(lr) else None
        if (schedule is None and not lr > 0) or not l2 >= 0:
            raise ValueError(f"need lr > 0 and l2 >= 0, got lr={lr}, l2={l2}")
        run = get_backend(backend).prepare(self, X, labels, batch_size, sparse=sparse)
        n_batches = -(-len(X) // batch_size)
        on_batches = getattr(progress, "batches", None)
        # An epoch runs in slices of mini-batches: a few dozen for a progress bar, and for a big network
        # enough that each slice is about SLICE_WORK multiply-adds (a second or so), because Ctrl-C and
        # SIGTERM are handled only between slices (a jit kernel cannot be interrupted).
        work = len(X) * sum(w.size for w in self.weights)
        slices = min(n_batches, max(1 if on_batches is None else 50, -(-work // SLICE_WORK)))
        bounds = np.linspace(0, n_batches, slices + 1).astype(int)
        if progress is not None:
            progress.start()
        for _ in range(epochs):
            epoch_lr = lr if schedule is None else float(schedule(self.epochs_trained))
            perm = self.rng.permutation(len(X))
            for first, last in zip(bounds[:-1], bounds[1:]):
                run(perm, epoch_lr, l2, int(first), int(last))
                if on_batches is not None:
                    on_batches(int(last - first))
            self.epochs_trained += 1
            if on_epoch is not None and on_epoch(self.epochs_trained, self) is False:
                break

    def parameters(self) -> list[np.ndarray]:
        """Every trained array, in the optimizer's order: weights, biases, then batch norm's gamma0,
        beta0, ... (see ``optimizers.param_names``)."""
        return self.weights + self.biases + (self.bn.parameters() if self.bn else [])

    def use_optimizer(self, optimizer: "str | Optimizer | None") -> None:
        """Train on with ``optimizer`` (a name takes its default hyperparameters); its state is kept when
        it is the same rule for the same parameters, and starts at zero otherwise."""
        if optimizer is not None:
            self.optimizer = optimizer if isinstance(optimizer, Optimizer) else Optimizer(optimizer)
        if not self.optimizer.fits(self.optimizer_state, self.parameters()):
            self.optimizer_state = self.optimizer.new_state(self.parameters())

    # ------------------------------------------------------------------ files

    def to_metadata(self) -> dict:
        """What the model file stores besides the arrays: :attr:`metadata` (training settings and results)
        and, over it, what rebuilds the network exactly."""
        return {
            **self.metadata,
            "format": MODEL_FORMAT,
            "format_version": FORMAT_VERSION,
            "sizes": list(self.sizes),
            "activation": self.activation.name,
            "cost": self.cost_function.name,
            "init": self.init,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "epochs_trained": self.epochs_trained,
            # The generator's full state, so a resumed run shuffles exactly as an uninterrupted one.
            "rng_state": self.rng.bit_generator.state,
            "batch_norm": self.bn is not None,
            "optimizer": {**self.optimizer.to_dict(),
                          "step": self.optimizer_state.step if self.optimizer_state else 0,
                          "slots": list(self.optimizer_state.slots) if self.optimizer_state else []},
        }

    def _state_arrays(self) -> dict:
        if not self.optimizer_state:
            return {}
        names = param_names(len(self.weights), len(self.bn.gammas) if self.bn else 0)
        return {f"{slot}_{name}": array for slot, arrays in self.optimizer_state.slots.items()
                for name, array in zip(names, arrays)}

    def save(self, path) -> Path:
        """Write the model to ``path`` (a .npz file) atomically: a temporary file renamed into place."""
        return modelfile.write(path, self.to_metadata(), self.weights, self.biases,
                               {**(self.bn.arrays() if self.bn else {}), **self._state_arrays()})

    @classmethod
    def load(cls, path) -> "Network":
        """Read a model written by :meth:`save` (or the ``model.npz`` inside a run folder).

        Raises :class:`ModelFileError` on any problem; memory stays bounded by what the model needs
        (see :mod:`mnist_nn.modelfile` for the checks and limits).
        """
        model = modelfile.read(path)
        meta = model.metadata
        # The constructor checks the names and makes the generator; the parameters come from the file
        # (a 1-1 network is the cheapest to build).
        net = cls((1, 1), meta["activation"], meta["cost"], meta["init"], seed=meta.get("seed"),
                  dtype=meta["dtype"])
        net.sizes = tuple(meta["sizes"])
        net.weights, net.biases = model.weights, model.biases
        if meta.get("batch_norm"):  # older files have none
            net.bn = BatchNorm([], net.dtype)
            layers = range(len(net.sizes) - 2)
            net.bn.gammas, net.bn.betas = [model.extra[f"gamma{l}"] for l in layers], [model.extra[f"beta{l}"] for l in layers]
            net.bn.running_means = [model.extra[f"running_mean{l}"] for l in layers]
            net.bn.running_vars = [model.extra[f"running_var{l}"] for l in layers]
        net.epochs_trained = meta["epochs_trained"]
        if "rng_state" in meta:
            net.rng.bit_generator.state = meta["rng_state"]
        else:
            net.rng = np.random.default_rng(net.seed)
        if "optimizer" in meta:  # older files have none: plain SGD, which keeps no state
            saved = meta["optimizer"]
            net.optimizer = Optimizer(**{k: saved[k] for k in ("name", "momentum", "rho", "beta1", "beta2", "eps")})
            names = param_names(len(net.weights), len(net.bn.gammas) if net.bn else 0)
            net.optimizer_state = OptimizerState(saved["step"], {
                slot: [model.extra[f"{slot}_{name}"] for name in names] for slot in saved["slots"]})
            net.use_optimizer(None)  # a state that does not fit the rule starts again (modelmeta refuses it)
        net.metadata = {k: v for k, v in meta.items() if k not in net.to_metadata()}
        return net
